//! The Master Patient Index's store against a real PostgreSQL: entries registered and found
//! through keyed hashes as the index's own role, key rotation and re-keying, no raw ID in
//! the store, and the index's role kept apart from every other table (and the workload
//! roles from the index).

use std::collections::BTreeMap;

use meridian_localpg::TempCluster;
use meridian_records::mpi::{self, IndexKeys, NationalId};
use meridian_records::roles::{as_login, create_login};
use meridian_records::validate::Rules;
use sqlx::PgPool;
use uuid::Uuid;

const KVNR: &str = "http://fhir.de/sid/gkv/kvid-10";

fn rules(code: &str, pattern: &str) -> Rules {
    Rules {
        code: code.into(),
        retention_years: 10,
        minimum_age: 16,
        national_id_name: None,
        national_id_pattern: Some(pattern.into()),
        national_id_system: None,
        record_sharing: true,
    }
}

fn de() -> Rules {
    rules("DE", "[A-Z][0-9]{9}")
}

/// A database with the platform schema (DE) and the index's schema, the index role and the
/// clinical workload role, each connected as itself.
struct Index {
    _pg: TempCluster,
    admin: PgPool,
    index: PgPool,
    clinical: PgPool,
}

async fn start() -> Index {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let admin = PgPool::connect(&pg.url()).await.unwrap();
    let mut conn = admin.acquire().await.unwrap();
    meridian_shared::schema::prepare(&mut conn, &["DE"]).await.unwrap();
    meridian_shared::schema::mpi::ensure(&mut conn).await.unwrap();
    // Running it again changes nothing.
    meridian_shared::schema::mpi::ensure(&mut conn).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE mpi_index LOGIN PASSWORD 'index'; {}",
        meridian_shared::schema::mpi::grant_sql("mpi_index")
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    create_login(
        &admin,
        "clinical",
        "clinical",
        meridian_shared::schema::workload_privileges,
    )
    .await
    .unwrap();
    let index = PgPool::connect(&as_login(&pg.url(), "mpi_index", "index"))
        .await
        .unwrap();
    let clinical = PgPool::connect(&as_login(&pg.url(), "clinical", "clinical"))
        .await
        .unwrap();
    Index {
        _pg: pg,
        admin,
        index,
        clinical,
    }
}

/// Registers `id` as the only national ID of German patient `client`, in Frankfurt.
async fn register(db: &Index, keys: &IndexKeys, client: Uuid, id: &NationalId) {
    mpi::register(
        &db.index,
        keys,
        "DE",
        "eu-central-1",
        client,
        std::slice::from_ref(id),
        false,
    )
    .await
    .unwrap();
}

fn first_keys() -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    mpi::ensure_first_key(&mut data);
    data
}

#[tokio::test]
async fn registered_ids_are_found_through_their_hash_and_nothing_else_matches() {
    let db = start().await;
    let keys = IndexKeys::from_secret(&first_keys()).unwrap();
    let anna = Uuid::new_v4();
    let id = NationalId::checked(&de(), KVNR, "A123456789").unwrap();
    register(&db, &keys, anna, &id).await;
    // Registering again (as a retry would) changes nothing.
    register(&db, &keys, anna, &id).await;

    // Typed as a clinician abroad would: spaces, dashes, lower case.
    let typed = NationalId::checked(&de(), KVNR, "a 123-456-789").unwrap();
    let found = mpi::lookup(&db.index, &keys, &typed).await.unwrap().expect("a hit");
    assert_eq!(found.home_country, "DE");
    assert_eq!(found.home_region, "eu-central-1");
    assert_eq!(found.client_id, anna);
    assert_eq!(found.key_version, "k1");

    let other = NationalId::checked(&de(), KVNR, "B123456789").unwrap();
    assert_eq!(mpi::lookup(&db.index, &keys, &other).await.unwrap(), None);
    let other_scheme = NationalId::checked(&de(), "urn:oid:1.2.276.0.76.4.8", "A123456789").unwrap();
    assert_eq!(mpi::lookup(&db.index, &keys, &other_scheme).await.unwrap(), None);
    let other_country = NationalId::checked(&rules("AT", "[A-Z][0-9]{9}"), KVNR, "A123456789").unwrap();
    assert_eq!(mpi::lookup(&db.index, &keys, &other_country).await.unwrap(), None);

    // Another patient now holds the ID (a merged duplicate): the entry moves to them, and
    // removing it from the first patient leaves the second one's.
    let merged = Uuid::new_v4();
    register(&db, &keys, merged, &id).await;
    assert_eq!(
        mpi::register(&db.index, &keys, "DE", "eu-central-1", anna, &[], false)
            .await
            .unwrap(),
        0
    );
    let found = mpi::lookup(&db.index, &keys, &id).await.unwrap().unwrap();
    assert_eq!(found.client_id, merged);
    assert_eq!(
        mpi::register(&db.index, &keys, "DE", "eu-central-1", merged, &[], false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(mpi::lookup(&db.index, &keys, &id).await.unwrap(), None);
}

#[tokio::test]
async fn entries_survive_a_key_rotation_and_move_to_the_new_key_on_rekey() {
    let db = start().await;
    let mut secret = first_keys();
    let k1 = IndexKeys::from_secret(&secret).unwrap();
    let ids: Vec<(NationalId, Uuid)> = (0..20)
        .map(|i| {
            (
                NationalId::checked(&de(), KVNR, &format!("C{i:09}")).unwrap(),
                Uuid::new_v4(),
            )
        })
        .collect();
    for (id, client) in &ids {
        register(&db, &k1, *client, id).await;
    }

    assert_eq!(mpi::rotate(&mut secret).unwrap(), "k2");
    let k2 = IndexKeys::from_secret(&secret).unwrap();
    // Before the re-key: found under the previous version.
    let found = mpi::lookup(&db.index, &k2, &ids[0].0).await.unwrap().unwrap();
    assert_eq!((found.client_id, found.key_version.as_str()), (ids[0].1, "k1"));
    // A refused retirement of the active version removes nothing.
    assert!(mpi::retire(&db.index, &k2, "k2").await.is_err());

    // Half re-keyed (a re-key stopped halfway), then all of it (the next run).
    for (id, client) in &ids[..10] {
        register(&db, &k2, *client, id).await;
    }
    assert_eq!(
        mpi::entries_by_version(&db.index).await.unwrap(),
        [("k1".to_string(), 10), ("k2".to_string(), 10)]
    );
    for (id, client) in &ids {
        register(&db, &k2, *client, id).await;
    }
    assert_eq!(
        mpi::entries_by_version(&db.index).await.unwrap(),
        [("k2".to_string(), 20)]
    );
    assert_eq!(mpi::retire(&db.index, &k2, "k1").await.unwrap(), 0);

    // After another rotation k1 is no longer tried; every entry is still found under k2.
    mpi::rotate(&mut secret).unwrap();
    let k3 = IndexKeys::from_secret(&secret).unwrap();
    for (id, client) in &ids {
        let found = mpi::lookup(&db.index, &k3, id).await.unwrap().unwrap();
        assert_eq!((found.client_id, found.key_version.as_str()), (*client, "k2"));
    }
}

#[tokio::test]
async fn the_store_holds_no_raw_id_and_no_value_matching_a_national_id_pattern() {
    let db = start().await;
    let keys = IndexKeys::from_secret(&first_keys()).unwrap();
    for i in 0..50 {
        let id = NationalId::checked(&de(), KVNR, &format!("D{i:09}")).unwrap();
        register(&db, &keys, Uuid::new_v4(), &id).await;
    }
    // Every column of every row as text; the hash's bytes as they are (printable ones as
    // themselves), where a raw ID stored as bytes would show.
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', encode(hash, 'escape'), key_version, home_country,
                          home_region, client_id::text, updated_at::text)
           FROM mpi.entries",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(rows.len(), 50);
    let patterns = ["[A-Z][0-9]{9}", "[12][0-9]{12}", "[A-Z]{2}[0-9]{6}[A-D]"];
    for pattern in patterns {
        let re = regex::Regex::new(pattern).unwrap();
        for row in &rows {
            assert!(!re.is_match(row), "{pattern} matches {row}");
        }
    }
    assert!(rows.iter().all(|r| !r.contains("D000000007")));
}

#[tokio::test]
async fn the_index_role_reaches_only_the_index_and_the_workload_roles_not_it() {
    let db = start().await;
    let keys = IndexKeys::from_secret(&first_keys()).unwrap();
    let id = NationalId::checked(&de(), KVNR, "E123456789").unwrap();
    register(&db, &keys, Uuid::new_v4(), &id).await;

    for table in [
        "patients",
        "vault.patients",
        "fhir_resources",
        "audit",
        "outbox",
        "appointments",
    ] {
        let denied = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 1 FROM {table} LIMIT 1")))
            .execute(&db.index)
            .await
            .unwrap_err();
        assert!(denied.to_string().contains("permission denied"), "{table}: {denied}");
    }
    // No schema changes either.
    let denied = sqlx::raw_sql("CREATE TABLE mpi.copy (hash bytea)")
        .execute(&db.index)
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    for sql in ["SELECT 1 FROM mpi.entries", "DELETE FROM mpi.entries"] {
        let denied = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&db.clinical)
            .await
            .unwrap_err();
        assert!(denied.to_string().contains("permission denied"), "{sql}: {denied}");
    }
}
