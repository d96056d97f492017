/// Tables LIST-partitioned by `country_code`, in dependency order: a partition of a
/// referencing table is created after the partition it references and dropped before it.
pub const PARTITIONED_TABLES: &[&str] = &["practitioners", "availability", "appointments", "outbox", "audit"];

/// Name of `table`'s partition for country `code`: `partition_name("appointments", "DE")`
/// is `appointments_de`.
pub fn partition_name(table: &str, code: &str) -> String {
    format!("{table}_{}", code.to_ascii_lowercase())
}
