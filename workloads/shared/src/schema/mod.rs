//! The platform schema: migrations and per-country partitions.

mod migrations;
mod partitions;

pub use migrations::{
    MIGRATIONS, MIGRATIONS_TABLE, Migration, MigrationError, applied_versions, check_applied, migrate,
};
pub use partitions::{
    PARTITIONED_TABLES, PartitionConstraint, create_partition_sql, fresh_country_sql, partition_constraints,
    partition_name,
};
