//! The hash-chained audit trail against a real PostgreSQL cluster.

use meridian_localpg::TempCluster;
use meridian_shared::audit::{self, Record};
use meridian_shared::schema::prepare;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// A migrated database with country DE's partitions, as the control plane leaves it.
async fn database() -> (TempCluster, PgPool) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    prepare(&mut conn, &["DE"]).await.unwrap();
    let pool = PgPool::connect(&pg.url()).await.unwrap();
    (pg, pool)
}

fn record(resource: &str) -> Record<'_> {
    Record {
        country_code: "DE",
        actor: "patient-1",
        action: "appointment.book",
        resource,
        correlation_id: Uuid::new_v4(),
    }
}

#[tokio::test]
async fn concurrent_appends_form_intact_chains() {
    let (_pg, pool) = database().await;
    let writers = (0..16).map(|w| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..25 {
                let mut tx = pool.begin().await.unwrap();
                audit::append(&mut tx, &record(&format!("appointment/{w}-{i}")))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(audit::verify(&mut conn, "DE").await.unwrap(), Ok(400));
    let chains: i64 = sqlx::query_scalar("SELECT count(DISTINCT chain) FROM audit")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(chains > 1, "records spread over chains");
}

#[tokio::test]
async fn a_rolled_back_change_leaves_no_record() {
    let (_pg, pool) = database().await;
    let mut tx = pool.begin().await.unwrap();
    audit::append(&mut tx, &record("appointment/1")).await.unwrap();
    tx.rollback().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(audit::verify(&mut conn, "DE").await.unwrap(), Ok(0));
}

#[tokio::test]
async fn records_cannot_be_changed_and_tampering_is_detected() {
    let (_pg, pool) = database().await;
    let mut conn = pool.acquire().await.unwrap();
    for i in 0..5 {
        audit::append(&mut conn, &record(&format!("patient/{i}")))
            .await
            .unwrap();
    }
    let refused = sqlx::query("UPDATE audit SET actor = 'someone-else'")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    let refused = sqlx::query("DELETE FROM audit").execute(&mut *conn).await.unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");

    // Someone with the power to switch the trigger off rewrites a record: the chain shows it.
    let victim: (i16, i64) = sqlx::query_as("SELECT chain, seq FROM audit ORDER BY seq LIMIT 1")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql("ALTER TABLE audit_de DISABLE TRIGGER USER")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE audit SET actor = 'someone-else' WHERE seq = $1")
        .bind(victim.1)
        .execute(&mut *conn)
        .await
        .unwrap();
    let broken = audit::verify(&mut conn, "DE").await.unwrap().unwrap_err();
    assert_eq!((broken.chain, broken.seq), victim);

    // Removing the newest records of a chain is caught by the chain's head.
    sqlx::query("UPDATE audit SET actor = 'patient-1' WHERE seq = $1")
        .bind(victim.1)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(audit::verify(&mut conn, "DE").await.unwrap(), Ok(5));
    let newest: (i16, i64) = sqlx::query_as("SELECT chain, seq FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit WHERE seq = $1")
        .bind(newest.1)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        audit::verify(&mut conn, "DE").await.unwrap().unwrap_err().chain,
        newest.0
    );
}

/// Two read logs stand for two processes (replicas) writing the same reads chains: each
/// moves a chain's head only from the hash it last saw, so when the other process moved it
/// in between, it reads the head again and chains its batch after the other's.
#[tokio::test]
async fn batched_reads_from_two_processes_form_intact_chains() {
    let (_pg, pool) = database().await;
    prepare(&mut pool.acquire().await.unwrap(), &["FR"]).await.unwrap();
    let logs = [
        audit::ReadLog::start(&pool.connect_options()),
        audit::ReadLog::start(&pool.connect_options()),
    ];
    let readers = (0..32).map(|r| {
        let log = logs[r % 2].clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let resource = format!("Observation/{r}-{i}");
                let mut read = record(&resource);
                read.action = "observation.read";
                read.country_code = if i % 4 == 0 { "FR" } else { "DE" };
                log.append(&read).await.unwrap();
            }
        })
    });
    for reader in readers.collect::<Vec<_>>() {
        reader.await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(audit::verify(&mut conn, "DE").await.unwrap(), Ok(480));
    assert_eq!(audit::verify(&mut conn, "FR").await.unwrap(), Ok(160));
    let chains: Vec<i16> =
        sqlx::query_scalar("SELECT DISTINCT chain FROM audit WHERE country_code = 'DE' ORDER BY chain")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert!(chains.iter().all(|c| *c >= audit::READS_CHAIN), "{chains:?}");
    // Every record a read was answered after has committed: none is missing.
    let recorded: i64 = sqlx::query_scalar("SELECT count(DISTINCT correlation_id) FROM audit")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(recorded, 640);
}

/// The log's writers keep their connections between batches. When the database drops them
/// (a restart does), a connection that sat unused is checked before the next batch and
/// replaced, so the next reads' records are written rather than refused.
#[tokio::test]
async fn the_read_log_recovers_connections_the_database_dropped() {
    let (_pg, pool) = database().await;
    let log = audit::ReadLog::start(&pool.connect_options());
    let append = |resource: String| {
        let log = log.clone();
        async move {
            let mut read = record(&resource);
            read.action = "observation.read";
            log.append(&read).await
        }
    };
    // One at a time, so that the writers take turns and each holds a connection.
    for i in 0..4 {
        append(format!("Observation/before-{i}")).await.unwrap();
    }

    let mut admin = pool.acquire().await.unwrap();
    let dropped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE pid <> pg_backend_pid() AND backend_type = 'client backend') AS t",
    )
    .fetch_one(&mut *admin)
    .await
    .unwrap();
    assert!(dropped >= 1, "the writers' connections were not there to drop");
    drop(admin);
    // Longer than a connection may sit unused without a check.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;

    for i in 0..4 {
        append(format!("Observation/after-{i}")).await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(audit::verify(&mut conn, "DE").await.unwrap(), Ok(8));
}
