//! What the event workers tell Prometheus and the kubelet, against a real PostgreSQL and a
//! real Kafka-protocol broker (tansu): `/readyz` says 503 until the worker has reached its
//! database and Kafka, the relay's lag gauge rises while an event waits and falls once it
//! is published, and a consumer's failures are counted by kind. In a binary of its own: the
//! workload metrics are the process's.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meridian_events::consumer::{self, Failure, Handler, Incoming, MAX_ATTEMPTS, Outcome};
use meridian_events::kafka::KafkaOptions;
use meridian_events::relay::Relay;
use meridian_events::topics::{self, TopicSettings};
use meridian_events::worker::{Readiness, ops_router};
use meridian_localkafka::{Broker, Storage};
use meridian_shared::metrics::workload;
use meridian_shared::outbox::{self, APPOINTMENT_EVENTS, Event};
use sqlx::PgConnection;
use tower::ServiceExt;
use uuid::Uuid;

mod common;
use common::{database, wait_for};

async fn get(readiness: &Readiness, path: &str) -> (StatusCode, String, String) {
    let response = ops_router(readiness.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, kind, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn readyz_is_503_until_the_database_and_kafka_have_answered() {
    let (_pg, pool) = database(&["DE"]).await;
    let broker = Broker::start(Storage::Memory).await.unwrap_or_else(|e| panic!("{e}"));
    let kafka = KafkaOptions::plaintext(broker.bootstrap()).client_config().unwrap();

    // A worker whose database is not there: alive, never ready.
    let nowhere = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://meridian@127.0.0.1:1/none")
        .unwrap();
    let stranded = Readiness::default();
    stranded.when_connected(nowhere, kafka.clone(), None);
    let (status, kind, body) = get(&stranded, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(kind, "application/problem+json");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 503);
    assert_eq!(get(&stranded, "/healthz").await.0, StatusCode::OK);

    // One whose stores answer: ready once they have.
    let readiness = Readiness::default();
    assert_eq!(get(&readiness, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    readiness.when_connected(pool, kafka, Some(APPOINTMENT_EVENTS));
    wait_for("/readyz to say 200", Duration::from_secs(30), async || {
        get(&readiness, "/readyz").await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(get(&stranded, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);

    let (status, kind, text) = get(&readiness, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(text.contains("# TYPE meridian_relay_lag_seconds gauge"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn the_relay_lag_rises_while_an_event_waits_and_falls_once_it_is_published() {
    let (_pg, pool) = database(&["DE"]).await;
    let broker = Broker::start(Storage::Memory).await.unwrap_or_else(|e| panic!("{e}"));
    let kafka = KafkaOptions::plaintext(broker.bootstrap()).client_config().unwrap();
    topics::ensure(&kafka, &TopicSettings::default()).await.unwrap();
    let published_before = published(APPOINTMENT_EVENTS);

    let mut tx = pool.begin().await.unwrap();
    let payload = serde_json::json!({"n": 1});
    outbox::enqueue(
        &mut tx,
        &Event {
            country_code: "DE",
            topic: APPOINTMENT_EVENTS,
            event_type: "appointment.booked",
            key: Uuid::new_v4(),
            payload: &payload,
            correlation_id: Uuid::new_v4(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // The event waits a while before any relay runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let relay = Relay::new(pool.clone(), kafka);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    // Its first look at the outbox, before it publishes: the event is over a second old.
    let mut highest = 0.0_f64;
    wait_for(
        "the lag to show the waiting event",
        Duration::from_secs(30),
        async || {
            highest = highest.max(workload().relay_lag_seconds());
            highest >= 1.0
        },
    )
    .await;
    // Published, and measured again: nothing waits.
    wait_for("the lag to fall to 0", Duration::from_secs(30), async || {
        workload().relay_lag_seconds() == 0.0
    })
    .await;
    assert_eq!(published(APPOINTMENT_EVENTS), published_before + 1);
    assert!(workload().render().contains("meridian_relay_backlog 0\n"));
    drop(stop);
    task.await.unwrap().unwrap();
}

/// `meridian_relay_published_total{topic}` as exposed.
fn published(topic: &str) -> u64 {
    let prefix = format!("meridian_relay_published_total{{topic=\"{topic}\"}} ");
    workload()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

/// Fails every event: tried again, then given up on.
struct Poisoned;

impl Handler for Poisoned {
    fn name(&self) -> &str {
        "ops-test-poisoned"
    }

    fn topic(&self) -> &'static str {
        APPOINTMENT_EVENTS
    }

    async fn handle(&self, _: &mut PgConnection, event: &Incoming) -> Result<(), Failure> {
        match event.event_type.as_str() {
            "never" => Err(Failure::Rejected("cannot apply".into())),
            _ => Err(Failure::Event("fails".into())),
        }
    }
}

#[tokio::test]
async fn a_consumers_failures_are_counted_by_kind() {
    let (_pg, pool) = database(&["DE"]).await;
    let event = |event_type: &str| Incoming {
        topic: APPOINTMENT_EVENTS.into(),
        event_id: Uuid::new_v4(),
        event_type: event_type.into(),
        country_code: "DE".into(),
        key: None,
        correlation_id: None,
        occurred_at: chrono::Utc::now(),
        payload: serde_json::json!({}),
        replayed: false,
    };
    let outcome = consumer::apply(&pool, &Poisoned, &event("fails")).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                attempts: MAX_ATTEMPTS,
                ..
            }
        ),
        "{outcome:?}"
    );
    let outcome = consumer::apply(&pool, &Poisoned, &event("never")).await;
    assert!(matches!(outcome, Outcome::Failed { attempts: 1, .. }), "{outcome:?}");
    let text = workload().render();
    let labels = "group=\"ops-test-poisoned\",topic=\"appointment-events\"";
    for line in [
        format!(
            "meridian_consumer_errors_total{{{labels},kind=\"retry\"}} {}",
            MAX_ATTEMPTS - 1
        ),
        format!("meridian_consumer_errors_total{{{labels},kind=\"rejected\"}} 1"),
        format!("meridian_consumer_errors_total{{{labels},kind=\"dlq\"}} 2"),
        format!("meridian_consumer_dlq_total{{{labels}}} 2"),
        format!("meridian_consumer_processed_total{{{labels}}} 0"),
    ] {
        assert!(text.contains(&line), "no {line} in {text}");
    }
}
