//! The benchmark's operations as bare SQL on the service's tables: no HTTP, token,
//! validation or vault, each operation in the fewest round trips plain SQL allows (one
//! statement for a create, a read and an update).
//!
//! With [`Trail::Same`] every operation also writes what the service writes for it, the way
//! the service writes it: a create or update its outbox event and audit record in its own
//! statement, a read or search its audit record of the read through a
//! [`ReadLog`] (batched with other reads', committed before the data is returned).
//! [`Trail::None`] writes the resource's own rows alone: the floor no audited service can
//! reach.

use meridian_shared::audit::{self, ReadLog, Record};
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// What bare SQL writes beside a resource's own rows.
#[derive(Clone)]
pub enum Trail {
    /// The outbox event of a write and the audit record of every operation, as the
    /// service; reads' records through this log.
    Same(ReadLog),
    /// Nothing else.
    None,
}

impl Trail {
    /// With [`Trail::Same`], hands the audit record of a read to the log and waits for its
    /// commit, as the service does before it answers.
    async fn log_read(&self, action: &str, resource: &str) -> sqlx::Result<()> {
        if let Self::Same(reads) = self {
            reads.append(&record(action, resource, Uuid::new_v4())).await?;
        }
        Ok(())
    }
}

/// The country whose partition the bare SQL uses: the service works on DE's.
const COUNTRY: &str = "AT";
const ACTOR: &str = "bench-sql";

/// The outbox event and audit record of a write to Observation `$1` of patient `$2`, after
/// the relation `written`: the event's payload is `$first`, the correlation ID `$first + 1`,
/// and the audit record's fields follow in [`bind_trail`]'s order.
fn trail_ctes(event_type: &str, first: usize) -> String {
    let p = |n: usize| format!("${}", first + n);
    let audit = audit::chain_ctes("written", ["'AT'", &p(2), &p(3), &p(4), &p(5), &p(6), &p(7), &p(1)]);
    format!(
        "event AS (
             INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload, correlation_id)
             SELECT 'AT', '{}', '{event_type}', $2, {}, {} FROM written
         ),
         {audit}",
        meridian_shared::outbox::PATIENT_EVENTS,
        p(0),
        p(1),
    )
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds what [`trail_ctes`] needs: the event's payload, one correlation ID for the event
/// and the audit record (as a request's), then the record.
fn bind_trail<'q>(query: Query<'q>, payload: Value, action: &'static str, resource: String) -> Query<'q> {
    let correlation_id = Uuid::new_v4();
    let prepared = audit::prepare(&record(action, &resource, correlation_id));
    query
        .bind(payload)
        .bind(correlation_id)
        .bind(prepared.chain)
        .bind(prepared.payload)
        .bind(prepared.at)
        .bind(ACTOR)
        .bind(action)
        .bind(resource)
}

fn record<'a>(action: &'a str, resource: &'a str, correlation_id: Uuid) -> Record<'a> {
    Record {
        country_code: COUNTRY,
        actor: ACTOR,
        action,
        resource,
        correlation_id,
    }
}

fn event_payload(id: Uuid, version: i64, patient: Uuid) -> Value {
    json!({"resourceType": "Observation", "id": id, "versionId": version, "patient": patient})
}

/// Writes Observation `id` of `patient` as version 1 with its history row (and trail).
pub async fn create(conn: &mut PgConnection, trail: &Trail, id: Uuid, patient: Uuid, body: &Value) -> sqlx::Result<()> {
    let tail = match trail {
        Trail::Same(_) => trail_ctes("observation.created", 4),
        Trail::None => "none AS (SELECT 1)".into(),
    };
    let sql = format!(
        "WITH written AS (
             INSERT INTO fhir_resources (country_code, resource_type, id, version, last_updated, patient, status,
                    codes, categories, date_start, date_end, quantity, content)
             VALUES ('AT', 'Observation', $1, 1, now(), $2, 'final', ARRAY['http://loinc.org|8867-4', '8867-4'],
                     ARRAY['vital-signs'], now(), now(), ($3::jsonb #>> '{{valueQuantity,value}}')::numeric, $3)
             RETURNING 1
         ),
         history AS (
             INSERT INTO fhir_history (country_code, resource_type, id, version, last_updated, method, content)
             SELECT 'AT', 'Observation', $1, 1, now(), 'POST', $3 FROM written
         ),
         {tail}
         SELECT count(*) FROM written"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(patient).bind(body);
    let query = match trail {
        Trail::Same(_) => bind_trail(
            query,
            event_payload(id, 1, patient),
            "observation.create",
            format!("Observation/{id}"),
        ),
        Trail::None => query,
    };
    query.execute(conn).await?;
    Ok(())
}

/// Reads Observation `id`; with [`Trail::Same`], returns once the read's audit record has
/// committed (none when there was nothing to read, as the service's 404).
pub async fn read(conn: &mut PgConnection, trail: &Trail, id: Uuid) -> sqlx::Result<Option<Value>> {
    let content: Option<Value> = sqlx::query_scalar(
        "SELECT content FROM fhir_resources WHERE country_code = 'AT' AND resource_type = 'Observation' AND id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    if content.is_some() {
        trail.log_read("observation.read", &format!("Observation/{id}")).await?;
    }
    Ok(content)
}

/// Replaces Observation `id` with `body` if it is still at `version` (one statement, the
/// version guard in it, as an update with `If-Match`); returns the new version, or None
/// when another update got there first.
pub async fn update(
    conn: &mut PgConnection,
    trail: &Trail,
    id: Uuid,
    patient: Uuid,
    version: i64,
    body: &Value,
) -> sqlx::Result<Option<i64>> {
    let tail = match trail {
        Trail::Same(_) => trail_ctes("observation.updated", 5),
        Trail::None => "none AS (SELECT 1)".into(),
    };
    let sql = format!(
        "WITH written AS (
             UPDATE fhir_resources SET version = $3 + 1, last_updated = now(),
                    quantity = ($4::jsonb #>> '{{valueQuantity,value}}')::numeric, content = $4
              WHERE country_code = 'AT' AND resource_type = 'Observation' AND id = $1 AND version = $3
             RETURNING 1
         ),
         history AS (
             INSERT INTO fhir_history (country_code, resource_type, id, version, last_updated, method, content)
             SELECT 'AT', 'Observation', $1, $3 + 1, now(), 'PUT', $4 FROM written
         ),
         {tail}
         SELECT count(*) FROM written"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(patient)
        .bind(version)
        .bind(body);
    let query = match trail {
        Trail::Same(_) => bind_trail(
            query,
            event_payload(id, version + 1, patient),
            "observation.update",
            format!("Observation/{id}"),
        ),
        Trail::None => query,
    };
    let written: i64 = query.fetch_one(conn).await?.try_get(0)?;
    Ok((written == 1).then_some(version + 1))
}

/// The current version of Observation `id`, for an update that found it changed (with
/// [`Trail::Same`] audited as a read, as the service's answer to the client's re-read).
pub async fn version(conn: &mut PgConnection, trail: &Trail, id: Uuid) -> sqlx::Result<Option<i64>> {
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM fhir_resources WHERE country_code = 'AT' AND resource_type = 'Observation' AND id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    if version.is_some() {
        trail.log_read("observation.read", &format!("Observation/{id}")).await?;
    }
    Ok(version)
}

/// A page of a patient's heart-rate observations, as the service's search (and with
/// [`Trail::Same`] the audit record naming what it returned, committed before they are).
pub async fn search(conn: &mut PgConnection, trail: &Trail, patient: Uuid) -> sqlx::Result<Vec<Value>> {
    let rows: Vec<(Uuid, Value)> = sqlx::query_as(
        "SELECT id, content FROM fhir_resources WHERE country_code = 'AT' AND resource_type = 'Observation'
            AND patient = $1 AND codes && ARRAY['http://loinc.org|8867-4'] AND deleted_at IS NULL
          ORDER BY id LIMIT 11",
    )
    .bind(patient)
    .fetch_all(conn)
    .await?;
    // What it returned, named only when there is a record to name it in.
    if matches!(trail, Trail::Same(_)) {
        let returned: Vec<String> = rows
            .iter()
            .take(10)
            .map(|(id, _)| format!("Observation/{id}"))
            .collect();
        trail.log_read("observation.search", &returned.join(",")).await?;
    }
    Ok(rows.into_iter().map(|(_, content)| content).collect())
}
