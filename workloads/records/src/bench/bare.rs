//! The benchmark's operations as bare SQL on the service's tables, each in the fewest round
//! trips plain SQL allows (one statement for a create, a read and an update), so that the
//! comparison is with the best a hand-written client could do, not a slow one.
//!
//! With [`Trail::Same`] every operation also writes what the service must write for it: a
//! create or update its outbox event and audit record, a read or search its audit record
//! of the read, committed before the data is returned. [`Trail::None`] writes the
//! resource's own rows alone: the floor no audited service can reach.

use meridian_shared::audit::{self, Record};
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// What bare SQL writes beside a resource's own rows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trail {
    /// The outbox event of a write and the audit record of every operation, as the service.
    Same,
    /// Nothing else.
    None,
}

/// The country whose partition the bare SQL uses: the service works on DE's.
const COUNTRY: &str = "AT";
const ACTOR: &str = "bench-sql";

/// Placeholders `$first`.. for [`audit::chain_ctes`], bound by [`bind_audit`] in that order
/// (the country is a literal).
fn audit_ctes(from: &str, first: usize) -> String {
    let p: Vec<String> = (first..first + 7).map(|n| format!("${n}")).collect();
    audit::chain_ctes(from, ["'AT'", &p[0], &p[1], &p[2], &p[3], &p[4], &p[5], &p[6]])
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_audit<'q>(query: Query<'q>, action: &'static str, resource: String) -> Query<'q> {
    let correlation_id = Uuid::new_v4();
    let prepared = audit::prepare(&Record {
        country_code: COUNTRY,
        actor: ACTOR,
        action,
        resource: &resource,
        correlation_id,
    });
    query
        .bind(prepared.chain)
        .bind(prepared.payload)
        .bind(prepared.at)
        .bind(ACTOR)
        .bind(action)
        .bind(resource)
        .bind(correlation_id)
}

/// The outbox event of a write to Observation `$1` of patient `$2` (payload `$first`),
/// after the relation `written`.
fn event_cte(event_type: &str, first: usize) -> String {
    format!(
        "event AS (
             INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload, correlation_id)
             SELECT 'AT', '{}', '{event_type}', $2, ${first}, gen_random_uuid() FROM written
         ),",
        meridian_shared::outbox::PATIENT_EVENTS
    )
}

fn event_payload(id: Uuid, version: i64, patient: Uuid) -> Value {
    json!({"resourceType": "Observation", "id": id, "versionId": version, "patient": patient})
}

/// Writes Observation `id` of `patient` as version 1 with its history row (and trail).
pub async fn create(conn: &mut PgConnection, trail: Trail, id: Uuid, patient: Uuid, body: &Value) -> sqlx::Result<()> {
    let tail = match trail {
        Trail::Same => format!("{} {}", event_cte("observation.created", 4), audit_ctes("written", 5)),
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
        Trail::Same => bind_audit(
            query.bind(event_payload(id, 1, patient)),
            "observation.create",
            format!("Observation/{id}"),
        ),
        Trail::None => query,
    };
    query.execute(conn).await?;
    Ok(())
}

/// Reads Observation `id` (and with [`Trail::Same`] commits its audit record first, in the
/// same statement).
pub async fn read(conn: &mut PgConnection, trail: Trail, id: Uuid) -> sqlx::Result<Option<Value>> {
    let found =
        "SELECT content FROM fhir_resources WHERE country_code = 'AT' AND resource_type = 'Observation' AND id = $1";
    let query = match trail {
        Trail::None => sqlx::query(found).bind(id),
        Trail::Same => bind_audit(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH found AS ({found}), {} SELECT content FROM found",
                audit_ctes("found", 2)
            )))
            .bind(id),
            "observation.read",
            format!("Observation/{id}"),
        ),
    };
    let row = query.fetch_optional(conn).await?;
    row.map(|r| r.try_get(0)).transpose()
}

/// Replaces Observation `id` with `body` if it is still at `version` (one statement, the
/// version guard in it, as an update with `If-Match`); returns the new version, or None
/// when another update got there first.
pub async fn update(
    conn: &mut PgConnection,
    trail: Trail,
    id: Uuid,
    patient: Uuid,
    version: i64,
    body: &Value,
) -> sqlx::Result<Option<i64>> {
    let tail = match trail {
        Trail::Same => format!("{} {}", event_cte("observation.updated", 5), audit_ctes("written", 6)),
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
        Trail::Same => bind_audit(
            query.bind(event_payload(id, version + 1, patient)),
            "observation.update",
            format!("Observation/{id}"),
        ),
        Trail::None => query,
    };
    let written: i64 = query.fetch_one(conn).await?.try_get(0)?;
    Ok((written == 1).then_some(version + 1))
}

/// The current version of Observation `id`, for an update that found it changed.
pub async fn version(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT version FROM fhir_resources WHERE country_code = 'AT' AND resource_type = 'Observation' AND id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A page of a patient's heart-rate observations, as the service's search (and with
/// [`Trail::Same`] the audit record naming what it returned, committed before they are).
pub async fn search(conn: &mut PgConnection, trail: Trail, patient: Uuid) -> sqlx::Result<Vec<Value>> {
    let rows: Vec<(Uuid, Value)> = sqlx::query_as(
        "SELECT id, content FROM fhir_resources WHERE country_code = 'AT' AND resource_type = 'Observation'
            AND patient = $1 AND codes && ARRAY['http://loinc.org|8867-4'] AND deleted_at IS NULL
          ORDER BY id LIMIT 11",
    )
    .bind(patient)
    .fetch_all(&mut *conn)
    .await?;
    if trail == Trail::Same {
        let returned: Vec<String> = rows
            .iter()
            .take(10)
            .map(|(id, _)| format!("Observation/{id}"))
            .collect();
        let resource = returned.join(",");
        let record = Record {
            country_code: COUNTRY,
            actor: ACTOR,
            action: "observation.search",
            resource: &resource,
            correlation_id: Uuid::new_v4(),
        };
        audit::append(conn, &record).await?;
    }
    Ok(rows.into_iter().map(|(_, content)| content).collect())
}
