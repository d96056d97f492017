//! The records domain, served per Region by `meridian records` (and inside `meridian dev`):
//! FHIR R4 (4.0.1) `Patient`, `Encounter`, `Observation` and `MedicationRequest` under
//! `/{cc}/v1/fhir`, stored in the home Region's database. A Patient's identifying elements
//! are kept only in the vault schema, sealed under the country's data key; clinical rows
//! refer to the patient by a random client ID, which is also the Patient's id.
//!
//! [`http`] is its API; [`serve`] its entry point (`meridian records`), [`served`] which
//! countries a Region's deployment serves, and [`bench`] its benchmark (`meridian bench
//! records`). Underneath: [`fhir`] (the resources as serde types, OperationOutcome),
//! [`validate`] (the content rules), [`store`] and [`search`] (PostgreSQL), [`vault`] and
//! [`keys`] (the PII vault's cryptography and keys), [`vault_rotation`] (moving the vault
//! onto a new key).

pub mod bench;
pub mod codes;
pub mod consent;
pub mod crossborder;
pub mod dates;
pub mod fhir;
pub mod http;
pub mod keys;
pub mod mpi;
pub mod national_id;
pub mod roles;
pub mod search;
pub mod serve;
pub mod served;
pub mod store;
pub mod validate;
pub mod vault;
pub mod vault_rotation;

pub use meridian_shared::serve::{ACQUIRE_TIMEOUT, pool_options};
