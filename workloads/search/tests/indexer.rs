//! The indexer against real PostgreSQL and the embedded engine: in order, at least once,
//! idempotent by practitioner version, and not fooled by a transaction that commits late;
//! and as a consumer of the Region's Kafka (a real tansu broker), the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_events::consumer::{self, Incoming, Outcome};
use meridian_events::kafka::KafkaOptions;
use meridian_events::relay::Relay;
use meridian_events::topics::{self, TopicSettings};
use meridian_localkafka::{Broker, Storage};
use meridian_localpg::TempCluster;
use meridian_search::embedded::Engine;
use meridian_search::indexer::{IndexHandler, Indexer};
use meridian_search::{Backend, Document, IndexSettings, Language, Query, alias, versioned};
use meridian_shared::schema::prepare;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

async fn setup() -> (TempCluster, PgPool, Backend, tempfile::TempDir) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    prepare(&mut conn, &["DE", "FR"]).await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg.url())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let settings = IndexSettings {
        language: Language::German,
        synonyms: vec![],
    };
    engine.create_index(&versioned("DE", 1), &settings).await.unwrap();
    engine.point_alias(&alias("DE"), &versioned("DE", 1)).await.unwrap();
    (pg, pool, Backend::Embedded(Arc::new(engine)), dir)
}

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

/// Writes a practitioner event as the booking service does (only the fields the indexer
/// reads matter here).
async fn event(conn: &mut PgConnection, doc: &Document) {
    sqlx::query(
        "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload)
         VALUES ($1, 'practitioner-events', 'practitioner.updated', $2, $3)",
    )
    .bind(&doc.country_code)
    .bind(doc.id)
    .bind(serde_json::to_value(doc).unwrap())
    .execute(conn)
    .await
    .unwrap();
}

async fn city(backend: &Backend) -> Option<String> {
    cities(backend, "Schmidt").await.pop()
}

/// The cities of the documents found for `name`.
async fn cities(backend: &Backend, name: &str) -> Vec<String> {
    let query = Query {
        text: Some(name.into()),
        limit: 10,
        ..Default::default()
    };
    let hits = backend.search(&alias("DE"), &query).await.unwrap();
    hits.hits.iter().map(|h| h.document.city.clone()).collect()
}

/// The position stored for the indexer.
async fn stored(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT snapshot::text FROM outbox_consumers WHERE consumer = 'search-indexer'")
        .fetch_optional(pool)
        .await
        .unwrap()
        .flatten()
}

fn weber(version: i64, city: &str) -> Document {
    let mut doc = anna(version, city);
    doc.id = Uuid::from_u128(9);
    doc.family_name = "Weber".into();
    doc
}

#[tokio::test]
async fn events_are_applied_in_order_and_replays_change_nothing() {
    let (_pg, pool, backend, _dir) = setup().await;
    let mut conn = pool.acquire().await.unwrap();
    event(&mut conn, &anna(1, "Berlin")).await;
    event(&mut conn, &anna(2, "Potsdam")).await;
    // An event of a country whose index is not built yet waits for that build.
    let mut fr = anna(1, "Paris");
    fr.id = Uuid::from_u128(8);
    fr.country_code = "FR".into();
    event(&mut conn, &fr).await;

    let mut indexer = Indexer::start(pool.clone(), backend.clone(), "search-indexer")
        .await
        .unwrap();
    assert_eq!(indexer.position(), None);
    let step = indexer.step().await.unwrap();
    assert_eq!(step.skipped_countries, ["FR"]);
    assert_eq!(step.documents, 2);
    assert_eq!(city(&backend).await.as_deref(), Some("Potsdam"));
    let position = indexer.position().expect("a position after the first read").to_string();
    assert_eq!(stored(&pool).await, Some(position));

    // A late replay of the old version, and a restart from nothing: still Potsdam.
    event(&mut conn, &anna(1, "Berlin")).await;
    assert_eq!(indexer.step().await.unwrap().documents, 1, "only what is new is read");
    assert_eq!(city(&backend).await.as_deref(), Some("Potsdam"));
    assert_eq!(indexer.step().await.unwrap().documents, 0);
    sqlx::query("UPDATE outbox_consumers SET position = 0, snapshot = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let mut restarted = Indexer::start(pool.clone(), backend.clone(), "search-indexer")
        .await
        .unwrap();
    assert_eq!(restarted.position(), None);
    assert_eq!(
        restarted.step().await.unwrap().documents,
        3,
        "everything again, in order"
    );
    assert_eq!(city(&backend).await.as_deref(), Some("Potsdam"));
    let position = restarted.position().unwrap().to_string();
    assert_eq!(stored(&pool).await, Some(position));
    let highest: i64 = sqlx::query_scalar("SELECT position FROM outbox_consumers WHERE consumer = 'search-indexer'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(highest, 4, "the highest outbox ID read, for people to see");
}

#[tokio::test]
async fn an_event_that_commits_late_is_not_skipped_and_a_rollback_holds_nothing_back() {
    let (_pg, pool, backend, _dir) = setup().await;
    let mut indexer = Indexer::start(pool.clone(), backend.clone(), "search-indexer")
        .await
        .unwrap();
    // A transaction takes outbox ID 1 and stays open while ID 2 commits: ID 2 is read.
    let mut late = pool.begin().await.unwrap();
    event(&mut late, &anna(1, "Berlin")).await;
    event(&mut pool.acquire().await.unwrap(), &weber(1, "Hamburg")).await;
    assert_eq!(indexer.step().await.unwrap().documents, 1);
    assert_eq!(cities(&backend, "Weber").await, ["Hamburg"]);
    assert_eq!(city(&backend).await, None);
    late.commit().await.unwrap();
    assert_eq!(indexer.step().await.unwrap().documents, 1);
    assert_eq!(city(&backend).await.as_deref(), Some("Berlin"));

    // A transaction that rolls back holds nothing back.
    let mut rolled_back = pool.begin().await.unwrap();
    event(&mut rolled_back, &anna(5, "Köln")).await;
    event(&mut pool.acquire().await.unwrap(), &anna(3, "Bonn")).await;
    assert_eq!(indexer.step().await.unwrap().documents, 1);
    assert_eq!(city(&backend).await.as_deref(), Some("Bonn"));
    rolled_back.rollback().await.unwrap();
    assert_eq!(indexer.step().await.unwrap().documents, 0);
    assert_eq!(city(&backend).await.as_deref(), Some("Bonn"));
}

/// How long the late transaction stays open.
const HOLD: Duration = Duration::from_secs(30);

/// Waits up to 5 s for `name` to be found in exactly `expected`.
async fn until_found(backend: &Backend, name: &str, expected: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = cities(backend, name).await;
        if found == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {found:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_transaction_open_for_30_s_delays_nothing_and_its_event_is_indexed_once_when_it_commits() {
    let (_pg, pool, backend, _dir) = setup().await;
    let running = Indexer::start(pool.clone(), backend.clone(), "search-indexer")
        .await
        .unwrap()
        .spawn();
    let began = Instant::now();
    let mut late = pool.begin().await.unwrap();
    event(&mut late, &anna(1, "Berlin")).await;
    // Later events commit and are indexed while it stays open, again and again.
    for (version, city) in [(1, "Hamburg"), (2, "Lübeck"), (3, "Kiel")] {
        event(&mut pool.acquire().await.unwrap(), &weber(version, city)).await;
        until_found(&backend, "Weber", &[city]).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(HOLD.saturating_sub(began.elapsed())).await;
    assert_eq!(city(&backend).await, None);
    // A restart during the wait resumes from the stored position, which does not see the
    // open transaction.
    let mut restarted = Indexer::start(pool.clone(), backend.clone(), "search-indexer")
        .await
        .unwrap();
    assert!(stored(&pool).await.is_some());
    late.commit().await.unwrap();
    assert!(began.elapsed() >= HOLD);
    until_found(&backend, "Schmidt", &["Berlin"]).await;
    let step = restarted.step().await.unwrap();
    assert_eq!(
        step.documents, 1,
        "the restarted indexer reads the late event and nothing before it"
    );
    until_found(&backend, "Schmidt", &["Berlin"]).await;
    until_found(&backend, "Weber", &["Kiel"]).await;
    running.abort();
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
    let (_pg, pool, backend, _dir) = setup().await;
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
    assert_eq!(cities(&backend, "Schmidt").await, ["Potsdam"]);
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
    // Stopped before the broker: a consumer dropped after it waits on its close for minutes.
    let consumer = tokio::spawn(consumer::run_kafka(
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
    while cities(&backend, "Schmidt").await != ["Leipzig"] {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            city(&backend).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.abort();
    let _ = consumer.await;
}
