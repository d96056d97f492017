//! The changes a reconcile would make, computed before anything is touched. Pure: the
//! planners take the observed state and return a list; the backends apply it.

use std::collections::BTreeMap;
use std::fmt;

use meridian_shared::schema::{MIGRATIONS, PARTITIONED_TABLES, partition_name};

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
}

impl Change {
    /// The SQL that makes the change. Codes and names come from validated specs and the
    /// schema's own table list, so they are safe to splice into DDL.
    pub fn sql(&self) -> String {
        match self {
            Change::ApplyMigration { version, name } => format!("-- migration {version:04}_{name}.sql"),
            Change::CreatePartition { table, partition, code } => {
                format!("CREATE TABLE IF NOT EXISTS \"{partition}\" PARTITION OF \"{table}\" FOR VALUES IN ('{code}');")
            }
            Change::AttachPartition { table, partition, code } => {
                format!("ALTER TABLE \"{table}\" ATTACH PARTITION \"{partition}\" FOR VALUES IN ('{code}');")
            }
            Change::DetachPartition { table, partition } => {
                format!("ALTER TABLE \"{table}\" DETACH PARTITION \"{partition}\";")
            }
            Change::DropPartition { partition } => format!("DROP TABLE IF EXISTS \"{partition}\";"),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sigil = match self {
            Change::ApplyMigration { .. } | Change::CreatePartition { .. } => '+',
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

/// Changes that bring country `code`'s partitions to `goal`, given what exists.
/// `observed` maps partition names to their state; a name it lacks is missing.
pub fn partitions(code: &str, goal: PartitionGoal, observed: &BTreeMap<String, PartitionState>) -> Vec<Change> {
    let state = |partition: &str| observed.get(partition).copied().unwrap_or(PartitionState::Missing);
    let tables: Box<dyn Iterator<Item = &&'static str>> = match goal {
        PartitionGoal::Present => Box::new(PARTITIONED_TABLES.iter()),
        // Tear down in reverse dependency order.
        PartitionGoal::Detached | PartitionGoal::Dropped => Box::new(PARTITIONED_TABLES.iter().rev()),
    };
    tables
        .filter_map(|&table| {
            let partition = partition_name(table, code);
            let code = code.to_string();
            match (goal, state(&partition)) {
                (PartitionGoal::Present, PartitionState::Missing) => {
                    Some(Change::CreatePartition { table, partition, code })
                }
                (PartitionGoal::Present, PartitionState::Detached) => {
                    Some(Change::AttachPartition { table, partition, code })
                }
                (PartitionGoal::Detached, PartitionState::Attached) => {
                    Some(Change::DetachPartition { table, partition })
                }
                (PartitionGoal::Dropped, PartitionState::Attached | PartitionState::Detached) => {
                    Some(Change::DropPartition { partition })
                }
                _ => None,
            }
        })
        .collect()
}

/// The partition names a Country owns, in table order.
pub fn partition_names(code: &str) -> Vec<String> {
    PARTITIONED_TABLES.iter().map(|t| partition_name(t, code)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(pairs: &[(&str, PartitionState)]) -> BTreeMap<String, PartitionState> {
        pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    #[test]
    fn a_new_country_gets_one_partition_per_table() {
        let changes = partitions("DE", PartitionGoal::Present, &BTreeMap::new());
        let sql: Vec<String> = changes.iter().map(Change::sql).collect();
        assert_eq!(
            sql,
            [
                "CREATE TABLE IF NOT EXISTS \"practitioners_de\" PARTITION OF \"practitioners\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"availability_de\" PARTITION OF \"availability\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"appointments_de\" PARTITION OF \"appointments\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"outbox_de\" PARTITION OF \"outbox\" FOR VALUES IN ('DE');",
                "CREATE TABLE IF NOT EXISTS \"audit_de\" PARTITION OF \"audit\" FOR VALUES IN ('DE');",
            ]
        );
    }

    #[test]
    fn a_current_country_needs_nothing() {
        let all = partition_names("FR")
            .into_iter()
            .map(|n| (n, PartitionState::Attached))
            .collect();
        assert!(partitions("FR", PartitionGoal::Present, &all).is_empty());
    }

    #[test]
    fn retained_partitions_are_reattached_when_the_country_comes_back() {
        let seen = observed(&[
            ("practitioners_es", PartitionState::Detached),
            ("audit_es", PartitionState::Attached),
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
        assert_eq!(changes.len(), 4, "{changes:?}");
    }

    #[test]
    fn retain_detaches_in_reverse_order_and_delete_drops_detached_ones_too() {
        let all: BTreeMap<_, _> = partition_names("IT")
            .into_iter()
            .map(|n| (n, PartitionState::Attached))
            .collect();
        let detach = partitions("IT", PartitionGoal::Detached, &all);
        assert_eq!(detach.len(), 5);
        assert_eq!(
            detach[0],
            Change::DetachPartition {
                table: "audit",
                partition: "audit_it".into()
            }
        );
        let mixed = observed(&[
            ("practitioners_it", PartitionState::Detached),
            ("audit_it", PartitionState::Attached),
        ]);
        let drop = partitions("IT", PartitionGoal::Dropped, &mixed);
        assert_eq!(
            drop,
            [
                Change::DropPartition {
                    partition: "audit_it".into()
                },
                Change::DropPartition {
                    partition: "practitioners_it".into()
                }
            ]
        );
        assert!(partitions("IT", PartitionGoal::Detached, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn pending_migrations_are_listed_in_order() {
        assert_eq!(migrations(&[]).len(), MIGRATIONS.len());
        let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(migrations(&all).is_empty());
    }
}
