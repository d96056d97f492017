//! The records domain, served per Region by `meridian records` (and inside `meridian dev`):
//! FHIR R4 (4.0.1) `Patient`, `Encounter`, `Observation` and `MedicationRequest` under
//! `/{cc}/v1/fhir`, stored in the home Region's database. A Patient's identifying elements
//! are kept only in the vault schema, sealed under the country's data key; clinical rows
//! refer to the patient by a random client ID, which is also the Patient's id.

pub mod bench;
pub mod codes;
pub mod dates;
pub mod fhir;
pub mod http;
pub mod keys;
pub mod national_id;
pub mod roles;
pub mod search;
pub mod store;
pub mod validate;
pub mod vault;

use std::time::Duration;

/// How long a request waits for a database connection before it is answered 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The pool settings of the records service: a short acquire timeout, and connections
/// checked before use so that a database restart costs no failed request.
pub fn pool_options(max_connections: u32) -> sqlx::postgres::PgPoolOptions {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
}
pub mod serve;
pub mod served;
