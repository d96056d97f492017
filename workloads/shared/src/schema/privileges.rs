//! What the workloads may do with the platform schema. The Region's owner role owns every
//! table; the workload role gets row access (DML) on the tables below, through the
//! partitioned parents only: a query on a parent table is checked against the parent's
//! privileges, so the per-country partitions carry no grants at all and cannot be touched
//! directly (no TRUNCATE of an audit partition, no DELETE on it).

use super::MIGRATIONS_TABLE;

/// Row access for the workloads on ordinary tables.
pub const DML: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];
/// The audit trail is append-only for the workloads: they read it (to verify chains) and
/// add to it, never change or remove a record.
pub const APPEND_ONLY: &[&str] = &["SELECT", "INSERT"];

/// Tables the workloads may only append to.
pub const APPEND_ONLY_TABLES: &[&str] = &["audit"];

/// The privileges the workload role holds on (non-partition) table `table` of the platform
/// schema: none on the control plane's own bookkeeping, append-only on the audit trail, row
/// access on the rest.
pub fn workload_privileges(table: &str) -> &'static [&'static str] {
    if table == MIGRATIONS_TABLE {
        &[]
    } else if APPEND_ONLY_TABLES.contains(&table) {
        APPEND_ONLY
    } else {
        DML
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_is_append_only_and_the_migration_history_out_of_reach() {
        assert_eq!(workload_privileges("audit"), ["SELECT", "INSERT"]);
        assert!(workload_privileges(MIGRATIONS_TABLE).is_empty());
        assert_eq!(workload_privileges("audit_heads"), DML);
        assert_eq!(workload_privileges("appointments"), DML);
    }
}
