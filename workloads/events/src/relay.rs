//! The relay: publishes a Region's outbox to the Region's Kafka, one topic per outbox topic,
//! in commit order (see [`meridian_shared::outbox::Follower`]: a transaction that commits
//! late is published when it commits, never skipped), keyed by aggregate ID so that the
//! events of one practitioner or patient keep their order in one partition.
//!
//! A batch's read position is stored only once the broker has acknowledged every event of
//! it, so a relay that dies, or a broker that goes away, costs re-publication, never an
//! event: delivery is at least once, and consumers deduplicate on the `event-id` header. The
//! producer is idempotent (librdkafka's retries within a session never duplicate or reorder).
//!
//! One relay publishes at a time per Region: it holds a PostgreSQL advisory lock on a
//! connection of its own while it does, and checks that connection before every batch. A
//! replica that does not hold the lock waits for it; one that loses it (its connection
//! broke, and with it the lock) stops publishing before it reads the next batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{Connection, PgConnection, PgPool};

use meridian_shared::metrics;
use meridian_shared::outbox::{Consumer, OUTBOX_TOPICS, Row};

/// The advisory lock ("meridian" in ASCII) a Region's publishing relay holds.
pub const LEADER_LOCK: i64 = 0x6d65_7269_6469_616e;
/// Outbox rows read (and published) at a time per topic.
const BATCH: i64 = 2000;
/// How long the relay waits before it looks at an outbox that had nothing new.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// How long the relay waits before trying a batch the broker did not take, again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often the relay measures its backlog for `meridian_relay_lag_seconds`.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// The Kafka header names of every event.
pub mod headers {
    pub const EVENT_ID: &str = "event-id";
    pub const EVENT_TYPE: &str = "event-type";
    pub const COUNTRY: &str = "country";
    pub const CORRELATION_ID: &str = "correlation-id";
    pub const OCCURRED_AT: &str = "occurred-at";
}

/// What the relay has done, for tests, benchmarks and logs.
#[derive(Clone, Debug, Default)]
pub struct RelayStats {
    published: Arc<AtomicU64>,
    failed_batches: Arc<AtomicU64>,
    leading: Arc<std::sync::atomic::AtomicBool>,
}

impl RelayStats {
    /// Events the broker acknowledged.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Batches the broker did not take (and that were tried again).
    pub fn failed_batches(&self) -> u64 {
        self.failed_batches.load(Ordering::Relaxed)
    }

    /// Whether this relay holds the Region's lock.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }
}

/// The relay of one Region's database.
pub struct Relay {
    pool: PgPool,
    kafka: ClientConfig,
    stats: RelayStats,
}

impl Relay {
    /// A relay from the database of `pool` to the brokers of `kafka` (see
    /// [`crate::kafka::KafkaOptions::client_config`]).
    pub fn new(pool: PgPool, kafka: ClientConfig) -> Self {
        Self {
            pool,
            kafka,
            stats: RelayStats::default(),
        }
    }

    pub fn stats(&self) -> RelayStats {
        self.stats.clone()
    }

    fn producer(&self) -> Result<FutureProducer, KafkaError> {
        let mut config = self.kafka.clone();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Batches fill while earlier ones are in flight; a few ms is the price of latency.
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            // The Java client's partitioner: a key lands where any Kafka client puts it.
            .set("partitioner", "murmur2_random")
            // A batch not acknowledged by then is tried again from the outbox.
            .set("message.timeout.ms", "10000");
        config.create()
    }

    /// Publishes until `stop` resolves: waits for the Region's lock, then follows every
    /// outbox topic. Errors of the database or the broker are retried; only a failure to
    /// build the producer (a configuration error) ends it.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                led = self.lead() => match led {
                    Ok(never) => match never {},
                    Err(RelayError::Config(e)) => return Err(e.into()),
                    Err(e) => {
                        self.stats.leading.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "relay: stopped publishing; trying again");
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                },
            }
        }
    }

    /// Takes the lock, then publishes for as long as it holds it.
    async fn lead(&self) -> Result<std::convert::Infallible, RelayError> {
        let mut lock = PgConnection::connect_with(self.pool.connect_options().as_ref()).await?;
        let mut waiting_said = false;
        while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut lock)
            .await?
        {
            if !waiting_said {
                tracing::info!("relay: another relay publishes for this Region; waiting for its lock");
                waiting_said = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.stats.leading.store(true, Ordering::Relaxed);
        tracing::info!("relay: publishing this Region's outbox");
        let mut producer = self.producer().map_err(RelayError::Config)?;
        let mut consumers = Vec::new();
        for topic in OUTBOX_TOPICS {
            consumers.push(Consumer::start(&self.pool, topic, &format!("relay:{topic}")).await?);
        }
        let mut measured: Option<std::time::Instant> = None;
        loop {
            if measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
                measure(&self.pool, &consumers).await?;
                measured = Some(std::time::Instant::now());
            }
            let mut idle = true;
            for consumer in &mut consumers {
                // Still the leader: the lock lives as long as this connection.
                sqlx::query("SELECT 1")
                    .execute(&mut lock)
                    .await
                    .map_err(RelayError::LostLock)?;
                let batch = consumer.next(&self.pool, BATCH).await?;
                if !batch.rows.is_empty() {
                    idle = false;
                    if let Err(e) = publish(&producer, consumer.topic(), &batch.rows).await {
                        self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(topic = consumer.topic(), error = %e, "relay: the broker did not take a batch; trying it again");
                        // A producer in a fatal state (an idempotence sequence the broker
                        // lost, say after a restart) takes nothing more: start afresh.
                        producer = self.producer().map_err(RelayError::Config)?;
                        tokio::time::sleep(RETRY_AFTER).await;
                        continue;
                    }
                    self.stats
                        .published
                        .fetch_add(batch.rows.len() as u64, Ordering::Relaxed);
                    metrics::workload().relay_published(consumer.topic(), batch.rows.len() as u64);
                }
                consumer.done(&self.pool, &batch).await?;
            }
            if idle {
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

/// Sets `meridian_relay_lag_seconds` (the oldest unpublished event of any topic) and
/// `meridian_relay_backlog` (all of them).
async fn measure(pool: &PgPool, consumers: &[Consumer]) -> Result<(), sqlx::Error> {
    let (mut oldest, mut waiting) = (0.0_f64, 0);
    for consumer in consumers {
        let (age, rows) = consumer.backlog(pool).await?;
        oldest = oldest.max(age);
        waiting += rows;
    }
    metrics::workload().relay_backlog(oldest, waiting);
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("the Kafka producer could not be built: {0}")]
    Config(KafkaError),
    #[error("the connection holding the relay's lock broke: {0}")]
    LostLock(sqlx::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Publishes `rows` to `topic` and waits until the broker has acknowledged every one.
pub async fn publish(producer: &FutureProducer, topic: &str, rows: &[Row]) -> Result<(), KafkaError> {
    let mut pending = Vec::with_capacity(rows.len());
    for row in rows {
        let key = row.aggregate_id.to_string();
        let payload = serde_json::to_vec(&row.payload).expect("a JSON value serialises");
        let event_id = row.event_id.to_string();
        let occurred_at = row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let correlation_id = row.correlation_id.map(|c| c.to_string());
        let mut headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: headers::EVENT_ID,
                value: Some(&event_id),
            })
            .insert(Header {
                key: headers::EVENT_TYPE,
                value: Some(&row.event_type),
            })
            .insert(Header {
                key: headers::COUNTRY,
                value: Some(&row.country_code),
            })
            .insert(Header {
                key: headers::OCCURRED_AT,
                value: Some(&occurred_at),
            });
        if let Some(correlation_id) = &correlation_id {
            headers = headers.insert(Header {
                key: headers::CORRELATION_ID,
                value: Some(correlation_id),
            });
        }
        let mut record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers)
            .timestamp(row.created_at.timestamp_millis());
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: let the broker catch up.
                    record = back;
                    producer.poll(Duration::from_millis(1));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    Ok(())
}

/// `meridian relay`: publishes until Ctrl-C or SIGTERM.
pub async fn run(options: crate::worker::WorkerOptions) -> anyhow::Result<()> {
    let readiness = options.ops.start().await?;
    let pool = options.pool(4)?;
    let kafka = options.kafka.client_config()?;
    // A replica waiting for the lock is ready too: it is the standby.
    readiness.when_connected(pool.clone(), kafka.clone(), None);
    Relay::new(pool, kafka).run(meridian_shared::shutdown::signal()).await
}
