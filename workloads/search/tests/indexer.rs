//! The indexer against real PostgreSQL and the embedded engine: in order, at least once,
//! idempotent by practitioner version, and not fooled by a transaction that commits late.

use std::sync::Arc;

use meridian_localpg::TempCluster;
use meridian_search::embedded::Engine;
use meridian_search::indexer::{GAP_WAIT, Indexer};
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
    let query = Query {
        text: Some("Schmidt".into()),
        limit: 1,
        ..Default::default()
    };
    let hits = backend.search(&alias("DE"), &query).await.unwrap();
    hits.hits.first().map(|h| h.document.city.clone())
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
    let step = indexer.step().await.unwrap();
    assert_eq!(step.skipped_countries, ["FR"]);
    assert_eq!(city(&backend).await.as_deref(), Some("Potsdam"));
    assert_eq!(indexer.position(), 3);

    // A late replay of the old version, and a restart from nothing: still Potsdam.
    event(&mut conn, &anna(1, "Berlin")).await;
    indexer.step().await.unwrap();
    assert_eq!(city(&backend).await.as_deref(), Some("Potsdam"));
    sqlx::query("UPDATE outbox_consumers SET position = 0")
        .execute(&pool)
        .await
        .unwrap();
    let mut restarted = Indexer::start(pool.clone(), backend.clone(), "search-indexer")
        .await
        .unwrap();
    assert_eq!(restarted.position(), 0);
    restarted.step().await.unwrap();
    assert_eq!(city(&backend).await.as_deref(), Some("Potsdam"));
    assert_eq!(restarted.position(), 4);
    let stored: i64 = sqlx::query_scalar("SELECT position FROM outbox_consumers WHERE consumer = 'search-indexer'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 4);
}

#[tokio::test]
async fn an_event_that_commits_late_is_not_skipped() {
    let (_pg, pool, backend, _dir) = setup().await;
    let mut indexer = Indexer::start(pool.clone(), backend.clone(), "search-indexer")
        .await
        .unwrap();
    // A transaction takes outbox ID 1 and stays open while ID 2 commits.
    let mut late = pool.begin().await.unwrap();
    event(&mut late, &anna(1, "Berlin")).await;
    let mut other = anna(1, "Hamburg");
    other.id = Uuid::from_u128(9);
    other.family_name = "Weber".into();
    event(&mut pool.acquire().await.unwrap(), &other).await;
    indexer.step().await.unwrap();
    assert_eq!(indexer.position(), 0, "not past the open transaction's ID");
    late.commit().await.unwrap();
    indexer.step().await.unwrap();
    assert_eq!(city(&backend).await.as_deref(), Some("Berlin"));
    assert_eq!(indexer.position(), 2);

    // A transaction that rolls back leaves a gap for ever: passed after GAP_WAIT.
    let mut rolled_back = pool.begin().await.unwrap();
    event(&mut rolled_back, &anna(5, "Köln")).await;
    rolled_back.rollback().await.unwrap();
    event(&mut pool.acquire().await.unwrap(), &anna(3, "Bonn")).await;
    indexer.step().await.unwrap();
    assert_eq!(indexer.position(), 2);
    tokio::time::sleep(GAP_WAIT).await;
    indexer.step().await.unwrap();
    assert_eq!(indexer.position(), 4);
    assert_eq!(city(&backend).await.as_deref(), Some("Bonn"));
}
