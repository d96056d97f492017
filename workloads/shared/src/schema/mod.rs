//! The platform schema: migrations and per-country partitions.

mod migrations;
mod partitions;

pub use migrations::{
    MIGRATIONS, MIGRATIONS_TABLE, Migration, MigrationError, applied_versions, check_applied, migrate,
};
pub use partitions::{PARTITIONED_TABLES, PartitionConstraint, partition_constraints, partition_name};
