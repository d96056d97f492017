//! The search indexer: follows a Region database's outbox in order and writes each
//! `practitioner.*` event's practitioner into their country's index. At least once, and
//! idempotent: a document carries the practitioner's version, and an index never lets an
//! older or equal version replace a newer one, so a replay after a crash changes nothing.
//!
//! Its position is kept in `outbox_consumers`. Outbox IDs come from one sequence, and a
//! transaction holding a lower ID can commit after one holding a higher ID: the position
//! does not pass a missing ID until it has been missing for [`GAP_WAIT`] (a rolled-back
//! transaction leaves a gap for ever). Events above a gap are written at once and again
//! after a restart, which idempotency makes harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sqlx::PgPool;

use crate::Backend;
use crate::model::{Document, SearchError, alias};

/// How long a missing outbox ID may hold the position back.
pub const GAP_WAIT: Duration = Duration::from_secs(2);
/// How often the outbox is read when there was nothing new.
const POLL: Duration = Duration::from_millis(100);
/// Events read per step.
const BATCH: i64 = 5000;

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
    /// Every ID up to here is handled.
    contiguous: i64,
    /// IDs above `contiguous` already written.
    written: BTreeSet<i64>,
    gap_since: Option<Instant>,
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

type Row = (i64, String, Option<serde_json::Value>);

impl Indexer {
    /// The indexer named `consumer`, from where it last stopped.
    pub async fn start(pool: PgPool, backend: Backend, consumer: &str) -> Result<Self, IndexerError> {
        let position: Option<i64> = sqlx::query_scalar("SELECT position FROM outbox_consumers WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(&pool)
            .await?;
        Ok(Self {
            pool,
            backend,
            consumer: consumer.to_string(),
            contiguous: position.unwrap_or(0),
            written: BTreeSet::new(),
            gap_since: None,
        })
    }

    /// Where the indexer stands: every outbox ID up to here is handled.
    pub fn position(&self) -> i64 {
        self.contiguous
    }

    /// Reads what is new in the outbox, writes it to the indexes and moves the position.
    pub async fn step(&mut self) -> Result<Step, IndexerError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, country_code, CASE WHEN topic = $2 THEN payload END
               FROM outbox WHERE id > $1 ORDER BY id LIMIT $3",
        )
        .bind(self.contiguous)
        .bind(meridian_shared::outbox::PRACTITIONER_EVENTS)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await?;
        let mut step = Step::default();
        let mut by_country: BTreeMap<String, Vec<Document>> = BTreeMap::new();
        for (id, country, payload) in &rows {
            if self.written.contains(id) {
                continue;
            }
            // Every practitioner event carries the whole practitioner at its new version.
            if let Some(doc) = payload.as_ref().and_then(|p| Document::deserialize(p).ok()) {
                by_country.entry(country.clone()).or_default().push(doc);
            }
        }
        for (country, docs) in by_country {
            match self.backend.upsert(&alias(&country), &docs).await {
                Ok(()) => step.documents += docs.len(),
                Err(SearchError::NoSuchIndex(_)) => step.skipped_countries.push(country),
                Err(error) => return Err(IndexerError::Search { country, error }),
            }
        }
        self.written.extend(rows.iter().map(|r| r.0));
        let before = self.contiguous;
        for (id, _, _) in &rows {
            let next = *id == self.contiguous + 1;
            if next || self.gap_since.get_or_insert_with(Instant::now).elapsed() >= GAP_WAIT {
                self.contiguous = *id;
                self.gap_since = None;
            } else {
                break;
            }
        }
        let contiguous = self.contiguous;
        self.written.retain(|id| *id > contiguous);
        if self.contiguous != before {
            sqlx::query(
                "INSERT INTO outbox_consumers (consumer, position) VALUES ($1, $2)
                 ON CONFLICT (consumer) DO UPDATE
                     SET position = greatest(outbox_consumers.position, EXCLUDED.position), updated_at = now()",
            )
            .bind(&self.consumer)
            .bind(self.contiguous)
            .execute(&self.pool)
            .await?;
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
