//! `meridian bench events`: the event backbone against a real broker (tansu on 127.0.0.1)
//! and a durable PostgreSQL. Two figures, each beside its plain alternative in the same run:
//!
//! - relay throughput: a backlog of appointment events in the outbox published by the relay
//!   (commit order, stored positions, acknowledged by the broker), beside the same number of
//!   events sent by a bare idempotent producer that reads no outbox and keeps no position;
//! - end to end: appointment events committed at a steady rate, each one's latency from its
//!   commit to its invoice row (relay, broker, billing consumer, inbox, numbering), beside the
//!   same path with the consumer reading the outbox directly (embedded mode, no broker).
//!
//! The events are what a booking commits (`appointment.booked` with the appointment); the
//! booking itself is measured by `meridian bench booking`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meridian_events::consumer;
use meridian_events::kafka::KafkaOptions;
use meridian_events::relay::{self, Relay};
use meridian_events::topics::{self, TopicSettings};
use meridian_localkafka::{Broker, Storage};
use meridian_localpg::{Cluster, Durability};
use meridian_shared::bench::percentile;
use meridian_shared::outbox::{self, APPOINTMENT_EVENTS, Event};
use rdkafka::producer::FutureProducer;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{BillingHandler, CountryRates, Rates};

/// Options of `meridian bench events`.
#[derive(clap::Args, Clone, Debug)]
pub struct EventsBench {
    /// Events in the backlog the relay publishes.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: usize,
    /// Bookings per second committed while end-to-end latency is measured.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Seconds each end-to-end run lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

fn rates() -> Rates {
    let rates = Rates::default();
    rates.set([(
        "DE".to_string(),
        CountryRates {
            currency: "EUR".into(),
            minor_digits: 2,
            fee: 6000,
            tax_micros: 190_000,
            tax_rate: "0.19".into(),
        },
    )]);
    rates
}

/// An appointment event as booking commits it.
fn booked(appointment: Uuid, practitioner: Uuid) -> serde_json::Value {
    serde_json::json!({
        "id": appointment, "countryCode": "DE", "practitionerId": practitioner,
        "patientId": Uuid::new_v4().to_string(), "status": "booked",
        "startsAt": Utc::now(), "endsAt": Utc::now(),
    })
}

/// Writes `count` appointment events in transactions of 1000.
async fn backlog(pool: &PgPool, count: usize) -> anyhow::Result<()> {
    let practitioners: Vec<Uuid> = (0..64).map(|_| Uuid::new_v4()).collect();
    let mut written = 0;
    while written < count {
        let n = (count - written).min(1000);
        let payloads: Vec<serde_json::Value> = (0..n)
            .map(|i| booked(Uuid::new_v4(), practitioners[(written + i) % practitioners.len()]))
            .collect();
        let events: Vec<Event<'_, serde_json::Value>> = payloads
            .iter()
            .map(|p| Event {
                country_code: "DE",
                topic: APPOINTMENT_EVENTS,
                event_type: "appointment.booked",
                key: p["practitionerId"]
                    .as_str()
                    .and_then(|k| k.parse().ok())
                    .unwrap_or_default(),
                payload: p,
                correlation_id: Uuid::new_v4(),
            })
            .collect();
        let mut tx = pool.begin().await?;
        outbox::enqueue_all(&mut tx, &events).await?;
        tx.commit().await?;
        written += n;
    }
    Ok(())
}

/// Commits `rate` bookings a second for `seconds`; returns when each committed.
async fn steady_bookings(pool: &PgPool, rate: u32, seconds: u64) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>)>> {
    let practitioner = Uuid::new_v4();
    let mut committed = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        tick.tick().await;
        let appointment = Uuid::new_v4();
        let payload = booked(appointment, practitioner);
        let mut tx = pool.begin().await?;
        outbox::enqueue(
            &mut tx,
            &Event {
                country_code: "DE",
                topic: APPOINTMENT_EVENTS,
                event_type: "appointment.booked",
                key: practitioner,
                payload: &payload,
                correlation_id: Uuid::new_v4(),
            },
        )
        .await?;
        tx.commit().await?;
        committed.push((appointment, Utc::now()));
    }
    Ok(committed)
}

/// Waits for the invoices of `committed`; returns each latency (ms), sorted.
async fn latencies(pool: &PgPool, committed: &[(Uuid, DateTime<Utc>)]) -> anyhow::Result<Vec<f64>> {
    let ids: Vec<Uuid> = committed.iter().map(|(id, _)| *id).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let issued: Vec<(Uuid, DateTime<Utc>)> =
            sqlx::query_as("SELECT appointment_id, issued_at FROM invoices WHERE appointment_id = ANY($1)")
                .bind(&ids)
                .fetch_all(pool)
                .await?;
        if issued.len() == ids.len() {
            let at: std::collections::HashMap<Uuid, DateTime<Utc>> = issued.into_iter().collect();
            let mut ms: Vec<f64> = committed
                .iter()
                .map(|(id, c)| ((at[id] - *c).num_microseconds().unwrap_or(0) as f64 / 1000.0).max(0.0))
                .collect();
            ms.sort_by(f64::total_cmp);
            return Ok(ms);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} invoices within 60 s",
            issued.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(options: EventsBench) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new().prefix("meridian-bench-").tempdir()?;
    let cluster = Cluster::start(dir.path(), Durability::Durable).await?;
    cluster.ensure_database("meridian").await?;
    let pool = meridian_shared::serve::pool_options(16)
        .connect(&cluster.url("meridian"))
        .await?;
    meridian_shared::schema::prepare(&mut *pool.acquire().await?, &["DE"]).await?;
    let broker = Broker::start(Storage::Memory).await?;
    let kafka = KafkaOptions::plaintext(broker.bootstrap()).client_config()?;
    topics::ensure(&kafka, &TopicSettings::default())
        .await
        .map_err(anyhow::Error::msg)?;
    let mut out = format!(
        "events benchmark: tansu on 127.0.0.1 (in memory), PostgreSQL durable (fsync on); backlog {} events, then {} bookings/s for {} s each way\n",
        options.backlog, options.rate, options.seconds
    );

    // Relay throughput: the backlog first, then the relay started on it.
    backlog(&pool, options.backlog).await?;
    let relay = Relay::new(pool.clone(), kafka.clone());
    let stats = relay.stats();
    let started = Instant::now();
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(relay.run(async {
        let _ = relay_stopped.await;
    }));
    while stats.published() < options.backlog as u64 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the relay published {} events in 300 s",
            stats.published()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let relay_seconds = started.elapsed().as_secs_f64();
    let relay_rate = options.backlog as f64 / relay_seconds;
    out.push_str(&format!(
        "relay            {:>9.0} events/s  ({} events in {relay_seconds:.2} s, read in commit order, acknowledged, position stored)\n",
        relay_rate, options.backlog
    ));

    // The plain alternative: the same rows sent by a bare producer.
    let rows: Vec<outbox::Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM outbox ORDER BY id",
        outbox::ROW_COLUMNS
    )))
    .fetch_all(&pool)
    .await?;
    let mut bare = kafka.clone();
    bare.set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000");
    let producer: FutureProducer = bare.create()?;
    let started = Instant::now();
    for chunk in rows.chunks(2000) {
        relay::publish(&producer, "practitioner-events", chunk).await?;
    }
    let bare_seconds = started.elapsed().as_secs_f64();
    let bare_rate = rows.len() as f64 / bare_seconds;
    out.push_str(&format!(
        "bare producer    {bare_rate:>9.0} events/s  (the same events, no outbox, no position)\n"
    ));
    drop(rows);

    // End to end through the broker: relay and billing consumer running.
    let (stop_billing, billing_stopped) = tokio::sync::oneshot::channel::<()>();
    let billing = tokio::spawn(consumer::run_kafka(
        pool.clone(),
        kafka.clone(),
        BillingHandler { rates: rates() },
        async {
            let _ = billing_stopped.await;
        },
    ));
    // The backlog's invoices first, so that what is measured is a steady state.
    let backlog_billed = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices")
            .fetch_one(&pool)
            .await?;
        if n as usize >= options.backlog {
            break;
        }
        anyhow::ensure!(
            backlog_billed.elapsed() < Duration::from_secs(600),
            "the billing consumer invoiced {n} of {} backlog events in 600 s",
            options.backlog
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let consumer_rate = options.backlog as f64 / backlog_billed.elapsed().as_secs_f64();
    out.push_str(&format!(
        "billing consumer {consumer_rate:>9.0} invoices/s (the backlog, one transaction each: inbox, numbering, invoice)\n"
    ));
    let committed = steady_bookings(&pool, options.rate, options.seconds).await?;
    let kafka_ms = latencies(&pool, &committed).await?;
    let _ = stop_billing.send(());
    let _ = billing.await;
    let _ = stop_relay.send(());
    let _ = relay_task.await;
    out.push_str(&format!(
        "commit→invoice via Kafka   p50 {:>7.2} ms  p99 {:>7.2} ms  ({} bookings)\n",
        percentile(&kafka_ms, 50.0),
        percentile(&kafka_ms, 99.0),
        kafka_ms.len()
    ));

    // The plain alternative: the consumer on the outbox itself.
    let (stop_outbox, outbox_stopped) = tokio::sync::oneshot::channel::<()>();
    let embedded = BillingHandler { rates: rates() };
    // Under a name of its own, from now on.
    sqlx::query(
        "INSERT INTO outbox_consumers (consumer, position, snapshot)
         SELECT 'billing-embedded', coalesce(max(id), 0), pg_current_snapshot() FROM outbox",
    )
    .execute(&pool)
    .await?;
    let direct = tokio::spawn(consumer::run_outbox(pool.clone(), OutboxBilling(embedded), async {
        let _ = outbox_stopped.await;
    }));
    let committed = steady_bookings(&pool, options.rate, options.seconds).await?;
    let outbox_ms = latencies(&pool, &committed).await?;
    let _ = stop_outbox.send(());
    let _ = direct.await;
    out.push_str(&format!(
        "commit→invoice on outbox   p50 {:>7.2} ms  p99 {:>7.2} ms  (no broker: embedded mode)\n",
        percentile(&outbox_ms, 50.0),
        percentile(&outbox_ms, 99.0),
    ));
    out.push_str(&format!(
        "relay_events_per_s={relay_rate:.0} bare_producer_events_per_s={bare_rate:.0} consumer_invoices_per_s={consumer_rate:.0} e2e_p50_ms={:.2} e2e_p99_ms={:.2} outbox_e2e_p99_ms={:.2}\n",
        percentile(&kafka_ms, 50.0),
        percentile(&kafka_ms, 99.0),
        percentile(&outbox_ms, 99.0),
    ));
    drop(broker);
    Ok(out)
}

/// The billing consumer under another name, reading the outbox from now on (the backlog
/// and the Kafka run were billed already; the invoices' uniqueness would refuse them anyway).
#[derive(Clone)]
struct OutboxBilling(BillingHandler);

impl consumer::Handler for OutboxBilling {
    fn name(&self) -> &str {
        "billing-embedded"
    }

    fn topic(&self) -> &'static str {
        self.0.topic()
    }

    async fn handle(&self, tx: &mut sqlx::PgConnection, event: &consumer::Incoming) -> Result<(), consumer::Failure> {
        self.0.handle(tx, event).await
    }
}
