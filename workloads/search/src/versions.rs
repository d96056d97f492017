//! Index versions of a country: `practitioners_{cc}` points at the version built with the
//! country's current settings. A change of settings builds the next version from PostgreSQL
//! (the source of truth), swaps the alias in one step and drops the old version, so
//! searches never fail during the change.
//!
//! The new version is filled twice: before the swap, and again after it. Until the swap,
//! the indexer writes practitioner changes through the alias into the old version (or
//! skips them while no alias exists); every such change committed before the swap, so the
//! second pass, which starts after it, reads it from the database. Changes after the swap
//! reach the new version through the alias. Writes are idempotent by practitioner version,
//! so the passes and the indexer never undo each other.

use sqlx::PgPool;
use uuid::Uuid;

use crate::Backend;
use crate::model::{Document, IndexSettings, SearchError, alias, version_of, versioned};

/// Practitioners read from the database per batch.
const BATCH: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("cannot read practitioners of {country} from the database: {error}")]
    Database { country: String, error: sqlx::Error },
}

/// What [`ensure`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ensured {
    /// The versioned index the alias points to.
    pub index: String,
    /// Whether this call built it.
    pub built: bool,
    /// Documents written while building (0 when nothing was built).
    pub documents: usize,
}

/// Makes the alias of country `code` point at an index built with `settings`, building a
/// new version when needed, and drops every other version.
pub async fn ensure(
    backend: &Backend,
    pool: &PgPool,
    code: &str,
    settings: &IndexSettings,
) -> Result<Ensured, VersionError> {
    let alias = alias(code);
    if let Some(current) = backend.resolve(&alias).await?
        && current.fingerprint == settings.fingerprint()
    {
        drop_others(backend, &alias, &current.index).await?;
        return Ok(Ensured {
            index: current.index,
            built: false,
            documents: 0,
        });
    }
    let next = backend
        .versions(&alias)
        .await?
        .iter()
        .filter_map(|index| version_of(code, index))
        .max()
        .unwrap_or(0)
        + 1;
    let index = versioned(code, next);
    backend.create_index(&index, settings).await?;
    let documents = copy(backend, pool, code, &index).await?;
    backend.point_alias(&alias, &index).await?;
    copy(backend, pool, code, &index).await?;
    drop_others(backend, &alias, &index).await?;
    Ok(Ensured {
        index,
        built: true,
        documents,
    })
}

/// Deletes `index`, one version of country `code`'s index that its Country created
/// (`deletionPolicy: Delete`); the alias goes with it when it pointed there. An index that is
/// not a version of `code`, or is gone already, is left alone.
pub async fn remove_version(backend: &Backend, code: &str, index: &str) -> Result<(), SearchError> {
    if version_of(code, index).is_none() {
        return Ok(());
    }
    if backend.versions(&alias(code)).await?.iter().any(|v| v == index) {
        backend.delete_index(index).await?;
    }
    Ok(())
}

async fn drop_others(backend: &Backend, alias: &str, keep: &str) -> Result<(), SearchError> {
    for index in backend.versions(alias).await? {
        if index != keep {
            backend.delete_index(&index).await?;
        }
    }
    Ok(())
}

type Row = (Uuid, String, String, String, String, String, Vec<String>, bool, i64);

/// A page of country `code`'s practitioners as documents, in ID order after `after`.
pub async fn practitioners(pool: &PgPool, code: &str, after: Uuid, limit: i64) -> Result<Vec<Document>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, country_code, given_name, family_name, specialty, city, languages, active, version
           FROM practitioners WHERE country_code = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(code.to_ascii_uppercase())
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(document).collect())
}

/// Writes every practitioner of country `code` into `index`; returns how many.
async fn copy(backend: &Backend, pool: &PgPool, code: &str, index: &str) -> Result<usize, VersionError> {
    let mut after = Uuid::nil();
    let mut total = 0;
    loop {
        let docs = practitioners(pool, code, after, BATCH)
            .await
            .map_err(|error| VersionError::Database {
                country: code.to_string(),
                error,
            })?;
        let Some(last) = docs.last() else {
            return Ok(total);
        };
        after = last.id;
        total += docs.len();
        backend.fill(index, &docs).await?;
    }
}

fn document((id, country_code, given_name, family_name, specialty, city, languages, active, version): Row) -> Document {
    Document {
        id,
        country_code,
        given_name,
        family_name,
        specialty,
        city,
        languages,
        active,
        version,
    }
}
