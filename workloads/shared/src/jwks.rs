//! Where a workload gets the identity provider's keys: a JWKS document from a URL (the
//! provider's `jwks_uri`) or a file (mounted from a ConfigMap or Secret). It is read again
//! every few minutes, and at once when a token names a key the service does not know yet,
//! which is how a provider's key rotation shows up first. A failed read keeps the keys in
//! use: a provider's outage must not lock everyone out of booking.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;

use crate::auth::{AuthError, Verifier};

/// Reads closer together than this are skipped, however many unknown keys turn up: a
/// stream of made-up key IDs must not become a stream of requests to the provider.
const MIN_SPACING: Duration = Duration::from_secs(10);

/// A JWKS document is a few kilobytes; anything much larger is not one.
const MAX_DOCUMENT: usize = 1 << 20;

/// How long one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the JWKS document lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    Url(http::Uri),
    File(PathBuf),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Url(uri) => write!(f, "{uri}"),
            JwksSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the JWKS from {from}: {reason}")]
    Read { from: JwksSource, reason: String },
    #[error("the JWKS from {from} is not usable: {error}")]
    Invalid { from: JwksSource, error: AuthError },
}

type HttpsClient = crate::tls::HttpsClient<Empty<Bytes>>;

/// The issuer's keys, kept current from their source.
pub struct Jwks {
    source: JwksSource,
    verifier: Arc<Verifier>,
    client: HttpsClient,
    min_spacing: Duration,
    /// The document in use, and when the source was last read (successfully or not).
    state: tokio::sync::Mutex<(String, Option<Instant>)>,
}

impl Jwks {
    /// Reads the keys once; a service should not start without them.
    pub async fn load(source: JwksSource, issuer: &str, audience: &str) -> Result<Arc<Self>, JwksError> {
        Self::load_spaced(source, issuer, audience, MIN_SPACING).await
    }

    /// [`Jwks::load`], with reads at least `min_spacing` apart.
    pub async fn load_spaced(
        source: JwksSource,
        issuer: &str,
        audience: &str,
        min_spacing: Duration,
    ) -> Result<Arc<Self>, JwksError> {
        let client = crate::tls::https_client().map_err(|reason| JwksError::Read {
            from: source.clone(),
            reason,
        })?;
        let document = read(&client, &source).await?;
        let verifier = Verifier::from_jwks(issuer, audience, &document).map_err(|error| JwksError::Invalid {
            from: source.clone(),
            error,
        })?;
        Ok(Arc::new(Self {
            source,
            verifier: Arc::new(verifier),
            client,
            min_spacing,
            // Not counted as a read for the spacing: a rotation right after start-up is
            // picked up at once.
            state: tokio::sync::Mutex::new((document, None)),
        }))
    }

    /// The verifier that holds the current keys.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.clone()
    }

    /// Reads the source again and swaps the keys in if the document changed, unless it was
    /// read less than a few seconds ago. Returns whether the keys changed.
    pub async fn refresh(&self) -> Result<bool, JwksError> {
        let mut state = self.state.lock().await;
        if state.1.is_some_and(|at| at.elapsed() < self.min_spacing) {
            return Ok(false);
        }
        state.1 = Some(Instant::now());
        let document = read(&self.client, &self.source).await?;
        if document == state.0 {
            return Ok(false);
        }
        self.verifier
            .replace_keys(&document)
            .map_err(|error| JwksError::Invalid {
                from: self.source.clone(),
                error,
            })?;
        tracing::info!(source = %self.source, keys = ?self.verifier.key_ids(), "identity provider keys changed");
        state.0 = document;
        Ok(true)
    }

    /// Refreshes every `every` until the task is dropped; failures are logged and the keys
    /// in use are kept.
    pub fn refresh_every(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let jwks = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(e) = jwks.refresh().await {
                    tracing::warn!(error = %e, "keeping the identity provider keys in use");
                }
            }
        })
    }
}

async fn read(client: &HttpsClient, source: &JwksSource) -> Result<String, JwksError> {
    let failed = |reason: String| JwksError::Read {
        from: source.clone(),
        reason,
    };
    match source {
        JwksSource::File(path) => tokio::fs::read_to_string(path).await.map_err(|e| failed(e.to_string())),
        JwksSource::Url(uri) => {
            let request = http::Request::get(uri.clone())
                .header(http::header::ACCEPT, "application/json, application/jwk-set+json")
                .body(Empty::new())
                .map_err(|e| failed(e.to_string()))?;
            let fetch = async {
                let response = client.request(request).await.map_err(|e| failed(e.to_string()))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(failed(format!("HTTP {status}")));
                }
                let body = Limited::new(response.into_body(), MAX_DOCUMENT)
                    .collect()
                    .await
                    .map_err(|e| failed(e.to_string()))?
                    .to_bytes();
                String::from_utf8(body.to_vec()).map_err(|_| failed("the document is not UTF-8".into()))
            };
            tokio::time::timeout(READ_TIMEOUT, fetch)
                .await
                .map_err(|_| failed(format!("no answer within {} s", READ_TIMEOUT.as_secs())))?
        }
    }
}

/// Checks the `Authorization` header with `verifier`; when the token names a key the
/// verifier does not know and `jwks` can change, reads the provider's keys once more (it may
/// have rotated them) and checks again.
pub async fn verify_following_rotation(
    verifier: &crate::auth::Verifier,
    jwks: Option<&Jwks>,
    header: Option<&str>,
) -> Result<crate::auth::Principal, crate::auth::AuthError> {
    match (verifier.verify_header(header), jwks) {
        (Err(crate::auth::AuthError::UnknownKey), Some(jwks)) => {
            if let Err(e) = jwks.refresh().await {
                tracing::warn!(error = %e, "cannot read the identity provider's keys");
            }
            verifier.verify_header(header)
        }
        (verified, _) => verified,
    }
}
