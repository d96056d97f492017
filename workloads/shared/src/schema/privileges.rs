//! What the workloads may do with the platform schema. The Region's owner role owns every
//! table; the workload role gets row access (DML) on the tables below, through the
//! partitioned parents only: a query on a parent table is checked against the parent's
//! privileges, so the per-country partitions carry no grants at all and cannot be touched
//! directly (no TRUNCATE of an audit partition, no DELETE on it).
//!
//! Patient PII lives in schema `vault`, out of the workload (clinical) role's reach: only the
//! Region's vault role, which the records service connects as for Patient data, uses it.
//! That role also writes the records tables (a transaction Bundle creates a Patient and its
//! observations at once), the outbox and the audit trail, and nothing else.

use super::MIGRATIONS_TABLE;

/// Row access for the workloads on ordinary tables.
pub const DML: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];
/// The audit trail is append-only for the workloads: they read it (to verify chains) and
/// add to it, never change or remove a record.
pub const APPEND_ONLY: &[&str] = &["SELECT", "INSERT"];

/// Tables the workloads may only append to.
pub const APPEND_ONLY_TABLES: &[&str] = &["audit"];

/// Notices are scheduled, cancelled and marked sent, never removed: their rows are the
/// record of what was sent to whom (by client ID) and when.
pub const NO_DELETE: &[&str] = &["SELECT", "INSERT", "UPDATE"];

/// Tables the workloads write but never delete from.
pub const NO_DELETE_TABLES: &[&str] = &["notifications"];

/// The schema that holds patient PII.
pub const VAULT_SCHEMA: &str = "vault";

/// Tables of `public` the vault role writes besides the vault's own.
pub const VAULT_ROLE_TABLES: &[&str] = &["patients", "fhir_resources", "fhir_history", "outbox", "audit_heads"];

/// The privileges the workload role holds on (non-partition) table `table` of the platform
/// schema: none on the control plane's own bookkeeping, append-only on the audit trail, no
/// DELETE on the notices, row access on the rest.
pub fn workload_privileges(table: &str) -> &'static [&'static str] {
    if table == MIGRATIONS_TABLE || table.starts_with("vault.") {
        &[]
    } else if APPEND_ONLY_TABLES.contains(&table) {
        APPEND_ONLY
    } else if NO_DELETE_TABLES.contains(&table) {
        NO_DELETE
    } else {
        DML
    }
}

/// The privileges the vault role holds on table `table` (`vault.<name>` for the vault's own
/// tables): row access on the vault and on the records tables, append-only on the audit
/// trail, none on the booking tables or the control plane's bookkeeping.
pub fn vault_privileges(table: &str) -> &'static [&'static str] {
    if table.strip_prefix("vault.").is_some() || VAULT_ROLE_TABLES.contains(&table) {
        DML
    } else if APPEND_ONLY_TABLES.contains(&table) {
        APPEND_ONLY
    } else {
        &[]
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

    #[test]
    fn notices_are_the_workload_roles_never_deleted_and_out_of_the_vault_roles_reach() {
        assert_eq!(workload_privileges("notifications"), ["SELECT", "INSERT", "UPDATE"]);
        assert!(vault_privileges("notifications").is_empty());
    }

    #[test]
    fn only_the_vault_role_reaches_the_vault() {
        assert!(workload_privileges("vault.patients").is_empty());
        assert_eq!(vault_privileges("vault.patients"), DML);
        assert_eq!(vault_privileges("fhir_resources"), DML);
        assert_eq!(vault_privileges("audit"), APPEND_ONLY);
        assert!(vault_privileges("appointments").is_empty());
        assert!(vault_privileges(MIGRATIONS_TABLE).is_empty());
    }
}
