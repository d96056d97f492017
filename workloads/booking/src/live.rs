//! Live slot changes, read from the outbox: a booked appointment takes a slot, a cancelled
//! one frees it. One tailer per service follows the outbox and fans the changes out to
//! every listening client; a client that reconnects with `Last-Event-ID` is first replayed
//! what it missed, straight from the outbox.
//!
//! The tailer reads the outbox in commit order with a [`Follower`]: an event is sent when its
//! transaction's commit becomes visible, however late that is. An event's SSE ID is where a
//! reconnect resumes (an [`EventId`]): the snapshot the tailer had read up to before it, and
//! the event's place in its transaction. Resuming replays every change whose transaction
//! that snapshot does not see, in the order they were written, but the ones of the same
//! transaction up to the last one seen; a replayed change the client had already seen
//! repeats a state it was told (a slot taken, a slot freed) in the same order, so the last
//! word on every slot is still right.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use meridian_shared::outbox::{APPOINTMENT_EVENTS, Follower, ROW_COLUMNS, Row, Snapshot};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

/// How often the tailer looks for new events.
const POLL: Duration = Duration::from_millis(100);
/// Events the tailer reads at once.
const BATCH: i64 = 1000;

/// A slot that was taken or freed. No patient data: anyone may watch a practitioner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotChange {
    /// Its SSE ID: where a reconnect resumes.
    #[serde(skip)]
    pub id: EventId,
    #[serde(skip)]
    pub country_code: String,
    /// `slot.taken` or `slot.freed`.
    #[serde(skip)]
    pub kind: &'static str,
    pub practitioner_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Where a client that saw a change resumes: every change whose transaction `from` does not
/// see, but those of transaction `xid` up to outbox row `row`, part `part` (a reschedule frees
/// one slot and takes another: two parts of one row). Written `xid-row-part-snapshot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventId {
    pub from: Arc<Snapshot>,
    pub xid: u64,
    pub row: i64,
    pub part: u8,
}

impl EventId {
    /// Whether the change at `xid`, `row`, `part` comes after this one.
    fn is_before(&self, xid: u64, row: i64, part: u8) -> bool {
        xid != self.xid || (row, part) > (self.row, self.part)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}-{}", self.xid, self.row, self.part, self.from)
    }
}

/// Text that is not an [`EventId`].
#[derive(Debug, thiserror::Error)]
#[error("not an event ID of this stream")]
pub struct InvalidEventId;

impl FromStr for EventId {
    type Err = InvalidEventId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.splitn(4, '-');
        let mut next = || parts.next().ok_or(InvalidEventId);
        let xid = next()?.parse().map_err(|_| InvalidEventId)?;
        let row = next()?.parse().map_err(|_| InvalidEventId)?;
        let part = next()?.parse().map_err(|_| InvalidEventId)?;
        let from = next()?.parse().map_err(|_| InvalidEventId)?;
        Ok(Self {
            from: Arc::new(from),
            xid,
            row,
            part,
        })
    }
}

/// A span of time read from an event's payload.
type Span = Option<(DateTime<Utc>, DateTime<Utc>)>;

/// The slot changes of one outbox row, read after snapshot `from`.
fn changes(row: &Row, from: &Arc<Snapshot>) -> Vec<SlotChange> {
    let payload = &row.payload;
    let at = |start: &str, end: &str| -> Span {
        Some((
            payload.get(start)?.as_str()?.parse().ok()?,
            payload.get(end)?.as_str()?.parse().ok()?,
        ))
    };
    let parts: Vec<(&'static str, Span)> = match row.event_type.as_str() {
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
            Some(SlotChange {
                id: EventId {
                    from: from.clone(),
                    xid: row.xid as u64,
                    row: row.id,
                    part: part as u8,
                },
                country_code: row.country_code.clone(),
                kind,
                practitioner_id: row.aggregate_id,
                start,
                end,
            })
        })
        .collect()
}

/// What a client resuming after `after` missed of some practitioners' changes, oldest
/// first, and the snapshot they were read in: a live change this snapshot sees was replayed
/// (or came before the client). A client without `after` starts now: nothing missed.
pub async fn since(
    pool: &PgPool,
    country: &str,
    practitioners: &[Uuid],
    after: Option<&EventId>,
) -> Result<(Vec<SlotChange>, Snapshot), sqlx::Error> {
    let Some(after) = after else {
        return Ok((Vec::new(), Snapshot::current(pool).await?));
    };
    // One snapshot for both reads.
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let now: Snapshot = sqlx::query_scalar::<_, String>("SELECT pg_current_snapshot()::text")
        .fetch_one(&mut *tx)
        .await?
        .parse()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ROW_COLUMNS} FROM outbox
          WHERE topic = $1 AND country_code = $2 AND aggregate_id = ANY($3)
            AND xid >= pg_snapshot_xmin($4::text::pg_snapshot)
            AND NOT pg_visible_in_snapshot(xid, $4::text::pg_snapshot)
          ORDER BY id"
    )))
    .bind(APPOINTMENT_EVENTS)
    .bind(country)
    .bind(practitioners)
    .bind(after.from.to_string())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let missed = rows
        .into_iter()
        .flat_map(|row| changes(&row, &after.from))
        .filter(|c| after.is_before(c.id.xid, c.id.row, c.id.part))
        .collect();
    Ok((missed, now))
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

    /// A receiver of every change from now on: of every transaction that the database's
    /// current snapshot, taken after this returns, does not see.
    pub async fn subscribe(self: &Arc<Self>) -> Result<broadcast::Receiver<Arc<SlotChange>>, sqlx::Error> {
        let receiver = self.sender.subscribe();
        if !self.started.load(Ordering::SeqCst) {
            let follower = Follower::from_now(&self.pool, APPOINTMENT_EVENTS).await?;
            if !self.started.swap(true, Ordering::SeqCst) {
                let this = self.clone();
                tokio::spawn(async move { this.tail(follower).await });
            }
        }
        Ok(receiver)
    }

    async fn tail(self: Arc<Self>, mut follower: Follower) {
        loop {
            let batch = match follower.next(&self.pool, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "live slots: cannot read the outbox; retrying");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            let from = batch.from.clone().expect("the tailer starts from a snapshot");
            let full = batch.rows.len() as i64 == BATCH;
            for row in &batch.rows {
                for change in changes(row, &from) {
                    let _ = self.sender.send(Arc::new(change));
                }
            }
            follower.done(&batch);
            if !full {
                tokio::time::sleep(POLL).await;
            }
        }
    }
}
