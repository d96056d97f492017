//! The PII vault as the database holds it: no plaintext identifying element in any table,
//! the vault out of the clinical role's reach and the booking tables out of the vault
//! role's, tampered rows refused (never served, never a panic), and a key rotation that
//! keeps old rows readable and searchable while new rows are sealed under the new key.

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{Harness, Reply, entry, resources};

const KVNR: &str = "http://fhir.de/sid/gkv/kvid-10";

/// A DE patient whose every identifying element is a word found nowhere else.
fn patient(n: usize) -> (Value, Vec<String>) {
    let family = format!("Quastenflosser{n}");
    let given = format!("Wendelgard{n}");
    let email = format!("wendelgard{n}@quastenpost.example");
    let city = format!("Zwiebelhausen{n}");
    let street = format!("Rübenstieg {n}");
    let kvnr = format!("Q{:09}", 314159200 + n);
    let phone = format!("+49 30 5550{n:03}");
    let body = json!({
        "resourceType": "Patient",
        "identifier": [{"system": KVNR, "value": kvnr}],
        "name": [{"family": family, "given": [given]}],
        "telecom": [{"system": "email", "value": email}, {"system": "phone", "value": phone}],
        "gender": "female",
        "birthDate": "1971-03-14",
        "address": [{"city": city, "line": [street], "postalCode": "99999"}],
        "extension": [{"url": meridian_records::validate::ACCOUNT_EXTENSION, "valueString": format!("acct-{n}")}],
    });
    (
        body,
        vec![family, given, email, city, street, kvnr, phone, "1971-03-14".into()],
    )
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

async fn created(reply: Reply) -> String {
    assert_eq!(reply.status, StatusCode::CREATED, "{:#}", reply.body);
    reply.id()
}

#[tokio::test]
async fn the_tables_hold_no_plaintext_identifying_element() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let mut needles = Vec::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        let (body, words) = patient(n);
        needles.extend(words);
        let id = created(h.post("/de/v1/fhir/Patient", &dr, &body).await).await;
        let obs = resources::observation(&id, "8867-4", 72.0, "/min", "2026-11-02T09:10:00Z");
        created(h.post("/de/v1/fhir/Observation", &dr, &obs).await).await;
        ids.push(id);
    }
    // One through a transaction, one updated (history), one deleted; searches and reads.
    let (body, words) = patient(3);
    needles.extend(words);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1e0c43-0d7c-4d53-a0a4-6a3fd0f2a001", "resource": body, "request": {"method": "POST", "url": "Patient"}},
    ]});
    assert_eq!(h.post("/de/v1/fhir", &dr, &bundle).await.status, StatusCode::OK);
    let current = h.get(&format!("/de/v1/fhir/Patient/{}", ids[0]), &dr).await;
    let mut changed = current.body.clone();
    changed["address"][0]["city"] = json!("Zwiebelhausen-Nord");
    needles.push("Zwiebelhausen-Nord".into());
    let updated = h
        .put(&format!("/de/v1/fhir/Patient/{}", ids[0]), &dr, "W/\"1\"", &changed)
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:#}", updated.body);
    let gone = h.delete(&format!("/de/v1/fhir/Patient/{}", ids[2]), &dr).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    for query in [
        "family=quasten",
        "given=Wendelgard1",
        "identifier=Q314159201",
        "birthdate=1971-03-14",
    ] {
        let found = h.get(&format!("/de/v1/fhir/Patient?{query}"), &dr).await;
        assert!(!found.entries().is_empty(), "{query}: {:#}", found.body);
    }
    h.get(&format!("/de/v1/fhir/Patient/{}/$everything", ids[1]), &dr).await;

    let tables = [
        "vault.patients",
        "vault.patient_history",
        "patients",
        "fhir_resources",
        "fhir_history",
        "outbox",
        "audit",
    ];
    let mut rows_seen = 0;
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT t::text FROM {table} t")))
            .fetch_all(&h.admin)
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{table} has rows to search");
        rows_seen += rows.len();
        for row in rows {
            let lower = row.to_lowercase();
            for needle in &needles {
                assert!(
                    !lower.contains(&needle.to_lowercase()),
                    "{table} holds {needle:?}: {row}"
                );
                assert!(
                    !lower.contains(&hex(needle)),
                    "{table} holds {needle:?} as bytes: {row}"
                );
            }
        }
    }
    println!(
        "searched {rows_seen} rows of {} tables for {} identifying values",
        tables.len(),
        needles.len()
    );
    // What is there is sealed: every row names its key, and the sealed bytes are not JSON.
    let keys: Vec<String> = sqlx::query_scalar("SELECT DISTINCT key_id FROM vault.patients")
        .fetch_all(&h.admin)
        .await
        .unwrap();
    assert_eq!(keys, ["k1"]);
}

#[tokio::test]
async fn each_role_reaches_only_its_tables() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    created(h.post("/de/v1/fhir/Patient", &dr, &patient(0).0).await).await;
    for table in ["vault.patients", "vault.patient_history"] {
        let err = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(&h.clinical)
            .await
            .expect_err("the clinical role reads no vault table");
        assert!(err.to_string().contains("permission denied"), "{table}: {err}");
        let ok = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(&h.vault)
            .await;
        assert!(ok.is_ok(), "the vault role reads {table}: {ok:?}");
    }
    for table in ["appointments", "practitioners"] {
        let err = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(&h.vault)
            .await
            .expect_err("the vault role reads no booking table");
        assert!(err.to_string().contains("permission denied"), "{table}: {err}");
    }
    // The audit trail is append-only for both.
    for pool in [&h.clinical, &h.vault] {
        let err = sqlx::query("DELETE FROM audit")
            .execute(pool)
            .await
            .expect_err("no deletes");
        assert!(err.to_string().contains("permission denied"), "{err}");
    }
}

/// A read that must fail with an OperationOutcome naming no patient data.
fn refused(what: &str, reply: &Reply, needles: &[String]) {
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{what}: {:#}",
        reply.body
    );
    assert_eq!(reply.body["resourceType"], "OperationOutcome", "{what}");
    assert_eq!(reply.body["issue"][0]["code"], "exception", "{what}");
    let text = reply.body.to_string();
    for needle in needles {
        assert!(!text.contains(needle.as_str()), "{what}: {needle} in {text}");
    }
}

/// A searchset that left Patient `id` out: `served` entries besides the outcome, an
/// outcome entry naming the patient, and none of `needles`.
fn left_out(what: &str, reply: &Reply, id: &str, served: usize, needles: &[String]) {
    assert_eq!(reply.status, StatusCode::OK, "{what}: {:#}", reply.body);
    let entries = reply.body["entry"].as_array().expect("entries");
    let outcomes: Vec<&Value> = entries.iter().filter(|e| e["search"]["mode"] == "outcome").collect();
    assert_eq!(entries.len() - outcomes.len(), served, "{what}: {:#}", reply.body);
    assert_eq!(outcomes.len(), 1, "{what}");
    let issue = &outcomes[0]["resource"]["issue"][0];
    assert_eq!(issue["code"], "exception", "{what}");
    assert!(
        issue["diagnostics"]
            .as_str()
            .unwrap()
            .contains(&format!("Patient/{id}")),
        "{what}: {issue}"
    );
    assert!(entries.iter().all(|e| e["resource"]["id"] != id), "{what}");
    let text = reply.body.to_string();
    for needle in needles {
        assert!(!text.contains(needle.as_str()), "{what}: {needle} in {text}");
    }
}

#[tokio::test]
async fn tampered_rows_are_refused_not_served() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let mut ids = Vec::new();
    let mut needles = Vec::new();
    for n in 0..3 {
        let (body, words) = patient(n);
        needles.extend(words);
        let id = created(h.post("/de/v1/fhir/Patient", &dr, &body).await).await;
        let obs = resources::observation(&id, "8867-4", 72.0, "/min", "2026-11-02T09:10:00Z");
        created(h.post("/de/v1/fhir/Observation", &dr, &obs).await).await;
        ids.push(id);
    }
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    // A flipped byte in a's ciphertext.
    sqlx::query(
        "UPDATE vault.patients SET sealed = set_byte(sealed, 20, get_byte(sealed, 20) # 1) WHERE client_id = $1::uuid",
    )
    .bind(a)
    .execute(&h.admin)
    .await
    .unwrap();
    // b's sealed bytes (and key id) copied onto c.
    sqlx::query(
        "UPDATE vault.patients SET (sealed, key_id) = (SELECT sealed, key_id FROM vault.patients WHERE client_id = $1::uuid)
          WHERE client_id = $2::uuid",
    )
    .bind(b)
    .bind(c)
    .execute(&h.admin)
    .await
    .unwrap();
    for id in [a, c] {
        refused(
            "read",
            &h.get(&format!("/de/v1/fhir/Patient/{id}"), &dr).await,
            &needles,
        );
        refused(
            "$everything",
            &h.get(&format!("/de/v1/fhir/Patient/{id}/$everything"), &dr).await,
            &needles,
        );
        // A search leaves the broken record out and names it; the rest is served.
        let search = h.get(&format!("/de/v1/fhir/Patient?_id={id},{b}"), &dr).await;
        left_out("search", &search, id, 1, &needles[..0]);
        assert_eq!(search.body["entry"][0]["resource"]["id"], b.as_str());
        let include = h
            .get(
                &format!("/de/v1/fhir/Observation?patient={id}&_include=Observation:patient"),
                &dr,
            )
            .await;
        left_out("_include", &include, id, 1, &needles);
        let mut update = patient(9).0;
        update["id"] = json!(id);
        update.as_object_mut().unwrap().remove("extension");
        let put = h
            .put(&format!("/de/v1/fhir/Patient/{id}"), &dr, "W/\"1\"", &update)
            .await;
        // A clinician can repair the record: an update replaces the row without opening it.
        assert_eq!(put.status, StatusCode::OK, "{:#}", put.body);
        let read = h.get(&format!("/de/v1/fhir/Patient/{id}"), &dr).await;
        assert_eq!(read.status, StatusCode::OK, "the replaced row opens");
        assert_eq!(read.body["name"][0]["family"], "Quastenflosser9");
    }
    // b itself is untouched and still served, as b.
    let read = h.get(&format!("/de/v1/fhir/Patient/{b}"), &dr).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["id"], b.as_str());
    assert_eq!(read.body["name"][0]["family"], "Quastenflosser1");
    // An older version of b's own sealed row put back as the current one (a rollback) is
    // refused too: it would serve stale data as current.
    let mut changed = read.body.clone();
    changed["address"][0]["city"] = json!("Neustadt");
    let put = h
        .put(&format!("/de/v1/fhir/Patient/{b}"), &dr, "W/\"1\"", &changed)
        .await;
    assert_eq!(put.status, StatusCode::OK);
    sqlx::query(
        "UPDATE vault.patients SET sealed = (SELECT sealed FROM vault.patient_history WHERE client_id = $1::uuid AND version = 1)
          WHERE client_id = $1::uuid",
    )
    .bind(b)
    .execute(&h.admin)
    .await
    .unwrap();
    refused(
        "a rolled back row",
        &h.get(&format!("/de/v1/fhir/Patient/{b}"), &dr).await,
        &needles,
    );
    let v2 = h.get(&format!("/de/v1/fhir/Patient/{b}/_history/2"), &dr).await;
    assert_eq!(
        v2.body["address"][0]["city"], "Neustadt",
        "the history still holds the real version"
    );
    // A sealed history row copied onto another patient's does not open either.
    sqlx::query(
        "UPDATE vault.patient_history SET sealed = (SELECT sealed FROM vault.patient_history WHERE client_id = $1::uuid AND version = 1)
          WHERE client_id = $2::uuid AND version = 1",
    )
    .bind(b)
    .bind(a)
    .execute(&h.admin)
    .await
    .unwrap();
    refused(
        "vread",
        &h.get(&format!("/de/v1/fhir/Patient/{a}/_history/1"), &dr).await,
        &needles,
    );
}

#[tokio::test]
async fn a_key_rotation_keeps_old_rows_readable_and_searchable() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let old = created(h.post("/de/v1/fhir/Patient", &dr, &patient(0).0).await).await;
    let mut keys = h.keys.clone();
    assert_eq!(meridian_records::keys::rotate(&mut keys, "DE").unwrap(), "k2");
    h.countries.set([entry("DE", &keys)]);

    let new = created(h.post("/de/v1/fhir/Patient", &dr, &patient(1).0).await).await;
    let key_of = |id: String| {
        let admin = h.admin.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT key_id FROM vault.patients WHERE client_id = $1::uuid")
                .bind(id)
                .fetch_one(&admin)
                .await
                .unwrap()
        }
    };
    assert_eq!(key_of(old.clone()).await, "k1");
    assert_eq!(key_of(new.clone()).await, "k2");
    // Both read, both found by every kind of search.
    for (id, n) in [(&old, 0), (&new, 1)] {
        let read = h.get(&format!("/de/v1/fhir/Patient/{id}"), &dr).await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.body["name"][0]["family"], format!("Quastenflosser{n}"));
        for query in [
            format!("family=Quastenflosser{n}"),
            format!("identifier={KVNR}|Q{:09}", 314159200 + n),
            format!("given=wendelgard{n}"),
        ] {
            let found = h.get(&format!("/de/v1/fhir/Patient?{query}"), &dr).await;
            let found: Vec<&str> = found
                .entries()
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap())
                .collect();
            assert_eq!(found, [id.as_str()], "{query}");
        }
    }
    let both = h
        .get("/de/v1/fhir/Patient?family=quasten&birthdate=1971-03-14", &dr)
        .await;
    assert_eq!(both.entries().len(), 2);
    // An update moves the row to the new key; its first version stays under the old one.
    let current = h.get(&format!("/de/v1/fhir/Patient/{old}"), &dr).await;
    let updated = h
        .put(&format!("/de/v1/fhir/Patient/{old}"), &dr, "W/\"1\"", &current.body)
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(key_of(old.clone()).await, "k2");
    let history: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, key_id FROM vault.patient_history WHERE client_id = $1::uuid ORDER BY version")
            .bind(&old)
            .fetch_all(&h.admin)
            .await
            .unwrap();
    assert_eq!(history, [(1, "k1".to_string()), (2, "k2".to_string())]);
    let v1 = h.get(&format!("/de/v1/fhir/Patient/{old}/_history/1"), &dr).await;
    assert_eq!(v1.status, StatusCode::OK);
    let found = h.get("/de/v1/fhir/Patient?family=Quastenflosser0", &dr).await;
    assert_eq!(found.entries().len(), 1, "found by its new key's hashes");

    // Without the old key (a broken rotation), old rows fail loudly rather than vanish.
    let mut only_new = keys.clone();
    only_new.remove("DE.k1");
    h.countries.set([entry("DE", &only_new)]);
    let v1 = h.get(&format!("/de/v1/fhir/Patient/{old}/_history/1"), &dr).await;
    refused("an old version without its key", &v1, &[]);
}
