//! Domain code shared by the workloads and the control plane.
//!
//! The platform schema: the numbered SQL migrations that the control plane applies to every
//! Region's database before workloads start, and the tables that hold per-country
//! partitions. The audit trail and the transactional outbox every change writes to. And
//! authentication: bearer tokens checked against an identity provider's JWKS, read from a
//! URL or a file and kept current through key rotations. And what every long-running
//! command needs: stopping on Ctrl-C or SIGTERM ([`shutdown`]). And the TLS rules of every
//! connection to a Region's stores ([`tls`]). And logs and traces ([`telemetry`]).

pub mod audit;
pub mod auth;
pub mod bench;
pub mod jwks;
pub mod metrics;
pub mod money;
pub mod outbox;
pub mod patients;
pub mod pool;
pub mod schema;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
