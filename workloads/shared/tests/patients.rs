//! The registry of client IDs against a real PostgreSQL cluster.

use std::sync::Arc;
use std::time::Duration;

use meridian_localpg::TempCluster;
use meridian_shared::patients::{client_id_for_subject, is_registered};
use meridian_shared::schema::prepare;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// A migrated database with the partitions of DE and FR, as the control plane leaves it.
async fn database() -> (TempCluster, PgPool) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    prepare(&mut conn, &["DE", "FR"]).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(40)
        .connect(&pg.url())
        .await
        .unwrap();
    (pg, pool)
}

async fn rows(pool: &PgPool, subject: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM patients WHERE subject = $1")
        .bind(subject)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_subject_keeps_one_random_client_id_per_country() {
    let (_pg, pool) = database().await;
    let mut conn = pool.acquire().await.unwrap();
    let first = client_id_for_subject(&mut conn, "DE", "kc|4711").await.unwrap();
    assert_eq!(first.get_version_num(), 4, "a random (v4) client ID: {first}");
    let xmin = "SELECT xmin::text FROM patients WHERE subject = 'kc|4711'";
    let written_by: String = sqlx::query_scalar(xmin).fetch_one(&mut *conn).await.unwrap();
    for _ in 0..3 {
        assert_eq!(client_id_for_subject(&mut conn, "DE", "kc|4711").await.unwrap(), first);
    }
    let now: String = sqlx::query_scalar(xmin).fetch_one(&mut *conn).await.unwrap();
    assert_eq!(now, written_by, "a known subject is read, not written");
    assert_eq!(rows(&pool, "kc|4711").await, 1);

    let other = client_id_for_subject(&mut conn, "DE", "kc|4712").await.unwrap();
    assert_ne!(other, first, "another subject, another client ID");
    // The same account in another country is another patient record there.
    let french = client_id_for_subject(&mut conn, "FR", "kc|4711").await.unwrap();
    assert_ne!(french, first);
    assert_eq!(client_id_for_subject(&mut conn, "FR", "kc|4711").await.unwrap(), french);
    let (country, subject): (String, String) =
        sqlx::query_as("SELECT country_code, subject FROM patients WHERE client_id = $1")
            .bind(first)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!((country.as_str(), subject.as_str()), ("DE", "kc|4711"));

    // A country without partitions here is an error, not a panic, and writes nothing.
    let refused = client_id_for_subject(&mut conn, "JP", "kc|4711").await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(rows(&pool, "kc|4711").await, 2);
}

#[tokio::test]
async fn many_first_requests_of_one_subject_at_once_get_one_client_id() {
    let (_pg, pool) = database().await;
    for round in 0..4 {
        let subject = format!("new-patient-{round}");
        // 32 connections, held before the start so that the calls meet in the database.
        let mut conns = Vec::new();
        for _ in 0..32 {
            conns.push(pool.acquire().await.unwrap());
        }
        let start = Arc::new(tokio::sync::Barrier::new(32));
        let calls = conns.into_iter().map(|mut conn| {
            let (start, subject) = (start.clone(), subject.clone());
            tokio::spawn(async move {
                start.wait().await;
                client_id_for_subject(&mut conn, "DE", &subject).await
            })
        });
        let mut ids = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            ids.push(call.await.unwrap().expect("every call answers"));
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "one client ID for {subject}: {ids:?}");
        assert_eq!(rows(&pool, &subject).await, 1, "one row for {subject}");
    }
}

#[tokio::test]
async fn a_call_that_loses_the_race_answers_the_winners_client_id() {
    let (_pg, pool) = database().await;
    // The winner registers the subject in a transaction it has not committed yet.
    let mut winner = pool.begin().await.unwrap();
    let won = client_id_for_subject(&mut winner, "DE", "racer").await.unwrap();
    // The loser's statement starts before that commit: its snapshot sees no row, and its
    // insert waits on the winner's.
    let loser = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            client_id_for_subject(&mut conn, "DE", "racer").await
        })
    };
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH known%'";
    let mut seen = 0_i64;
    for _ in 0..500 {
        seen = sqlx::query_scalar(waiting).fetch_one(&pool).await.unwrap();
        if seen > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 1, "the loser waits for the winner");
    winner.commit().await.unwrap();
    assert_eq!(loser.await.unwrap().unwrap(), won);
    assert_eq!(rows(&pool, "racer").await, 1);
}

#[tokio::test]
async fn registered_means_a_live_row_of_that_country() {
    let (_pg, pool) = database().await;
    let mut conn = pool.acquire().await.unwrap();
    let id = client_id_for_subject(&mut conn, "DE", "kc|1").await.unwrap();
    assert!(is_registered(&mut conn, "DE", id).await.unwrap());
    assert!(
        !is_registered(&mut conn, "FR", id).await.unwrap(),
        "another country's patient"
    );
    assert!(
        !is_registered(&mut conn, "DE", Uuid::new_v4()).await.unwrap(),
        "nobody's ID"
    );
    // A patient the clinic recorded without an account (no subject) is registered too.
    let recorded = Uuid::new_v4();
    sqlx::query("INSERT INTO patients (country_code, client_id, version) VALUES ('DE', $1, 1)")
        .bind(recorded)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(is_registered(&mut conn, "DE", recorded).await.unwrap());
    sqlx::query("UPDATE patients SET deleted_at = now() WHERE client_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(!is_registered(&mut conn, "DE", id).await.unwrap(), "a deleted patient");
    // Their account still maps to the same client ID.
    assert_eq!(client_id_for_subject(&mut conn, "DE", "kc|1").await.unwrap(), id);
}
