//! Per-country practitioner search. Each country has its own index, `practitioners_{cc}`: an
//! alias over a versioned index (`practitioners_{cc}_v{N}`) built with the country's
//! language analyzer and synonyms. Two backends answer the same calls: [`embedded::Engine`]
//! (tantivy, one directory per index, used by `meridian dev`) and [`opensearch::OpenSearch`]
//! (its REST API, used in a cluster). [`versions::ensure`] builds and swaps index versions
//! from PostgreSQL, the source of truth; [`indexer`] keeps them current from the outbox.
//! [`bench`] is its benchmark (`meridian bench search`).

pub mod analysis;
pub mod bench;
pub mod embedded;
pub mod indexer;
pub mod model;
pub mod opensearch;
pub mod versions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use model::{Document, Hit, Hits, IndexSettings, Language, Query, Resolved, SearchError, alias, versioned};

/// Calls that change an index (create, fill, upsert, delete, alias moves), through any
/// backend, since the process started: a resync with nothing changed makes none.
static INDEX_WRITES: AtomicU64 = AtomicU64::new(0);

/// How many index-changing calls this process has made ([`INDEX_WRITES`]).
pub fn index_writes() -> u64 {
    INDEX_WRITES.load(Ordering::Relaxed)
}

fn wrote() {
    INDEX_WRITES.fetch_add(1, Ordering::Relaxed);
}

/// A search backend: the same calls whichever engine holds the indexes.
#[derive(Clone)]
pub enum Backend {
    Embedded(Arc<embedded::Engine>),
    OpenSearch(Arc<opensearch::OpenSearch>),
}

impl Backend {
    /// Whether the backend answers: the embedded engine always does; OpenSearch is asked
    /// for its cluster health.
    pub async fn health(&self) -> Result<String, SearchError> {
        match self {
            Backend::Embedded(_) => Ok("ready".into()),
            Backend::OpenSearch(o) => o.health().await,
        }
    }

    /// The versioned index `alias` points to, if any.
    pub async fn resolve(&self, alias: &str) -> Result<Option<Resolved>, SearchError> {
        match self {
            Backend::Embedded(e) => e.resolve(alias).await,
            Backend::OpenSearch(o) => o.resolve(alias).await,
        }
    }

    /// Creates `index` with `settings`; an existing index of that name is left as it is.
    pub async fn create_index(&self, index: &str, settings: &IndexSettings) -> Result<(), SearchError> {
        wrote();
        match self {
            Backend::Embedded(e) => e.create_index(index, settings).await,
            Backend::OpenSearch(o) => o.create_index(index, settings).await,
        }
    }

    /// Points `alias` at `index` and away from any other index, in one atomic step.
    pub async fn point_alias(&self, alias: &str, index: &str) -> Result<(), SearchError> {
        wrote();
        match self {
            Backend::Embedded(e) => e.point_alias(alias, index).await,
            Backend::OpenSearch(o) => o.point_alias(alias, index).await,
        }
    }

    /// Deletes `index`; one that does not exist is not an error.
    pub async fn delete_index(&self, index: &str) -> Result<(), SearchError> {
        wrote();
        match self {
            Backend::Embedded(e) => e.delete_index(index).await,
            Backend::OpenSearch(o) => o.delete_index(index).await,
        }
    }

    /// Every versioned index of `alias` (`{alias}_v{N}`), whether the alias points at it or not.
    pub async fn versions(&self, alias: &str) -> Result<Vec<String>, SearchError> {
        match self {
            Backend::Embedded(e) => e.versions(alias).await,
            Backend::OpenSearch(o) => o.versions(alias).await,
        }
    }

    /// Writes `docs` through `alias` (refused with [`SearchError::NoSuchIndex`] when the alias
    /// does not exist, never creating an index); a document whose stored version is as new
    /// or newer is left alone.
    pub async fn upsert(&self, alias: &str, docs: &[Document]) -> Result<(), SearchError> {
        wrote();
        match self {
            Backend::Embedded(e) => e.upsert(alias, docs).await,
            Backend::OpenSearch(o) => o.upsert(alias, docs).await,
        }
    }

    /// [`Backend::upsert`] into the named versioned index (which must exist), while it is
    /// being built.
    pub async fn fill(&self, index: &str, docs: &[Document]) -> Result<(), SearchError> {
        wrote();
        match self {
            Backend::Embedded(e) => e.fill(index, docs).await,
            Backend::OpenSearch(o) => o.fill(index, docs).await,
        }
    }

    /// Active practitioners matching `query` in the index behind `alias`.
    pub async fn search(&self, alias: &str, query: &Query) -> Result<Hits, SearchError> {
        match self {
            Backend::Embedded(e) => e.search(alias, query).await,
            Backend::OpenSearch(o) => o.search(alias, query).await,
        }
    }
}
