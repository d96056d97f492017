//! The indexer as a consumer of the Region's Kafka (a real tansu broker) against real
//! PostgreSQL and the embedded engine: practitioner events relayed from the outbox reach the
//! index, each once, never an older version over a newer one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_events::consumer::{self, Incoming, Outcome};
use meridian_events::kafka::KafkaOptions;
use meridian_events::relay::Relay;
use meridian_events::topics::{self, TopicSettings};
use meridian_localkafka::{Broker, Storage};
use meridian_localpg::TempCluster;
use meridian_search::embedded::Engine;
use meridian_search::indexer::IndexHandler;
use meridian_search::{Backend, Document, IndexSettings, Language, Query, alias, versioned};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

fn anna(version: i64, city: &str) -> Document {
    Document {
        id: Uuid::from_u128(7),
        country_code: "DE".into(),
        given_name: "Anna".into(),
        family_name: "Schmidt".into(),
        specialty: "Kardiologie".into(),
        city: city.into(),
        languages: vec!["de".into()],
        active: true,
        version,
    }
}

async fn cities(backend: &Backend) -> Vec<String> {
    let query = Query {
        text: Some("Schmidt".into()),
        limit: 10,
        ..Default::default()
    };
    let hits = backend.search(&alias("DE"), &query).await.unwrap();
    hits.hits.iter().map(|h| h.document.city.clone()).collect()
}

fn incoming(doc: &Document) -> Incoming {
    Incoming {
        topic: "practitioner-events".into(),
        event_id: Uuid::new_v4(),
        event_type: "practitioner.updated".into(),
        country_code: doc.country_code.clone(),
        key: Some(doc.id.to_string()),
        correlation_id: None,
        occurred_at: chrono::Utc::now(),
        payload: serde_json::to_value(doc).unwrap(),
        replayed: false,
    }
}

#[tokio::test]
async fn relayed_practitioner_events_reach_the_index_once_and_in_version_order() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    meridian_shared::schema::prepare(&mut conn, &["DE", "FR"])
        .await
        .unwrap();
    let pool = PgPool::connect(&pg.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let settings = IndexSettings {
        language: Language::German,
        synonyms: vec![],
    };
    engine.create_index(&versioned("DE", 1), &settings).await.unwrap();
    engine.point_alias(&alias("DE"), &versioned("DE", 1)).await.unwrap();
    let backend = Backend::Embedded(Arc::new(engine));
    let indexer = IndexHandler {
        backend: backend.clone(),
    };

    // Applied once; the same event again is a duplicate; an older version changes nothing;
    // a country whose index is not built yet is passed over (its build reads the database).
    let potsdam = incoming(&anna(2, "Potsdam"));
    assert_eq!(consumer::apply(&pool, &indexer, &potsdam).await, Outcome::Applied);
    assert_eq!(consumer::apply(&pool, &indexer, &potsdam).await, Outcome::Duplicate);
    let older = incoming(&anna(1, "Berlin"));
    assert_eq!(consumer::apply(&pool, &indexer, &older).await, Outcome::Applied);
    assert_eq!(cities(&backend).await, ["Potsdam"]);
    let mut fr = anna(1, "Paris");
    fr.country_code = "FR".into();
    assert_eq!(consumer::apply(&pool, &indexer, &incoming(&fr)).await, Outcome::Applied);
    let mut malformed = incoming(&anna(3, "Bonn"));
    malformed.payload = serde_json::json!({"id": "not a practitioner"});
    assert!(matches!(
        consumer::apply(&pool, &indexer, &malformed).await,
        Outcome::Failed {
            attempts: consumer::MAX_ATTEMPTS,
            ..
        }
    ));

    // Through the relay and the broker.
    let broker = Broker::start(Storage::Memory).await.unwrap_or_else(|e| panic!("{e}"));
    let kafka = KafkaOptions::plaintext(broker.bootstrap()).client_config().unwrap();
    topics::ensure(&kafka, &TopicSettings::default()).await.unwrap();
    tokio::spawn(Relay::new(pool.clone(), kafka.clone()).run(std::future::pending()));
    tokio::spawn(consumer::run_kafka(
        pool.clone(),
        kafka,
        indexer,
        std::future::pending(),
    ));
    sqlx::query(
        "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload)
         VALUES ('DE', 'practitioner-events', 'practitioner.updated', $1, $2)",
    )
    .bind(Uuid::from_u128(7))
    .bind(serde_json::to_value(anna(4, "Leipzig")).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let started = Instant::now();
    while cities(&backend).await != ["Leipzig"] {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            cities(&backend).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
