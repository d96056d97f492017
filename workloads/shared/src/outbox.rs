//! The transactional outbox: a domain event is written in the same transaction as the
//! change it describes, so an event is published if and only if the change committed. A
//! relay (or, in `meridian dev`, the consumers themselves) reads the table in order.

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// Topic of practitioner events (`practitioner.*`).
pub const PRACTITIONER_EVENTS: &str = "practitioner-events";
/// Topic of appointment events (`appointment.*`).
pub const APPOINTMENT_EVENTS: &str = "appointment-events";

/// One domain event. `key` orders events: the Kafka partition key (the practitioner ID).
#[derive(Clone, Debug)]
pub struct Event<'a, P: Serialize> {
    pub country_code: &'a str,
    pub topic: &'static str,
    pub event_type: &'static str,
    pub key: Uuid,
    pub payload: &'a P,
}

/// Writes `event` inside the caller's transaction.
pub async fn enqueue<P: Serialize>(conn: &mut PgConnection, event: &Event<'_, P>) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_value(event.payload).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.country_code)
    .bind(event.topic)
    .bind(event.event_type)
    .bind(event.key)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes many events in one statement, in order, inside the caller's transaction.
pub async fn enqueue_all<P: Serialize>(conn: &mut PgConnection, events: &[Event<'_, P>]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let encode = |e: &Event<'_, P>| serde_json::to_value(e.payload).map_err(|err| sqlx::Error::Encode(Box::new(err)));
    let payloads = events.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload)
         SELECT c, t, y, k, p FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[])
             WITH ORDINALITY AS e(c, t, y, k, p, n)
         ORDER BY n",
    )
    .bind(events.iter().map(|e| e.country_code).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.topic).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_type).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.key).collect::<Vec<_>>())
    .bind(payloads)
    .execute(conn)
    .await?;
    Ok(())
}
