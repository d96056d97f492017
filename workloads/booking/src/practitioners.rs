//! Practitioners of one country: create, read, update, list, deactivate, and bulk import
//! idempotent by external ID. Every change writes its `practitioner.*` event to the outbox
//! and an audit record in the same transaction.

use chrono::{DateTime, Utc};
use meridian_shared::outbox;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use crate::Actor;

/// A practitioner as stored and served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Practitioner {
    pub id: Uuid,
    pub country_code: String,
    pub external_id: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub specialty: String,
    pub city: String,
    pub languages: Vec<String>,
    pub active: bool,
    /// Goes up by one with every change; search indexing and optimistic updates use it.
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// The fields a client sends to create or replace a practitioner.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub external_id: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub specialty: String,
    pub city: String,
    #[serde(default)]
    pub languages: Vec<String>,
}

/// One invalid field of a profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl Profile {
    /// Every problem with the profile, empty when it is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut text = |field: &'static str, value: &str, max: usize| {
            if value.trim().is_empty() {
                errors.push(FieldError {
                    field,
                    message: "must not be empty".into(),
                });
            } else if value.chars().count() > max {
                errors.push(FieldError {
                    field,
                    message: format!("must be at most {max} characters"),
                });
            }
        };
        text("givenName", &self.given_name, 100);
        text("familyName", &self.family_name, 100);
        text("specialty", &self.specialty, 100);
        text("city", &self.city, 100);
        if let Some(external) = &self.external_id {
            text("externalId", external, 200);
        }
        let bad_language = self
            .languages
            .iter()
            .find(|l| !(2..=3).contains(&l.len()) || !l.bytes().all(|b| b.is_ascii_lowercase()));
        if let Some(lang) = bad_language {
            errors.push(FieldError {
                field: "languages",
                message: format!("{lang:?} is not an ISO 639 language code"),
            });
        }
        errors
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PractitionerError {
    #[error("invalid practitioner")]
    Invalid(Vec<FieldError>),
    #[error("practitioner {0} not found")]
    NotFound(Uuid),
    #[error("practitioner {id} was changed meanwhile (now at version {current})")]
    VersionMismatch { id: Uuid, current: i64 },
    #[error("external ID {0:?} is already used by another practitioner")]
    DuplicateExternalId(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

const COLUMNS: &str =
    "id, country_code, external_id, given_name, family_name, specialty, city, languages, active, version, updated_at";

pub async fn create(
    pool: &PgPool,
    country: &str,
    profile: &Profile,
    actor: Actor<'_>,
) -> Result<Practitioner, PractitionerError> {
    invalid(profile.validate())?;
    let mut tx = meridian_shared::pool::begin(pool).await?;
    let created: Practitioner = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO practitioners (country_code, id, external_id, given_name, family_name, specialty, city, languages)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    )))
    .bind(country)
    .bind(Uuid::new_v4())
    .bind(&profile.external_id)
    .bind(&profile.given_name)
    .bind(&profile.family_name)
    .bind(&profile.specialty)
    .bind(&profile.city)
    .bind(&profile.languages)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| duplicate(e, profile))?;
    changed(&mut tx, &created, "practitioner.created", "practitioner.create", actor).await?;
    tx.commit().await?;
    Ok(created)
}

pub async fn get(pool: &PgPool, country: &str, id: Uuid) -> Result<Practitioner, PractitionerError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM practitioners WHERE country_code = $1 AND id = $2"
    )))
    .bind(country)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(PractitionerError::NotFound(id))
}

/// Replaces the profile. With `expected_version`, refuses when someone changed it meanwhile.
pub async fn update(
    pool: &PgPool,
    country: &str,
    id: Uuid,
    profile: &Profile,
    expected_version: Option<i64>,
    actor: Actor<'_>,
) -> Result<Practitioner, PractitionerError> {
    invalid(profile.validate())?;
    let mut tx = meridian_shared::pool::begin(pool).await?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT version FROM practitioners WHERE country_code = $1 AND id = $2 FOR UPDATE")
            .bind(country)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let current = current.ok_or(PractitionerError::NotFound(id))?;
    if expected_version.is_some_and(|v| v != current) {
        return Err(PractitionerError::VersionMismatch { id, current });
    }
    let updated: Practitioner = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE practitioners SET external_id = $3, given_name = $4, family_name = $5, specialty = $6, city = $7,
                languages = $8, version = version + 1, updated_at = now()
          WHERE country_code = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(country)
    .bind(id)
    .bind(&profile.external_id)
    .bind(&profile.given_name)
    .bind(&profile.family_name)
    .bind(&profile.specialty)
    .bind(&profile.city)
    .bind(&profile.languages)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| duplicate(e, profile))?;
    changed(&mut tx, &updated, "practitioner.updated", "practitioner.update", actor).await?;
    tx.commit().await?;
    Ok(updated)
}

/// Stops the practitioner taking appointments. Repeating it changes nothing.
pub async fn deactivate(
    pool: &PgPool,
    country: &str,
    id: Uuid,
    actor: Actor<'_>,
) -> Result<Practitioner, PractitionerError> {
    let mut tx = meridian_shared::pool::begin(pool).await?;
    let updated: Option<Practitioner> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE practitioners SET active = false, version = version + 1, updated_at = now()
          WHERE country_code = $1 AND id = $2 AND active RETURNING {COLUMNS}"
    )))
    .bind(country)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(updated) = updated else {
        drop(tx);
        return get(pool, country, id).await;
    };
    changed(
        &mut tx,
        &updated,
        "practitioner.deactivated",
        "practitioner.deactivate",
        actor,
    )
    .await?;
    tx.commit().await?;
    Ok(updated)
}

/// One page of practitioners in ID order, after `after` (the previous page's last ID).
pub async fn list(
    pool: &PgPool,
    country: &str,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Practitioner>, PractitionerError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM practitioners
          WHERE country_code = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    )))
    .bind(country)
    .bind(after)
    .bind(i64::from(limit.clamp(1, 500)))
    .fetch_all(pool)
    .await?)
}

/// Active practitioners of a specialty in a city (both matched without regard to case),
/// at most `limit`, in ID order.
pub async fn matching(
    pool: &PgPool,
    country: &str,
    specialty: &str,
    city: &str,
    limit: u32,
) -> Result<Vec<Practitioner>, PractitionerError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM practitioners
          WHERE country_code = $1 AND active AND lower(specialty) = lower($2) AND lower(city) = lower($3)
          ORDER BY id LIMIT $4"
    )))
    .bind(country)
    .bind(specialty)
    .bind(city)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

/// What a bulk import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Rows refused, by their position in the request; the others were imported.
    pub errors: Vec<RowError>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub row: usize,
    pub field: &'static str,
    pub message: String,
}

/// Imports many profiles at once, idempotent by external ID: a new ID creates, a known one
/// with other fields updates, a known one with the same fields changes nothing. Invalid
/// rows are reported and skipped; the good rows go in together, in one transaction.
pub async fn import(
    pool: &PgPool,
    country: &str,
    rows: &[Profile],
    actor: Actor<'_>,
) -> Result<ImportReport, PractitionerError> {
    let mut report = ImportReport::default();
    let mut seen = std::collections::HashSet::new();
    let mut good: Vec<&Profile> = Vec::new();
    for (row, profile) in rows.iter().enumerate() {
        let mut errors = profile.validate();
        match &profile.external_id {
            None => errors.push(FieldError {
                field: "externalId",
                message: "is required for an import".into(),
            }),
            Some(id) if !seen.insert(id.as_str()) => errors.push(FieldError {
                field: "externalId",
                message: format!("{id:?} appears twice in this import"),
            }),
            Some(_) => {}
        }
        if errors.is_empty() {
            good.push(profile);
        }
        report.errors.extend(errors.into_iter().map(|e| RowError {
            row,
            field: e.field,
            message: e.message,
        }));
    }
    if good.is_empty() {
        return Ok(report);
    }
    let column = |f: fn(&Profile) -> String| good.iter().map(|p| f(p)).collect::<Vec<String>>();
    let languages: Vec<String> = good.iter().map(|p| p.languages.join(",")).collect();
    let mut tx = meridian_shared::pool::begin(pool).await?;
    // One statement for the whole batch. A fresh insert is at version 1, an update above it
    // (`xmax`, the usual tell, is not available on partitioned tables); rows whose fields
    // did not change are not touched, and not returned.
    let written: Vec<Written> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH rows AS (
             SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                 AS r(external_id, given_name, family_name, specialty, city, languages)
         )
         INSERT INTO practitioners AS p (country_code, id, external_id, given_name, family_name, specialty, city, languages)
         SELECT $1, gen_random_uuid(), external_id, given_name, family_name, specialty, city,
                CASE WHEN languages = '' THEN '{{}}'::text[] ELSE string_to_array(languages, ',') END
           FROM rows
         ON CONFLICT (country_code, external_id) DO UPDATE
            SET given_name = EXCLUDED.given_name, family_name = EXCLUDED.family_name,
                specialty = EXCLUDED.specialty, city = EXCLUDED.city, languages = EXCLUDED.languages,
                version = p.version + 1, updated_at = now()
          WHERE (p.given_name, p.family_name, p.specialty, p.city, p.languages)
                IS DISTINCT FROM (EXCLUDED.given_name, EXCLUDED.family_name, EXCLUDED.specialty, EXCLUDED.city, EXCLUDED.languages)
         RETURNING {COLUMNS}, (p.version = 1) AS inserted"
    )))
    .bind(country)
    .bind(column(|p| p.external_id.clone().unwrap_or_default()))
    .bind(column(|p| p.given_name.clone()))
    .bind(column(|p| p.family_name.clone()))
    .bind(column(|p| p.specialty.clone()))
    .bind(column(|p| p.city.clone()))
    .bind(&languages)
    .fetch_all(&mut *tx)
    .await?;
    report.created = written.iter().filter(|w| w.inserted).count() as u64;
    report.updated = written.len() as u64 - report.created;
    report.unchanged = (good.len() - written.len()) as u64;
    let events: Vec<outbox::Event<'_, Practitioner>> = written
        .iter()
        .map(|w| outbox::Event {
            country_code: country,
            topic: outbox::PRACTITIONER_EVENTS,
            event_type: if w.inserted {
                "practitioner.created"
            } else {
                "practitioner.updated"
            },
            key: w.practitioner.id,
            payload: &w.practitioner,
            correlation_id: actor.correlation_id,
        })
        .collect();
    outbox::enqueue_all(&mut tx, &events).await?;
    // One record for the import as a whole: thousands of rows, one request.
    let resource = format!("practitioners/import/{}", actor.correlation_id);
    actor.audit(&mut tx, country, "practitioner.import", &resource).await?;
    tx.commit().await?;
    Ok(report)
}

#[derive(sqlx::FromRow)]
struct Written {
    #[sqlx(flatten)]
    practitioner: Practitioner,
    inserted: bool,
}

pub(crate) fn invalid(errors: Vec<FieldError>) -> Result<(), PractitionerError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PractitionerError::Invalid(errors))
    }
}

fn duplicate(error: sqlx::Error, profile: &Profile) -> PractitionerError {
    let unique = error.as_database_error().is_some_and(|e| e.is_unique_violation());
    match (&profile.external_id, unique) {
        (Some(external), true) => PractitionerError::DuplicateExternalId(external.clone()),
        _ => PractitionerError::Database(error),
    }
}

/// The event and audit record of a change to one practitioner.
async fn changed(
    conn: &mut PgConnection,
    practitioner: &Practitioner,
    event_type: &'static str,
    action: &str,
    actor: Actor<'_>,
) -> Result<(), sqlx::Error> {
    let event = outbox::Event {
        country_code: &practitioner.country_code,
        topic: outbox::PRACTITIONER_EVENTS,
        event_type,
        key: practitioner.id,
        payload: practitioner,
        correlation_id: actor.correlation_id,
    };
    outbox::enqueue(conn, &event).await?;
    let resource = format!("practitioner/{}", practitioner.id);
    actor.audit(conn, &practitioner.country_code, action, &resource).await
}
