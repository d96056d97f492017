//! What the event backbone's test suites share: a PostgreSQL with the platform schema, and
//! waiting for something to come true.
// Each suite compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use meridian_localpg::TempCluster;
use sqlx::{Connection, PgConnection, PgPool};

/// A throwaway PostgreSQL cluster with the platform schema for `countries`, and a pool on it.
pub async fn database(countries: &[&str]) -> (TempCluster, PgPool) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    meridian_shared::schema::prepare(&mut conn, countries).await.unwrap();
    let pool = PgPool::connect(&pg.url()).await.unwrap();
    (pg, pool)
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
