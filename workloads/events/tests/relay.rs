//! The relay against a real PostgreSQL and a real Kafka-protocol broker (tansu), both
//! started by the tests on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use meridian_events::kafka::KafkaOptions;
use meridian_events::relay::{Relay, RelayStats, headers};
use meridian_events::topics::{self, TopicSettings};
use meridian_localkafka::{Broker, Storage};
use meridian_localpg::TempCluster;
use meridian_shared::outbox::{self, APPOINTMENT_EVENTS, Event};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

mod common;

async fn database() -> (TempCluster, PgPool) {
    common::database(&["DE", "FR"]).await
}

async fn broker(storage: Storage) -> Broker {
    let broker = Broker::start(storage).await.unwrap_or_else(|e| panic!("{e}"));
    let settings = TopicSettings {
        partitions: 3,
        ..TopicSettings::default()
    };
    let config = KafkaOptions::plaintext(broker.bootstrap()).client_config().unwrap();
    topics::ensure(&config, &settings).await.unwrap();
    broker
}

/// Starts a relay of `pool` to `broker`; it stops when the returned sender is dropped.
fn relay(
    pool: &PgPool,
    bootstrap: &str,
) -> (
    RelayStats,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = KafkaOptions::plaintext(bootstrap).client_config().unwrap();
    let relay = Relay::new(pool.clone(), config);
    let stats = relay.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stats, stop, task)
}

#[derive(serde::Serialize)]
struct Numbered {
    n: u32,
}

/// Writes event `n` of `key` in a transaction of its own.
async fn write(pool: &PgPool, country: &str, key: Uuid, n: u32) -> Uuid {
    let mut tx = pool.begin().await.unwrap();
    let correlation_id = Uuid::new_v4();
    enqueue(&mut tx, country, key, n, correlation_id).await;
    tx.commit().await.unwrap();
    correlation_id
}

async fn enqueue(conn: &mut PgConnection, country: &str, key: Uuid, n: u32, correlation_id: Uuid) {
    let event = Event {
        country_code: country,
        topic: APPOINTMENT_EVENTS,
        event_type: "appointment.booked",
        key,
        payload: &Numbered { n },
        correlation_id,
    };
    outbox::enqueue(conn, &event).await.unwrap();
}

/// One event as a consumer of the topic received it.
#[derive(Debug, Clone)]
struct Received {
    key: Uuid,
    n: u32,
    headers: BTreeMap<String, String>,
}

fn consumer(bootstrap: &str) -> StreamConsumer {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[APPOINTMENT_EVENTS]).unwrap();
    consumer
}

/// Receives until `until` holds of what was received, or fails after `timeout`.
async fn receive(
    consumer: &StreamConsumer,
    received: &mut Vec<Received>,
    timeout: Duration,
    until: impl Fn(&[Received]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !until(received) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out after {timeout:?}; received {} events",
            received.len()
        );
        let Ok(message) = tokio::time::timeout(left, consumer.recv()).await else {
            continue;
        };
        let message = message.unwrap();
        let key = std::str::from_utf8(message.key().unwrap()).unwrap().parse().unwrap();
        let payload: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), String::from_utf8(h.value.unwrap().to_vec()).unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        received.push(Received {
            key,
            n: payload["n"].as_u64().unwrap() as u32,
            headers,
        });
    }
}

fn distinct_events(received: &[Received]) -> usize {
    received
        .iter()
        .map(|r| r.headers[headers::EVENT_ID].clone())
        .collect::<BTreeSet<_>>()
        .len()
}

#[tokio::test]
async fn events_are_published_in_order_per_key_with_their_headers() {
    let (_pg, pool) = database().await;
    let broker = broker(Storage::Memory).await;
    let (stats, _stop, _task) = relay(&pool, &broker.bootstrap());
    let keys: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    // Writers of different keys at once; each key's events one after the other.
    let writers = keys.iter().enumerate().map(|(k, key)| {
        let (pool, key) = (pool.clone(), *key);
        let country = if k % 2 == 0 { "DE" } else { "FR" };
        tokio::spawn(async move {
            for n in 0..50 {
                write(&pool, country, key, n).await;
            }
        })
    });
    futures::future::join_all(writers).await;
    let consumer = consumer(&broker.bootstrap());
    let mut received = Vec::new();
    receive(&consumer, &mut received, Duration::from_secs(60), |r| {
        distinct_events(r) == 200
    })
    .await;
    for key in &keys {
        let ns: Vec<u32> = received.iter().filter(|r| r.key == *key).map(|r| r.n).collect();
        assert_eq!(
            ns,
            (0..50).collect::<Vec<_>>(),
            "the events of {key} in order, once each"
        );
    }
    // Every event carries its ID (the outbox row's), type, country, correlation ID and time.
    let rows: Vec<(Uuid, String, Option<Uuid>)> =
        sqlx::query_as("SELECT event_id, country_code, correlation_id FROM outbox")
            .fetch_all(&pool)
            .await
            .unwrap();
    let by_id: BTreeMap<String, (String, Option<Uuid>)> =
        rows.into_iter().map(|(id, c, r)| (id.to_string(), (c, r))).collect();
    for r in &received {
        let (country, correlation) = &by_id[&r.headers[headers::EVENT_ID]];
        assert_eq!(&r.headers[headers::COUNTRY], country);
        assert_eq!(r.headers[headers::EVENT_TYPE], "appointment.booked");
        assert_eq!(Some(r.headers[headers::CORRELATION_ID].parse().unwrap()), *correlation);
        chrono::DateTime::parse_from_rfc3339(&r.headers[headers::OCCURRED_AT]).unwrap();
    }
    assert_eq!(stats.published(), 200);
    assert!(stats.leading());
}

#[tokio::test]
async fn a_transaction_that_commits_30_s_after_taking_its_id_is_published() {
    let (_pg, pool) = database().await;
    let broker = broker(Storage::Memory).await;
    let (_stats, _stop, _task) = relay(&pool, &broker.bootstrap());
    let (late_key, key) = (Uuid::new_v4(), Uuid::new_v4());
    let mut late = pool.begin().await.unwrap();
    enqueue(&mut late, "DE", late_key, 0, Uuid::new_v4()).await;
    let took_its_id = Instant::now();
    for n in 0..20 {
        write(&pool, "DE", key, n).await;
    }
    let consumer = consumer(&broker.bootstrap());
    let mut received = Vec::new();
    receive(&consumer, &mut received, Duration::from_secs(30), |r| {
        r.iter().filter(|e| e.key == key).count() >= 20
    })
    .await;
    assert!(received.iter().all(|e| e.key != late_key));
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(took_its_id.elapsed())).await;
    late.commit().await.unwrap();
    receive(&consumer, &mut received, Duration::from_secs(30), |r| {
        r.iter().any(|e| e.key == late_key)
    })
    .await;
    let late_ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox WHERE aggregate_id = $1")
        .bind(late_key)
        .fetch_all(&pool)
        .await
        .unwrap();
    let max_other: i64 = sqlx::query_scalar("SELECT max(id) FROM outbox WHERE aggregate_id = $1")
        .bind(key)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(late_ids[0] < max_other, "the late event took the lower ID");
}

#[tokio::test]
async fn nothing_is_lost_across_a_broker_restart() {
    let (_pg, pool) = database().await;
    let mut broker = broker(Storage::File).await;
    let (stats, _stop, _task) = relay(&pool, &broker.bootstrap());
    let key = Uuid::new_v4();
    for n in 0..100 {
        write(&pool, "DE", key, n).await;
    }
    let started = Instant::now();
    while stats.published() < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "published {}",
            stats.published()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.restart().await.unwrap();
    for n in 100..200 {
        write(&pool, "DE", key, n).await;
    }
    let consumer = consumer(&broker.bootstrap());
    let mut received = Vec::new();
    receive(&consumer, &mut received, Duration::from_secs(90), |r| {
        distinct_events(r) == 200
    })
    .await;
    // At least once, and in order: a batch tried again repeats what came before it.
    let mut firsts = BTreeMap::new();
    for (i, r) in received.iter().enumerate() {
        firsts.entry(r.n).or_insert(i);
    }
    let order: Vec<u32> = {
        let mut by_position: Vec<(usize, u32)> = firsts.iter().map(|(n, i)| (*i, *n)).collect();
        by_position.sort();
        by_position.into_iter().map(|(_, n)| n).collect()
    };
    assert_eq!(order, (0..200).collect::<Vec<_>>());
    println!(
        "across the restart: {} received for 200 events, {} batch(es) tried again",
        received.len(),
        stats.failed_batches()
    );
}

#[tokio::test]
async fn one_relay_publishes_at_a_time_and_another_takes_over_when_it_loses_its_lock() {
    let (_pg, pool) = database().await;
    let broker = broker(Storage::Memory).await;
    let (first, _stop_first, _t1) = relay(&pool, &broker.bootstrap());
    let started = Instant::now();
    while !first.leading() {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (second, _stop_second, _t2) = relay(&pool, &broker.bootstrap());
    let key = Uuid::new_v4();
    for n in 0..50 {
        write(&pool, "DE", key, n).await;
    }
    let started = Instant::now();
    while first.published() < 50 {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!second.leading());
    assert_eq!(second.published(), 0, "the second relay waits");

    // The first relay's lock goes with its connection.
    let holders: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
            AND ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(meridian_events::relay::LEADER_LOCK)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(holders.len(), 1, "one holder of the lock");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holders[0])
        .execute(&pool)
        .await
        .unwrap();
    for n in 50..100 {
        write(&pool, "DE", key, n).await;
    }
    let consumer = consumer(&broker.bootstrap());
    let mut received = Vec::new();
    receive(&consumer, &mut received, Duration::from_secs(60), |r| {
        distinct_events(r) == 100
    })
    .await;
    // Either may hold the lock now (the first tries again for it too), never both.
    println!(
        "after the first relay lost its lock: first published {}, second {}",
        first.published(),
        second.published()
    );
    let before = first.published();
    for n in 100..110 {
        write(&pool, "DE", key, n).await;
    }
    receive(&consumer, &mut received, Duration::from_secs(30), |r| {
        distinct_events(r) == 110
    })
    .await;
    // Whichever holds the lock now publishes alone.
    let now_leading = [first.leading(), second.leading()];
    assert_eq!(now_leading.iter().filter(|l| **l).count(), 1, "{now_leading:?}");
    if second.leading() {
        assert_eq!(first.published(), before, "the first relay no longer publishes");
    }
}
