//! The `local` provider supervises its PostgreSQL clusters: a server killed with SIGKILL is
//! noticed within a second, the Region's reconcile reports `DatabaseReady=False` with reason
//! `DatabaseRestarting` (and the provider starts no second server meanwhile), and once the
//! server is back on the same port the Region is Ready again, with its data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_crds::Region;
use meridian_crds::condition_types::DATABASE_READY;
use meridian_localpg::Durability;
use meridian_operator::conditions;
use meridian_operator::controller::{Context, region};
use meridian_operator::providers::{DATABASE_RESTARTING, LocalClusters, Providers, StaticSecrets};
use sqlx::{Connection, PgConnection};

fn local_region(name: &str) -> Region {
    let mut r: Region = serde_yaml_ng::from_str(&format!(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: Region
metadata: {{name: {name}}}
spec:
  provider: local
  cloudRegion: {name}
  isolation: shared"
    ))
    .unwrap();
    r.metadata.generation = Some(1);
    r
}

/// `DatabaseReady`'s status, reason and message after reconciling `region` once.
async fn reconcile(region: &mut Region, ctx: &Context) -> (String, String, String) {
    let outcome = region::apply(region, ctx).await;
    let c = conditions::find(&outcome.status.conditions, DATABASE_READY)
        .unwrap()
        .clone();
    region.status = Some(outcome.status);
    (c.status, c.reason, c.message)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_local_database_is_restarted_and_its_region_says_so() {
    let dir = tempfile::Builder::new().prefix("meridian-local-").tempdir().unwrap();
    let local = Arc::new(LocalClusters::new(dir.path().to_path_buf(), Durability::Throwaway));
    let ctx = Context::new(Providers::new(Some(local.clone()), Arc::new(StaticSecrets::default())));
    let mut region = local_region("eu-test-1");
    let (status, _, _) = reconcile(&mut region, &ctx).await;
    assert_eq!(status, "True");
    let port = local.ports()["eu-test-1"];
    let url = format!("postgres://meridian@127.0.0.1:{port}/meridian");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        .execute(&mut conn)
        .await
        .unwrap();
    // fsync and synchronous commit are off here: make the commit reach the WAL on disk.
    sqlx::raw_sql("CHECKPOINT").execute(&mut conn).await.unwrap();
    assert!(local.take_changed().is_empty(), "nothing died yet");

    let pgdata = local.dir("eu-test-1").join("pgdata");
    let pid = meridian_localpg::kill_postmaster(&pgdata).unwrap();
    let killed = Instant::now();

    // Noticed within a second: the provider says so, and names the Region to reconcile.
    let noticed = loop {
        if local.take_changed().contains("eu-test-1") {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(1), "the death went unnoticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (status, reason, message) = reconcile(&mut region, &ctx).await;
    println!("noticed after {noticed:?}: {reason}: {message}");
    assert_eq!((status.as_str(), reason.as_str()), ("False", DATABASE_RESTARTING));
    assert!(
        message.contains("signal 9") && message.contains(&port.to_string()),
        "{message}"
    );

    // Back by itself, on the same port, with its data; the Region is Ready again.
    let (back, ready) = loop {
        let (status, reason, message) = reconcile(&mut region, &ctx).await;
        if status == "True" {
            break (killed.elapsed(), message);
        }
        assert_eq!(reason, DATABASE_RESTARTING, "{message}");
        assert!(killed.elapsed() < Duration::from_secs(15), "not restarted: {message}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("Ready again {back:?} after the kill: {ready}");
    // The restart stays on record once it is over: a restart faster than the next reconcile
    // still shows in the Region's status.
    assert!(ready.contains("restarted at") && ready.contains("signal 9"), "{ready}");
    assert!(
        local.take_changed().contains("eu-test-1"),
        "the recovery is announced too"
    );
    assert_eq!(local.ports()["eu-test-1"], port);
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let v: i32 = sqlx::query_scalar("SELECT v FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, 7);
    assert_ne!(meridian_localpg::postmaster(&pgdata).unwrap().0, pid);
    drop(conn);
    local.stop_all();
}
