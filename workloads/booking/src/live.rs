//! Live slot changes, read from the outbox: a booked appointment takes a slot, a cancelled
//! one frees it. One tailer per service follows the outbox and fans the changes out to
//! every listening client; a client that reconnects with `Last-Event-ID` is first replayed
//! what it missed, straight from the outbox.
//!
//! Outbox IDs come from a sequence, and a transaction that took a lower ID can commit after
//! one that took a higher ID. The tailer therefore does not step past a missing ID until it
//! has been missing for [`GAP_WAIT`] (a rolled-back transaction leaves a gap for ever).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

/// How long a missing outbox ID may hold the tailer back.
const GAP_WAIT: Duration = Duration::from_secs(2);
/// How often the tailer looks for new events.
const POLL: Duration = Duration::from_millis(100);

/// A slot that was taken or freed. No patient data: anyone may watch a practitioner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotChange {
    /// The SSE event ID, where a reconnect resumes: `2 × outbox ID + part`, because one
    /// outbox event (a reschedule) frees one slot and takes another.
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub country_code: String,
    /// `slot.taken` or `slot.freed`.
    #[serde(skip)]
    pub kind: &'static str,
    pub practitioner_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

type Row = (i64, String, String, Uuid, serde_json::Value);

/// A span of time read from an event's payload.
type Span = Option<(DateTime<Utc>, DateTime<Utc>)>;

fn changes((id, country_code, event_type, practitioner_id, payload): Row) -> Vec<SlotChange> {
    let at = |start: &str, end: &str| -> Span {
        Some((
            payload.get(start)?.as_str()?.parse().ok()?,
            payload.get(end)?.as_str()?.parse().ok()?,
        ))
    };
    let parts: Vec<(&'static str, Span)> = match event_type.as_str() {
        // A re-assigned appointment takes the new practitioner's slot (the event is keyed by
        // them); the old practitioner is unavailable then, so their slot is not offered.
        "appointment.booked" | "appointment.reassigned" => vec![("slot.taken", at("startsAt", "endsAt"))],
        "appointment.cancelled" | "appointment.needs_rebooking" => vec![("slot.freed", at("startsAt", "endsAt"))],
        "appointment.rescheduled" => {
            vec![
                ("slot.freed", at("previousStartsAt", "previousEndsAt")),
                ("slot.taken", at("startsAt", "endsAt")),
            ]
        }
        _ => Vec::new(),
    };
    parts
        .into_iter()
        .enumerate()
        .filter_map(|(part, (kind, times))| {
            let (start, end) = times?;
            let id = id * 2 + part as i64;
            Some(SlotChange {
                id,
                country_code: country_code.clone(),
                kind,
                practitioner_id,
                start,
                end,
            })
        })
        .collect()
}

const SELECT: &str = "SELECT id, country_code, event_type, aggregate_id, payload FROM outbox
                       WHERE topic = 'appointment-events'
                         AND event_type IN ('appointment.booked', 'appointment.cancelled', 'appointment.rescheduled',
                                            'appointment.reassigned', 'appointment.needs_rebooking')";

/// The changes of some practitioners after event ID `after`, oldest first: what a
/// reconnecting client missed.
pub async fn since(
    pool: &PgPool,
    country: &str,
    practitioners: &[Uuid],
    after: i64,
) -> Result<Vec<SlotChange>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} AND country_code = $1 AND aggregate_id = ANY($2) AND id >= $3 ORDER BY id"
    )))
    .bind(country)
    .bind(practitioners)
    .bind(after.div_euclid(2))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().flat_map(changes).filter(|c| c.id > after).collect())
}

/// The newest event ID: where a new client starts.
pub async fn head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) * 2 + 1 FROM outbox")
        .fetch_one(pool)
        .await
}

/// Fans slot changes out to listeners; the tailer starts with the first listener.
pub struct LiveSlots {
    pool: PgPool,
    sender: broadcast::Sender<Arc<SlotChange>>,
    started: AtomicBool,
}

impl LiveSlots {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sender: broadcast::channel(4096).0,
            started: AtomicBool::new(false),
        }
    }

    /// A receiver of every change from now on.
    pub async fn subscribe(self: &Arc<Self>) -> Result<broadcast::Receiver<Arc<SlotChange>>, sqlx::Error> {
        let receiver = self.sender.subscribe();
        if !self.started.swap(true, Ordering::SeqCst) {
            let from = head(&self.pool).await?.div_euclid(2);
            let this = self.clone();
            tokio::spawn(async move { this.tail(from).await });
        }
        Ok(receiver)
    }

    async fn tail(self: Arc<Self>, mut contiguous: i64) {
        // IDs above `contiguous` already sent, and since when the first gap has been open.
        let mut sent: BTreeSet<i64> = BTreeSet::new();
        let mut gap_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(POLL).await;
            let rows: Vec<Row> = match sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} AND id > $1 ORDER BY id")))
                .bind(contiguous)
                .fetch_all(&self.pool)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "live slots: cannot read the outbox; retrying");
                    continue;
                }
            };
            let max_id = rows.last().map(|r| r.0);
            for row in rows {
                let id = row.0;
                if sent.insert(id) {
                    for change in changes(row) {
                        let _ = self.sender.send(Arc::new(change));
                    }
                }
            }
            // Other event types also take outbox IDs: the next IDs to expect are any IDs,
            // so look at what exists below the newest one before calling something a gap.
            let Some(max_id) = max_id else { continue };
            let present: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox WHERE id > $1 AND id <= $2 ORDER BY id")
                .bind(contiguous)
                .bind(max_id)
                .fetch_all(&self.pool)
                .await
                .unwrap_or_default();
            for id in present {
                // The next ID in sequence, or one past a gap that stayed open long enough.
                let next = id == contiguous + 1;
                if next || gap_since.get_or_insert_with(Instant::now).elapsed() >= GAP_WAIT {
                    contiguous = id;
                    gap_since = None;
                } else {
                    break;
                }
            }
            sent.retain(|id| *id > contiguous);
        }
    }
}
