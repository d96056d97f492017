//! The transactional outbox: a domain event is written in the same transaction as the
//! change it describes, so an event is published if and only if the change committed. A
//! relay (or, in `meridian dev`, the consumers themselves) reads the table in commit order
//! with a [`Follower`].
//!
//! Outbox IDs come from a sequence: a transaction that took a lower ID can commit long after
//! one that took a higher ID, so "every ID up to N is read" is never a safe position. Each
//! row records the transaction that wrote it (`xid`, `pg_current_xact_id()`), and a
//! follower's position is a PostgreSQL snapshot (`pg_current_snapshot()`): every row whose
//! transaction is visible in it has been read. The next rows are those whose transaction is
//! visible in a newer snapshot and was not in the old one, so an event is read exactly when
//! its transaction's commit becomes visible, however late that is, and a rolled-back
//! transaction holds nothing back.
//!
//! The trade-off: a snapshot remembers the transactions still running when it was taken, from
//! the oldest one (`xmin`) on. A long-running transaction (in any database of the server:
//! transaction IDs are server-wide) does not delay the events of others, but while it runs
//! every read looks again at the rows written since it started (through the index on `xid`)
//! to find the new ones. Nothing is skipped for it; reads get slower the longer it stays open.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Topic of practitioner events (`practitioner.*`).
pub const PRACTITIONER_EVENTS: &str = "practitioner-events";
/// Topic of appointment events (`appointment.*`).
pub const APPOINTMENT_EVENTS: &str = "appointment-events";
/// Topic of records events (`patient.*`, `observation.*`, ...), keyed by the patient's client
/// ID. Payloads name resources by id and version only: never a personal detail.
pub const PATIENT_EVENTS: &str = "patient-events";

/// Topic of the analytics job's results (per-minute appointment counts).
pub const ANALYTICS_RESULTS: &str = "analytics-results";

/// The topics of a Region's Kafka that the outbox feeds (the analytics consumer writes its
/// results to the outbox too, in the transaction that counts them).
pub const OUTBOX_TOPICS: [&str; 4] = [
    PRACTITIONER_EVENTS,
    APPOINTMENT_EVENTS,
    PATIENT_EVENTS,
    ANALYTICS_RESULTS,
];

/// One domain event. `key` orders events: the Kafka partition key (the practitioner ID).
#[derive(Clone, Debug)]
pub struct Event<'a, P: Serialize> {
    pub country_code: &'a str,
    pub topic: &'static str,
    pub event_type: &'static str,
    pub key: Uuid,
    pub payload: &'a P,
    /// The request that caused it: published with the event.
    pub correlation_id: Uuid,
}

/// Writes `event` inside the caller's transaction.
pub async fn enqueue<P: Serialize>(conn: &mut PgConnection, event: &Event<'_, P>) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_value(event.payload).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload, correlation_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.country_code)
    .bind(event.topic)
    .bind(event.event_type)
    .bind(event.key)
    .bind(payload)
    .bind(event.correlation_id)
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
        "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload, correlation_id)
         SELECT c, t, y, k, p, r FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[], $6::uuid[])
             WITH ORDINALITY AS e(c, t, y, k, p, r, n)
         ORDER BY n",
    )
    .bind(events.iter().map(|e| e.country_code).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.topic).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_type).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.key).collect::<Vec<_>>())
    .bind(payloads)
    .bind(events.iter().map(|e| e.correlation_id).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// A PostgreSQL snapshot (`pg_snapshot`, text form `xmin:xmax:xip,...`): the transactions
/// whose effects it sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    xmin: u64,
    xmax: u64,
    /// Transactions between `xmin` and `xmax` still running when it was taken.
    xip: Vec<u64>,
}

impl Snapshot {
    /// Whether transaction `xid` had ended when the snapshot was taken (as
    /// `pg_visible_in_snapshot`): its rows, if it committed, are visible in it.
    pub fn visible(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.xip.contains(&xid))
    }

    /// The oldest transaction still running when it was taken.
    pub fn xmin(&self) -> u64 {
        self.xmin
    }

    /// The current snapshot of the database.
    pub async fn current(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let text: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
            .fetch_one(pool)
            .await?;
        text.parse()
            .map_err(|e: InvalidSnapshot| sqlx::Error::Decode(Box::new(e)))
    }
}

/// A text that is not a snapshot.
#[derive(Debug, thiserror::Error)]
#[error("not a snapshot (xmin:xmax:xip,...): {0:?}")]
pub struct InvalidSnapshot(String);

impl FromStr for Snapshot {
    type Err = InvalidSnapshot;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidSnapshot(text.chars().take(64).collect());
        let mut parts = text.splitn(3, ':');
        let mut number = || parts.next().and_then(|n| n.parse::<u64>().ok()).ok_or_else(invalid);
        let (xmin, xmax) = (number()?, number()?);
        let xip = match parts.next() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|n| n.parse::<u64>().map_err(|_| invalid()))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let ascending = xip.windows(2).all(|pair| pair[0] <= pair[1]);
        if xmin > xmax || !ascending || xip.iter().any(|x| *x < xmin || *x >= xmax) {
            return Err(invalid());
        }
        Ok(Self { xmin, xmax, xip })
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, xid) in self.xip.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{xid}")?;
        }
        Ok(())
    }
}

/// The columns of a [`Row`], for a `SELECT` of the outbox: every reader selects these.
pub const ROW_COLUMNS: &str = "id, coalesce(xid::text, '0')::bigint AS xid, country_code, event_type, aggregate_id, \
     payload, event_id, correlation_id, created_at";

/// One outbox row as a [`Follower`] reads it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    /// The writing transaction (0 for rows written before transaction IDs were recorded).
    pub xid: i64,
    pub country_code: String,
    pub event_type: String,
    pub aggregate_id: Uuid,
    pub payload: serde_json::Value,
    /// Stable across every publication of the row: what consumers deduplicate on.
    pub event_id: Uuid,
    pub correlation_id: Option<Uuid>,
    /// When the change it describes was made.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What one [`Follower::next`] read: rows of one batch, oldest first.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<Row>,
    /// Where a reader resumes to be given (at least) every row of this batch and after it:
    /// the snapshot the batch starts from.
    pub from: Option<std::sync::Arc<Snapshot>>,
    /// Whether this was the batch's last chunk.
    complete: bool,
}

/// Reads one topic of the outbox in commit order, as far as the database can tell: in
/// batches, each the rows whose transaction committed between two snapshots, in ID order
/// within a batch (the order the rows were written in; writers of the same rows wait for
/// each other, and bookings of one practitioner take turns, so for one appointment or
/// practitioner that is the order of their commits). Every committed row is read once by a
/// follower, however late its transaction commits.
#[derive(Clone, Debug)]
pub struct Follower {
    topic: &'static str,
    /// Rows whose transaction is visible here are read. `None`: none yet.
    from: Option<std::sync::Arc<Snapshot>>,
    /// While `from` is `None`: rows written before transaction IDs were recorded are read
    /// from the ID after this one.
    legacy_after: i64,
    /// The batch being read: rows visible here and not in `from`, with IDs after `after`.
    to: Option<Snapshot>,
    after: i64,
}

impl Follower {
    /// A follower that has read every row visible in `from` (or nothing, with `None`; then
    /// rows written before transaction IDs were recorded are read after ID `legacy_after`).
    pub fn new(topic: &'static str, from: Option<Snapshot>, legacy_after: i64) -> Self {
        Self {
            topic,
            from: from.map(std::sync::Arc::new),
            legacy_after,
            to: None,
            after: 0,
        }
    }

    /// A follower of what commits from now on.
    pub async fn from_now(pool: &PgPool, topic: &'static str) -> Result<Self, sqlx::Error> {
        Ok(Self::new(topic, Some(Snapshot::current(pool).await?), 0))
    }

    /// Every row whose transaction is visible here has been read (once the batches read so
    /// far are [`Follower::done`]): a position safe to resume from.
    pub fn position(&self) -> Option<&Snapshot> {
        self.from.as_deref()
    }

    /// Reads up to `limit` rows: the next chunk of the current batch, or of a new batch that
    /// ends at the database's current snapshot. Call [`Follower::done`] once they are
    /// handled; until then, the same rows are read again.
    pub async fn next(&mut self, pool: &PgPool, limit: i64) -> Result<Batch, sqlx::Error> {
        let to = match &self.to {
            Some(to) => to.clone(),
            None => {
                let to = Snapshot::current(pool).await?;
                self.to = Some(to.clone());
                self.after = 0;
                to
            }
        };
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS}
               FROM outbox
              WHERE topic = $1 AND id > $2
                AND pg_visible_in_snapshot(coalesce(xid, '0'), $3::text::pg_snapshot)
                AND CASE WHEN $4::text IS NULL THEN xid IS NOT NULL OR id > $5
                         ELSE xid >= pg_snapshot_xmin($4::text::pg_snapshot)
                              AND NOT pg_visible_in_snapshot(xid, $4::text::pg_snapshot) END
              ORDER BY id
              LIMIT $6"
        )))
        .bind(self.topic)
        .bind(self.after)
        .bind(to.to_string())
        .bind(self.from.as_ref().map(|s| s.to_string()))
        .bind(self.legacy_after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        let complete = (rows.len() as i64) < limit;
        Ok(Batch {
            rows,
            from: self.from.clone(),
            complete,
        })
    }

    /// How far behind this follower is: the age in seconds of the oldest committed row of
    /// its topic it has not handled (0 when none waits), and how many such rows there are.
    /// One query over the rows after its position (`outbox_by_xid`), for metrics.
    pub async fn backlog(&self, pool: &PgPool) -> Result<(f64, i64), sqlx::Error> {
        sqlx::query_as(
            "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8, count(*)
               FROM outbox
              WHERE topic = $1
                AND CASE WHEN $2::text IS NULL THEN xid IS NOT NULL OR id > $3
                         ELSE xid >= pg_snapshot_xmin($2::text::pg_snapshot)
                              AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot) END",
        )
        .bind(self.topic)
        .bind(self.from.as_ref().map(|s| s.to_string()))
        .bind(self.legacy_after)
        .fetch_one(pool)
        .await
    }

    /// Marks `batch` (the last [`Follower::next`]) as handled.
    pub fn done(&mut self, batch: &Batch) {
        if let Some(last) = batch.rows.last() {
            self.after = last.id;
        }
        if batch.complete {
            self.from = self.to.take().map(std::sync::Arc::new);
            self.after = 0;
        }
    }
}

/// A named reader of one topic that keeps its place in `outbox_consumers`, so that a restart
/// (or another replica of the same consumer) goes on from where it stood: a snapshot such
/// that every event whose transaction it sees has been handled. At least once: what came
/// after the stored snapshot is read again after a restart, so handling must be idempotent.
pub struct Consumer {
    name: String,
    follower: Follower,
    /// The highest outbox ID handled so far (stored as `position`, for people to read).
    highest: i64,
    /// When the position was last stored.
    saved: Option<std::time::Instant>,
}

/// How often a position that moved without new events is stored: it only shortens what a
/// restart reads again.
const SAVE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

impl Consumer {
    /// Consumer `name` of `topic`, from where it last stopped.
    pub async fn start(pool: &PgPool, topic: &'static str, name: &str) -> Result<Self, sqlx::Error> {
        let stored: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT position, snapshot::text FROM outbox_consumers WHERE consumer = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
        let (legacy_after, snapshot) = stored.unwrap_or((0, None));
        let snapshot = snapshot
            .map(|s| s.parse::<Snapshot>())
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        // Without a snapshot, the stored ID is where a consumer of the days before
        // transaction IDs were recorded stopped: the rows of those days above it are new.
        Ok(Self {
            name: name.to_string(),
            follower: Follower::new(topic, snapshot, legacy_after),
            highest: legacy_after,
            saved: None,
        })
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic it reads.
    pub fn topic(&self) -> &'static str {
        self.follower.topic
    }

    /// Where it stands (see [`Follower::position`]).
    pub fn position(&self) -> Option<&Snapshot> {
        self.follower.position()
    }

    /// How far behind it is (see [`Follower::backlog`]).
    pub async fn backlog(&self, pool: &PgPool) -> Result<(f64, i64), sqlx::Error> {
        self.follower.backlog(pool).await
    }

    /// The next rows to handle (see [`Follower::next`]).
    pub async fn next(&mut self, pool: &PgPool, limit: i64) -> Result<Batch, sqlx::Error> {
        self.follower.next(pool, limit).await
    }

    /// Marks `batch` as handled and stores the position (at most every [`SAVE_IDLE`] while
    /// nothing new comes).
    pub async fn done(&mut self, pool: &PgPool, batch: &Batch) -> Result<(), sqlx::Error> {
        self.follower.done(batch);
        // Chunks of one batch may all come before its snapshot can be stored: the highest
        // ID is kept across them.
        self.highest = batch.rows.iter().map(|r| r.id).fold(self.highest, i64::max);
        let recent = batch.rows.is_empty() && self.saved.is_some_and(|at| at.elapsed() < SAVE_IDLE);
        let Some(position) = self.follower.position().filter(|_| !recent) else {
            return Ok(());
        };
        // Replicas share the row: a snapshot never replaces a newer one (a later snapshot's
        // xmax is never lower).
        sqlx::query(
            "INSERT INTO outbox_consumers (consumer, position, snapshot) VALUES ($1, $2, $3::text::pg_snapshot)
             ON CONFLICT (consumer) DO UPDATE
                 SET position = greatest(outbox_consumers.position, EXCLUDED.position),
                     snapshot = CASE
                         WHEN outbox_consumers.snapshot IS NULL
                           OR pg_snapshot_xmax(outbox_consumers.snapshot) <= pg_snapshot_xmax(EXCLUDED.snapshot)
                         THEN EXCLUDED.snapshot ELSE outbox_consumers.snapshot END,
                     updated_at = now()",
        )
        .bind(&self.name)
        .bind(self.highest)
        .bind(position.to_string())
        .execute(pool)
        .await?;
        self.saved = Some(std::time::Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Snapshot;

    #[test]
    fn snapshots_read_and_print_as_postgres_does() {
        let s: Snapshot = "10:20:12,15".parse().unwrap();
        assert_eq!(s.to_string(), "10:20:12,15");
        assert!(s.visible(9) && s.visible(11) && s.visible(19));
        assert!(!s.visible(12) && !s.visible(15) && !s.visible(20) && !s.visible(30));
        let empty: Snapshot = "7:7:".parse().unwrap();
        assert!(empty.visible(6) && !empty.visible(7));
        for bad in ["", "1", "a:b:", "5:3:", "3:5:9", "3:5:x", "1:2:3:4", "10:20:15,12"] {
            assert!(bad.parse::<Snapshot>().is_err(), "{bad}");
        }
    }
}
