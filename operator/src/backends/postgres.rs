//! A Region's PostgreSQL database: schema migrations and per-country partitions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use meridian_shared::schema::{self, MigrationError};
pub use meridian_shared::tls::DbUrlError;
use meridian_shared::tls::pg_options;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

use crate::plan::{Change, Observed, PartitionState};
use crate::providers::ConnectionUrl;

/// Advisory lock key that serialises partition DDL within one database.
const PARTITION_LOCK_KEY: i64 = 0x4d45_5250_4152_5449; // "MERPARTI"

/// Pools of the Regions' databases, one per connection URL and CA, created on first use.
#[derive(Default)]
pub struct Databases {
    pools: Mutex<HashMap<ConnectionUrl, PgPool>>,
}

impl Databases {
    /// The database behind `url`. The pool connects lazily; the first query reports an
    /// unreachable server within a few seconds. Off this machine, every connection
    /// verifies the server's certificate and host name (against the system's roots and
    /// the URL's CA); a URL asking for less is refused (see [`meridian_shared::tls`]).
    pub fn get(&self, url: &ConnectionUrl) -> Result<RegionDb, DbUrlError> {
        let mut pools = self.pools.lock().expect("pool map lock");
        if let Some(pool) = pools.get(url) {
            return Ok(RegionDb { pool: pool.clone() });
        }
        let options = pg_options(url.as_str(), url.ca())?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.application_name("meridian-control-plane"));
        pools.insert(url.clone(), pool.clone());
        Ok(RegionDb { pool })
    }

    /// Closes and forgets the pools for `url` (a Region that went away), whatever CA.
    pub async fn forget(&self, url: &ConnectionUrl) {
        let pools: Vec<PgPool> = {
            let mut map = self.pools.lock().expect("pool map lock");
            let gone: Vec<ConnectionUrl> = map.keys().filter(|k| k.as_str() == url.as_str()).cloned().collect();
            gone.iter().filter_map(|k| map.remove(k)).collect()
        };
        for pool in pools {
            pool.close().await;
        }
    }
}

/// Failures talking to a Region's database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot reach the database: {0}")]
    Unreachable(#[source] sqlx::Error),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("failed to {change}: {source}")]
    Apply { change: String, source: sqlx::Error },
}

/// One Region's database.
#[derive(Clone)]
pub struct RegionDb {
    pool: PgPool,
}

impl RegionDb {
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<i64>, DbError> {
        let mut conn = self.pool.acquire().await.map_err(DbError::Unreachable)?;
        Ok(schema::migrate(&mut conn).await?)
    }

    /// Versions of the migrations already applied.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, DbError> {
        let mut conn = self.pool.acquire().await.map_err(DbError::Unreachable)?;
        let applied = schema::applied_versions(&mut conn).await?;
        schema::check_applied(&applied)?;
        Ok(applied.into_iter().map(|(v, _)| v).collect())
    }

    /// What the database holds of country `code`: its partitions and their constraints.
    pub async fn observe(&self, code: &str) -> Result<Observed, DbError> {
        let names = crate::plan::partition_names(code);
        let rows: Vec<(String, bool, Option<String>)> = sqlx::query_as(
            "SELECT c.relname::text, c.relispartition, k.conname::text
               FROM pg_class c
               LEFT JOIN pg_constraint k ON k.conrelid = c.oid
              WHERE c.relnamespace = 'public'::regnamespace
                AND c.relkind IN ('r', 'p')
                AND c.relname = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::Unreachable)?;
        let mut observed = Observed::default();
        for (name, attached, constraint) in rows {
            let state = if attached {
                PartitionState::Attached
            } else {
                PartitionState::Detached
            };
            observed.partitions.insert(name, state);
            observed.constraints.extend(constraint);
        }
        Ok(observed)
    }

    /// Applies `changes` in one transaction: all of them or none. Migrations in the list are
    /// applied first through the migration runner, which records them.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), DbError> {
        if changes.iter().any(|c| matches!(c, Change::ApplyMigration { .. })) {
            self.migrate().await?;
        }
        let ddl: Vec<&Change> = changes
            .iter()
            .filter(|c| !matches!(c, Change::ApplyMigration { .. }))
            .collect();
        if ddl.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(DbError::Unreachable)?;
        // One partition change at a time per database: a Country being created and another
        // being detached take the parent tables' locks in opposite orders.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(DbError::Unreachable)?;
        for change in ddl {
            sqlx::raw_sql(AssertSqlSafe(change.sql()))
                .execute(&mut *tx)
                .await
                .map_err(|source| DbError::Apply {
                    change: describe(change),
                    source,
                })?;
        }
        tx.commit().await.map_err(DbError::Unreachable)?;
        Ok(())
    }
}

fn describe(change: &Change) -> String {
    match change {
        Change::ApplyMigration { version, name } => format!("apply migration {version} ({name})"),
        Change::CreatePartition { partition, .. } => format!("create partition {partition}"),
        Change::AttachPartition { partition, .. } => format!("attach partition {partition}"),
        Change::DetachPartition { partition, .. } => format!("detach partition {partition}"),
        Change::DropPartition { partition } => format!("drop partition {partition}"),
        Change::AddConstraint { constraint, .. } => format!("add constraint {constraint}"),
    }
}
