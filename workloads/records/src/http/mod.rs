//! The records service's HTTP API: FHIR R4 under `/{cc}/v1/fhir` for every country its
//! Region holds. Every answer is FHIR JSON; every refusal an `OperationOutcome`.

mod bundle;
mod caller;
mod capability;
mod interactions;
mod operations;
pub(crate) mod response;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use meridian_crds::serving::Serving;
use meridian_shared::auth::Verifier;
use meridian_shared::jwks::Jwks;
use meridian_shared::pool::{Lease, Pool};

use crate::keys::Keyring;
use crate::validate::Rules;

pub use caller::{Access, Caller, admit_country, base_url as caller_base_url};

/// Largest request body accepted (a transaction Bundle of [`bundle::MAX_ENTRIES`] entries
/// fits); beyond, `413` with an OperationOutcome.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One country the service holds: its rules, whether it serves, and its data keys (or why
/// they cannot be read: then it answers 503 rather than write what it could not read back).
#[derive(Clone, Debug)]
pub struct CountryEntry {
    pub rules: Rules,
    pub serving: Serving,
    pub keys: Result<Keyring, String>,
}

/// The countries of the service's Region, kept current by whoever runs it.
#[derive(Clone, Default)]
pub struct Countries(Arc<RwLock<BTreeMap<String, Arc<CountryEntry>>>>);

impl Countries {
    pub fn set(&self, entries: impl IntoIterator<Item = CountryEntry>) {
        let table = entries
            .into_iter()
            .map(|e| (e.rules.code.to_ascii_lowercase(), Arc::new(e)))
            .collect();
        *self.0.write().expect("countries lock") = table;
    }

    /// The entry for path segment `cc` (lower case in URLs).
    pub fn get(&self, cc: &str) -> Option<Arc<CountryEntry>> {
        self.0.read().expect("countries lock").get(cc).cloned()
    }
}

/// What every handler shares.
pub struct Service {
    /// As the Region's workload role: clinical resources only.
    pub clinical: Pool,
    /// As the Region's vault role: Patients, and transactions that write both.
    pub vault: Pool,
    pub verifier: Arc<Verifier>,
    pub jwks: Option<Arc<Jwks>>,
    pub countries: Countries,
    /// The audit records of reads, written in batches on connections of their own.
    pub reads: meridian_shared::audit::ReadLog,
    /// The PatientIndex, other countries' national IDs and other Regions' records services.
    pub crossborder: crate::crossborder::CrossBorder,
}

impl Service {
    pub fn new(clinical: Pool, vault: Pool, verifier: Arc<Verifier>, countries: Countries) -> Self {
        Self {
            reads: meridian_shared::audit::ReadLog::start(clinical.connect_options()),
            clinical,
            vault,
            verifier,
            jwks: None,
            countries,
            crossborder: Default::default(),
        }
    }

    /// Looks patients up abroad, and answers other Regions, with `crossborder`.
    pub fn with_crossborder(mut self, crossborder: crate::crossborder::CrossBorder) -> Self {
        self.crossborder = crossborder;
        self
    }

    /// Checks tokens against the keys of `jwks`, following its rotations.
    pub fn with_jwks(mut self, jwks: Arc<Jwks>) -> Self {
        self.verifier = jwks.verifier();
        self.jwks = Some(jwks);
        self
    }

    /// The pool for work on `resource_type` (Patients are the vault's).
    pub fn pool(&self, resource_type: crate::fhir::ResourceType) -> &Pool {
        if resource_type.is_clinical() {
            &self.clinical
        } else {
            &self.vault
        }
    }
}

/// A connection from `pool`, or the `503` a request gets when the database is out of reach.
pub(crate) async fn connection(pool: &Pool, correlation_id: uuid::Uuid) -> Result<Lease, crate::fhir::Issue> {
    pool.acquire()
        .await
        .map_err(|e| response::store_failure(e.into(), correlation_id))
}

/// The routes of the records service.
pub fn app(service: Arc<Service>) -> Router {
    let routes = Router::new()
        .route("/{cc}/v1/fhir/metadata", get(capability::metadata))
        .route("/{cc}/v1/fhir", post(bundle::transaction))
        .route("/{cc}/v1/fhir/$disclose", get(crate::crossborder::disclosure::disclose))
        .route(
            "/{cc}/v1/fhir/{resource_type}",
            get(interactions::search_get).post(interactions::create),
        )
        .route("/{cc}/v1/fhir/{resource_type}/_search", post(interactions::search_post))
        .route(
            "/{cc}/v1/fhir/{resource_type}/{id}",
            get(interactions::read)
                .put(interactions::update)
                .delete(interactions::delete),
        )
        .route(
            "/{cc}/v1/fhir/{resource_type}/{id}/{operation}",
            get(interactions::instance_operation),
        )
        .route(
            "/{cc}/v1/fhir/{resource_type}/{id}/_history/{version}",
            get(interactions::vread),
        )
        .fallback(response::unknown_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(operations::count))
        .layer(axum::middleware::from_fn(meridian_shared::telemetry::http_server_span));
    meridian_shared::metrics::tracked(routes, "records").with_state(service)
}
