//! The booking service's HTTP API, served under `/{cc}/v1/...` for every country its
//! Region holds. Handlers are thin: they check the caller and hand over to the domain
//! functions, which work over one transaction each.

mod analytics;
mod appointments;
mod availability;
mod caller;
mod invoices;
mod live;
mod openapi;
mod practitioners;
mod problem;
mod search;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use chrono_tz::Tz;
use meridian_search::Backend;
use meridian_shared::auth::Verifier;
use meridian_shared::jwks::Jwks;
use sqlx::PgPool;

use crate::live::LiveSlots;
use crate::schedules::Schedules;

pub use caller::Caller;
pub use openapi::OPERATIONS;
pub use problem::{InvalidField, Problem};

pub use meridian_crds::serving::Serving;

/// One country this service holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountryEntry {
    /// Upper-case ISO code, as stored in `country_code`.
    pub code: String,
    pub timezone: Tz,
    pub serving: Serving,
    /// `features.reassignment`: move appointments to a colleague when a practitioner
    /// becomes unavailable, rather than only asking the patient to rebook.
    pub reassignment: bool,
}

impl CountryEntry {
    /// A country served in `timezone`, with the Country spec's defaults (reassignment on).
    pub fn ready(code: &str, timezone: Tz) -> Self {
        Self {
            code: code.to_ascii_uppercase(),
            timezone,
            serving: Serving::Ready,
            reassignment: true,
        }
    }
}

/// The countries of this service's Region, kept current by whoever runs the service (the
/// reconciled state in `meridian dev`).
#[derive(Clone, Default)]
pub struct Countries(Arc<RwLock<BTreeMap<String, CountryEntry>>>);

impl Countries {
    /// Replaces the whole table.
    pub fn set(&self, entries: impl IntoIterator<Item = CountryEntry>) {
        let table = entries.into_iter().map(|e| (e.code.to_ascii_lowercase(), e)).collect();
        *self.0.write().expect("countries lock") = table;
    }

    /// The entry for path segment `cc` (lower case in URLs).
    pub fn get(&self, cc: &str) -> Option<CountryEntry> {
        self.0.read().expect("countries lock").get(cc).cloned()
    }
}

/// What every handler shares.
pub struct Service {
    pub pool: PgPool,
    pub verifier: Arc<Verifier>,
    /// Where the verifier's keys come from, when they can change: read again when a token
    /// names a key the verifier does not know (the provider rotated its keys).
    pub jwks: Option<Arc<Jwks>>,
    pub countries: Countries,
    pub live: Arc<LiveSlots>,
    pub schedules: Schedules,
    /// Where the country indexes live, for practitioner search.
    pub search: Option<Backend>,
}

impl Service {
    pub fn new(pool: PgPool, verifier: Arc<Verifier>, countries: Countries) -> Self {
        let live = Arc::new(LiveSlots::new(pool.clone()));
        Self {
            pool,
            verifier,
            jwks: None,
            countries,
            live,
            schedules: Schedules::default(),
            search: None,
        }
    }
}

impl Service {
    /// Searches practitioners in the country indexes of `backend`.
    pub fn with_search(mut self, backend: Backend) -> Self {
        self.search = Some(backend);
        self
    }

    /// Checks tokens against the keys of `jwks`, following its rotations.
    pub fn with_jwks(mut self, jwks: Arc<Jwks>) -> Self {
        self.verifier = jwks.verifier();
        self.jwks = Some(jwks);
        self
    }
}

/// The routes of the booking service.
pub fn app(service: Arc<Service>) -> Router {
    let routes = Router::new()
        .merge(search::router())
        .merge(practitioners::router())
        .merge(availability::router())
        .merge(appointments::router())
        .merge(invoices::router())
        .merge(analytics::router())
        .merge(live::router())
        .merge(openapi::router())
        .layer(axum::middleware::from_fn(meridian_shared::telemetry::http_server_span));
    meridian_shared::metrics::tracked(routes, "booking").with_state(service)
}
