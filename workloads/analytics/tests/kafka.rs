//! The analytics consumer on the Region's Kafka (a real tansu broker): appointment events
//! relayed from the outbox are counted, the counts come back on `analytics-results` through
//! the relay, and an event later than the allowed lateness lands in the dead-letter topic
//! after one attempt, saying why.

use std::time::{Duration, Instant};

use meridian_analytics::AnalyticsHandler;
use meridian_analytics::handler::MINUTE_COUNTED;
use meridian_events::consumer;
use meridian_events::dlq::{self, headers as dlq_headers};
use meridian_events::kafka::KafkaOptions;
use meridian_events::relay::{Relay, headers};
use meridian_events::topics::{self, TopicSettings};
use meridian_localkafka::{Broker, Storage};
use meridian_localpg::TempCluster;
use meridian_shared::outbox::{ANALYTICS_RESULTS, APPOINTMENT_EVENTS};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// Writes an appointment event of `practitioner` that happened `ago` before now.
async fn write(pool: &PgPool, kind: &str, practitioner: Uuid, ago: chrono::TimeDelta) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload, correlation_id, created_at)
         VALUES ('DE', $1, $2, $3, jsonb_build_object('id', gen_random_uuid(), 'practitionerId', $3::uuid), $4, $5)
         RETURNING event_id",
    )
    .bind(APPOINTMENT_EVENTS)
    .bind(format!("appointment.{kind}"))
    .bind(practitioner)
    .bind(Uuid::new_v4())
    .bind(chrono::Utc::now() - ago)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn counts_flow_through_kafka_and_a_too_late_event_is_dead_lettered_at_once() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    meridian_shared::schema::prepare(&mut conn, &["DE"]).await.unwrap();
    let pool = PgPool::connect(&pg.url()).await.unwrap();
    let practitioner = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
         VALUES ('DE', $1, 'Ada', 'Lovelace', 'dermatology', 'Berlin')",
    )
    .bind(practitioner)
    .execute(&pool)
    .await
    .unwrap();
    let broker = Broker::start(Storage::Memory).await.unwrap_or_else(|e| panic!("{e}"));
    let kafka = KafkaOptions::plaintext(broker.bootstrap()).client_config().unwrap();
    topics::ensure(&kafka, &TopicSettings::default()).await.unwrap();
    tokio::spawn(Relay::new(pool.clone(), kafka.clone()).run(std::future::pending()));
    // Stopped before the broker: a consumer dropped after it waits on its close for minutes.
    let consumer = tokio::spawn(consumer::run_kafka(
        pool.clone(),
        kafka.clone(),
        AnalyticsHandler,
        std::future::pending(),
    ));

    let now = chrono::TimeDelta::zero();
    for kind in ["booked", "booked", "cancelled", "reassigned"] {
        write(&pool, kind, practitioner, now).await;
    }
    let totals = async || -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT coalesce(sum(booked), 0), coalesce(sum(cancelled), 0), coalesce(sum(reassigned), 0)
               FROM appointment_minutes WHERE country_code = 'DE'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    wait_for("four events counted", async || totals().await == (2, 1, 1)).await;

    // Ten minutes old when it reaches the consumer: rejected once, not retried.
    let late = write(&pool, "booked", practitioner, chrono::TimeDelta::minutes(10)).await;
    let letters = loop {
        let found = tokio::task::spawn_blocking({
            let kafka = kafka.clone();
            move || dlq::list(&kafka).unwrap()
        })
        .await
        .unwrap();
        if !found.is_empty() {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.dlq_topic, "appointment-events.dlq");
    assert_eq!(letter.headers[headers::EVENT_ID], late.to_string());
    assert_eq!(letter.headers[dlq_headers::CONSUMER], "analytics");
    assert_eq!(letter.headers[dlq_headers::ATTEMPTS], "1");
    assert!(letter.headers[dlq_headers::ERROR].contains("is final"), "{letter:?}");
    assert_eq!(totals().await, (2, 1, 1), "the late event is not counted");

    // The relay published every change of the minute on analytics-results, keyed by the
    // minute, with the counts then: the last one holds the minute's totals.
    let results = tokio::task::spawn_blocking({
        let mut config = kafka.clone();
        config
            .set("group.id", format!("test-{}", Uuid::new_v4()))
            .set("auto.offset.reset", "earliest");
        move || {
            let consumer: BaseConsumer = config.create().unwrap();
            consumer.subscribe(&[ANALYTICS_RESULTS]).unwrap();
            let mut found = Vec::new();
            let started = Instant::now();
            while found.len() < 4 && started.elapsed() < Duration::from_secs(60) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                    let kind = message
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == headers::EVENT_TYPE))
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()));
                    let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
                    let payload: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
                    found.push((kind, key, payload));
                }
            }
            found
        }
    })
    .await
    .unwrap();
    assert_eq!(results.len(), 4, "{results:?}");
    assert!(
        results
            .iter()
            .all(|(kind, _, _)| kind.as_deref() == Some(MINUTE_COUNTED))
    );
    let keys: std::collections::BTreeSet<_> = results.iter().map(|(_, key, _)| key.clone()).collect();
    assert!(
        keys.len() <= 2,
        "one key per minute (the events may straddle two): {keys:?}"
    );
    let last = |field: &str| -> i64 {
        // Per minute, the latest counts; summed over the minutes.
        let mut latest = std::collections::BTreeMap::new();
        for (_, _, payload) in &results {
            latest.insert(
                payload["minute"].as_str().unwrap().to_string(),
                payload[field].as_i64().unwrap(),
            );
        }
        latest.values().sum()
    };
    assert_eq!((last("booked"), last("cancelled"), last("reassigned")), (2, 1, 1));
    assert!(
        results
            .iter()
            .all(|(_, _, p)| p["specialty"] == "dermatology" && p["countryCode"] == "DE")
    );
    consumer.abort();
    let _ = consumer.await;
}
