//! Cross-border records: the records service's side of the PatientIndex.
//!
//! - [`link`]: what the operator handed over (keys, the index's connection, linked countries).
//! - [`registrar`]: keeps the index's entries of this Region's patients current.
//! - [`lookup`]: a clinician of this country (Y) finds a patient of country X by X's national
//!   ID: hashed, looked up in the index, fetched from X's records service as this service,
//!   merged in memory with Y's own records. Nothing of X is written here; the lookup is
//!   audited (hit or miss, never the ID) and rate-limited per clinician.
//! - [`disclosure`]: the other end, X's `$disclose`: another Region's records service asks
//!   for a patient on behalf of a clinician; X checks both, its Country's consent rules and
//!   the patient's `Consent`, audits the disclosure and answers.
//! - [`peers`]: how this service calls other Regions' records services, as itself.

pub mod bench;
pub mod disclosure;
pub mod link;
pub mod lookup;
pub mod peers;
pub mod registrar;
pub mod two_regions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use meridian_crds::Country;
use meridian_shared::auth::Verifier;

use crate::validate::Rules;

pub use link::IndexLink;

/// Lookups one clinician may make per [`LOOKUP_WINDOW`]: the index answers whether an ID
/// exists, so it is a guessing oracle for IDs with little entropy.
pub const LOOKUPS_PER_WINDOW: u32 = 30;
/// See [`LOOKUPS_PER_WINDOW`].
pub const LOOKUP_WINDOW: Duration = Duration::from_secs(60);

/// Every country's national-ID rules, by identifier system: which country a foreign ID
/// belongs to and how to check and normalise it. Kept current from the Country objects.
#[derive(Clone, Default)]
pub struct Directory(Arc<RwLock<BTreeMap<String, Arc<Rules>>>>);

impl Directory {
    /// Takes every Country's rules (those with a national-ID system).
    pub fn set<'a>(&self, countries: impl IntoIterator<Item = &'a Country>) {
        let table = countries
            .into_iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| {
                let rules = Rules::of(&c.spec);
                Some((rules.national_id_system.clone()?, Arc::new(rules)))
            })
            .collect();
        *self.0.write().expect("directory lock") = table;
    }

    /// The rules of the country whose national IDs have identifier system `system`.
    pub fn country_of(&self, system: &str) -> Option<Arc<Rules>> {
        self.0.read().expect("directory lock").get(system).cloned()
    }
}

/// Per-clinician lookup counts in fixed windows of [`LOOKUP_WINDOW`].
pub struct Limiter {
    per_window: u32,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(LOOKUPS_PER_WINDOW)
    }
}

impl Limiter {
    /// At most `per_window` lookups per clinician per window.
    pub fn new(per_window: u32) -> Self {
        Self {
            per_window,
            counts: Mutex::default(),
        }
    }

    pub fn per_window(&self) -> u32 {
        self.per_window
    }

    /// Counts a lookup by `subject`; `Err(wait)` when they are over the limit.
    pub fn take(&self, subject: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut counts = self.counts.lock().expect("limiter lock");
        if counts.len() > 100_000 {
            counts.retain(|_, (start, _)| now.duration_since(*start) < LOOKUP_WINDOW);
        }
        let (start, count) = counts.entry(subject.to_string()).or_insert((now, 0));
        if now.duration_since(*start) >= LOOKUP_WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_window {
            return Err(LOOKUP_WINDOW.saturating_sub(now.duration_since(*start)));
        }
        *count += 1;
        Ok(())
    }
}

/// What a records service needs for cross-border work.
#[derive(Clone, Default)]
pub struct CrossBorder {
    pub link: IndexLink,
    pub directory: Directory,
    /// How to call other Regions; none: lookups abroad answer that they are not set up here.
    pub peers: Option<Arc<peers::Peers>>,
    /// Checks other Regions' records services' tokens; none: `$disclose` refuses everyone.
    pub accept: Option<Accept>,
    pub limiter: Arc<Limiter>,
}

impl CrossBorder {
    /// Region `region`'s side where a local issuer stands in for the cluster's ServiceAccount
    /// tokens (`meridian dev`, the tests and benchmarks): other Regions are called at
    /// `peer_url` as [`peers::service_subject`] of `region`, with tokens of `issuer` that
    /// others check with `accept`; foreign IDs are looked up in `directory`.
    pub fn with_dev_issuer(
        issuer: Arc<meridian_shared::auth::DevIssuer>,
        region: &str,
        peer_url: &str,
        timeout: Duration,
        accept: Arc<Verifier>,
        directory: Directory,
    ) -> Self {
        let subject = peers::service_subject(region);
        let lifetime = Duration::from_secs(3600);
        let token = peers::TokenSource::issued(
            move || issuer.service_token(&subject, peers::AUDIENCE, lifetime),
            lifetime,
        );
        Self {
            directory,
            peers: Some(Arc::new(peers::Peers::new(peer_url, token, timeout))),
            accept: Some(Accept::Jwt(accept)),
            ..Default::default()
        }
    }
}

/// How a records service checks the token of another Region's records service.
#[derive(Clone)]
pub enum Accept {
    /// Tokens of a known issuer for [`peers::AUDIENCE`]: `meridian dev`'s, the tests'.
    Jwt(Arc<Verifier>),
    /// Kubernetes ServiceAccount tokens, checked by the API server (a TokenReview for
    /// [`peers::AUDIENCE`]); each answer is kept for [`REVIEW_KEPT`].
    TokenReview(Arc<TokenReviewer>),
}

/// How long a TokenReview's answer is kept.
pub const REVIEW_KEPT: Duration = Duration::from_secs(60);

impl Accept {
    /// The calling service's subject, for an `Authorization` header; `Err` says why not.
    pub async fn subject(&self, authorization: Option<&str>) -> Result<String, String> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or("send Authorization: Bearer <token>")?;
        match self {
            Accept::Jwt(verifier) => verifier.verify(token).map(|p| p.subject).map_err(|e| e.to_string()),
            Accept::TokenReview(reviewer) => reviewer.subject(token).await,
        }
    }
}

/// Checks ServiceAccount tokens with the API server's TokenReview.
pub struct TokenReviewer {
    client: kube::Client,
    known: Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            known: Mutex::default(),
        }
    }

    async fn subject(&self, token: &str) -> Result<String, String> {
        if let Some((subject, at)) = self.known.lock().expect("reviews lock").get(token)
            && at.elapsed() < REVIEW_KEPT
        {
            return Ok(subject.clone());
        }
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![peers::AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let answer = kube::Api::<TokenReview>::all(self.client.clone())
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| format!("the API server could not review the token: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(status.error.unwrap_or_else(|| "the token is not valid".into()));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == peers::AUDIENCE)
        {
            return Err(format!("the token is not for {}", peers::AUDIENCE));
        }
        let subject = status.user.and_then(|u| u.username).ok_or("the token names no user")?;
        let mut known = self.known.lock().expect("reviews lock");
        if known.len() > 10_000 {
            known.retain(|_, (_, at)| at.elapsed() < REVIEW_KEPT);
        }
        known.insert(token.to_string(), (subject.clone(), Instant::now()));
        Ok(subject)
    }
}
