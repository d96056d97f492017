//! The registrar: keeps the PatientIndex's entries of this Region's patients current. It
//! follows the Region's `patient-events` outbox and, for each Patient event of a linked
//! country, reads the patient's current vault row, hashes their national IDs (those of the
//! country's `nationalIdSystem`, checked against its pattern) and makes the index hold
//! exactly those for the patient; a deleted patient leaves the index. Reading the current
//! row rather than the event makes it idempotent and order-proof: a replay, or events read
//! out of order, end in the same entries.
//!
//! It starts, with no stored position, at the outbox's first event: a Region that joins the
//! index registers the patients it already has. Its position moves only while the Region
//! is linked, so nothing is passed over while it is not.

use std::time::Duration;

use meridian_shared::outbox::{Consumer, PATIENT_EVENTS};
use sqlx::PgPool;
use uuid::Uuid;

use super::link::IndexLink;
use crate::http::{Countries, CountryEntry};
use crate::mpi::{self, NationalId};

/// When a vault row was deleted, if it was.
type Deleted = Option<chrono::DateTime<chrono::Utc>>;
/// A vault row as the registrar reads it: version, deletion, key id, sealed bytes.
type VaultRow = (i64, Deleted, String, Vec<u8>);

/// The registrar's name among the outbox's consumers.
pub const REGISTRAR: &str = "mpi-registrar";
/// Events read per step.
const BATCH: i64 = 500;
/// How often the outbox is read when there was nothing new.
const POLL: Duration = Duration::from_millis(100);

/// Why a step stopped; the events are read again on the next one.
#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    #[error("the Region's database: {0}")]
    Region(sqlx::Error),
    #[error("the PatientIndex's database: {0}")]
    Index(sqlx::Error),
}

/// What one [`Registrar::step`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Patients whose entries were brought in line.
    pub patients: usize,
    /// Patients left as they were: their vault row does not open (a missing data key), or
    /// their country has no keys here. Logged by client ID.
    pub skipped: usize,
}

/// One Region's registrar.
pub struct Registrar {
    clinical: PgPool,
    vault: PgPool,
    countries: Countries,
    link: IndexLink,
    region: String,
    consumer: Option<Consumer>,
}

impl Registrar {
    /// The registrar of Region `region`: reads the outbox as the workload role (`clinical`),
    /// the patients as the vault role (`vault`), with the keys of `countries`.
    pub fn new(clinical: PgPool, vault: PgPool, countries: Countries, link: IndexLink, region: &str) -> Self {
        Self {
            clinical,
            vault,
            countries,
            link,
            region: region.to_string(),
            consumer: None,
        }
    }

    /// Registers what is new in the outbox, if the Region is linked.
    pub async fn step(&mut self) -> Result<Step, RegistrarError> {
        let Some(linked) = self.link.get() else {
            return Ok(Step::default());
        };
        if self.consumer.is_none() {
            self.consumer = Some(
                Consumer::start(&self.clinical, PATIENT_EVENTS, REGISTRAR)
                    .await
                    .map_err(RegistrarError::Region)?,
            );
        }
        let consumer = self.consumer.as_mut().expect("started above");
        let batch = consumer
            .next(&self.clinical, BATCH)
            .await
            .map_err(RegistrarError::Region)?;
        let step = Patients {
            vault: &self.vault,
            countries: &self.countries,
            region: &self.region,
        }
        .register(&linked, &batch)
        .await?;
        consumer
            .done(&self.clinical, &batch)
            .await
            .map_err(RegistrarError::Region)?;
        Ok(step)
    }

    /// Steps for ever; failures are logged and retried.
    pub async fn run(mut self) {
        loop {
            match self.step().await {
                Ok(step) if step.patients + step.skipped > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(region = %self.region, error = %e, "PatientIndex registrar; retrying"),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// What registering a batch reads: the patients' vault rows and their countries' keys.
struct Patients<'a> {
    vault: &'a PgPool,
    countries: &'a Countries,
    region: &'a str,
}

impl Patients<'_> {
    /// Brings the entries of the patients of `batch` in line.
    async fn register(
        &self,
        linked: &super::link::Linked,
        batch: &meridian_shared::outbox::Batch,
    ) -> Result<Step, RegistrarError> {
        let mut step = Step::default();
        let mut seen = std::collections::BTreeSet::new();
        for row in &batch.rows {
            if !row.event_type.starts_with("patient.") || !linked.link.links(&row.country_code) {
                continue;
            }
            // One look per patient per batch: the current row says it all.
            if !seen.insert((row.country_code.clone(), row.aggregate_id)) {
                continue;
            }
            match self.national_ids(&row.country_code, row.aggregate_id).await? {
                Some(ids) => {
                    mpi::register(
                        &linked.index,
                        &linked.link.keys,
                        &row.country_code,
                        self.region,
                        row.aggregate_id,
                        &ids,
                        false,
                    )
                    .await
                    .map_err(RegistrarError::Index)?;
                    step.patients += 1;
                }
                None => step.skipped += 1,
            }
        }
        Ok(step)
    }

    /// The national IDs patient `client_id` of `country` has now (none once deleted); `None`
    /// when that cannot be told here.
    async fn national_ids(&self, country: &str, client_id: Uuid) -> Result<Option<Vec<NationalId>>, RegistrarError> {
        let Some(entry) = self.countries.get(&country.to_ascii_lowercase()) else {
            tracing::warn!(country, %client_id, "registrar: the country is not served here");
            return Ok(None);
        };
        let row: Option<VaultRow> = sqlx::query_as(
            "SELECT version, deleted_at, key_id, sealed FROM vault.patients WHERE country_code = $1 AND client_id = $2",
        )
        .bind(country)
        .bind(client_id)
        .fetch_optional(self.vault)
        .await
        .map_err(RegistrarError::Region)?;
        // Unknown or deleted: the patient leaves the index.
        let Some((version, None, key_id, sealed)) = row else {
            return Ok(Some(Vec::new()));
        };
        Ok(national_ids_of(&entry, client_id, version, &key_id, &sealed))
    }
}

/// The national IDs the vault row (`version`, `key_id`, `sealed`) of patient `client_id` of
/// `entry`'s country holds: those of the country's `nationalIdSystem` that match its
/// pattern. `None` when that cannot be told: no data keys, or a row that does not open.
pub fn national_ids_of(
    entry: &CountryEntry,
    client_id: Uuid,
    version: i64,
    key_id: &str,
    sealed: &[u8],
) -> Option<Vec<NationalId>> {
    let country = &entry.rules.code;
    let ring = match &entry.keys {
        Ok(ring) => ring,
        Err(e) => {
            tracing::warn!(country, %client_id, error = %e, "registrar: no data keys");
            return None;
        }
    };
    let body = match crate::store::open_row(ring, client_id, version, key_id, sealed) {
        Ok((_, body)) => body,
        Err(e) => {
            tracing::warn!(country, %client_id, error = %e, "registrar: the vault row does not open");
            return None;
        }
    };
    let terms = crate::validate::stored_patient_terms(&body).ok()?;
    let system = entry.rules.national_id_system.as_deref().unwrap_or_default();
    Some(
        terms
            .identifiers
            .iter()
            .filter(|(s, _)| !system.is_empty() && s == system)
            .filter_map(|(s, value)| NationalId::checked(&entry.rules, s, value).ok())
            .collect(),
    )
}

/// What [`register_country`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registered {
    /// Patients whose entries are now under the active key (or who hold no national ID).
    pub patients: u64,
    /// Patients left as they were: their rows do not open here.
    pub skipped: Vec<Uuid>,
}

/// Patients read per page by [`register_country`].
const PAGE: i64 = 500;

/// Registers every patient of `entry`'s country kept in `vault` (Region `region`) under the
/// index's active key, in pages: the re-key of a country, and the registration of patients
/// who were there before the index. `only` limits it to those client IDs; `keep_older` keeps
/// entries under older keys (see [`crate::mpi::register`]).
pub async fn register_country(
    vault: &PgPool,
    entry: &CountryEntry,
    index: &PgPool,
    keys: &crate::mpi::IndexKeys,
    region: &str,
    only: Option<&[Uuid]>,
    keep_older: bool,
) -> Result<Registered, RegistrarError> {
    let country = &entry.rules.code;
    let mut done = Registered::default();
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<(Uuid, i64, Deleted, String, Vec<u8>)> = sqlx::query_as(
            "SELECT client_id, version, deleted_at, key_id, sealed FROM vault.patients
              WHERE country_code = $1 AND client_id > $2 AND ($4::uuid[] IS NULL OR client_id = ANY($4))
              ORDER BY client_id LIMIT $3",
        )
        .bind(country)
        .bind(after)
        .bind(PAGE)
        .bind(only)
        .fetch_all(vault)
        .await
        .map_err(RegistrarError::Region)?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        for (client_id, version, deleted, key_id, sealed) in rows {
            let ids = if deleted.is_some() {
                Some(Vec::new())
            } else {
                national_ids_of(entry, client_id, version, &key_id, &sealed)
            };
            match ids {
                Some(ids) => {
                    crate::mpi::register(index, keys, country, region, client_id, &ids, keep_older)
                        .await
                        .map_err(RegistrarError::Index)?;
                    done.patients += 1;
                }
                None => done.skipped.push(client_id),
            }
        }
    }
    Ok(done)
}
