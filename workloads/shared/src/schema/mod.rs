//! The platform schema: migrations and per-country partitions.

mod migrations;
pub mod mpi;
mod partitions;
mod privileges;

pub use migrations::{
    MIGRATIONS, MIGRATIONS_TABLE, Migration, MigrationError, applied_versions, check_applied, migrate,
};
pub use partitions::{
    PARTITIONED_TABLES, PartitionConstraint, country_literal, create_partition_sql, fresh_country_sql, is_country_code,
    partition_constraints, partition_name, quoted, split_name,
};
pub use privileges::{
    APPEND_ONLY, APPEND_ONLY_TABLES, DML, NO_DELETE, NO_DELETE_TABLES, VAULT_ROLE_TABLES, VAULT_SCHEMA,
    vault_privileges, workload_privileges,
};

/// Brings an empty database to what the control plane leaves for `countries`: migrated,
/// with each country's partitions and constraints. For tests and benchmarks that start a
/// database of their own; in a Region, the reconcilers do this.
pub async fn prepare(conn: &mut sqlx::PgConnection, countries: &[&str]) -> Result<(), MigrationError> {
    migrate(conn).await?;
    for code in countries {
        for sql in fresh_country_sql(code) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .map_err(MigrationError::Read)?;
        }
    }
    Ok(())
}
