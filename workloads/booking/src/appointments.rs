//! Booking an appointment: one transaction that inserts it (the database refuses a double
//! booking), writes `appointment.booked` to the outbox and an audit record. Replaying the
//! same idempotency key returns the first result instead of booking again.
//!
//! Appointments name their patient by client ID (see [`meridian_shared::patients`]), never by
//! the token subject the patient signs in with: `patient_id` holds the client ID's text.

use chrono::{DateTime, Utc};
use meridian_shared::metrics::{self, BookingOutcome};
use meridian_shared::{audit, outbox, patients};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use crate::Actor;

/// A request to book, after the HTTP layer has checked the caller and the slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookRequest {
    pub country_code: String,
    pub practitioner_id: Uuid,
    /// The patient's client ID: a registered patient of the country, else the booking is
    /// refused ([`BookingError::UnknownPatient`]).
    pub patient_id: Uuid,
    /// The patient books for themselves (their client ID mapped from their token): then a
    /// Patient record deleted in the records service does not stop them; staff can only
    /// name a patient whose record is not deleted.
    pub by_patient: bool,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Reason for visit only: clinical notes belong to the records service.
    pub reason: Option<String>,
    pub idempotency_key: String,
    /// The practitioner's `schedule_version` the slot was checked against: the booking is
    /// refused ([`BookingError::NotBookable`]) if the schedule changed since.
    pub schedule_version: i64,
    /// Who asks (token subject), and the request's correlation ID, for the audit trail.
    pub actor: String,
    pub correlation_id: Uuid,
}

/// A booked (or since cancelled, moved...) appointment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    pub id: Uuid,
    pub country_code: String,
    pub practitioner_id: Uuid,
    /// The patient's client ID.
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
    /// Also when it exists but the caller may not see it (that attempt is audited).
    #[error("appointment {0} not found")]
    NotFound(Uuid),
    #[error("the appointment is {0}, not booked")]
    NotBooked(String),
    #[error("the time is no longer free: {0:?}")]
    Conflict(Clash),
    #[error("practitioner {0} does not exist, takes no appointments, or changed schedule since it was read")]
    NotBookable(Uuid),
    #[error("no patient with client ID {0} is registered in this country")]
    UnknownPatient(Uuid),
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
    // The appointment, its event and its audit record go in together, in one statement
    // (one round trip, atomic): the patient must be registered in the country, the
    // practitioner active and on the schedule the caller checked the slot against, the
    // idempotency key new,
    // and the exclusion constraints decide whether the time is still free.
    let appointment = Appointment {
        id: Uuid::new_v4(),
        country_code: request.country_code.clone(),
        practitioner_id: request.practitioner_id,
        patient_id: request.patient_id.to_string(),
        starts_at: request.starts_at,
        ends_at: request.ends_at,
        status: "booked".into(),
        reason: request.reason.clone(),
    };
    let resource = format!("appointment/{}", appointment.id);
    let record = audit::Record {
        country_code: &request.country_code,
        actor: &request.actor,
        action: "appointment.book",
        resource: &resource,
        correlation_id: request.correlation_id,
    };
    let audit = audit::prepare(&record);
    let payload = serde_json::to_value(&appointment).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    // Bookings of one practitioner take turns (a transaction-scoped advisory lock, `turn`):
    // two of the same time inserting at once would each wait for the other's row in the
    // exclusion check, and PostgreSQL would abort one as a deadlock after a second. Taking
    // turns, the later one meets the winner's committed row as a plain conflict. A patient
    // booking two practitioners at once can still deadlock that way; nothing of the aborted
    // statement was written, so it is asked again.
    let mut attempts = 0;
    let inserted = loop {
        attempts += 1;
        match insert_booking(pool, request, &appointment, &audit, &record, &payload).await {
            Err(e) if attempts < 5 && is_deadlock(&e) => continue,
            other => break other,
        }
    };
    let inserted = inserted
        .map_err(clash)
        .inspect_err(|e| count_conflict(&request.country_code, e))?;
    match inserted {
        Some(appointment) => {
            metrics::workload().booking(&request.country_code, BookingOutcome::Booked);
            Ok(Booked {
                appointment,
                replayed: false,
            })
        }
        // Nothing written: the key was used before, the patient is not registered, or the
        // practitioner takes no bookings (or not on the schedule the slot was checked
        // against).
        None => replay(pool, request).await,
    }
}

/// `meridian_bookings_total{outcome="conflict"}`: the database refused a taken time.
fn count_conflict(country: &str, error: &BookingError) {
    if matches!(error, BookingError::Conflict(_)) {
        metrics::workload().booking(country, BookingOutcome::Conflict);
    }
}

fn is_deadlock(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).as_deref() == Some("40P01")
}

/// The booking statement: the same text every time, so it is built once.
static BOOK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let trail = audit::chain_ctes("booked", ["$1", "$11", "$12", "$13", "$14", "$15", "$16", "$17"]);
    format!(
        "WITH turn AS (
             SELECT pg_advisory_xact_lock(hashtextextended($3::text, 0))
         ),
         patient AS (
             SELECT 1 FROM patients
              WHERE country_code = $1 AND client_id = $4 AND (deleted_at IS NULL OR $20)
         ),
         practitioner AS (
             SELECT 1 FROM practitioners, turn, patient
              WHERE country_code = $1 AND id = $3 AND active AND schedule_version = $19
         ),
         booked AS (
             INSERT INTO appointments
                 (country_code, id, practitioner_id, patient_id, starts_at, ends_at, status, reason, idempotency_key)
             SELECT $1, $2, $3, $4::text, $5, $6, 'booked', $7, $8 FROM practitioner
             ON CONFLICT (country_code, idempotency_key) DO NOTHING
             RETURNING {COLUMNS}
         ),
         event AS (
             INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload, correlation_id)
             SELECT $1, $9, $10, $3, $18, $17 FROM booked
         ),
         {trail}
         SELECT {COLUMNS} FROM booked"
    )
});

/// The booking statement itself.
async fn insert_booking(
    pool: &PgPool,
    request: &BookRequest,
    appointment: &Appointment,
    audit: &audit::Prepared,
    record: &audit::Record<'_>,
    payload: &serde_json::Value,
) -> Result<Option<Appointment>, sqlx::Error> {
    sqlx::query_as::<_, Appointment>(sqlx::AssertSqlSafe(BOOK.as_str()))
        .bind(&request.country_code)
        .bind(appointment.id)
        .bind(request.practitioner_id)
        .bind(request.patient_id)
        .bind(request.starts_at)
        .bind(request.ends_at)
        .bind(&request.reason)
        .bind(&request.idempotency_key)
        .bind(outbox::APPOINTMENT_EVENTS)
        .bind("appointment.booked")
        .bind(audit.chain)
        .bind(&audit.payload)
        .bind(audit.at)
        .bind(record.actor)
        .bind(record.action)
        .bind(record.resource)
        .bind(record.correlation_id)
        .bind(payload)
        .bind(request.schedule_version)
        .bind(request.by_patient)
        .fetch_optional(pool)
        .await
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

/// The first booking made with this key, if it asked for the same thing; else why nothing
/// was booked.
async fn replay(pool: &PgPool, request: &BookRequest) -> Result<Booked, BookingError> {
    let first: Option<Appointment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM appointments WHERE country_code = $1 AND idempotency_key = $2"
    )))
    .bind(&request.country_code)
    .bind(&request.idempotency_key)
    .fetch_optional(pool)
    .await?;
    let Some(first) = first else {
        let mut conn = pool.acquire().await?;
        let registered = if request.by_patient {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM patients WHERE country_code = $1 AND client_id = $2)")
                .bind(&request.country_code)
                .bind(request.patient_id)
                .fetch_one(&mut *conn)
                .await?
        } else {
            patients::is_registered(&mut conn, &request.country_code, request.patient_id).await?
        };
        return Err(if registered {
            BookingError::NotBookable(request.practitioner_id)
        } else {
            BookingError::UnknownPatient(request.patient_id)
        });
    };
    let same = first.practitioner_id == request.practitioner_id
        && first.patient_id == request.patient_id.to_string()
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

const COLUMNS: &str = "id, country_code, practitioner_id, patient_id, starts_at, ends_at, status, reason";

/// Whose appointments a caller may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A patient's, by client ID.
    Patient(Uuid),
    Practitioner(Uuid),
    /// Staff of the country: all of them.
    Country,
}

impl Scope {
    fn admits(&self, appointment: &Appointment) -> bool {
        match self {
            Scope::Patient(patient) => appointment.patient_id == patient.to_string(),
            Scope::Practitioner(id) => &appointment.practitioner_id == id,
            Scope::Country => true,
        }
    }
}

/// What a caller attempts on one appointment: who, seeing what, doing what.
struct Attempt<'a> {
    scope: &'a Scope,
    /// The audit action, e.g. `appointment.read`.
    action: &'static str,
    actor: Actor<'a>,
}

/// The appointment, if the attempt's scope may see it; to anyone else it does not exist.
/// `lock` is empty or `FOR UPDATE`. An attempt on an appointment the caller may not see is
/// recorded (`action` + `.denied`) in a transaction of its own, as the attempt's own
/// transaction is rolled back.
async fn visible(
    pool: &PgPool,
    conn: &mut PgConnection,
    country: &str,
    id: Uuid,
    attempt: &Attempt<'_>,
    lock: &'static str,
) -> Result<Appointment, BookingError> {
    let found: Option<Appointment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM appointments WHERE country_code = $1 AND id = $2 {lock}"
    )))
    .bind(country)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    match found {
        Some(appointment) if attempt.scope.admits(&appointment) => Ok(appointment),
        Some(_) => {
            let mut tx = meridian_shared::pool::begin(pool).await?;
            attempt
                .actor
                .audit(
                    &mut tx,
                    country,
                    &format!("{}.denied", attempt.action),
                    &format!("appointment/{id}"),
                )
                .await?;
            tx.commit().await?;
            Err(BookingError::NotFound(id))
        }
        None => Err(BookingError::NotFound(id)),
    }
}

/// One appointment, if `scope` may see it (otherwise it does not exist for the caller).
/// The read is audited.
pub async fn get(
    pool: &PgPool,
    country: &str,
    id: Uuid,
    scope: &Scope,
    actor: Actor<'_>,
) -> Result<Appointment, BookingError> {
    let mut tx = meridian_shared::pool::begin(pool).await?;
    let attempt = Attempt {
        scope,
        action: "appointment.read",
        actor,
    };
    let appointment = visible(pool, &mut tx, country, id, &attempt, "").await?;
    actor
        .audit(&mut tx, country, "appointment.read", &format!("appointment/{id}"))
        .await?;
    tx.commit().await?;
    Ok(appointment)
}

/// The appointments `scope` may see, soonest first, from `from` on. The read is audited.
pub async fn list(
    pool: &PgPool,
    country: &str,
    scope: &Scope,
    from: DateTime<Utc>,
    limit: u32,
    actor: Actor<'_>,
) -> Result<Vec<Appointment>, BookingError> {
    let (patient, practitioner) = match scope {
        Scope::Patient(p) => (Some(p.to_string()), None),
        Scope::Practitioner(id) => (None, Some(*id)),
        Scope::Country => (None, None),
    };
    let mut tx = meridian_shared::pool::begin(pool).await?;
    let found: Vec<Appointment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM appointments
          WHERE country_code = $1 AND ends_at > $2
            AND ($3::text IS NULL OR patient_id = $3) AND ($4::uuid IS NULL OR practitioner_id = $4)
          ORDER BY starts_at, id LIMIT $5"
    )))
    .bind(country)
    .bind(from)
    .bind(&patient)
    .bind(practitioner)
    .bind(i64::from(limit.clamp(1, 500)))
    .fetch_all(&mut *tx)
    .await?;
    let resource = match scope {
        Scope::Patient(p) => format!("patient/{p}/appointments"),
        Scope::Practitioner(id) => format!("practitioner/{id}/appointments"),
        Scope::Country => format!("country/{country}/appointments"),
    };
    actor.audit(&mut tx, country, "appointment.list", &resource).await?;
    tx.commit().await?;
    Ok(found)
}

/// Cancels a booked appointment; cancelling it again returns it unchanged.
pub async fn cancel(
    pool: &PgPool,
    country: &str,
    id: Uuid,
    scope: &Scope,
    actor: Actor<'_>,
) -> Result<Appointment, BookingError> {
    let mut tx = meridian_shared::pool::begin(pool).await?;
    let attempt = Attempt {
        scope,
        action: "appointment.cancel",
        actor,
    };
    let current = visible(pool, &mut tx, country, id, &attempt, "FOR UPDATE").await?;
    if current.status != "booked" {
        return Ok(current);
    }
    let cancelled: Appointment = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE appointments SET status = 'cancelled', updated_at = now()
          WHERE country_code = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(country)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let event = outbox::Event {
        country_code: country,
        topic: outbox::APPOINTMENT_EVENTS,
        event_type: "appointment.cancelled",
        key: cancelled.practitioner_id,
        payload: &cancelled,
        correlation_id: actor.correlation_id,
    };
    outbox::enqueue(&mut tx, &event).await?;
    actor
        .audit(&mut tx, country, "appointment.cancel", &format!("appointment/{id}"))
        .await?;
    tx.commit().await?;
    metrics::workload().booking(country, BookingOutcome::Cancelled);
    Ok(cancelled)
}

/// What `appointment.rescheduled` carries: the appointment at its new time, and the time it
/// had (whose slot is free again).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rescheduled<'a> {
    #[serde(flatten)]
    appointment: &'a Appointment,
    previous_starts_at: DateTime<Utc>,
    previous_ends_at: DateTime<Utc>,
}

/// Where [`reschedule`] moves an appointment: a slot checked against the practitioner's
/// schedule at `schedule_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewSlot {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Refused ([`BookingError::NotBookable`]) if the practitioner's schedule changed since
    /// (time off recorded meanwhile, through this replica or another), as for a booking.
    pub schedule_version: i64,
}

/// Moves a booked appointment to another time of the same practitioner. The database
/// refuses a time that is taken (or that the patient already holds) as for a booking, and a
/// slot checked against a schedule that changed since.
pub async fn reschedule(
    pool: &PgPool,
    country: &str,
    id: Uuid,
    scope: &Scope,
    to: NewSlot,
    actor: Actor<'_>,
) -> Result<Appointment, BookingError> {
    let NewSlot {
        starts_at,
        ends_at,
        schedule_version,
    } = to;
    let mut tx = meridian_shared::pool::begin(pool).await?;
    let attempt = Attempt {
        scope,
        action: "appointment.reschedule",
        actor,
    };
    let current = visible(pool, &mut tx, country, id, &attempt, "FOR UPDATE").await?;
    if current.status != "booked" {
        return Err(BookingError::NotBooked(current.status));
    }
    if current.starts_at == starts_at && current.ends_at == ends_at {
        return Ok(current);
    }
    // The practitioner's turn, as for a booking; then the schedule must still be the one the
    // slot was checked against. FOR SHARE waits for a schedule change in progress (it holds
    // the row) and sees its new version; a change that comes later waits for this move, and
    // its re-assignment sees the appointment at its new time.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(current.practitioner_id)
        .execute(&mut *tx)
        .await?;
    let current_version: Option<i64> = sqlx::query_scalar(
        "SELECT schedule_version FROM practitioners WHERE country_code = $1 AND id = $2 AND active FOR SHARE",
    )
    .bind(country)
    .bind(current.practitioner_id)
    .fetch_optional(&mut *tx)
    .await?;
    if current_version != Some(schedule_version) {
        return Err(BookingError::NotBookable(current.practitioner_id));
    }
    let moved: Appointment = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE appointments SET starts_at = $3, ends_at = $4, updated_at = now()
          WHERE country_code = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(country)
    .bind(id)
    .bind(starts_at)
    .bind(ends_at)
    .fetch_one(&mut *tx)
    .await
    .map_err(clash)
    .inspect_err(|e| count_conflict(country, e))?;
    let payload = Rescheduled {
        appointment: &moved,
        previous_starts_at: current.starts_at,
        previous_ends_at: current.ends_at,
    };
    let event = outbox::Event {
        country_code: country,
        topic: outbox::APPOINTMENT_EVENTS,
        event_type: "appointment.rescheduled",
        key: moved.practitioner_id,
        payload: &payload,
        correlation_id: actor.correlation_id,
    };
    outbox::enqueue(&mut tx, &event).await?;
    actor
        .audit(&mut tx, country, "appointment.reschedule", &format!("appointment/{id}"))
        .await?;
    tx.commit().await?;
    Ok(moved)
}
