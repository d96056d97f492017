//! The search indexer: follows a Region's `practitioner-events` and writes each
//! `practitioner.*` event's practitioner into their country's index. At least once, and
//! idempotent: a document carries the practitioner's version, and an index never lets an
//! older or equal version replace a newer one, so a replay after a crash changes nothing.
//!
//! It reads them from the database's outbox directly ([`Indexer`]: `meridian dev`, and the
//! booking service of a Region without a Kafka), or from the Region's Kafka in its consumer
//! group ([`IndexHandler`], `meridian indexer`).
//!
//! Its position is kept in `outbox_consumers`: a snapshot such that every event whose
//! transaction it sees has been written (see [`meridian_shared::outbox::Follower`]). An event
//! is read when its transaction's commit becomes visible, however late that is; a restart
//! reads again what came after the stored snapshot, which idempotency makes harmless.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_shared::outbox::{Consumer, PRACTITIONER_EVENTS, Snapshot};
use serde::Deserialize;
use sqlx::PgPool;

use crate::Backend;
use crate::model::{Document, SearchError, alias};

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
    consumer: Consumer,
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
        let consumer = Consumer::start(&pool, PRACTITIONER_EVENTS, consumer).await?;
        Ok(Self {
            pool,
            backend,
            consumer,
        })
    }

    /// Where the indexer stands: every event whose transaction this snapshot sees is
    /// written. `None` until its first read of the outbox is done.
    pub fn position(&self) -> Option<&Snapshot> {
        self.consumer.position()
    }

    /// Reads what is new in the outbox, writes it to the indexes and moves the position.
    pub async fn step(&mut self) -> Result<Step, IndexerError> {
        let batch = self.consumer.next(&self.pool, BATCH).await?;
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
        self.consumer.done(&self.pool, &batch).await?;
        Ok(step)
    }

    /// Steps for ever; failures are logged and retried.
    pub async fn run(mut self) {
        loop {
            match self.step().await {
                Ok(step) if step.documents > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(consumer = %self.consumer.name(), error = %e, "search indexer; retrying"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`Indexer::run`] as a task of its own.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }
}

/// The indexer as a consumer of the Region's Kafka: each event's practitioner written to
/// their country's index. The inbox row it leaves makes a redelivered event cost nothing;
/// the versions make one applied twice harmless all the same (the index is written before
/// the inbox row commits).
#[derive(Clone)]
pub struct IndexHandler {
    pub backend: Backend,
}

impl meridian_events::consumer::Handler for IndexHandler {
    fn name(&self) -> &str {
        "search-indexer"
    }

    fn topic(&self) -> &'static str {
        PRACTITIONER_EVENTS
    }

    async fn handle(
        &self,
        _tx: &mut sqlx::PgConnection,
        event: &meridian_events::consumer::Incoming,
    ) -> Result<(), meridian_events::consumer::Failure> {
        use meridian_events::consumer::Failure;
        // Every practitioner event carries the whole practitioner at its new version.
        let doc = Document::deserialize(&event.payload)
            .map_err(|e| Failure::Event(format!("{} payload: {e}", event.event_type)))?;
        match self.backend.upsert(&alias(&doc.country_code), &[doc]).await {
            // Not built yet: building it reads the practitioners from the database.
            Ok(()) | Err(SearchError::NoSuchIndex(_)) => Ok(()),
            Err(e) => Err(Failure::Unavailable(format!("search: {e}"))),
        }
    }
}

/// Options of `meridian indexer`.
#[derive(clap::Args, Clone, Debug)]
pub struct IndexerOptions {
    #[command(flatten)]
    pub worker: meridian_events::worker::WorkerOptions,
    /// The Region's OpenSearch endpoint (the URL of its search Secret).
    #[arg(long, env = "SEARCH_URL")]
    pub search_url: String,
    /// CA certificates (a PEM file) the search endpoint's certificate is verified against.
    #[arg(long, env = "SEARCH_CA_FILE")]
    pub search_ca_file: Option<std::path::PathBuf>,
}

/// `meridian indexer`: keeps the Region's indexes current from its Kafka until Ctrl-C or
/// SIGTERM.
pub async fn run(options: IndexerOptions) -> anyhow::Result<()> {
    let ca = meridian_shared::serve::read_ca(options.search_ca_file.as_deref(), "--search-ca-file")
        .map_err(anyhow::Error::msg)?;
    let client = crate::opensearch::OpenSearch::from_url(&options.search_url, ca.as_deref())
        .map_err(|e| anyhow::anyhow!("--search-url: {e}"))?;
    let backend = Backend::OpenSearch(std::sync::Arc::new(client));
    meridian_events::worker::consume(&options.worker, IndexHandler { backend }).await
}
