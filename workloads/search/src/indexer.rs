//! The search indexer: follows a Region database's outbox in order and writes each
//! `practitioner.*` event's practitioner into their country's index. At least once, and
//! idempotent: a document carries the practitioner's version, and an index never lets an
//! older or equal version replace a newer one, so a replay after a crash changes nothing.
//!
//! Its position is kept in `outbox_consumers`: a snapshot such that every event whose
//! transaction it sees has been written (see [`meridian_shared::outbox::Follower`]). An event
//! is read when its transaction's commit becomes visible, however late that is; a restart
//! reads again what came after the stored snapshot, which idempotency makes harmless.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_shared::outbox::{Follower, PRACTITIONER_EVENTS, Snapshot};
use serde::Deserialize;
use sqlx::PgPool;

use crate::Backend;
use crate::model::{Document, SearchError, alias};

/// How often the outbox is read when there was nothing new.
const POLL: Duration = Duration::from_millis(100);
/// Events read per step.
const BATCH: i64 = 5000;
/// How often a position that moved without new events is stored: it only shortens what a
/// restart reads again.
const SAVE_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    #[error("cannot read the outbox: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot write to the index of {country}: {error}")]
    Search { country: String, error: SearchError },
}

/// One consumer of one Region database's outbox.
pub struct Indexer {
    pool: PgPool,
    backend: Backend,
    consumer: String,
    follower: Follower,
    /// When the position was last stored.
    saved: Option<Instant>,
}

/// What one [`Indexer::step`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Practitioner documents written (or found already current).
    pub documents: usize,
    /// Countries whose events waited because their index does not exist yet: building it
    /// reads them from the database.
    pub skipped_countries: Vec<String>,
}

impl Indexer {
    /// The indexer named `consumer`, from where it last stopped.
    pub async fn start(pool: PgPool, backend: Backend, consumer: &str) -> Result<Self, IndexerError> {
        let stored: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT position, snapshot::text FROM outbox_consumers WHERE consumer = $1")
                .bind(consumer)
                .fetch_optional(&pool)
                .await?;
        let (legacy_after, snapshot) = stored.unwrap_or((0, None));
        let snapshot = snapshot
            .map(|s| s.parse::<Snapshot>())
            .transpose()
            .map_err(|e| IndexerError::Database(sqlx::Error::Decode(Box::new(e))))?;
        // Without a snapshot, the stored ID is where a consumer of the days before
        // transaction IDs were recorded stopped: the rows of those days above it are new.
        Ok(Self {
            pool,
            backend,
            consumer: consumer.to_string(),
            follower: Follower::new(PRACTITIONER_EVENTS, snapshot, legacy_after),
            saved: None,
        })
    }

    /// Where the indexer stands: every event whose transaction this snapshot sees is
    /// written. `None` until its first read of the outbox is done.
    pub fn position(&self) -> Option<&Snapshot> {
        self.follower.position()
    }

    /// Reads what is new in the outbox, writes it to the indexes and moves the position.
    pub async fn step(&mut self) -> Result<Step, IndexerError> {
        let batch = self.follower.next(&self.pool, BATCH).await?;
        let mut step = Step::default();
        let mut by_country: BTreeMap<String, Vec<Document>> = BTreeMap::new();
        for row in &batch.rows {
            // Every practitioner event carries the whole practitioner at its new version.
            if let Ok(doc) = Document::deserialize(&row.payload) {
                by_country.entry(row.country_code.clone()).or_default().push(doc);
            }
        }
        for (country, docs) in by_country {
            match self.backend.upsert(&alias(&country), &docs).await {
                Ok(()) => step.documents += docs.len(),
                Err(SearchError::NoSuchIndex(_)) => step.skipped_countries.push(country),
                Err(error) => return Err(IndexerError::Search { country, error }),
            }
        }
        self.follower.done(&batch);
        let last_id = batch.rows.last().map_or(0, |r| r.id);
        let due = batch.rows.is_empty() && self.saved.is_some_and(|at| at.elapsed() < SAVE_IDLE);
        if let Some(position) = self.follower.position().filter(|_| !due) {
            // Replicas share the row: a snapshot never replaces a newer one (a later
            // snapshot's xmax is never lower).
            sqlx::query(
                "INSERT INTO outbox_consumers (consumer, position, snapshot) VALUES ($1, $2, $3::text::pg_snapshot)
                 ON CONFLICT (consumer) DO UPDATE
                     SET position = greatest(outbox_consumers.position, EXCLUDED.position),
                         snapshot = CASE
                             WHEN outbox_consumers.snapshot IS NULL
                               OR pg_snapshot_xmax(outbox_consumers.snapshot) <= pg_snapshot_xmax(EXCLUDED.snapshot)
                             THEN EXCLUDED.snapshot ELSE outbox_consumers.snapshot END,
                         updated_at = now()",
            )
            .bind(&self.consumer)
            .bind(last_id)
            .bind(position.to_string())
            .execute(&self.pool)
            .await?;
            self.saved = Some(Instant::now());
        }
        Ok(step)
    }

    /// Steps for ever; failures are logged and retried.
    pub async fn run(mut self) {
        loop {
            match self.step().await {
                Ok(step) if step.documents > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(consumer = %self.consumer, error = %e, "search indexer; retrying"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`Indexer::run`] as a task of its own.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }
}
