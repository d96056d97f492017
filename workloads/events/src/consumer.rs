//! The machinery every consumer of a Region's events shares: it takes events from the
//! Region's Kafka (in a consumer group named after the consumer) or, in embedded mode, from
//! the outbox directly, and applies each one in a transaction that also writes the event's
//! ID to the `inbox` table. An event delivered again finds its inbox row and changes
//! nothing; an effect and its inbox row commit together or not at all.
//!
//! A handler that fails an event is given it again, up to [`MAX_ATTEMPTS`] times; then the
//! event goes to `<topic>.dlq` with headers naming the consumer, the error and the attempts,
//! and the consumer moves on; an event the handler rejects outright (it can never apply)
//! goes there after its first attempt. The database being unreachable is not the event's
//! fault: such failures are retried without counting, so an outage sends nothing to the
//! dead letters.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use meridian_shared::metrics::{self, ConsumerCounters, ConsumerError};
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Headers, Message};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::dlq::{Forwarder, headers as dlq_headers};
use crate::relay::headers;

/// Failed attempts after which an event goes to the dead-letter topic.
pub const MAX_ATTEMPTS: u32 = 5;
/// Pause before the next attempt at a failed event (doubled each time, up to a second).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// One event as a consumer receives it.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub topic: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub country_code: String,
    pub key: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    /// Sent back from the dead letters: applied even though it was given up on.
    pub replayed: bool,
}

/// Why an event could not be taken as one.
#[derive(Debug, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct Malformed(String);

impl Incoming {
    /// Reads a Kafka message the relay published.
    pub fn from_message(message: &impl Message) -> Result<Self, Malformed> {
        let mut found = std::collections::BTreeMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                if let Some(value) = header.value.and_then(|v| std::str::from_utf8(v).ok()) {
                    found.insert(header.key.to_string(), value.to_string());
                }
            }
        }
        let header = |name: &str| {
            found
                .get(name)
                .cloned()
                .ok_or_else(|| Malformed(format!("no {name} header")))
        };
        let payload = message
            .payload()
            .map(serde_json::from_slice)
            .transpose()
            .map_err(|e| Malformed(format!("payload: {e}")))?
            .unwrap_or(serde_json::Value::Null);
        Ok(Self {
            topic: message.topic().to_string(),
            event_id: header(headers::EVENT_ID)?
                .parse()
                .map_err(|e| Malformed(format!("{}: {e}", headers::EVENT_ID)))?,
            event_type: header(headers::EVENT_TYPE)?,
            country_code: header(headers::COUNTRY)?,
            key: message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_string),
            correlation_id: found.get(headers::CORRELATION_ID).and_then(|c| c.parse().ok()),
            occurred_at: header(headers::OCCURRED_AT)?
                .parse()
                .map_err(|e| Malformed(format!("{}: {e}", headers::OCCURRED_AT)))?,
            payload,
            replayed: found.contains_key(dlq_headers::REPLAYED),
        })
    }

    /// An outbox row, as the embedded mode hands it over.
    pub fn from_row(topic: &str, row: &meridian_shared::outbox::Row) -> Self {
        Self {
            topic: topic.to_string(),
            event_id: row.event_id,
            event_type: row.event_type.clone(),
            country_code: row.country_code.clone(),
            key: Some(row.aggregate_id.to_string()),
            correlation_id: row.correlation_id,
            occurred_at: row.created_at,
            payload: row.payload.clone(),
            replayed: false,
        }
    }
}

/// What a handler says of an event it could not apply.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Something about the event: tried again, then dead-lettered.
    #[error("{0}")]
    Event(String),
    /// The event can never be applied (an analytics event later than the allowed
    /// lateness): dead-lettered at once, without trying again.
    #[error("{0}")]
    Rejected(String),
    /// The database: tried again until it answers, never dead-lettered.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Another store the effect is written to (the search engine): tried again until it
    /// answers, never dead-lettered, like the database.
    #[error("{0}")]
    Unavailable(String),
}

/// A consumer's effect of one event.
pub trait Handler: Send + Sync + 'static {
    /// The consumer's name: its Kafka consumer group and its rows in `inbox`.
    fn name(&self) -> &str;
    /// The topic it follows.
    fn topic(&self) -> &'static str;
    /// Applies `event` inside the transaction `tx` that records it as handled.
    fn handle(&self, tx: &mut PgConnection, event: &Incoming) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// What became of one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Handled before: nothing changed.
    Duplicate,
    /// Given up on before (and not replayed): passed over.
    DeadLettered,
    /// Failed [`MAX_ATTEMPTS`] times, or rejected: its error and the attempts made.
    Failed {
        error: String,
        attempts: u32,
    },
}

/// Applies `event` once: its inbox row and its effect in one transaction.
pub async fn apply_once<H: Handler>(pool: &PgPool, handler: &H, event: &Incoming) -> Result<Outcome, Failure> {
    let mut tx = meridian_shared::pool::begin(pool).await?;
    // One round trip: the inbox row, and whether the event was given up on (a replay
    // clears that, and is applied).
    let (new, dead): (bool, bool) = sqlx::query_as(
        "WITH new AS (
             INSERT INTO inbox (consumer, event_id, topic) VALUES ($1, $2, $3)
             ON CONFLICT (consumer, event_id) DO NOTHING RETURNING 1
         ),
         cleared AS (
             DELETE FROM dead_letters WHERE consumer = $1 AND event_id = $2 AND $4 AND EXISTS (SELECT 1 FROM new)
         )
         SELECT EXISTS (SELECT 1 FROM new),
                NOT $4 AND EXISTS (SELECT 1 FROM dead_letters WHERE consumer = $1 AND event_id = $2)",
    )
    .bind(handler.name())
    .bind(event.event_id)
    .bind(&event.topic)
    .bind(event.replayed)
    .fetch_one(&mut *tx)
    .await?;
    if !new {
        return Ok(Outcome::Duplicate);
    }
    if dead {
        return Ok(Outcome::DeadLettered);
    }
    handler.handle(&mut tx, event).await?;
    tx.commit().await?;
    Ok(Outcome::Applied)
}

/// Records that `handler` gave up on `event` after `attempts`.
async fn give_up<H: Handler>(
    pool: &PgPool,
    handler: &H,
    event: &Incoming,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (consumer, event_id, topic, error, attempts) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (consumer, event_id) DO UPDATE
             SET error = EXCLUDED.error, attempts = EXCLUDED.attempts, at = now()",
    )
    .bind(handler.name())
    .bind(event.event_id)
    .bind(&event.topic)
    .bind(error)
    .bind(attempts as i32)
    .execute(pool)
    .await?;
    Ok(())
}

/// Applies `event`, trying again after failures: database failures until the database
/// answers, the event's own up to [`MAX_ATTEMPTS`] times, a rejection not at all (then
/// [`Outcome::Failed`]). In a span of its own (a consumer span, with the event's topic, ID
/// and correlation ID).
#[tracing::instrument(
    name = "event",
    skip_all,
    fields(
        otel.name = format!("{} process", event.topic),
        otel.kind = "consumer",
        messaging.destination.name = %event.topic,
        messaging.message.id = %event.event_id,
        meridian.consumer = handler.name(),
        meridian.correlation_id = event.correlation_id.map(tracing::field::display),
    )
)]
pub async fn apply<H: Handler>(pool: &PgPool, handler: &H, event: &Incoming) -> Outcome {
    let counters = metrics::workload().consumer(handler.name(), &event.topic);
    apply_counted(pool, handler, event, &counters).await
}

/// [`apply`], counting into `counters` (`meridian_consumer_*{group,topic}`): events done
/// with (applied or duplicates), each failed attempt by kind, and the dead-lettered.
pub async fn apply_counted<H: Handler>(
    pool: &PgPool,
    handler: &H,
    event: &Incoming,
    counters: &ConsumerCounters,
) -> Outcome {
    let (mut attempts, mut backoff) = (0, FIRST_BACKOFF);
    loop {
        let gave_up = match apply_once(pool, handler, event).await {
            Ok(outcome) => {
                if matches!(outcome, Outcome::Applied | Outcome::Duplicate) {
                    counters.processed();
                }
                return outcome;
            }
            Err(e @ (Failure::Database(_) | Failure::Unavailable(_))) => {
                counters.error(ConsumerError::Unavailable);
                tracing::warn!(consumer = handler.name(), event_id = %event.event_id, error = %e, "a store is out of reach; trying the event again");
                None
            }
            Err(Failure::Event(why)) => {
                attempts += 1;
                tracing::warn!(consumer = handler.name(), event_id = %event.event_id, attempts, error = %why, "the event failed");
                let last = attempts >= MAX_ATTEMPTS;
                if !last {
                    counters.error(ConsumerError::Retry);
                }
                last.then_some(why)
            }
            Err(Failure::Rejected(why)) => {
                attempts += 1;
                counters.error(ConsumerError::Rejected);
                tracing::warn!(consumer = handler.name(), event_id = %event.event_id, error = %why, "the event was rejected");
                Some(why)
            }
        };
        if let Some(error) = gave_up {
            // Recorded until it is (the database answering is not the event's fault).
            while let Err(e) = give_up(pool, handler, event, &error, attempts).await {
                tracing::warn!(consumer = handler.name(), error = %e, "cannot record a dead letter; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            counters.dead_lettered();
            return Outcome::Failed { error, attempts };
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Follows the handler's topic on the Region's Kafka until `stop` resolves, in consumer
/// group `handler.name()`. An offset is committed only once its event is applied, duplicate
/// or dead-lettered: a consumer that dies re-reads what it had not finished.
pub async fn run_kafka<H: Handler>(
    pool: PgPool,
    kafka: ClientConfig,
    handler: H,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut config = kafka.clone();
    config
        .set("group.id", handler.name())
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // A fetch the broker holds while it has nothing new returns within this: tansu
        // answers a waiting fetch when it times out, not when an event arrives, so this
        // bounds how long a new event waits (librdkafka's default is 500 ms).
        .set("fetch.wait.max.ms", "10");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[handler.topic()])?;
    let forwarder = Forwarder::new(&kafka)?;
    let counters = metrics::workload().consumer(handler.name(), handler.topic());
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            _ = &mut stop => return Ok(()),
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(consumer = handler.name(), error = %e, "Kafka");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let outcome = match Incoming::from_message(&message) {
            Ok(event) => match apply_counted(&pool, &handler, &event, &counters).await {
                Outcome::Failed { error, attempts } => Some((error, attempts)),
                Outcome::Applied | Outcome::Duplicate | Outcome::DeadLettered => None,
            },
            // Not an event at all: trying again cannot help.
            Err(malformed) => {
                counters.error(ConsumerError::Rejected);
                counters.dead_lettered();
                Some((malformed.to_string(), 1))
            }
        };
        if let Some((why, attempts)) = outcome {
            // Until the dead-letter topic has it, the event stays uncommitted.
            while let Err(e) = dead_letter(&forwarder, &message, handler.name(), &why, attempts).await {
                tracing::warn!(consumer = handler.name(), error = %e, "the dead-letter topic is out of reach; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        consumer.commit_message(&message, CommitMode::Async)?;
    }
}

/// Follows the handler's topic in the outbox itself (embedded mode, no broker), with the
/// same inbox and attempts; what fails [`MAX_ATTEMPTS`] times is logged and passed over.
pub async fn run_outbox<H: Handler>(pool: PgPool, handler: H, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut follower = meridian_shared::outbox::Consumer::start(&pool, handler.topic(), handler.name()).await?;
    let counters = metrics::workload().consumer(handler.name(), handler.topic());
    tokio::pin!(stop);
    loop {
        let batch = tokio::select! {
            _ = &mut stop => return Ok(()),
            batch = follower.next(&pool, 500) => batch,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(consumer = handler.name(), error = %e, "database unavailable");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for row in &batch.rows {
            let event = Incoming::from_row(handler.topic(), row);
            if let Outcome::Failed { error, attempts } = apply_counted(&pool, &handler, &event, &counters).await {
                tracing::error!(consumer = handler.name(), event_id = %event.event_id, %error, attempts, "event passed over");
            }
        }
        let idle = batch.rows.is_empty();
        if let Err(e) = follower.done(&pool, &batch).await {
            tracing::warn!(consumer = handler.name(), error = %e, "position not stored");
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Writes `message` to its topic's dead-letter topic with why and by whom it failed.
async fn dead_letter(
    forwarder: &Forwarder,
    message: &impl Message,
    consumer: &str,
    error: &str,
    attempts: u32,
) -> Result<(), rdkafka::error::KafkaError> {
    let attempts = attempts.to_string();
    let own: Vec<(&str, Option<&[u8]>)> = message
        .headers()
        .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    forwarder
        .forward(
            &crate::topics::dlq(message.topic()),
            &own,
            &[
                (dlq_headers::CONSUMER, consumer),
                (dlq_headers::ERROR, error),
                (dlq_headers::ATTEMPTS, &attempts),
                (dlq_headers::TOPIC, message.topic()),
            ],
            message.key(),
            message.payload(),
        )
        .await
}
