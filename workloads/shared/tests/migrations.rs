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
        "SELECT c.relname::text FROM pg_partitioned_table p
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
