//! The platform migrations against a real PostgreSQL cluster started by the test.

use meridian_localpg::TempCluster;
use meridian_shared::schema::{MIGRATIONS, MIGRATIONS_TABLE, PARTITIONED_TABLES, applied_versions, migrate};
use sqlx::{Connection, PgConnection};

async fn connect(pg: &TempCluster) -> PgConnection {
    PgConnection::connect(&pg.url())
        .await
        .expect("connect to the test cluster")
}

#[tokio::test]
async fn migrations_apply_once_and_repeat_as_no_ops() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = connect(&pg).await;
    let applied = migrate(&mut conn).await.unwrap();
    assert_eq!(applied, MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());
    assert!(
        migrate(&mut conn).await.unwrap().is_empty(),
        "a second run applies nothing"
    );
    assert_eq!(applied_versions(&mut conn).await.unwrap().len(), MIGRATIONS.len());
}

#[tokio::test]
async fn the_partitioned_table_list_matches_the_schema() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = connect(&pg).await;
    migrate(&mut conn).await.unwrap();
    let mut in_db: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_partitioned_table p
           JOIN pg_class c ON c.oid = p.partrelid
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0]
          WHERE p.partstrat = 'l' AND a.attname = 'country_code'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    in_db.sort();
    let mut listed: Vec<String> = PARTITIONED_TABLES.iter().map(|t| t.to_string()).collect();
    listed.sort();
    assert_eq!(in_db, listed);
}

#[tokio::test]
async fn rows_for_a_country_without_a_partition_are_refused() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = connect(&pg).await;
    migrate(&mut conn).await.unwrap();
    let err = sqlx::query(
        "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
         VALUES ('DE', gen_random_uuid(), 'Anna', 'Schmidt', 'cardiology', 'Berlin')",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no partition"), "{err}");
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = connect(&pg).await;
    migrate(&mut conn).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {MIGRATIONS_TABLE} SET checksum = '\\x00' WHERE version = 1"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let err = migrate(&mut conn).await.unwrap_err();
    assert!(err.to_string().contains("was changed after it was applied"), "{err}");
}

/// A database migrated before outbox rows recorded their transaction: its rows and a
/// detached country partition keep working, and a consumer that stopped at an outbox ID
/// reads the old rows after it and every new one.
#[tokio::test]
async fn the_outbox_xid_migration_keeps_old_rows_and_detached_partitions_usable() {
    use meridian_shared::outbox::{Follower, PRACTITIONER_EVENTS};
    use meridian_shared::schema::{create_partition_sql, partition_constraints};
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = connect(&pg).await;
    apply_before(&mut conn, 6).await;
    // The tables of the platform schema as migration 6 found it (the records came later).
    let tables_then = &PARTITIONED_TABLES[..6];
    for code in ["DE", "FR"] {
        let sqls = tables_then.iter().flat_map(|table| {
            std::iter::once(create_partition_sql(table, code))
                .chain(partition_constraints(table, code).into_iter().map(|c| c.sql))
        });
        for sql in sqls {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    let event = |code: &'static str, n: i64| {
        sqlx::query(
            "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload)
             VALUES ($1, 'practitioner-events', 'practitioner.updated', gen_random_uuid(), jsonb_build_object('n', $2::bigint))",
        )
        .bind(code)
        .bind(n)
    };
    for n in 1..=3 {
        event("DE", n).execute(&mut conn).await.unwrap();
    }
    event("FR", 0).execute(&mut conn).await.unwrap();
    sqlx::raw_sql("ALTER TABLE outbox DETACH PARTITION outbox_fr")
        .execute(&mut conn)
        .await
        .unwrap();

    assert_eq!(migrate(&mut conn).await.unwrap(), since(6));
    event("DE", 4).execute(&mut conn).await.unwrap();
    let xids: Vec<Option<String>> = sqlx::query_scalar("SELECT xid::text FROM outbox ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(xids.iter().filter(|x| x.is_none()).count(), 3, "{xids:?}");
    assert!(xids[3].is_some(), "a new row records its transaction");
    sqlx::raw_sql("ALTER TABLE outbox ATTACH PARTITION outbox_fr FOR VALUES IN ('FR')")
        .execute(&mut conn)
        .await
        .expect("the detached partition has the new column and attaches again");

    // A consumer that had read up to ID 1 reads DE 2 and 3 (and the re-attached FR row,
    // ID 4, above it), then DE 4; nothing twice.
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let mut follower = Follower::new(PRACTITIONER_EVENTS, None, 1);
    // Two at a time: the batch is read in chunks, and done only after the last.
    for expected in [&[2, 3][..], &[0, 4], &[]] {
        assert!(follower.position().is_none());
        let batch = follower.next(&pool, 2).await.unwrap();
        let read: Vec<i64> = batch.rows.iter().map(|r| r.payload["n"].as_i64().unwrap()).collect();
        assert_eq!(read, expected);
        follower.done(&batch);
    }
    assert!(follower.position().is_some());
    event("DE", 5).execute(&mut conn).await.unwrap();
    let batch = follower.next(&pool, 100).await.unwrap();
    let read: Vec<i64> = batch.rows.iter().map(|r| r.payload["n"].as_i64().unwrap()).collect();
    assert_eq!(read, [5]);
}

/// The versions of every migration from `version` on.
fn since(version: i64) -> Vec<i64> {
    MIGRATIONS.iter().map(|m| m.version).filter(|v| *v >= version).collect()
}

/// Applies (and records) the migrations before `version`, as a database of that time had them.
async fn apply_before(conn: &mut PgConnection, version: i64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {MIGRATIONS_TABLE} (version bigint PRIMARY KEY, name text NOT NULL,
             checksum bytea NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    for m in MIGRATIONS.iter().filter(|m| m.version < version) {
        sqlx::raw_sql(m.sql).execute(&mut *conn).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES ($1, $2, $3)"
        )))
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .execute(&mut *conn)
        .await
        .unwrap();
    }
}

/// The Consent migration: a records partition detached and kept before it (a Country deleted
/// with Retain) takes Consents when its country returns and it is attached again.
#[tokio::test]
async fn a_records_partition_kept_before_the_consent_migration_attaches_again_after_it() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = connect(&pg).await;
    apply_before(&mut conn, 8).await;
    // The partitions of the tables there were then (billing's came with migration 10,
    // analytics' with 11, notifications' with 12).
    for sql in meridian_shared::schema::fresh_country_sql("FR")
        .into_iter()
        .filter(|sql| {
            !["\"invoices", "\"appointment_minutes", "\"notifications"]
                .iter()
                .any(|t| sql.contains(t))
        })
    {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::raw_sql("ALTER TABLE fhir_resources DETACH PARTITION fhir_resources_fr")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(migrate(&mut conn).await.unwrap(), since(8));
    sqlx::raw_sql("ALTER TABLE fhir_resources ATTACH PARTITION fhir_resources_fr FOR VALUES IN ('FR')")
        .execute(&mut conn)
        .await
        .expect("the kept partition attaches again");
    sqlx::raw_sql(
        "INSERT INTO fhir_resources (country_code, resource_type, id, version, last_updated, content)
         VALUES ('FR', 'Consent', gen_random_uuid(), 1, now(), '{}')",
    )
    .execute(&mut conn)
    .await
    .expect("a Consent is stored");
}
