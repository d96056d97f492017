/// Tables LIST-partitioned by `country_code`, in dependency order: a partition of a
/// referencing table is created after the partition it references and dropped before it.
pub const PARTITIONED_TABLES: &[&str] = &[
    "practitioners",
    "availability",
    "appointments",
    "outbox",
    "audit",
    "audit_heads",
    "patients",
    "fhir_resources",
    "fhir_history",
    "vault.patients",
    "vault.patient_history",
    "invoices",
    "appointment_minutes",
    "notifications",
];

/// Name of `table`'s partition for country `code`, in the table's schema:
/// `partition_name("appointments", "DE")` is `appointments_de`, and
/// `partition_name("vault.patients", "DE")` is `vault.patients_de`.
pub fn partition_name(table: &str, code: &str) -> String {
    format!("{table}_{}", code.to_ascii_lowercase())
}

/// Country `code` as the SQL literal `'DE'`, for a statement that names its country's
/// partition in its own text; `None` unless `code` is two upper-case letters, so nothing
/// else is ever written into SQL. PostgreSQL prunes the partitions of a parameter only while
/// executing: a read with `country_code = $1` is planned again on every execution (its
/// generic plan would cost every partition), one with `country_code = 'DE'` keeps its plan.
pub fn country_literal(code: &str) -> Option<String> {
    is_country_code(code).then(|| format!("'{code}'"))
}

/// Whether `code` has the form of a country code as tables and Countries hold it: two
/// upper-case ASCII letters (ISO 3166-1 alpha-2), `DE`.
pub fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// `name` (`table` or `schema.table`) quoted for SQL: `"vault"."patients_de"`.
pub fn quoted(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join(".")
}

/// The schema and the bare name of `name` (`public` when it names none).
pub fn split_name(name: &str) -> (&str, &str) {
    name.split_once('.').unwrap_or(("public", name))
}

/// The DDL that creates `table`'s partition for country `code` (safe to repeat).
pub fn create_partition_sql(table: &str, code: &str) -> String {
    let partition = quoted(&partition_name(table, code));
    let table = quoted(table);
    format!("CREATE TABLE IF NOT EXISTS {partition} PARTITION OF {table} FOR VALUES IN ('{code}');")
}

/// Everything a migrated, empty database needs for country `code`, in order: what the
/// control plane applies when a Country is created. For tests and benchmarks that start a
/// database of their own.
pub fn fresh_country_sql(code: &str) -> Vec<String> {
    PARTITIONED_TABLES
        .iter()
        .flat_map(|table| {
            std::iter::once(create_partition_sql(table, code))
                .chain(partition_constraints(table, code).into_iter().map(|c| c.sql))
        })
        .collect()
}

/// A constraint that every partition of a table carries, because PostgreSQL cannot declare
/// it once on the partitioned parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionConstraint {
    /// Constraint name, prefixed with the partition's so that it is unique in the schema.
    pub name: String,
    /// The `ALTER TABLE ... ADD CONSTRAINT` statement.
    pub sql: String,
}

/// The constraints `table`'s partition for country `code` must carry.
pub fn partition_constraints(table: &str, code: &str) -> Vec<PartitionConstraint> {
    let partition = partition_name(table, code);
    let quoted_partition = quoted(&partition);
    let exclude = |suffix: &str, column: &str| {
        let name = format!("{partition}_{suffix}");
        let sql = format!(
            "ALTER TABLE {quoted_partition} ADD CONSTRAINT \"{name}\" EXCLUDE USING gist \
             ({column} WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) WHERE (status = 'booked');"
        );
        PartitionConstraint { name, sql }
    };
    match table {
        // A practitioner cannot be booked twice at once, nor can a patient.
        "appointments" => vec![
            exclude("no_double_booking", "practitioner_id"),
            exclude("no_patient_overlap", "patient_id"),
        ],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_two_letter_upper_case_code_becomes_a_literal() {
        assert_eq!(country_literal("DE").as_deref(), Some("'DE'"));
        for bad in ["de", "D", "DEU", "", "D'", "'; DROP TABLE audit; --", "DÉ"] {
            assert_eq!(country_literal(bad), None, "{bad:?}");
        }
    }
}
