//! `meridian relay` as its own process, killed with SIGKILL while events are being
//! written and published: a new relay goes on from the stored position, and every event
//! reaches Kafka (some twice: delivery is at least once), each key's in order.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_e2e::meridian_bin;
use meridian_events::kafka::KafkaOptions;
use meridian_events::relay::headers;
use meridian_events::topics::{self, TopicSettings};
use meridian_localkafka::{Broker, Storage};
use meridian_localpg::TempCluster;
use meridian_shared::outbox::{self, APPOINTMENT_EVENTS, Event};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

fn start_relay(database_url: &str, bootstrap: &str) -> Child {
    Command::new(meridian_bin())
        // Two relays run at once here: each on a port of its own.
        .args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--kafka-bootstrap",
            bootstrap,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start meridian relay")
}

#[tokio::test]
async fn a_relay_killed_mid_stream_loses_nothing() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    meridian_shared::schema::prepare(&mut conn, &["DE"]).await.unwrap();
    let pool = PgPool::connect(&pg.url()).await.unwrap();
    let broker = Broker::start(Storage::Memory).await.unwrap_or_else(|e| panic!("{e}"));
    let kafka = KafkaOptions::plaintext(broker.bootstrap()).client_config().unwrap();
    topics::ensure(&kafka, &TopicSettings::default()).await.unwrap();

    let mut relay = start_relay(&pg.url(), &broker.bootstrap());
    let keys: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let total = 8 * 500;
    let writer = {
        let (pool, keys) = (pool.clone(), keys.clone());
        tokio::spawn(async move {
            for n in 0..500u32 {
                let mut tx = pool.begin().await.unwrap();
                for key in &keys {
                    let payload = serde_json::json!({ "n": n });
                    let event = Event {
                        country_code: "DE",
                        topic: APPOINTMENT_EVENTS,
                        event_type: "appointment.booked",
                        key: *key,
                        payload: &payload,
                        correlation_id: Uuid::new_v4(),
                    };
                    outbox::enqueue(&mut tx, &event).await.unwrap();
                }
                tx.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(8)).await;
            }
        })
    };
    // Killed once it has published some, while the writer is still writing.
    let position = || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT max(position) FROM outbox_consumers WHERE consumer = 'relay:appointment-events'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
        .unwrap_or(0)
    };
    let started = Instant::now();
    while position().await < 400 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the relay published nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.kill().unwrap();
    relay.wait().unwrap();
    assert!(!writer.is_finished(), "killed mid-stream");
    println!("relay killed with its position at outbox ID {}", position().await);
    let mut relay = start_relay(&pg.url(), &broker.bootstrap());
    writer.await.unwrap();

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[APPOINTMENT_EVENTS]).unwrap();
    let (mut ids, mut order, mut received) = (BTreeSet::new(), BTreeMap::<String, Vec<u64>>::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while ids.len() < total {
        assert!(Instant::now() < deadline, "{} of {total} events arrived", ids.len());
        let Ok(message) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await else {
            continue;
        };
        let message = message.unwrap();
        received += 1;
        let id = message
            .headers()
            .unwrap()
            .iter()
            .find(|h| h.key == headers::EVENT_ID)
            .map(|h| String::from_utf8(h.value.unwrap().to_vec()).unwrap())
            .unwrap();
        if ids.insert(id) {
            let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            let payload: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            order.entry(key).or_default().push(payload["n"].as_u64().unwrap());
        }
    }
    relay.kill().unwrap();
    relay.wait().unwrap();
    for (key, ns) in &order {
        assert_eq!(*ns, (0..500).collect::<Vec<_>>(), "events of {key} in order");
    }
    println!(
        "{total} events, {received} deliveries ({} again after the kill)",
        received - total
    );
}
