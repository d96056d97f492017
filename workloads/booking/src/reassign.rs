//! Re-assignment: when a practitioner becomes unavailable (time off, deactivation), each
//! affected future appointment moves to another active practitioner of the same specialty
//! in the same country who is free at the same time; the patient learns of it through an
//! `appointment.reassigned` event. When nobody is free, the appointment becomes
//! `needs_rebooking` with an event of its own. Safe to repeat: it only looks at
//! appointments still booked with the unavailable practitioner.

use chrono::Utc;
use chrono_tz::Tz;
use meridian_shared::outbox;
use serde::Serialize;
use sqlx::{Acquire, PgConnection, PgPool};
use uuid::Uuid;

use crate::Actor;
use crate::appointments::Appointment;
use crate::{availability, slots};

/// What happened to the affected appointments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub reassigned: u64,
    pub needs_rebooking: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Moved<'a> {
    #[serde(flatten)]
    appointment: &'a Appointment,
    previous_practitioner_id: Uuid,
}

const COLUMNS: &str = "id, country_code, practitioner_id, patient_id, starts_at, ends_at, status, reason";

/// Moves (or marks) `practitioner`'s booked appointments from now on that fall inside
/// `window` (all of them when `None`). With `enabled` false (the country's
/// `features.reassignment`), they are all marked `needs_rebooking`.
pub async fn run(
    pool: &PgPool,
    country: &str,
    tz: Tz,
    practitioner: Uuid,
    window: Option<slots::Interval>,
    enabled: bool,
    actor: Actor<'_>,
) -> Result<Report, sqlx::Error> {
    let mut tx = meridian_shared::pool::begin(pool).await?;
    let from = window.map_or_else(Utc::now, |w| w.start.max(Utc::now()));
    let until = window.map(|w| w.end);
    let affected: Vec<Appointment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM appointments
          WHERE country_code = $1 AND practitioner_id = $2 AND status = 'booked'
            AND ends_at > $3 AND ($4::timestamptz IS NULL OR starts_at < $4)
          ORDER BY starts_at FOR UPDATE"
    )))
    .bind(country)
    .bind(practitioner)
    .bind(from)
    .bind(until)
    .fetch_all(&mut *tx)
    .await?;
    let mut report = Report::default();
    if affected.is_empty() {
        return Ok(report);
    }
    let specialty: String =
        sqlx::query_scalar("SELECT specialty FROM practitioners WHERE country_code = $1 AND id = $2")
            .bind(country)
            .bind(practitioner)
            .fetch_one(&mut *tx)
            .await?;
    let colleagues: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM practitioners WHERE country_code = $1 AND specialty = $2 AND active AND id <> $3 ORDER BY id",
    )
    .bind(country)
    .bind(&specialty)
    .bind(practitioner)
    .fetch_all(&mut *tx)
    .await?;
    for appointment in &affected {
        let moved = if enabled {
            move_to_colleague(&mut tx, tz, appointment, &colleagues).await?
        } else {
            None
        };
        match moved {
            Some(moved) => {
                let payload = Moved {
                    appointment: &moved,
                    previous_practitioner_id: practitioner,
                };
                // Keyed by the new practitioner: their slot is taken; the old one's is freed
                // by the practitioner's own unavailability.
                record(
                    &mut tx,
                    country,
                    "appointment.reassigned",
                    moved.practitioner_id,
                    &payload,
                    moved.id,
                    actor,
                )
                .await?;
                report.reassigned += 1;
            }
            None => {
                let marked: Appointment = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE appointments SET status = 'needs_rebooking', updated_at = now()
                      WHERE country_code = $1 AND id = $2 RETURNING {COLUMNS}"
                )))
                .bind(country)
                .bind(appointment.id)
                .fetch_one(&mut *tx)
                .await?;
                record(
                    &mut tx,
                    country,
                    "appointment.needs_rebooking",
                    practitioner,
                    &marked,
                    marked.id,
                    actor,
                )
                .await?;
                report.needs_rebooking += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// The first colleague whose availability offers exactly this slot and who is not booked
/// then; the database has the last word (exclusion constraint), tried in a savepoint.
async fn move_to_colleague(
    conn: &mut PgConnection,
    tz: Tz,
    appointment: &Appointment,
    colleagues: &[Uuid],
) -> Result<Option<Appointment>, sqlx::Error> {
    let day = appointment.starts_at.with_timezone(&tz).date_naive();
    for colleague in colleagues {
        let entries = availability::list_in(&mut *conn, &appointment.country_code, *colleague).await?;
        let offered = slots::free_slots(tz, &availability::for_slots(&entries), &[], day, day);
        if !offered
            .iter()
            .any(|s| s.start == appointment.starts_at && s.end == appointment.ends_at)
        {
            continue;
        }
        let mut savepoint = conn.begin().await?;
        let moved = sqlx::query_as::<_, Appointment>(sqlx::AssertSqlSafe(format!(
            "UPDATE appointments SET practitioner_id = $3, updated_at = now()
              WHERE country_code = $1 AND id = $2 RETURNING {COLUMNS}"
        )))
        .bind(&appointment.country_code)
        .bind(appointment.id)
        .bind(colleague)
        .fetch_one(&mut *savepoint)
        .await;
        match moved {
            Ok(moved) => {
                savepoint.commit().await?;
                return Ok(Some(moved));
            }
            // Busy then (exclusion constraint): try the next colleague.
            Err(e)
                if e.as_database_error()
                    .and_then(|d| d.constraint())
                    .is_some_and(|c| c.ends_with("_no_double_booking")) =>
            {
                savepoint.rollback().await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

async fn record<P: Serialize>(
    conn: &mut PgConnection,
    country: &str,
    event_type: &'static str,
    key: Uuid,
    payload: &P,
    id: Uuid,
    actor: Actor<'_>,
) -> Result<(), sqlx::Error> {
    let event = outbox::Event {
        country_code: country,
        topic: outbox::APPOINTMENT_EVENTS,
        event_type,
        key,
        payload,
        correlation_id: actor.correlation_id,
    };
    outbox::enqueue(&mut *conn, &event).await?;
    actor
        .audit(conn, country, event_type, &format!("appointment/{id}"))
        .await
}
