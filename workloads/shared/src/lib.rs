//! Domain code shared by the workloads and the control plane.
//!
//! Today this is the platform schema: the numbered SQL migrations that the control plane
//! applies to every Region's database before workloads start, and the list of tables that
//! hold per-country partitions.

pub mod schema;
