//! Booking an appointment: one transaction that inserts it (the database refuses a double
//! booking), writes `appointment.booked` to the outbox and an audit record. Replaying the
//! same idempotency key returns the first result instead of booking again.

use chrono::{DateTime, Utc};
use meridian_shared::{audit, outbox};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A request to book, after the HTTP layer has checked the caller and the slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookRequest {
    pub country_code: String,
    pub practitioner_id: Uuid,
    pub patient_id: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Reason for visit only: clinical notes belong to the records service.
    pub reason: Option<String>,
    pub idempotency_key: String,
    /// Who asks (token subject), and the request's correlation ID, for the audit trail.
    pub actor: String,
    pub correlation_id: Uuid,
}

/// A booked (or since cancelled, moved...) appointment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Appointment {
    pub id: Uuid,
    pub country_code: String,
    pub practitioner_id: Uuid,
    pub patient_id: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub status: String,
    pub reason: Option<String>,
}

/// Which rule a refused booking broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Clash {
    /// The practitioner is already booked at that time.
    PractitionerBusy,
    /// The patient already holds an overlapping appointment.
    PatientBusy,
}

#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error("the time is no longer free: {0:?}")]
    Conflict(Clash),
    #[error("practitioner {0} does not exist or does not take appointments")]
    UnknownPractitioner(Uuid),
    #[error("the Idempotency-Key was already used for a different booking")]
    KeyReused,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The outcome of [`book`]: the appointment, and whether this was a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booked {
    pub appointment: Appointment,
    pub replayed: bool,
}

/// Books, or replays an earlier booking with the same idempotency key.
pub async fn book(pool: &PgPool, request: &BookRequest) -> Result<Booked, BookingError> {
    let mut tx = pool.begin().await?;
    let active: Option<bool> =
        sqlx::query_scalar("SELECT active FROM practitioners WHERE country_code = $1 AND id = $2")
            .bind(&request.country_code)
            .bind(request.practitioner_id)
            .fetch_optional(&mut *tx)
            .await?;
    if active != Some(true) {
        return Err(BookingError::UnknownPractitioner(request.practitioner_id));
    }
    let inserted = sqlx::query_as::<_, Appointment>(
        "INSERT INTO appointments
             (country_code, id, practitioner_id, patient_id, starts_at, ends_at, status, reason, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, 'booked', $7, $8)
         ON CONFLICT (country_code, idempotency_key) DO NOTHING
         RETURNING id, country_code, practitioner_id, patient_id, starts_at, ends_at, status, reason",
    )
    .bind(&request.country_code)
    .bind(Uuid::new_v4())
    .bind(request.practitioner_id)
    .bind(&request.patient_id)
    .bind(request.starts_at)
    .bind(request.ends_at)
    .bind(&request.reason)
    .bind(&request.idempotency_key)
    .fetch_optional(&mut *tx)
    .await
    .map_err(clash)?;
    let Some(appointment) = inserted else {
        drop(tx);
        return replay(pool, request).await;
    };
    let event = outbox::Event {
        country_code: &request.country_code,
        topic: outbox::APPOINTMENT_EVENTS,
        event_type: "appointment.booked",
        key: appointment.practitioner_id,
        payload: &appointment,
    };
    outbox::enqueue(&mut tx, &event).await?;
    record(&mut tx, request, "appointment.book", appointment.id).await?;
    tx.commit().await?;
    Ok(Booked {
        appointment,
        replayed: false,
    })
}

/// The booked time of a practitioner between `from` and `until`, for slot computation.
pub async fn booked(
    pool: &PgPool,
    country: &str,
    practitioner: Uuid,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<crate::slots::Interval>, sqlx::Error> {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT starts_at, ends_at FROM appointments
          WHERE country_code = $1 AND practitioner_id = $2 AND status = 'booked'
            AND starts_at < $4 AND ends_at > $3",
    )
    .bind(country)
    .bind(practitioner)
    .bind(from)
    .bind(until)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(start, end)| crate::slots::Interval { start, end })
        .collect())
}

/// The first booking made with this key, if it asked for the same thing.
async fn replay(pool: &PgPool, request: &BookRequest) -> Result<Booked, BookingError> {
    let first = sqlx::query_as::<_, Appointment>(
        "SELECT id, country_code, practitioner_id, patient_id, starts_at, ends_at, status, reason
           FROM appointments WHERE country_code = $1 AND idempotency_key = $2",
    )
    .bind(&request.country_code)
    .bind(&request.idempotency_key)
    .fetch_one(pool)
    .await?;
    let same = first.practitioner_id == request.practitioner_id
        && first.patient_id == request.patient_id
        && first.starts_at == request.starts_at
        && first.ends_at == request.ends_at;
    if !same {
        return Err(BookingError::KeyReused);
    }
    Ok(Booked {
        appointment: first,
        replayed: true,
    })
}

async fn record(conn: &mut PgConnection, request: &BookRequest, action: &str, id: Uuid) -> Result<(), sqlx::Error> {
    let resource = format!("appointment/{id}");
    let entry = audit::Record {
        country_code: &request.country_code,
        actor: &request.actor,
        action,
        resource: &resource,
        correlation_id: request.correlation_id,
    };
    audit::append(conn, &entry).await
}

/// Maps the exclusion constraints' violations to the rule they guard.
fn clash(error: sqlx::Error) -> BookingError {
    let constraint = error
        .as_database_error()
        .and_then(|e| e.constraint())
        .unwrap_or_default();
    if constraint.ends_with("_no_double_booking") {
        BookingError::Conflict(Clash::PractitionerBusy)
    } else if constraint.ends_with("_no_patient_overlap") {
        BookingError::Conflict(Clash::PatientBusy)
    } else {
        BookingError::Database(error)
    }
}
