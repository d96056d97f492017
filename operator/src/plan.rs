//! The changes a reconcile would make, computed before anything is touched. Pure: the
//! planners take the observed state and return a list; the backends apply it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use meridian_shared::schema::{
    MIGRATIONS, PARTITIONED_TABLES, create_partition_sql, partition_constraints, partition_name, quoted,
};

/// One change to a Region's database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    ApplyMigration {
        version: i64,
        name: &'static str,
    },
    CreatePartition {
        table: &'static str,
        partition: String,
        code: String,
    },
    AttachPartition {
        table: &'static str,
        partition: String,
        code: String,
    },
    DetachPartition {
        table: &'static str,
        partition: String,
    },
    DropPartition {
        partition: String,
    },
    AddConstraint {
        partition: String,
        constraint: String,
        sql: String,
    },
}

impl Change {
    /// The SQL that makes the change. Codes and names come from validated specs and the
    /// schema's own table list, so they are safe to splice into DDL; a name in another
    /// schema than `public` (`vault.patients_de`) is quoted part by part.
    pub fn sql(&self) -> String {
        match self {
            Change::ApplyMigration { version, name } => format!("-- migration {version:04}_{name}.sql"),
            Change::CreatePartition { table, code, .. } => create_partition_sql(table, code),
            Change::AttachPartition { table, partition, code } => {
                format!(
                    "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ('{code}');",
                    quoted(table),
                    quoted(partition)
                )
            }
            Change::DetachPartition { table, partition } => {
                format!("ALTER TABLE {} DETACH PARTITION {};", quoted(table), quoted(partition))
            }
            Change::DropPartition { partition } => format!("DROP TABLE IF EXISTS {};", quoted(partition)),
            Change::AddConstraint { sql, .. } => sql.clone(),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sigil = match self {
            Change::ApplyMigration { .. } | Change::CreatePartition { .. } | Change::AddConstraint { .. } => '+',
            Change::AttachPartition { .. } | Change::DetachPartition { .. } => '~',
            Change::DropPartition { .. } => '-',
        };
        write!(f, "{sigil} {}", self.sql())
    }
}

/// Whether one partition exists, and whether it is attached to its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionState {
    Missing,
    Attached,
    Detached,
}

/// What a Country's partitions should become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionGoal {
    /// Attached and serving (the Country exists).
    Present,
    /// Detached from the tables but kept with their rows (deleted with `Retain`).
    Detached,
    /// Gone (deleted with `Delete`).
    Dropped,
}

/// Migrations not yet applied, in order.
pub fn migrations(applied: &[i64]) -> Vec<Change> {
    MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| Change::ApplyMigration {
            version: m.version,
            name: m.name,
        })
        .collect()
}

/// What a Region's database holds of one country: its partitions and their constraints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Partition names to their state; a name missing here is a missing partition.
    pub partitions: BTreeMap<String, PartitionState>,
    /// Names of the constraints on those partitions.
    pub constraints: BTreeSet<String>,
}

impl Observed {
    /// Forgets every partition not in `names`: what a cleanup may not touch.
    pub fn keep_only(&mut self, names: &[String]) {
        self.partitions.retain(|name, _| names.contains(name));
    }

    fn state(&self, partition: &str) -> PartitionState {
        self.partitions
            .get(partition)
            .copied()
            .unwrap_or(PartitionState::Missing)
    }
}

/// Changes that bring country `code`'s partitions to `goal`, given what exists.
pub fn partitions(code: &str, goal: PartitionGoal, observed: &Observed) -> Vec<Change> {
    let mut changes = Vec::new();
    if goal == PartitionGoal::Present {
        for &table in PARTITIONED_TABLES {
            let partition = partition_name(table, code);
            match observed.state(&partition) {
                PartitionState::Missing => changes.push(Change::CreatePartition {
                    table,
                    partition: partition.clone(),
                    code: code.into(),
                }),
                PartitionState::Detached => changes.push(Change::AttachPartition {
                    table,
                    partition: partition.clone(),
                    code: code.into(),
                }),
                PartitionState::Attached => {}
            }
            for constraint in partition_constraints(table, code) {
                if !observed.constraints.contains(&constraint.name) {
                    changes.push(Change::AddConstraint {
                        partition: partition.clone(),
                        constraint: constraint.name,
                        sql: constraint.sql,
                    });
                }
            }
        }
        return changes;
    }
    // Tear down in reverse dependency order.
    for &table in PARTITIONED_TABLES.iter().rev() {
        let partition = partition_name(table, code);
        match (goal, observed.state(&partition)) {
            (PartitionGoal::Detached, PartitionState::Attached) => {
                changes.push(Change::DetachPartition { table, partition })
            }
            (PartitionGoal::Dropped, PartitionState::Attached | PartitionState::Detached) => {
                changes.push(Change::DropPartition { partition })
            }
            _ => {}
        }
    }
    changes
}

/// The partition names a Country owns, in table order.
pub fn partition_names(code: &str) -> Vec<String> {
    PARTITIONED_TABLES.iter().map(|t| partition_name(t, code)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(pairs: &[(&str, PartitionState)]) -> Observed {
        Observed {
            partitions: pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
            constraints: BTreeSet::new(),
        }
    }

    /// Every partition of `code` attached, with every constraint in place.
    fn complete(code: &str) -> Observed {
        Observed {
            partitions: partition_names(code)
                .into_iter()
                .map(|n| (n, PartitionState::Attached))
                .collect(),
            constraints: PARTITIONED_TABLES
                .iter()
                .flat_map(|t| partition_constraints(t, code))
                .map(|c| c.name)
                .collect(),
        }
    }

    #[test]
    fn a_new_country_gets_one_partition_per_table_and_the_booking_constraints() {
        let changes = partitions("DE", PartitionGoal::Present, &Observed::default());
        let sql: Vec<String> = changes.iter().map(Change::sql).collect();
        assert_eq!(
            sql,
            [
                "CREATE TABLE IF NOT EXISTS \"practitioners_de\" PARTITION OF \"practitioners\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"availability_de\" PARTITION OF \"availability\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"appointments_de\" PARTITION OF \"appointments\" FOR VALUES IN ('DE');",
                "ALTER TABLE \"appointments_de\" ADD CONSTRAINT \"appointments_de_no_double_booking\" EXCLUDE USING gist \
                 (practitioner_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) WHERE (status = 'booked');",
                "ALTER TABLE \"appointments_de\" ADD CONSTRAINT \"appointments_de_no_patient_overlap\" EXCLUDE USING gist \
                 (patient_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) WHERE (status = 'booked');",
                "CREATE TABLE IF NOT EXISTS \"outbox_de\" PARTITION OF \"outbox\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"audit_de\" PARTITION OF \"audit\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"audit_heads_de\" PARTITION OF \"audit_heads\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"patients_de\" PARTITION OF \"patients\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"fhir_resources_de\" PARTITION OF \"fhir_resources\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"fhir_history_de\" PARTITION OF \"fhir_history\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"vault\".\"patients_de\" PARTITION OF \"vault\".\"patients\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"vault\".\"patient_history_de\" PARTITION OF \"vault\".\"patient_history\" \
                 FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"invoices_de\" PARTITION OF \"invoices\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"appointment_minutes_de\" PARTITION OF \"appointment_minutes\" \
                 FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"notifications_de\" PARTITION OF \"notifications\" FOR VALUES IN ('DE');",
            ]
        );
    }

    #[test]
    fn a_new_country_gets_exactly_what_the_schema_says_a_fresh_one_needs() {
        let planned: Vec<String> = partitions("PT", PartitionGoal::Present, &Observed::default())
            .iter()
            .map(Change::sql)
            .collect();
        assert_eq!(planned, meridian_shared::schema::fresh_country_sql("PT"));
    }

    #[test]
    fn a_current_country_needs_nothing() {
        assert!(partitions("FR", PartitionGoal::Present, &complete("FR")).is_empty());
    }

    #[test]
    fn a_partition_created_before_its_constraints_existed_gets_them() {
        let mut seen = complete("FR");
        seen.constraints.remove("appointments_fr_no_patient_overlap");
        let changes = partitions("FR", PartitionGoal::Present, &seen);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            matches!(&changes[0], Change::AddConstraint { constraint, .. } if constraint == "appointments_fr_no_patient_overlap")
        );
    }

    #[test]
    fn retained_partitions_are_reattached_when_the_country_comes_back() {
        let seen = observed(&[
            ("practitioners_es", PartitionState::Detached),
            ("audit_es", PartitionState::Attached),
            ("vault.patients_es", PartitionState::Detached),
        ]);
        let changes = partitions("ES", PartitionGoal::Present, &seen);
        assert_eq!(
            changes[0],
            Change::AttachPartition {
                table: "practitioners",
                partition: "practitioners_es".into(),
                code: "ES".into()
            }
        );
        let attach: Vec<String> = changes
            .iter()
            .filter(|c| matches!(c, Change::AttachPartition { .. }))
            .map(Change::sql)
            .collect();
        assert_eq!(
            attach,
            [
                "ALTER TABLE \"practitioners\" ATTACH PARTITION \"practitioners_es\" FOR VALUES IN ('ES');",
                "ALTER TABLE \"vault\".\"patients\" ATTACH PARTITION \"vault\".\"patients_es\" FOR VALUES IN ('ES');",
            ]
        );
        // Two attached, one already there, the rest created, and the two booking constraints.
        assert_eq!(changes.len(), PARTITIONED_TABLES.len() - 3 + 2 + 2, "{changes:?}");
    }

    #[test]
    fn retain_detaches_in_reverse_order_and_delete_drops_detached_ones_too() {
        let detach = partitions("IT", PartitionGoal::Detached, &complete("IT"));
        assert_eq!(detach.len(), PARTITIONED_TABLES.len());
        assert_eq!(
            detach[0],
            Change::DetachPartition {
                table: "notifications",
                partition: "notifications_it".into()
            }
        );
        assert_eq!(
            detach[1].sql(),
            "ALTER TABLE \"appointment_minutes\" DETACH PARTITION \"appointment_minutes_it\";"
        );
        assert_eq!(
            detach[2].sql(),
            "ALTER TABLE \"invoices\" DETACH PARTITION \"invoices_it\";"
        );
        assert_eq!(
            detach[3].sql(),
            "ALTER TABLE \"vault\".\"patient_history\" DETACH PARTITION \"vault\".\"patient_history_it\";"
        );
        let mixed = observed(&[
            ("practitioners_it", PartitionState::Detached),
            ("audit_it", PartitionState::Attached),
            ("vault.patients_it", PartitionState::Detached),
        ]);
        let drop = partitions("IT", PartitionGoal::Dropped, &mixed);
        assert_eq!(
            drop,
            [
                Change::DropPartition {
                    partition: "vault.patients_it".into()
                },
                Change::DropPartition {
                    partition: "audit_it".into()
                },
                Change::DropPartition {
                    partition: "practitioners_it".into()
                }
            ]
        );
        assert_eq!(drop[0].sql(), "DROP TABLE IF EXISTS \"vault\".\"patients_it\";");
        assert!(partitions("IT", PartitionGoal::Detached, &Observed::default()).is_empty());
    }

    #[test]
    fn pending_migrations_are_listed_in_order() {
        assert_eq!(migrations(&[]).len(), MIGRATIONS.len());
        let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(migrations(&all).is_empty());
        assert_eq!(
            migrations(&[1])[0],
            Change::ApplyMigration {
                version: 2,
                name: "booking_constraints"
            }
        );
        assert_eq!(migrations(&[1]).len(), MIGRATIONS.len() - 1);
    }
}
