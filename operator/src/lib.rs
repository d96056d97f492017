//! Meridian's control plane: the Country and Region reconcilers and the two drivers that
//! run them — the Kubernetes operator ([`k8s`]) and the embedded stack ([`dev`]) — plus
//! `meridian plan` ([`plan_cmd`]) and `meridian bench world` ([`bench_world`]).

pub mod audit_cmd;
pub mod backends;
pub mod bench_world;
pub mod conditions;
pub mod controller;
pub mod dev;
pub mod k8s;
pub mod metrics;
pub mod mpi_cmd;
pub mod plan;
pub mod plan_cmd;
pub mod providers;
pub mod residency;
pub mod schema;
pub mod validate;
pub mod vault_cmd;

/// Field manager for everything the operator writes with server-side apply, and the
/// `app.kubernetes.io/managed-by` label and cloud tag value of what it creates.
pub const FIELD_MANAGER: &str = "meridian-operator";
