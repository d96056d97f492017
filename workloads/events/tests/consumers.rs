//! Consumers against a real PostgreSQL and a real Kafka-protocol broker (tansu): the inbox
//! makes every effect happen once however often an event arrives, a poison event goes to the
//! dead-letter topic after its attempts and comes back with `dlq replay` once fixed, and the
//! embedded mode applies the outbox through the same code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meridian_events::consumer::{self, Failure, Handler, Incoming, MAX_ATTEMPTS};
use meridian_events::dlq::headers as dlq_headers;
use meridian_events::kafka::KafkaOptions;
use meridian_events::relay::Relay;
use meridian_events::topics::{self, TopicSettings};
use meridian_events::{dlq, relay};
use meridian_localkafka::{Broker, Storage};
use meridian_localpg::TempCluster;
use meridian_shared::outbox::{self, APPOINTMENT_EVENTS, Event};
use rdkafka::producer::FutureProducer;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

mod common;
use common::wait_for;

/// The platform schema for DE, and the table the test handlers record their effects in.
async fn database() -> (TempCluster, PgPool) {
    let (pg, pool) = common::database(&["DE"]).await;
    sqlx::query("CREATE TABLE effects (event_id uuid NOT NULL, n int NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    (pg, pool)
}

/// Records each event's `n`; fails event 13 until it is fixed.
#[derive(Clone)]
struct Counter {
    fixed: Arc<AtomicBool>,
}

impl Handler for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    fn topic(&self) -> &'static str {
        APPOINTMENT_EVENTS
    }

    async fn handle(&self, tx: &mut PgConnection, event: &Incoming) -> Result<(), Failure> {
        let n = event.payload["n"]
            .as_i64()
            .ok_or_else(|| Failure::Event("no n".into()))?;
        if n == 13 && !self.fixed.load(Ordering::SeqCst) {
            return Err(Failure::Event("thirteen is unlucky".into()));
        }
        sqlx::query("INSERT INTO effects (event_id, n) VALUES ($1, $2)")
            .bind(event.event_id)
            .bind(n as i32)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

async fn write(pool: &PgPool, key: Uuid, n: i64) {
    let mut tx = pool.begin().await.unwrap();
    let payload = serde_json::json!({ "n": n });
    outbox::enqueue(
        &mut tx,
        &Event {
            country_code: "DE",
            topic: APPOINTMENT_EVENTS,
            event_type: "appointment.booked",
            key,
            payload: &payload,
            correlation_id: Uuid::new_v4(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn effects(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT n FROM effects ORDER BY n")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn duplicates_change_nothing_and_a_poison_event_is_dead_lettered_then_replayed() {
    let (_pg, pool) = database().await;
    let broker = Broker::start(Storage::Memory).await.unwrap_or_else(|e| panic!("{e}"));
    let kafka = KafkaOptions::plaintext(broker.bootstrap()).client_config().unwrap();
    topics::ensure(&kafka, &TopicSettings::default()).await.unwrap();
    let relay = Relay::new(pool.clone(), kafka.clone());
    tokio::spawn(relay.run(std::future::pending()));
    let counter = Counter {
        fixed: Arc::new(AtomicBool::new(false)),
    };
    // Stopped before the broker: a consumer dropped after it waits on its close for minutes.
    let consumer = tokio::spawn(consumer::run_kafka(
        pool.clone(),
        kafka.clone(),
        counter.clone(),
        std::future::pending(),
    ));

    let key = Uuid::new_v4();
    for n in 1..=20 {
        write(&pool, key, n).await;
    }
    wait_for("19 effects", Duration::from_secs(60), async || {
        effects(&pool).await.len() == 19
    })
    .await;
    assert!(!effects(&pool).await.contains(&13));

    // Every event published again (a relay that died before storing its position does
    // that): nothing changes.
    let rows: Vec<outbox::Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM outbox ORDER BY id",
        outbox::ROW_COLUMNS
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let producer: FutureProducer = kafka.create().unwrap();
    relay::publish(&producer, APPOINTMENT_EVENTS, &rows).await.unwrap();
    write(&pool, key, 21).await;
    wait_for("event 21", Duration::from_secs(30), async || {
        effects(&pool).await.contains(&21)
    })
    .await;
    assert_eq!(effects(&pool).await.len(), 20, "each effect once");

    // Event 13 is in the dead-letter topic, saying who gave up, why and after how much.
    let letters = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        move || dlq::list(&kafka).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.dlq_topic, "appointment-events.dlq");
    assert_eq!(letter.headers[dlq_headers::CONSUMER], "counter");
    assert_eq!(letter.headers[dlq_headers::ERROR], "thirteen is unlucky");
    assert_eq!(letter.headers[dlq_headers::ATTEMPTS], MAX_ATTEMPTS.to_string());
    assert_eq!(letter.headers[dlq_headers::TOPIC], APPOINTMENT_EVENTS);
    let thirteen: Uuid = sqlx::query_scalar("SELECT event_id FROM outbox WHERE payload->>'n' = '13'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(letter.headers[relay::headers::EVENT_ID], thirteen.to_string());
    // Delivered twice (the republication above), given up on and dead-lettered once.
    let given_up: Vec<(Uuid, String)> = sqlx::query_as("SELECT event_id, error FROM dead_letters")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(given_up, [(thirteen, "thirteen is unlucky".to_string())]);

    // Fixed, replayed: applied once; a second replay finds nothing new.
    counter.fixed.store(true, Ordering::SeqCst);
    let replayed = dlq::replay(&kafka).await.unwrap();
    assert_eq!(replayed.len(), 1);
    wait_for("event 13", Duration::from_secs(30), async || {
        effects(&pool).await.contains(&13)
    })
    .await;
    assert_eq!(effects(&pool).await, (1..=21).collect::<Vec<_>>());
    assert!(dlq::replay(&kafka).await.unwrap().is_empty());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a replay that succeeds clears its dead letter");
    consumer.abort();
    let _ = consumer.await;
}

#[tokio::test]
async fn the_embedded_mode_applies_the_outbox_through_the_same_handler() {
    let (_pg, pool) = database().await;
    let counter = Counter {
        fixed: Arc::new(AtomicBool::new(true)),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer::run_outbox(pool.clone(), counter, async {
        let _ = stopped.await;
    }));
    let key = Uuid::new_v4();
    for n in 1..=10 {
        write(&pool, key, n).await;
    }
    wait_for("10 effects", Duration::from_secs(30), async || {
        effects(&pool).await.len() == 10
    })
    .await;
    // Applied again from the beginning (a position lost): the inbox keeps each effect once.
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    sqlx::query("DELETE FROM outbox_consumers")
        .execute(&pool)
        .await
        .unwrap();
    let counter = Counter {
        fixed: Arc::new(AtomicBool::new(true)),
    };
    let again = tokio::spawn(consumer::run_outbox(pool.clone(), counter, std::future::pending()));
    write(&pool, key, 11).await;
    wait_for("event 11", Duration::from_secs(30), async || {
        effects(&pool).await.contains(&11)
    })
    .await;
    assert_eq!(effects(&pool).await, (1..=11).collect::<Vec<_>>());
    again.abort();
}
