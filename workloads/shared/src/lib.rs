//! Domain code shared by the workloads and the control plane.
//!
//! The platform schema: the numbered SQL migrations that the control plane applies to every
//! Region's database before workloads start, and the tables that hold per-country
//! partitions. And authentication: bearer tokens checked against an issuer's JWKS.

pub mod audit;
pub mod auth;
pub mod outbox;
pub mod schema;
