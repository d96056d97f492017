//! The analytics consumer's effect of an appointment event, in the transaction that records
//! the event in the inbox: its minute's count goes up by one, the country's watermark
//! (latest event time counted) moves on, and the minute's new counts go to the outbox for
//! `analytics-results`, all in one statement.

use meridian_events::consumer::{Failure, Handler, Incoming};
use meridian_shared::outbox::{ANALYTICS_RESULTS, APPOINTMENT_EVENTS};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::window::{self, ALLOWED_LATENESS};

/// The event type of a minute's new counts on `analytics-results`.
pub const MINUTE_COUNTED: &str = "analytics.appointments_minute";

/// Names the key of a minute's results (country, minute, specialty): the same minute
/// always lands on the same partition, in order.
const RESULT_KEYS: Uuid = Uuid::from_u128(0x6d65_7269_6469_616e_2d61_6e61_6c79_7469);

/// Counts appointment events per country, specialty and minute.
#[derive(Clone, Copy, Default)]
pub struct AnalyticsHandler;

/// What an event counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    Booked,
    Cancelled,
    Reassigned,
}

impl Measure {
    fn of(event_type: &str) -> Option<Self> {
        match event_type {
            "appointment.booked" => Some(Self::Booked),
            "appointment.cancelled" => Some(Self::Cancelled),
            "appointment.reassigned" => Some(Self::Reassigned),
            // A move changes no count; an appointment left to rebook is counted when it is
            // cancelled or booked again.
            _ => None,
        }
    }
}

/// The fields of an appointment event the consumer reads: the practitioner, whose specialty
/// the event is counted under (a re-assigned appointment's new practitioner).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Appointment {
    practitioner_id: Uuid,
}

/// One statement: the watermark moves on; the minute is counted unless the event is later
/// than the allowed lateness (a replay from the dead letters is counted whatever its age:
/// replaying is someone's decision); the minute's new counts go to the outbox. It returns
/// the watermark and whether the event was counted.
const COUNT: &str = "
WITH watermark AS (
    INSERT INTO analytics_watermarks (country_code, watermark) VALUES ($1, $2)
    ON CONFLICT (country_code) DO UPDATE
        SET watermark = greatest(analytics_watermarks.watermark, EXCLUDED.watermark)
    RETURNING watermark
),
counted AS (
    INSERT INTO appointment_minutes (country_code, minute, specialty, booked, cancelled, reassigned)
    SELECT $1, $4, $3, $5, $6, $7 FROM watermark w
     WHERE $8 OR $2 >= w.watermark - $9::interval
    ON CONFLICT (country_code, minute, specialty) DO UPDATE
        SET booked = appointment_minutes.booked + EXCLUDED.booked,
            cancelled = appointment_minutes.cancelled + EXCLUDED.cancelled,
            reassigned = appointment_minutes.reassigned + EXCLUDED.reassigned,
            updated_at = now()
    RETURNING booked, cancelled, reassigned
),
published AS (
    INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload, correlation_id)
    SELECT $1, $10, $11, $13, jsonb_build_object(
               'countryCode', $1::text, 'minute', $4::timestamptz, 'specialty', $3::text,
               'booked', c.booked, 'cancelled', c.cancelled, 'reassigned', c.reassigned), $12
      FROM counted c
)
SELECT (SELECT watermark FROM watermark), EXISTS (SELECT 1 FROM counted)";

impl Handler for AnalyticsHandler {
    fn name(&self) -> &str {
        "analytics"
    }

    fn topic(&self) -> &'static str {
        APPOINTMENT_EVENTS
    }

    async fn handle(&self, tx: &mut PgConnection, event: &Incoming) -> Result<(), Failure> {
        let Some(measure) = Measure::of(&event.event_type) else {
            return Ok(());
        };
        let appointment: Appointment = serde_json::from_value(event.payload.clone())
            .map_err(|e| Failure::Event(format!("{} payload: {e}", event.event_type)))?;
        let country = event.country_code.as_str();
        let minute = window::minute_of(event.occurred_at);
        let specialty: Option<String> =
            sqlx::query_scalar("SELECT specialty FROM practitioners WHERE country_code = $1 AND id = $2")
                .bind(country)
                .bind(appointment.practitioner_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(specialty) = specialty else {
            return Err(Failure::Event(format!(
                "practitioner {} of {country} not found",
                appointment.practitioner_id
            )));
        };
        let key = Uuid::new_v5(
            &RESULT_KEYS,
            format!("{country}|{}|{specialty}", minute.to_rfc3339()).as_bytes(),
        );
        let lateness = format!("{} seconds", ALLOWED_LATENESS.num_seconds());
        let (watermark, counted): (chrono::DateTime<chrono::Utc>, bool) = sqlx::query_as(COUNT)
            .bind(country)
            .bind(event.occurred_at)
            .bind(&specialty)
            .bind(minute)
            .bind(i32::from(measure == Measure::Booked))
            .bind(i32::from(measure == Measure::Cancelled))
            .bind(i32::from(measure == Measure::Reassigned))
            .bind(event.replayed)
            .bind(lateness)
            .bind(ANALYTICS_RESULTS)
            .bind(MINUTE_COUNTED)
            .bind(event.correlation_id)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        if !counted {
            return Err(Failure::Rejected(format!(
                "event time {} is more than {} minutes behind the latest counted ({watermark}): minute {minute} is final",
                event.occurred_at.to_rfc3339(),
                ALLOWED_LATENESS.num_minutes(),
            )));
        }
        Ok(())
    }
}
