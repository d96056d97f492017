//! Where resources are kept: clinical resources in `fhir_resources` (current version, with
//! the values search matches on) and `fhir_history` (every version), Patients only in the
//! vault, sealed. Every function works inside the caller's transaction, and every write
//! adds its outbox event and its audit record in the same statement, so the three commit
//! or roll back together. Reads of personal data are audited too.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::dates;
use crate::fhir::{Issue, IssueType, ResourceType};
use crate::keys::Keyring;
use crate::validate::{Checked, Rules, Target};
use crate::vault;

/// Who acts, in which country, under which rules and keys.
pub struct Scope<'a> {
    pub rules: &'a Rules,
    pub ring: &'a Keyring,
    /// The token's subject (for the audit trail).
    pub actor: &'a str,
    pub correlation_id: Uuid,
    /// Where reads are audited.
    pub reads: &'a meridian_shared::audit::ReadLog,
}

impl Scope<'_> {
    pub fn country(&self) -> &str {
        &self.rules.code
    }

    /// The country as an SQL literal, for the hot reads whose plans PostgreSQL keeps only
    /// when the partition is named in their text (see `country_literal`).
    pub fn country_sql(&self) -> Result<String> {
        meridian_shared::schema::country_literal(self.country()).ok_or_else(|| {
            StoreError::Refused(Issue::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                IssueType::Exception,
                "this country's code is not usable",
            ))
        })
    }
}

/// A version of a resource as served.
#[derive(Clone, Debug)]
pub struct Stored {
    pub resource_type: ResourceType,
    pub id: Uuid,
    pub version: i64,
    pub last_updated: DateTime<Utc>,
    /// The resource with `id` and `meta`; None for a deletion.
    pub body: Option<Value>,
}

impl Stored {
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }

    pub fn location(&self) -> String {
        format!("{}/{}/_history/{}", self.resource_type, self.id, self.version)
    }
}

/// A store failure: the database's errors are for the log, under the correlation ID.
#[derive(Debug)]
pub enum StoreError {
    Refused(Issue),
    Database(sqlx::Error),
}

impl From<Issue> for StoreError {
    fn from(issue: Issue) -> Self {
        StoreError::Refused(issue)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<vault::VaultError> for StoreError {
    fn from(e: vault::VaultError) -> Self {
        // A row that does not open is never served half-read.
        tracing::error!(error = %e, "a vault row does not open");
        StoreError::Refused(Issue::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            "this patient's record cannot be opened; the operators have been told",
        ))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Sets `id` and `meta.versionId`/`meta.lastUpdated` on a resource about to be stored.
fn stamp(body: &mut Value, id: Uuid, version: i64, at: DateTime<Utc>) {
    let object = body.as_object_mut().expect("resources are objects");
    object.insert("id".into(), json!(id.to_string()));
    let meta = object.entry("meta").or_insert_with(|| json!({}));
    meta["versionId"] = json!(version.to_string());
    meta["lastUpdated"] = json!(dates::instant(at));
}

/// Now, in microseconds: what timestamptz keeps, so that the stamped body and the column agree.
fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(3)
}

/// The audit action of `what` on a resource type: `observation.create`.
fn action(resource_type: ResourceType, what: &str) -> String {
    format!("{}.{what}", resource_type.as_str().to_ascii_lowercase())
}

/// Checks that every reference names a live resource of the same country.
pub async fn resolve(conn: &mut PgConnection, country: &str, targets: &[Target]) -> Result<()> {
    for target in targets {
        let found: bool = if target.resource_type == ResourceType::Patient {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM patients WHERE country_code = $1 AND client_id = $2
                                   AND version IS NOT NULL AND deleted_at IS NULL)",
            )
            .bind(country)
            .bind(target.id)
            .fetch_one(&mut *conn)
            .await?
        } else {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM fhir_resources WHERE country_code = $1 AND resource_type = $2
                                   AND id = $3 AND deleted_at IS NULL)",
            )
            .bind(country)
            .bind(target.resource_type.as_str())
            .bind(target.id)
            .fetch_one(&mut *conn)
            .await?
        };
        if !found {
            return Err(Issue::invalid(
                IssueType::NotFound,
                format!(
                    "{}/{} is not a {} of {}",
                    target.resource_type,
                    target.id,
                    target.resource_type.as_str().to_ascii_lowercase(),
                    country
                ),
                Some(target.expression.clone()),
            )
            .into());
        }
    }
    Ok(())
}

/// The condition a write's statement carries so that it writes only when every reference
/// names a live resource of the country: one index probe per reference, the referenced id
/// bound from placeholder `$first` on, in the order of `targets`. [`resolve`] says which
/// one failed.
fn references_live(targets: &[Target], first: usize) -> String {
    let probes: Vec<String> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let id = format!("${}", first + i);
            if t.resource_type == ResourceType::Patient {
                format!(
                    "EXISTS (SELECT 1 FROM patients WHERE country_code = $1 AND client_id = {id}
                                AND version IS NOT NULL AND deleted_at IS NULL)"
                )
            } else {
                format!(
                    "EXISTS (SELECT 1 FROM fhir_resources WHERE country_code = $1 AND resource_type = '{}'
                                AND id = {id} AND deleted_at IS NULL)",
                    t.resource_type.as_str()
                )
            }
        })
        .collect();
    if probes.is_empty() {
        "TRUE".into()
    } else {
        probes.join(" AND ")
    }
}

/// The SQL tail every write shares: its outbox event and its audit record, chained after
/// the common table expression `from` (which yields one row when the write happened).
/// Placeholders from `$first` on: country, event type, key, payload, then the audit's.
fn event_and_audit(from: &str, first: usize) -> String {
    let p = |n: usize| format!("${}", first + n);
    let audit = meridian_shared::audit::chain_ctes(from, [&p(0), &p(4), &p(5), &p(6), &p(7), &p(8), &p(9), &p(10)]);
    format!(
        "event AS (
             INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload, correlation_id)
             SELECT {}, '{}', {}, {}, {}, {} FROM {from}
         ),
         {audit}",
        p(0),
        meridian_shared::outbox::PATIENT_EVENTS,
        p(1),
        p(2),
        p(3),
        p(10),
    )
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds what [`event_and_audit`] needs, in its order.
fn bind_event_and_audit<'q>(
    query: Query<'q>,
    scope: &'q Scope<'q>,
    event_type: String,
    key: Uuid,
    payload: Value,
    action: String,
    resource: String,
) -> Query<'q> {
    let record = meridian_shared::audit::Record {
        country_code: scope.country(),
        actor: scope.actor,
        action: &action,
        resource: &resource,
        correlation_id: scope.correlation_id,
    };
    let prepared = meridian_shared::audit::prepare(&record);
    query
        .bind(scope.country())
        .bind(event_type)
        .bind(key)
        .bind(payload)
        .bind(prepared.chain)
        .bind(prepared.payload)
        .bind(prepared.at)
        .bind(scope.actor)
        .bind(action)
        .bind(resource)
        .bind(scope.correlation_id)
}

/// The event's payload: which resource, which version, whose. No content.
fn event_payload(resource_type: ResourceType, id: Uuid, version: i64, patient: Option<Uuid>) -> Value {
    json!({"resourceType": resource_type.as_str(), "id": id, "versionId": version, "patient": patient})
}

/// What a write does: adds a resource, or replaces version `previous` of it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Write {
    Create,
    Update { previous: i64 },
}

/// Writes `checked` as resource `id`: as its version 1, or as the version after `previous`.
/// With its history row, its outbox event and its audit record, in one statement that
/// writes only if every reference resolves and (for an update) the stored version is still
/// `previous`. When it writes nothing, the slower [`why_not_written`] says why.
async fn write(conn: &mut PgConnection, scope: &Scope<'_>, checked: Checked, id: Uuid, how: Write) -> Result<Stored> {
    let (version, method, verb, happened) = match how {
        Write::Create => (1, "POST", "create", "created"),
        Write::Update { previous } => (previous + 1, "PUT", "update", "updated"),
    };
    let at = now();
    let mut body = checked.body;
    stamp(&mut body, id, version, at);
    let resource_type = checked.resource_type;
    let event_type = format!("{}.{happened}", resource_type.as_str().to_ascii_lowercase());
    let written = if resource_type == ResourceType::Patient {
        let (terms, account) = checked.patient.as_ref().expect("a Patient's terms");
        let plaintext = serde_json::to_vec(&body).expect("serializes");
        let (key_id, sealed) = vault::seal(scope.ring, id, &plaintext);
        let search = vault::index(scope.ring, terms);
        // $10..$20: the event and the audit record; the references after them.
        let live = references_live(&checked.references, 21);
        let row = match how {
            Write::Create => format!(
                "INSERT INTO vault.patients (country_code, client_id, version, last_updated, key_id, sealed, search)
                 SELECT $1, $2, $3, $4, $5, $6, $7 WHERE {live}
                 ON CONFLICT (country_code, client_id) DO NOTHING
                 RETURNING 1"
            ),
            Write::Update { .. } => format!(
                "UPDATE vault.patients SET version = $3, last_updated = $4, key_id = $5, sealed = $6, search = $7,
                        deleted_at = NULL, retain_until = NULL
                  WHERE country_code = $1 AND client_id = $2 AND version = $3 - 1 AND {live}
                 RETURNING 1"
            ),
        };
        let tail = event_and_audit("written", 10);
        let sql = format!(
            "WITH written AS ({row}),
             history AS (
                 INSERT INTO vault.patient_history (country_code, client_id, version, last_updated, method, key_id, sealed)
                 SELECT $1, $2, $3, $4, $8, $5, $6 FROM written
             ),
             registry AS (
                 INSERT INTO patients AS r (country_code, client_id, subject, version)
                 SELECT $1, $2, $9::text, $3 FROM written
                 ON CONFLICT (country_code, client_id) DO UPDATE
                    SET version = EXCLUDED.version, deleted_at = NULL,
                        subject = COALESCE(EXCLUDED.subject, r.subject)
             ),
             {tail}
             SELECT count(*) FROM written"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.country())
            .bind(id)
            .bind(version)
            .bind(at)
            .bind(key_id)
            .bind(sealed)
            .bind(search)
            .bind(method)
            .bind(account.as_deref());
        let mut query = bind_event_and_audit(
            query,
            scope,
            event_type,
            id,
            event_payload(resource_type, id, version, Some(id)),
            action(resource_type, verb),
            format!("Patient/{id}"),
        );
        for target in &checked.references {
            query = query.bind(target.id);
        }
        query.fetch_one(&mut *conn).await.map_err(account_conflict)?
    } else {
        let ix = &checked.indexed;
        // $18..$28: the event and the audit record; the references after them.
        let live = references_live(&checked.references, 29);
        let row = match how {
            Write::Create => format!(
                "INSERT INTO fhir_resources (country_code, resource_type, id, version, last_updated, patient,
                        identifiers, status, class, intent, codes, categories, date_start, date_end, quantity, content)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::numeric, $16 WHERE {live}
                 ON CONFLICT (country_code, resource_type, id) DO NOTHING
                 RETURNING 1"
            ),
            Write::Update { .. } => format!(
                "UPDATE fhir_resources SET version = $4, last_updated = $5, patient = $6, identifiers = $7,
                        status = $8, class = $9, intent = $10, codes = $11, categories = $12, date_start = $13,
                        date_end = $14, quantity = $15::numeric, content = $16, deleted_at = NULL, retain_until = NULL
                  WHERE country_code = $1 AND resource_type = $2 AND id = $3 AND version = $4 - 1 AND {live}
                 RETURNING 1"
            ),
        };
        let tail = event_and_audit("written", 18);
        let sql = format!(
            "WITH written AS ({row}),
             history AS (
                 INSERT INTO fhir_history (country_code, resource_type, id, version, last_updated, method, content)
                 SELECT $1, $2, $3, $4, $5, $17, $16 FROM written
             ),
             {tail}
             SELECT count(*) FROM written"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.country())
            .bind(resource_type.as_str())
            .bind(id)
            .bind(version)
            .bind(at)
            .bind(ix.patient)
            .bind(&ix.identifiers)
            .bind(&ix.status)
            .bind(&ix.class)
            .bind(&ix.intent)
            .bind(&ix.codes)
            .bind(&ix.categories)
            .bind(ix.date_start)
            .bind(ix.date_end)
            .bind(&ix.quantity)
            .bind(&body)
            .bind(method);
        let key = ix.patient.unwrap_or(id);
        let mut query = bind_event_and_audit(
            query,
            scope,
            event_type,
            key,
            event_payload(resource_type, id, version, ix.patient),
            action(resource_type, verb),
            format!("{resource_type}/{id}"),
        );
        for target in &checked.references {
            query = query.bind(target.id);
        }
        query.fetch_one(&mut *conn).await?
    };
    let written: i64 = sqlx::Row::try_get(&written, 0)?;
    if written == 0 {
        return Err(why_not_written(conn, scope, &checked.references, resource_type, id, how).await);
    }
    Ok(Stored {
        resource_type,
        id,
        version,
        last_updated: at,
        body: Some(body),
    })
}

/// Why a write wrote nothing: the resource to update is unknown (404) or at another version
/// than `previous` (412), a reference does not resolve (with the element that names it), or
/// a concurrent write got there first (409).
async fn why_not_written(
    conn: &mut PgConnection,
    scope: &Scope<'_>,
    references: &[Target],
    resource_type: ResourceType,
    id: Uuid,
    how: Write,
) -> StoreError {
    if let Write::Update { previous } = how {
        match current_version(conn, scope.country(), resource_type, id).await {
            Err(e) => return e,
            Ok(None) => {
                return Issue::not_found(format!("{resource_type}/{id} is not known here; create it with POST")).into();
            }
            Ok(Some((version, _))) if version != previous => return stale(resource_type, id, version, previous),
            Ok(Some(_)) => {}
        }
    }
    match resolve(conn, scope.country(), references).await {
        Err(e) => e,
        Ok(()) => conflict(resource_type, id),
    }
}

fn stale(resource_type: ResourceType, id: Uuid, version: i64, expected: i64) -> StoreError {
    Issue::new(
        http::StatusCode::PRECONDITION_FAILED,
        IssueType::Conflict,
        format!("{resource_type}/{id} is at version {version}, not {expected}: read it again and retry"),
    )
    .into()
}

fn conflict(resource_type: ResourceType, id: Uuid) -> StoreError {
    Issue::new(
        http::StatusCode::CONFLICT,
        IssueType::Conflict,
        format!("{resource_type}/{id} was changed at the same time; read it again and retry"),
    )
    .into()
}

/// The registry's unique subject: one account, one patient.
fn account_conflict(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.constraint().is_some_and(|c| c.contains("subject"))
    {
        return account_conflict_issue();
    }
    e.into()
}

/// Creates `checked` with a new random id (for a Patient: its client ID, or the one its
/// account already has from booking).
pub async fn create(conn: &mut PgConnection, scope: &Scope<'_>, checked: Checked, id: Option<Uuid>) -> Result<Stored> {
    let mut id = id.unwrap_or_else(Uuid::new_v4);
    if let Some((_, Some(subject))) = &checked.patient {
        // A patient who booked before a clinic recorded them already has a client ID.
        let known: Option<(Uuid, Option<i64>)> =
            sqlx::query_as("SELECT client_id, version FROM patients WHERE country_code = $1 AND subject = $2")
                .bind(scope.country())
                .bind(subject)
                .fetch_optional(&mut *conn)
                .await?;
        match known {
            Some((existing, None)) => id = existing,
            Some((_, Some(_))) => return Err(account_conflict_issue()),
            None => {}
        }
    }
    write(conn, scope, checked, id, Write::Create).await
}

fn account_conflict_issue() -> StoreError {
    Issue::invalid(
        IssueType::Duplicate,
        "this account already belongs to another patient",
        Some(format!("Patient.extension('{}')", crate::validate::ACCOUNT_EXTENSION)),
    )
    .into()
}

/// The current version number of a resource, locked for the rest of the transaction, and
/// whether it is deleted; None when it never existed.
async fn current_version(
    conn: &mut PgConnection,
    country: &str,
    resource_type: ResourceType,
    id: Uuid,
) -> Result<Option<(i64, bool)>> {
    let row: Option<(i64, bool)> = if resource_type == ResourceType::Patient {
        sqlx::query_as(
            "SELECT version, deleted_at IS NOT NULL FROM vault.patients
              WHERE country_code = $1 AND client_id = $2 FOR UPDATE",
        )
        .bind(country)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    } else {
        sqlx::query_as(
            "SELECT version, deleted_at IS NOT NULL FROM fhir_resources
              WHERE country_code = $1 AND resource_type = $2 AND id = $3 FOR UPDATE",
        )
        .bind(country)
        .bind(resource_type.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    };
    Ok(row)
}

/// Updates resource `id` if its current version is `if_match` (412 otherwise, 404 when it
/// never existed). One statement: the write's version guard is what serialises updates.
pub async fn update(
    conn: &mut PgConnection,
    scope: &Scope<'_>,
    checked: Checked,
    id: Uuid,
    if_match: i64,
) -> Result<Stored> {
    if let Some((_, Some(subject))) = &checked.patient {
        let holder: Option<Uuid> =
            sqlx::query_scalar("SELECT client_id FROM patients WHERE country_code = $1 AND subject = $2")
                .bind(scope.country())
                .bind(subject)
                .fetch_optional(&mut *conn)
                .await?;
        if holder.is_some_and(|h| h != id) {
            return Err(account_conflict_issue());
        }
    }
    write(conn, scope, checked, id, Write::Update { previous: if_match }).await
}

/// Deletes resource `id` logically: reads answer 410 from now on; the rows are kept until the
/// Country's retention period has passed. Deleting what is deleted changes nothing.
pub async fn delete(conn: &mut PgConnection, scope: &Scope<'_>, resource_type: ResourceType, id: Uuid) -> Result<()> {
    let Some((version, deleted)) = current_version(conn, scope.country(), resource_type, id).await? else {
        return Err(Issue::not_found(format!("{resource_type}/{id} is not known here")).into());
    };
    if deleted {
        return Ok(());
    }
    let at = now();
    let years = i32::try_from(scope.rules.retention_years).unwrap_or(100);
    let next = version + 1;
    // $6, the resource type, only clinical rows use; the tail starts at $7 for both.
    let tail = event_and_audit("deleted", 7);
    let sql = if resource_type == ResourceType::Patient {
        format!(
            "WITH deleted AS (
                 UPDATE vault.patients SET version = $3, last_updated = $4, deleted_at = $4,
                        retain_until = $4 + make_interval(years => $5)
                  WHERE country_code = $1 AND client_id = $2 RETURNING 1
             ),
             history AS (
                 INSERT INTO vault.patient_history (country_code, client_id, version, last_updated, method)
                 SELECT $1, $2, $3, $4, 'DELETE' FROM deleted
             ),
             registry AS (
                 UPDATE patients SET deleted_at = $4, version = $3 WHERE country_code = $1 AND client_id = $2
             ),
             {tail}
             SELECT count(*) FROM deleted"
        )
    } else {
        format!(
            "WITH deleted AS (
                 UPDATE fhir_resources SET version = $3, last_updated = $4, deleted_at = $4,
                        retain_until = $4 + make_interval(years => $5)
                  WHERE country_code = $1 AND resource_type = $6::text AND id = $2 RETURNING 1
             ),
             history AS (
                 INSERT INTO fhir_history (country_code, resource_type, id, version, last_updated, method)
                 SELECT $1, $6::text, $2, $3, $4, 'DELETE' FROM deleted
             ),
             {tail}
             SELECT count(*) FROM deleted"
        )
    };
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(scope.country())
        .bind(id)
        .bind(next)
        .bind(at)
        .bind(years)
        .bind(resource_type.as_str());
    let query = bind_event_and_audit(
        query,
        scope,
        format!("{}.deleted", resource_type.as_str().to_ascii_lowercase()),
        id,
        event_payload(resource_type, id, next, None),
        action(resource_type, "delete"),
        format!("{resource_type}/{id}"),
    );
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Appends the audit record of a read; returns once it has committed (see
/// [`meridian_shared::audit::ReadLog`]).
pub async fn audit_read(scope: &Scope<'_>, action: &str, resource: &str) -> Result<()> {
    let record = meridian_shared::audit::Record {
        country_code: scope.country(),
        actor: scope.actor,
        action,
        resource,
        correlation_id: scope.correlation_id,
    };
    scope.reads.append(&record).await?;
    Ok(())
}

/// Opens a vault row: version `version` of Patient `id`. The sealed resource names its id
/// and version, so an older version of the same patient's row put back in place of the
/// current one (which the cipher alone would open) is refused like any tampered row.
pub fn unseal(ring: &Keyring, id: Uuid, version: i64, key_id: &str, sealed: &[u8]) -> Result<Value> {
    Ok(open_row(ring, id, version, key_id, sealed)?.1)
}

/// [`unseal`], with a row that does not open as the vault's error rather than an answer
/// (for a search, which leaves such a row out and says so, and a key rotation, which leaves
/// it where it is), and the plaintext beside the resource (a rotation seals those bytes
/// again).
pub fn open_row(
    ring: &Keyring,
    id: Uuid,
    version: i64,
    key_id: &str,
    sealed: &[u8],
) -> std::result::Result<(Vec<u8>, Value), vault::VaultError> {
    let plaintext = vault::open(ring, id, key_id, sealed)?;
    let tampered = || vault::VaultError::Tampered {
        country: ring.country.clone(),
        client_id: id,
        key_id: key_id.into(),
    };
    let body: Value = serde_json::from_slice(&plaintext).map_err(|_| tampered())?;
    let id_text = id.to_string();
    if body.get("id").and_then(Value::as_str) != Some(id_text.as_str())
        || body.pointer("/meta/versionId").and_then(Value::as_str) != Some(version.to_string().as_str())
    {
        return Err(tampered());
    }
    Ok((plaintext, body))
}

/// A vault row as read: version, last update, deletion, key id, sealed bytes.
type VaultRow = (i64, DateTime<Utc>, Option<DateTime<Utc>>, String, Vec<u8>);
/// A clinical row as read: version, last update, deletion, content.
type ClinicalRow = (i64, DateTime<Utc>, Option<DateTime<Utc>>, Value);
/// A vault history row: version, last update, key id and sealed bytes (none for a deletion).
type VaultVersionRow = (i64, DateTime<Utc>, Option<String>, Option<Vec<u8>>);

/// The current version of a resource: 404 when unknown, 410 when deleted. Audited.
pub async fn read(conn: &mut PgConnection, scope: &Scope<'_>, resource_type: ResourceType, id: Uuid) -> Result<Stored> {
    let stored = fetch(conn, scope, resource_type, id).await?;
    audit_read(scope, &action(resource_type, "read"), &format!("{resource_type}/{id}")).await?;
    Ok(stored)
}

/// [`read`] without its audit record, for a caller that writes one of its own (a
/// disclosure to another Region).
pub async fn fetch(
    conn: &mut PgConnection,
    scope: &Scope<'_>,
    resource_type: ResourceType,
    id: Uuid,
) -> Result<Stored> {
    let stored = if resource_type == ResourceType::Patient {
        let row: Option<VaultRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT version, last_updated, deleted_at, key_id, sealed FROM vault.patients
              WHERE country_code = {} AND client_id = $1",
            scope.country_sql()?
        )))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|(version, last_updated, deleted, key_id, sealed)| {
            let body = if deleted.is_some() {
                None
            } else {
                Some(unseal(scope.ring, id, version, &key_id, &sealed)?)
            };
            Ok::<_, StoreError>(Stored {
                resource_type,
                id,
                version,
                last_updated,
                body,
            })
        })
        .transpose()?
    } else {
        let row: Option<ClinicalRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT version, last_updated, deleted_at, content FROM fhir_resources
              WHERE country_code = {} AND resource_type = $1 AND id = $2",
            scope.country_sql()?
        )))
        .bind(resource_type.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|(version, last_updated, deleted, content)| Stored {
            resource_type,
            id,
            version,
            last_updated,
            body: deleted.is_none().then_some(content),
        })
    };
    let Some(stored) = stored else {
        return Err(Issue::not_found(format!("{resource_type}/{id} is not known here")).into());
    };
    if stored.body.is_none() {
        return Err(Issue::new(
            http::StatusCode::GONE,
            IssueType::Deleted,
            format!("{resource_type}/{id} was deleted"),
        )
        .into());
    }
    Ok(stored)
}

/// Every version of a resource, newest first (deletions without a body). Audited.
pub async fn history(
    conn: &mut PgConnection,
    scope: &Scope<'_>,
    resource_type: ResourceType,
    id: Uuid,
    only: Option<i64>,
) -> Result<Vec<Stored>> {
    let mut versions = Vec::new();
    if resource_type == ResourceType::Patient {
        let rows: Vec<VaultVersionRow> = sqlx::query_as(
            "SELECT version, last_updated, key_id, sealed FROM vault.patient_history
              WHERE country_code = $1 AND client_id = $2 AND ($3::bigint IS NULL OR version = $3)
              ORDER BY version DESC",
        )
        .bind(scope.country())
        .bind(id)
        .bind(only)
        .fetch_all(&mut *conn)
        .await?;
        for (version, last_updated, key_id, sealed) in rows {
            let body = match (key_id, sealed) {
                (Some(key_id), Some(sealed)) => Some(unseal(scope.ring, id, version, &key_id, &sealed)?),
                _ => None,
            };
            versions.push(Stored {
                resource_type,
                id,
                version,
                last_updated,
                body,
            });
        }
    } else {
        let rows: Vec<(i64, DateTime<Utc>, Option<Value>)> = sqlx::query_as(
            "SELECT version, last_updated, content FROM fhir_history
              WHERE country_code = $1 AND resource_type = $2 AND id = $3 AND ($4::bigint IS NULL OR version = $4)
              ORDER BY version DESC",
        )
        .bind(scope.country())
        .bind(resource_type.as_str())
        .bind(id)
        .bind(only)
        .fetch_all(&mut *conn)
        .await?;
        versions.extend(rows.into_iter().map(|(version, last_updated, body)| Stored {
            resource_type,
            id,
            version,
            last_updated,
            body,
        }));
    }
    if versions.is_empty() {
        let what = match only {
            Some(v) => format!("{resource_type}/{id} has no version {v}"),
            None => format!("{resource_type}/{id} is not known here"),
        };
        return Err(Issue::not_found(what).into());
    }
    audit_read(
        scope,
        &action(resource_type, "history"),
        &format!("{resource_type}/{id}"),
    )
    .await?;
    Ok(versions)
}

/// Serialises conditional creates of the same condition in a country: the second waits for
/// the first to commit, then finds what it created.
pub async fn lock_condition(
    conn: &mut PgConnection,
    country: &str,
    resource_type: ResourceType,
    condition: &str,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("conditional-create/{country}/{resource_type}/{condition}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
