//! A data-key rotation of the PII vault (`vault_rotation::rekey`), against real PostgreSQL
//! as the vault role: every current and history version moves onto the new key, reads and
//! searches still find everyone once the old key is gone, a rerun moves nothing, each batch
//! leaves an audit record naming client IDs only and the chains verify, a row that does not
//! open is reported and left as it is, and a run interrupted halfway is finished by the next.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use meridian_records::keys::{self, Keyring};
use meridian_records::vault_rotation::{ACTION, ACTOR, rekey};
use serde_json::{Value, json};
use sqlx::Connection;
use support::{Harness, Reply, entry};

const KVNR: &str = "http://fhir.de/sid/gkv/kvid-10";

fn kvnr(n: usize) -> String {
    format!("Q{:09}", 314159200 + n)
}

/// A DE patient whose identifying elements are found nowhere else.
fn patient(n: usize) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": KVNR, "value": kvnr(n)}],
        "name": [{"family": format!("Quastenflosser{n}"), "given": [format!("Wendelgard{n}")]}],
        "telecom": [{"system": "email", "value": format!("wendelgard{n}@quastenpost.example")}],
        "gender": "female",
        "birthDate": "1971-03-14",
        "address": [{"city": format!("Zwiebelhausen{n}")}],
    })
}

fn created(reply: Reply) -> String {
    assert_eq!(reply.status, StatusCode::CREATED, "{:#}", reply.body);
    reply.id()
}

/// `n` patients, created through the API.
async fn create(h: &Harness, dr: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut ids = Vec::new();
    for n in range {
        ids.push(created(h.post("/de/v1/fhir/Patient", dr, &patient(n)).await));
    }
    ids
}

/// The ids a Patient search finds.
async fn found(h: &Harness, dr: &str, query: &str) -> BTreeSet<String> {
    let reply = h.get(&format!("/de/v1/fhir/Patient?{query}"), dr).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {:#}", reply.body);
    reply
        .entries()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// (key id, rows) of both vault tables, history deletions left out.
async fn keys_in_use(h: &Harness) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "SELECT 'patients', key_id, count(*) FROM vault.patients GROUP BY key_id
         UNION ALL
         SELECT 'history', key_id, count(*) FROM vault.patient_history WHERE key_id IS NOT NULL GROUP BY key_id
         ORDER BY 1, 2",
    )
    .fetch_all(&h.admin)
    .await
    .unwrap()
}

fn rows(list: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    list.iter()
        .map(|(t, k, n)| (t.to_string(), k.to_string(), *n))
        .collect()
}

/// Rotates DE's key in the harness's keys and gives the service the new ring.
fn rotate(h: &mut Harness) -> Keyring {
    assert_eq!(keys::rotate(&mut h.keys, "DE").unwrap(), "k2");
    h.countries.set([entry("DE", &h.keys)]);
    Keyring::from_secret(&h.keys, "DE").unwrap()
}

#[tokio::test]
async fn a_rotation_moves_every_version_to_the_new_key_and_everyone_is_still_found_without_the_old_one() {
    let mut h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let ids = create(&h, &dr, 0..5).await;
    // A second version of patient 0, and patient 1 deleted.
    let mut changed = h.get(&format!("/de/v1/fhir/Patient/{}", ids[0]), &dr).await.body;
    changed["name"][0]["family"] = json!("Quastenflosser0b");
    let updated = h
        .put(&format!("/de/v1/fhir/Patient/{}", ids[0]), &dr, "W/\"1\"", &changed)
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:#}", updated.body);
    let deleted = h.delete(&format!("/de/v1/fhir/Patient/{}", ids[1]), &dr).await;
    assert!(deleted.status.is_success(), "{:#}", deleted.body);

    let ring = rotate(&mut h);
    // Written after the rotation: already under k2, not moved again.
    let late = create(&h, &dr, 5..6).await.remove(0);
    assert_eq!(
        keys_in_use(&h).await,
        rows(&[
            ("history", "k1", 6),
            ("history", "k2", 1),
            ("patients", "k1", 5),
            ("patients", "k2", 1)
        ])
    );

    // Batches of two: three of current versions, three of history versions.
    let done = rekey(&h.vault, &ring, 2).await.unwrap();
    assert!(done.unmoved.is_empty(), "{:?}", done.unmoved);
    assert_eq!((done.patients, done.history, done.left, done.batches), (5, 6, 0, 6));
    assert_eq!(done.from.iter().collect::<Vec<_>>(), [(&"k1".to_string(), &11)]);
    assert_eq!(
        done.summary(),
        "DE: key k2 is active; 5 patients and 6 history versions moved from k1, 0 left"
    );
    assert_eq!(
        keys_in_use(&h).await,
        rows(&[("history", "k2", 7), ("patients", "k2", 6)])
    );

    // Without k1, every row still opens and every patient is still found.
    h.keys.remove("DE.k1");
    h.countries.set([entry("DE", &h.keys)]);
    let mut live: Vec<(usize, &String)> = ids.iter().enumerate().filter(|(n, _)| *n != 1).collect();
    live.push((5, &late));
    for (n, id) in &live {
        let read = h.get(&format!("/de/v1/fhir/Patient/{id}"), &dr).await;
        assert_eq!(read.status, StatusCode::OK, "{:#}", read.body);
        let family = if *n == 0 {
            "Quastenflosser0b".to_string()
        } else {
            format!("Quastenflosser{n}")
        };
        assert_eq!(read.body["name"][0]["family"], family);
        assert_eq!(read.body["address"][0]["city"], format!("Zwiebelhausen{n}"));
        let one = BTreeSet::from([id.to_string()]);
        assert_eq!(found(&h, &dr, &format!("family={family}")).await, one);
        assert_eq!(found(&h, &dr, &format!("identifier={KVNR}|{}", kvnr(*n))).await, one);
        assert_eq!(found(&h, &dr, &format!("identifier={}", kvnr(*n))).await, one);
        assert_eq!(found(&h, &dr, &format!("given=wendelgard{n}")).await, one);
    }
    let everyone: BTreeSet<String> = live.iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(found(&h, &dr, "family=quasten&birthdate=1971-03-14").await, everyone);
    assert!(
        found(&h, &dr, "family=Quastenflosser0&_count=50")
            .await
            .contains(&ids[0]),
        "prefixes of the new name"
    );
    assert!(
        found(&h, &dr, &format!("identifier={}", kvnr(1))).await.is_empty(),
        "deleted"
    );
    let gone = h.get(&format!("/de/v1/fhir/Patient/{}", ids[1]), &dr).await;
    assert_eq!(gone.status, StatusCode::GONE);
    // Every history version opens.
    let history = h.get(&format!("/de/v1/fhir/Patient/{}/_history", ids[0]), &dr).await;
    assert_eq!(history.status, StatusCode::OK);
    let families: Vec<&Value> = history
        .entries()
        .iter()
        .map(|e| &e["resource"]["name"][0]["family"])
        .collect();
    assert_eq!(families, [&json!("Quastenflosser0b"), &json!("Quastenflosser0")]);
    let v1 = h.get(&format!("/de/v1/fhir/Patient/{}/_history/1", ids[1]), &dr).await;
    assert_eq!(v1.status, StatusCode::OK, "{:#}", v1.body);
    assert_eq!(v1.body["name"][0]["family"], "Quastenflosser1");

    // A rerun finds nothing to move and writes nothing.
    let before = h.counts().await;
    let again = rekey(&h.vault, &Keyring::from_secret(&h.keys, "DE").unwrap(), 2)
        .await
        .unwrap();
    assert_eq!((again.patients, again.history, again.left, again.batches), (0, 0, 0, 0));
    assert!(again.unmoved.is_empty() && again.from.is_empty());
    assert_eq!(
        again.summary(),
        "DE: key k2 is active; 0 patients and 0 history versions moved, 0 left"
    );
    assert_eq!(h.counts().await, before);

    // One audit record per batch, naming the client IDs moved and no PII; the chains hold.
    let audit: Vec<(String, String, uuid::Uuid)> = sqlx::query_as(
        "SELECT action, resource, correlation_id FROM audit WHERE country_code = 'DE' AND actor = $1 ORDER BY at, seq",
    )
    .bind(ACTOR)
    .fetch_all(&h.admin)
    .await
    .unwrap();
    assert_eq!(audit.len(), 6);
    let mut named_patients = BTreeSet::new();
    let mut named_history = BTreeSet::new();
    for (action, resource, correlation_id) in &audit {
        assert_eq!(action, ACTION);
        assert_eq!(*correlation_id, done.correlation_id);
        assert!(
            !resource.to_lowercase().contains("quasten") && !resource.contains("Q3141"),
            "{resource}"
        );
        let (table, list) = resource.split_once('/').unwrap();
        let target = match table {
            "vault.patients" => &mut named_patients,
            "vault.patient_history" => &mut named_history,
            other => panic!("{other}"),
        };
        for id in list.split(',') {
            target.insert(uuid::Uuid::parse_str(id).unwrap().to_string());
        }
    }
    let moved: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(named_patients, moved);
    assert_eq!(named_history, moved);
    let mut conn = h.admin.acquire().await.unwrap();
    let records = meridian_shared::audit::verify(&mut conn, "DE").await.unwrap().unwrap();
    assert!(records > 6);
}

#[tokio::test]
async fn a_row_that_does_not_open_is_reported_and_left_as_it_is() {
    let mut h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let ids = create(&h, &dr, 0..4).await;
    let ring = rotate(&mut h);
    // Patient 0's current row changed by one bit, patient 1's history row said to be sealed
    // under a key nobody holds.
    sqlx::query(
        "UPDATE vault.patients SET sealed = set_byte(sealed, length(sealed) - 1, get_byte(sealed, length(sealed) - 1) # 1)
          WHERE client_id = $1::uuid",
    )
    .bind(&ids[0])
    .execute(&h.admin)
    .await
    .unwrap();
    sqlx::query("UPDATE vault.patient_history SET key_id = 'k9' WHERE client_id = $1::uuid")
        .bind(&ids[1])
        .execute(&h.admin)
        .await
        .unwrap();
    let (bad_current, bad_history) = (ids[0].clone(), ids[1].clone());
    let raw = |h: &Harness| {
        let admin = h.admin.clone();
        let (bad_current, bad_history) = (bad_current.clone(), bad_history.clone());
        async move {
            sqlx::query_as::<_, (String, String, Vec<u8>)>(
                "SELECT 'current', key_id, sealed FROM vault.patients WHERE client_id = $1::uuid
                 UNION ALL
                 SELECT 'history', key_id, sealed FROM vault.patient_history WHERE client_id = $2::uuid
                 ORDER BY 1",
            )
            .bind(&bad_current)
            .bind(&bad_history)
            .fetch_all(&admin)
            .await
            .unwrap()
        }
    };
    let before = raw(&h).await;

    let done = rekey(&h.vault, &ring, 100).await.unwrap();
    let mut unmoved: Vec<(String, String, String)> = done
        .unmoved
        .iter()
        .map(|u| (u.table.to_string(), u.client_id.to_string(), u.key_id.clone()))
        .collect();
    unmoved.sort();
    let mut wanted = vec![
        ("vault.patient_history".to_string(), ids[1].clone(), "k9".to_string()),
        ("vault.patients".to_string(), ids[0].clone(), "k1".to_string()),
    ];
    wanted.sort();
    assert_eq!(unmoved, wanted, "{:?}", done.unmoved);
    for u in &done.unmoved {
        let shown = u.to_string();
        assert!(!shown.to_lowercase().contains("quasten"), "{shown}");
    }
    assert!(done.unmoved.iter().any(|u| u.reason.contains("k9")));
    // Everything else moved; the bad rows are byte for byte as they were.
    assert_eq!((done.patients, done.history, done.left), (3, 3, 2));
    assert_eq!(raw(&h).await, before);
    // A rerun reports them again and moves nothing else.
    let again = rekey(&h.vault, &ring, 100).await.unwrap();
    assert_eq!(
        (again.patients, again.history, again.left, again.unmoved.len()),
        (0, 0, 2, 2)
    );
    // The rows that moved still read.
    for id in &ids[2..] {
        assert_eq!(
            h.get(&format!("/de/v1/fhir/Patient/{id}"), &dr).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_run_interrupted_halfway_loses_nothing_and_the_next_run_finishes_it() {
    let mut h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let mut ids = create(&h, &dr, 0..6).await;
    ids.sort();
    let ring = rotate(&mut h);
    // A writer holds the fourth patient (in client-ID order): the run, one row per batch,
    // moves the first three and waits on it; then it is killed.
    let mut holder = sqlx::PgConnection::connect(&h.pg.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM vault.patients WHERE client_id = $1::uuid FOR UPDATE")
        .bind(&ids[3])
        .execute(&mut holder)
        .await
        .unwrap();
    let crashing = meridian_records::pool_options(2)
        .connect(&meridian_records::roles::as_login(
            &h.pg.url(),
            support::VAULT,
            "secret",
        ))
        .await
        .unwrap();
    let run = tokio::spawn({
        let (pool, ring) = (crashing.clone(), ring.clone());
        async move { rekey(&pool, &ring, 1).await }
    });
    let moved = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM vault.patients WHERE key_id = 'k2'")
            .fetch_one(&h.admin)
            .await
            .unwrap()
    };
    let mut waited = 0;
    while moved().await < 3 {
        assert!(waited < 300, "the run did not get to the held row");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!run.is_finished());
    run.abort();
    let _ = run.await;
    // The killed run's connection goes (its transaction with it) once the writer lets go.
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), crashing.close())
        .await
        .expect("the killed run's connections close");
    assert_eq!(moved().await, 3, "the batch in flight rolled back whole");
    // Halfway: every patient reads, whichever key their row is under.
    for id in &ids {
        let read = h.get(&format!("/de/v1/fhir/Patient/{id}"), &dr).await;
        assert_eq!(read.status, StatusCode::OK, "{:#}", read.body);
    }
    let done = rekey(&h.vault, &ring, 1).await.unwrap();
    assert!(done.unmoved.is_empty(), "{:?}", done.unmoved);
    assert_eq!((done.patients, done.history, done.left), (3, 6, 0));
    h.keys.remove("DE.k1");
    h.countries.set([entry("DE", &h.keys)]);
    for (n, id) in ids.iter().enumerate() {
        let read = h.get(&format!("/de/v1/fhir/Patient/{id}"), &dr).await;
        assert_eq!(read.status, StatusCode::OK, "{n}: {:#}", read.body);
        let family = read.body["name"][0]["family"].as_str().unwrap().to_string();
        assert_eq!(
            found(&h, &dr, &format!("family={family}")).await,
            BTreeSet::from([id.clone()])
        );
    }
    let mut conn = h.admin.acquire().await.unwrap();
    meridian_shared::audit::verify(&mut conn, "DE").await.unwrap().unwrap();
}
