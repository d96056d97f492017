//! The sender: takes the notices that are due, one at a time and each in its own
//! transaction (`FOR UPDATE SKIP LOCKED`, so replicas share the work and never take the same
//! notice), reads the patient's contact from the vault, sends through the channel's
//! transport, and records the outcome on the row:
//! - `sent` (or `held` by `meridian dev`'s transport) with the channel and time;
//! - `cancelled` when the notice no longer applies: a reminder whose appointment has begun,
//!   was cancelled or moved (as the `appointments` table says), or whose opt-in was
//!   withdrawn;
//! - `failed` when it cannot be sent: the patient is gone or has no usable contact (at
//!   once), or the transport refused it [`Settings::max_attempts`] times (tried again with
//!   doubling pauses until then). `last_error` says why, never with the contact.
//!
//! The send happens before the row is marked: a dispatcher that dies in between leaves the
//! notice pending, and it is sent again (with the same idempotency key).

use std::time::Duration;

use chrono::{DateTime, Utc};
use meridian_shared::audit::ReadLog;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::contact::{self, ContactError};
use crate::plan::{Channel, Kind};
use crate::rules::{CountryRules, Rules};
use crate::transport::{Delivered, Outgoing, Transports};

/// How the dispatcher paces itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Attempts at a notice the transport refuses before it is `failed`.
    pub max_attempts: i32,
    /// Pause after the first refused attempt, doubled after each (up to an hour).
    pub first_backoff: Duration,
    /// Pause when nothing is due.
    pub idle: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            first_backoff: Duration::from_secs(30),
            idle: Duration::from_secs(1),
        }
    }
}

/// Sends the due notices of the countries in its [`Rules`].
#[derive(Clone)]
pub struct Dispatcher {
    /// As the workload role: the notices, and the appointments and consents they check.
    pub workload: PgPool,
    /// As the vault role: the patients' contacts.
    pub vault: PgPool,
    pub rules: Rules,
    pub transports: Transports,
    pub settings: Settings,
    reads: ReadLog,
}

/// A due notice, as taken.
#[derive(sqlx::FromRow)]
struct Due {
    country_code: String,
    id: Uuid,
    appointment_id: Uuid,
    patient_id: String,
    kind: String,
    starts_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
    attempts: i32,
    correlation_id: Option<Uuid>,
}

/// What becomes of a notice taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent(Channel),
    Held(Channel),
    Cancelled(String),
    /// Refused by the transport; tried again later.
    Retry(String),
    Failed(String),
    /// Something of ours was out of reach (the vault, its keys): tried again later without
    /// counting an attempt.
    Later(String),
}

impl Dispatcher {
    pub fn new(workload: PgPool, vault: PgPool, rules: Rules, transports: Transports, settings: Settings) -> Self {
        let reads = ReadLog::start(&vault.connect_options());
        Self {
            workload,
            vault,
            rules,
            transports,
            settings,
            reads,
        }
    }

    /// Sends what is due until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let pause = match self.dispatch_one().await {
                Ok(Some(_)) => continue,
                Ok(None) => self.settings.idle,
                Err(e) => {
                    tracing::warn!(error = %e, "notifications: database unavailable");
                    Duration::from_millis(500).max(self.settings.idle)
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Sends every notice due now; returns what became of each, by notice ID.
    pub async fn dispatch_due(&self) -> Result<Vec<(Uuid, Outcome)>, sqlx::Error> {
        let mut done = Vec::new();
        while let Some(outcome) = self.dispatch_one().await? {
            done.push(outcome);
        }
        Ok(done)
    }

    /// Takes one due notice and deals with it; `None` when nothing is due.
    pub async fn dispatch_one(&self) -> Result<Option<(Uuid, Outcome)>, sqlx::Error> {
        let countries = self.rules.sending();
        let mut tx = meridian_shared::pool::begin(&self.workload).await?;
        let due: Option<Due> = sqlx::query_as(
            "SELECT country_code, id, appointment_id, patient_id, kind, starts_at, due_at, attempts, correlation_id
               FROM notifications
              WHERE status = 'pending' AND next_at <= now() AND country_code = ANY($1)
              ORDER BY next_at
              LIMIT 1
              FOR UPDATE SKIP LOCKED",
        )
        .bind(&countries)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(due) = due else {
            return Ok(None);
        };
        let outcome = self.deal_with(&mut tx, &due).await?;
        self.record(&mut tx, &due, &outcome).await?;
        tx.commit().await?;
        match &outcome {
            Outcome::Sent(_) | Outcome::Held(_) => {
                tracing::info!(id = %due.id, country = %due.country_code, kind = %due.kind, "notice sent")
            }
            other => {
                tracing::info!(id = %due.id, country = %due.country_code, kind = %due.kind, outcome = ?other, "notice not sent")
            }
        }
        Ok(Some((due.id, outcome)))
    }

    async fn deal_with(&self, conn: &mut PgConnection, due: &Due) -> Result<Outcome, sqlx::Error> {
        let Some(rules) = self.rules.get(&due.country_code) else {
            return Ok(Outcome::Later(format!(
                "country {} is not served here",
                due.country_code
            )));
        };
        let Some(kind) = Kind::parse(&due.kind) else {
            return Ok(Outcome::Failed(format!("unknown kind {:?}", due.kind)));
        };
        let Ok(client_id) = due.patient_id.parse::<Uuid>() else {
            return Ok(Outcome::Failed("the patient ID is not a client ID".into()));
        };
        if kind == Kind::Reminder
            && let Some(why) = self.reminder_void(conn, &rules, due, client_id).await?
        {
            return Ok(Outcome::Cancelled(why));
        }
        let correlation_id = due.correlation_id.unwrap_or(due.id);
        let contact = match contact::read(&self.vault, &self.reads, &rules, client_id, correlation_id).await {
            Ok(contact) => contact,
            Err(ContactError::Gone(why)) => return Ok(Outcome::Failed(why)),
            Err(ContactError::Unavailable(why)) => return Ok(Outcome::Later(why)),
        };
        let sms = rules.sms && self.transports.sms.is_some();
        let (channel, to) = match (sms, contact.mobile, contact.email) {
            (true, Some(mobile), _) => (Channel::Sms, mobile),
            (_, _, Some(email)) => (Channel::Email, email),
            (true, None, None) => {
                return Ok(Outcome::Failed(
                    "the patient has no mobile number or e-mail address in their record".into(),
                ));
            }
            (false, _, None) => {
                return Ok(Outcome::Failed(
                    "the patient has no e-mail address in their record".into(),
                ));
            }
        };
        let Some(transport) = self.transports.of(channel) else {
            return Ok(Outcome::Later(format!(
                "no {} transport is configured",
                channel.as_str()
            )));
        };
        let text = crate::message::render(kind, due.appointment_id, due.starts_at, rules.timezone);
        let message = Outgoing {
            id: due.id,
            country: due.country_code.clone(),
            kind,
            channel,
            to,
            subject: text.subject,
            body: text.body,
            due_at: due.due_at,
        };
        Ok(match transport.send(&message).await {
            Ok(Delivered::Sent) => Outcome::Sent(channel),
            Ok(Delivered::Held) => Outcome::Held(channel),
            Err(e) if due.attempts + 1 >= self.settings.max_attempts => {
                Outcome::Failed(format!("{e} (attempt {})", due.attempts + 1))
            }
            Err(e) => Outcome::Retry(format!("{e} (attempt {})", due.attempts + 1)),
        })
    }

    /// Why a reminder no longer applies, if it does not.
    async fn reminder_void(
        &self,
        conn: &mut PgConnection,
        rules: &CountryRules,
        due: &Due,
        client_id: Uuid,
    ) -> Result<Option<String>, sqlx::Error> {
        if due.starts_at <= Utc::now() {
            return Ok(Some("the appointment has begun".into()));
        }
        // Events of one appointment may arrive out of order (they are keyed by practitioner):
        // the appointment as it stands has the last word, where this database holds it.
        let current: Option<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT status, starts_at FROM appointments WHERE country_code = $1 AND id = $2")
                .bind(&due.country_code)
                .bind(due.appointment_id)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some((status, starts_at)) = current {
            if status != "booked" {
                return Ok(Some(format!("the appointment is {status}")));
            }
            if starts_at != due.starts_at {
                return Ok(Some("the appointment has moved".into()));
            }
        }
        if rules.reminders_need_opt_in && !crate::consent::opted_in(conn, &due.country_code, client_id).await? {
            return Ok(Some("the patient has not opted in to reminders".into()));
        }
        Ok(None)
    }

    async fn record(&self, conn: &mut PgConnection, due: &Due, outcome: &Outcome) -> Result<(), sqlx::Error> {
        let at = |sql| sqlx::query(sql).bind(&due.country_code).bind(due.id);
        let query = match outcome {
            Outcome::Sent(channel) | Outcome::Held(channel) => at(
                "UPDATE notifications SET status = $3, channel = $4, attempts = attempts + 1, sent_at = now(),
                        last_error = NULL
                  WHERE country_code = $1 AND id = $2",
            )
            .bind(if matches!(outcome, Outcome::Sent(_)) {
                "sent"
            } else {
                "held"
            })
            .bind(channel.as_str()),
            Outcome::Cancelled(why) => {
                at("UPDATE notifications SET status = 'cancelled', last_error = $3 WHERE country_code = $1 AND id = $2")
                    .bind(why)
            }
            Outcome::Failed(why) => at(
                "UPDATE notifications SET status = 'failed', attempts = attempts + 1, last_error = $3
                  WHERE country_code = $1 AND id = $2",
            )
            .bind(why),
            Outcome::Retry(why) => at("UPDATE notifications SET attempts = attempts + 1, last_error = $3,
                        next_at = now() + make_interval(secs => $4)
                  WHERE country_code = $1 AND id = $2")
            .bind(why)
            .bind(backoff(self.settings.first_backoff, due.attempts + 1).as_secs_f64()),
            Outcome::Later(why) => at(
                "UPDATE notifications SET last_error = $3, next_at = now() + interval '30 seconds'
                  WHERE country_code = $1 AND id = $2",
            )
            .bind(why),
        };
        query.execute(conn).await?;
        Ok(())
    }
}

/// The pause after `attempts` refused attempts: `first`, doubled each time, at most an hour.
pub fn backoff(first: Duration, attempts: i32) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 20) as u32;
    first.saturating_mul(1 << doublings).min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_an_hour() {
        let first = Duration::from_secs(30);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 3), Duration::from_secs(120));
        assert_eq!(backoff(first, 30), Duration::from_secs(3600));
    }
}
