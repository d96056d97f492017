//! While the Region's database is down, the booking API answers fast with a 503 problem
//! that tells nothing internal, and it recovers by itself once the database is back: the
//! pool (`pool_options`) drops the connections the crash broke and connects anew.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use meridian_booking::http::{Countries, CountryEntry, Service, app};
use meridian_localpg::{Cluster, Durability, kill_postmaster};
use meridian_shared::auth::{DevIssuer, Role};
use meridian_shared::schema::prepare;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

mod support;

async fn get(app: &axum::Router, uri: &str, token: &str) -> (StatusCode, String, Value) {
    let request = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, body, content_type) = support::send(app, request).await;
    (status, content_type, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_is_down_is_a_fast_503_and_its_return_needs_no_restart() {
    let dir = tempfile::Builder::new().prefix("meridian-pg-").tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Durability::Throwaway).await.unwrap();
    cluster.ensure_database("meridian").await.unwrap();
    let url = cluster.url("meridian");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    prepare(&mut conn, &["DE"]).await.unwrap();
    drop(conn);
    let issuer = DevIssuer::new("http://issuer.test", "meridian");
    let countries = Countries::default();
    countries.set([CountryEntry::ready("DE", chrono_tz::Europe::Berlin)]);
    let pool = meridian_booking::pool_options(4).connect_lazy(&url).unwrap();
    let app = app(Arc::new(Service::new(pool, Arc::new(issuer.verifier()), countries)));
    let token = issuer.token("admin", &[Role::ClinicAdmin], &["DE"], Duration::from_secs(300));
    // Warm the pool: its connections are the ones the crash breaks.
    for _ in 0..4 {
        assert_eq!(get(&app, "/de/v1/practitioners", &token).await.0, StatusCode::OK);
    }

    let (root, port) = (cluster.root().to_path_buf(), cluster.port());
    kill_postmaster(&root.join("pgdata")).unwrap();
    while cluster.exited().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for attempt in 0..3 {
        let asked = Instant::now();
        let (status, content_type, problem) = get(&app, "/de/v1/practitioners", &token).await;
        let took = asked.elapsed();
        println!("request {attempt} while the database is down: {status} in {took:?}");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["status"], 503);
        let text = problem.to_string().to_ascii_lowercase();
        for internal in ["refused", "pool", "sqlx", "timed out", "127.0.0.1", &port.to_string()] {
            assert!(!text.contains(internal), "the problem tells {internal:?}: {problem}");
        }
    }

    // Back on the same port: the same service answers again, by itself.
    let restarted = Cluster::restart(&root, port, Durability::Throwaway).await.unwrap();
    let back = Instant::now();
    loop {
        let (status, _, body) = get(&app, "/de/v1/practitioners", &token).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(back.elapsed() < Duration::from_secs(5), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("answering again {:?} after the restart", back.elapsed());
    restarted.stop();
}
