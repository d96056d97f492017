//! A server killed with SIGKILL is noticed and started again on the same data directory and
//! port, with its committed data, even when its `postmaster.pid` names a live process.

use std::process::Command;
use std::time::{Duration, Instant};

use meridian_localpg::{Cluster, Durability, Error, kill_postmaster};
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn a_killed_server_restarts_on_its_port_with_its_data() {
    let dir = tempfile::Builder::new().prefix("meridian-pg-").tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Durability::Durable).await.unwrap();
    let (root, port) = (cluster.root().to_path_buf(), cluster.port());
    let url = cluster.url("postgres");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(cluster.exited(), None, "a running server has not exited");

    // SIGKILL the postmaster while a client is connected (its backend is orphaned).
    let pid = kill_postmaster(&root.join("pgdata")).unwrap();
    let killed = Instant::now();
    let how = loop {
        if let Some(how) = cluster.exited() {
            break how;
        }
        assert!(killed.elapsed() < Duration::from_secs(2), "the death went unnoticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(how, "killed by signal 9");
    assert_eq!(cluster.exited(), None, "an exit is reported once");
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());

    // The dead server's pid file now names a live, unrelated process (pid reuse).
    let mut stranger = Command::new("sleep").arg("60").spawn().unwrap();
    let pid_file = root.join("pgdata/postmaster.pid");
    let text = std::fs::read_to_string(&pid_file).unwrap();
    let rest: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(&pid_file, format!("{}\n{}\n", stranger.id(), rest.join("\n"))).unwrap();

    let restarted = Cluster::restart(&root, port, Durability::Durable).await;
    let _ = stranger.kill();
    let _ = stranger.wait();
    let restarted = restarted.unwrap();
    println!("restarted {:?} after the kill", killed.elapsed());
    assert_eq!(restarted.port(), port, "same port");
    let mut conn = PgConnection::connect(&restarted.url("postgres")).await.unwrap();
    let v: i32 = sqlx::query_scalar("SELECT v FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, 42);
    assert_ne!(meridian_localpg::postmaster(&root.join("pgdata")).unwrap().0, pid);
    drop(cluster); // the dead one: dropping it must not touch the new server
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_ok());
    restarted.stop();
}

#[tokio::test]
async fn a_restart_never_initialises_a_missing_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    match Cluster::restart(dir.path(), 5432, Durability::Throwaway).await {
        Err(Error::DataMissing { .. }) => {}
        other => panic!("expected DataMissing, got {other:?}"),
    }
    assert!(!dir.path().join("pgdata").exists());
}
