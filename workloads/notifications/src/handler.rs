//! The notifications consumer's effect of an appointment event, in the transaction that
//! records the event in the inbox: notices scheduled and reminders cancelled, as [`plan`]
//! says under the country's rules.

use meridian_events::consumer::{Failure, Handler, Incoming};
use meridian_shared::outbox::APPOINTMENT_EVENTS;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::plan::{self, Appointment, Reminders};
use crate::rules::Rules;

/// The consumer's name: its Kafka consumer group and its rows in `inbox`.
pub const NAME: &str = "notifications";

/// Schedules notices from `appointment-events`.
#[derive(Clone)]
pub struct NotificationsHandler {
    pub rules: Rules,
}

impl Handler for NotificationsHandler {
    fn name(&self) -> &str {
        NAME
    }

    fn topic(&self) -> &'static str {
        APPOINTMENT_EVENTS
    }

    async fn handle(&self, tx: &mut PgConnection, event: &Incoming) -> Result<(), Failure> {
        let kind = event.event_type.as_str();
        if !kind.starts_with("appointment.") {
            return Ok(());
        }
        let country = event.country_code.as_str();
        // Not known (yet): tried again, then dead-lettered and replayable, rather than taken
        // as handled with nothing scheduled.
        let rules = self
            .rules
            .get(country)
            .ok_or_else(|| Failure::Event(format!("country {country} is not served by this consumer")))?;
        let appointment: Appointment = serde_json::from_value(event.payload.clone())
            .map_err(|e| Failure::Event(format!("{kind} payload: {e}")))?;
        let client_id: Uuid = appointment.patient_id.parse().map_err(|_| {
            Failure::Event(format!(
                "{kind} payload: patientId {:?} is not a client ID (a UUID)",
                appointment.patient_id
            ))
        })?;
        let reminders = if plan::may_remind(kind)
            && rules.reminders_need_opt_in
            && !crate::consent::opted_in(tx, country, client_id).await?
        {
            Reminders::NotOptedIn
        } else {
            Reminders::Allowed
        };
        let planned = plan::plan(kind, appointment.starts_at, event.occurred_at, reminders);
        if planned.cancel_reminders {
            sqlx::query(
                "UPDATE notifications SET status = 'cancelled', last_error = $3
                  WHERE country_code = $1 AND appointment_id = $2 AND kind = 'reminder' AND status = 'pending'",
            )
            .bind(country)
            .bind(appointment.id)
            .bind(format!("{kind} (event {})", event.event_id))
            .execute(&mut *tx)
            .await?;
        }
        for notice in &planned.schedule {
            // Once per appointment, kind and due time: a redelivered or replayed event finds
            // its notice there. A reminder cancelled by an earlier event comes back when
            // another event asks for it again (moved away, then back to the same time).
            sqlx::query(
                "INSERT INTO notifications (country_code, id, appointment_id, patient_id, kind, starts_at,
                                            due_at, next_at, event_id, correlation_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)
                 ON CONFLICT (country_code, appointment_id, kind, due_at) DO UPDATE
                    SET status = 'pending', attempts = 0, last_error = NULL, next_at = EXCLUDED.next_at,
                        starts_at = EXCLUDED.starts_at, event_id = EXCLUDED.event_id,
                        correlation_id = EXCLUDED.correlation_id
                  WHERE notifications.status = 'cancelled' AND notifications.event_id <> EXCLUDED.event_id",
            )
            .bind(country)
            .bind(Uuid::new_v4())
            .bind(appointment.id)
            .bind(client_id.to_string())
            .bind(notice.kind.as_str())
            .bind(appointment.starts_at)
            .bind(notice.due_at)
            .bind(event.event_id)
            .bind(event.correlation_id)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}
