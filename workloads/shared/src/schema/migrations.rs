use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A numbered SQL migration. Once landed, a migration is never edited: a change is a new one.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// SHA-256 of the SQL, recorded when applied so that an edited migration is caught.
    pub fn checksum(&self) -> Vec<u8> {
        Sha256::digest(self.sql.as_bytes()).to_vec()
    }
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "platform",
        sql: include_str!("../../migrations/0001_platform.sql"),
    },
    Migration {
        version: 2,
        name: "booking_constraints",
        sql: include_str!("../../migrations/0002_booking_constraints.sql"),
    },
    Migration {
        version: 3,
        name: "audit_chains",
        sql: include_str!("../../migrations/0003_audit_chains.sql"),
    },
    Migration {
        version: 4,
        name: "schedule_version",
        sql: include_str!("../../migrations/0004_schedule_version.sql"),
    },
    Migration {
        version: 5,
        name: "outbox_consumers",
        sql: include_str!("../../migrations/0005_outbox_consumers.sql"),
    },
    Migration {
        version: 6,
        name: "outbox_xid",
        sql: include_str!("../../migrations/0006_outbox_xid.sql"),
    },
    Migration {
        version: 7,
        name: "records",
        sql: include_str!("../../migrations/0007_records.sql"),
    },
    Migration {
        version: 8,
        name: "consent",
        sql: include_str!("../../migrations/0008_consent.sql"),
    },
    Migration {
        version: 9,
        name: "event_backbone",
        sql: include_str!("../../migrations/0009_event_backbone.sql"),
    },
    Migration {
        version: 10,
        name: "billing",
        sql: include_str!("../../migrations/0010_billing.sql"),
    },
    Migration {
        version: 11,
        name: "analytics",
        sql: include_str!("../../migrations/0011_analytics.sql"),
    },
    Migration {
        version: 12,
        name: "notifications",
        sql: include_str!("../../migrations/0012_notifications.sql"),
    },
];

/// Where applied migrations are recorded.
pub const MIGRATIONS_TABLE: &str = "meridian_schema_migrations";

/// Arbitrary but fixed key for the advisory lock that serialises migration runs, so two
/// operators (or an operator and `meridian plan`) never apply the same migration twice.
const MIGRATION_LOCK_KEY: i64 = 0x4d45_5249_4449_414e; // "MERIDIAN"

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("failed to read applied migrations: {0}")]
    Read(#[source] sqlx::Error),
    #[error("failed to apply migration {version} ({name}): {source}")]
    Apply {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },
    #[error("migration {version} ({name}) was changed after it was applied; add a new migration instead")]
    Edited { version: i64, name: &'static str },
    #[error("the database has migration {0}, which this build does not know; it was migrated by a newer Meridian")]
    Unknown(i64),
}

/// Versions already applied, with their checksums, in order. Empty when the database is new.
pub async fn applied_versions(conn: &mut PgConnection) -> Result<Vec<(i64, Vec<u8>)>, MigrationError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&mut *conn)
        .await
        .map_err(MigrationError::Read)?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT version, checksum FROM {MIGRATIONS_TABLE} ORDER BY version"
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(MigrationError::Read)
}

/// Applies the pending migrations, each in its own transaction, under an advisory lock.
/// Returns the versions it applied (empty when the schema was current).
pub async fn migrate(conn: &mut PgConnection) -> Result<Vec<i64>, MigrationError> {
    let apply_err = |m: &Migration| {
        let (version, name) = (m.version, m.name);
        move |source| MigrationError::Apply { version, name, source }
    };
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(MigrationError::Read)?;
    let result = async {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
                version bigint PRIMARY KEY,
                name text NOT NULL,
                checksum bytea NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())"
        )))
        .execute(&mut *conn)
        .await
        .map_err(MigrationError::Read)?;
        let applied = applied_versions(conn).await?;
        check_applied(&applied)?;
        let mut done = Vec::new();
        for migration in MIGRATIONS
            .iter()
            .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        {
            let mut tx = conn.begin().await.map_err(apply_err(migration))?;
            sqlx::raw_sql(migration.sql)
                .execute(&mut *tx)
                .await
                .map_err(apply_err(migration))?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES ($1, $2, $3)"
            )))
            .bind(migration.version)
            .bind(migration.name)
            .bind(migration.checksum())
            .execute(&mut *tx)
            .await
            .map_err(apply_err(migration))?;
            tx.commit().await.map_err(apply_err(migration))?;
            tracing::info!(version = migration.version, name = migration.name, "applied migration");
            done.push(migration.version);
        }
        Ok(done)
    }
    .await;
    // Session-level lock: release it even when a migration failed.
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result
}

/// Refuses a database whose history does not match this build's migrations.
pub fn check_applied(applied: &[(i64, Vec<u8>)]) -> Result<(), MigrationError> {
    for (version, checksum) in applied {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            None => return Err(MigrationError::Unknown(*version)),
            Some(m) if m.checksum() != *checksum => {
                return Err(MigrationError::Edited {
                    version: m.version,
                    name: m.name,
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}
