//! Transaction Bundles: created entries referred to by their `urn:uuid:` full URLs, a
//! 100-entry Bundle timed, updates and deletes, and conditional creates.

mod support;

use std::time::Instant;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{Harness, Reply, resources};
use uuid::Uuid;

fn urn() -> String {
    format!("urn:uuid:{}", Uuid::new_v4())
}

fn post(full_url: &str, resource: Value) -> Value {
    let kind = resource["resourceType"].as_str().unwrap().to_string();
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": kind}})
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

async fn commit(h: &Harness, bundle: &Value) -> Reply {
    let reply = h.post("/de/v1/fhir", &h.clinician("DE"), bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.body["type"], "transaction-response");
    reply
}

/// `(status, location)` of each entry of a transaction-response.
fn answers(reply: &Reply) -> Vec<(String, Option<String>)> {
    reply
        .entries()
        .iter()
        .map(|e| {
            (
                e["response"]["status"].as_str().unwrap().to_string(),
                e["response"]["location"].as_str().map(String::from),
            )
        })
        .collect()
}

/// `Type/id` of a `Type/id/_history/n` location.
fn reference(location: &str) -> String {
    location.split("/_history").next().unwrap().to_string()
}

#[tokio::test]
async fn a_patient_and_what_refers_to_it_by_urn() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let (patient, encounter) = (urn(), urn());
    let mut visit = resources::encounter("x", "2026-11-02T09:00:00+01:00");
    visit["subject"]["reference"] = json!(patient);
    let observation = |loinc: &str, value: f64| {
        let mut o = resources::observation("x", loinc, value, "/min", "2026-11-02T09:10:00+01:00");
        o["subject"]["reference"] = json!(patient);
        o["encounter"] = json!({"reference": encounter});
        o
    };
    // The Patient last: references work in any order.
    let bundle = transaction(vec![
        post(&encounter, visit),
        post(&urn(), observation("8867-4", 72.0)),
        post(&urn(), observation("8310-5", 36.8)),
        post(&patient, resources::patient("T123456789", "Bündel")),
    ]);
    let reply = commit(&h, &bundle).await;
    let answers = answers(&reply);
    assert_eq!(answers.len(), 4);
    let kinds = ["Encounter", "Observation", "Observation", "Patient"];
    for ((status, location), kind) in answers.iter().zip(kinds) {
        assert_eq!(status, "201 Created");
        let location = location.as_deref().unwrap();
        assert!(
            location.starts_with(&format!("{kind}/")) && location.ends_with("/_history/1"),
            "{location}"
        );
    }
    let patient_ref = reference(answers[3].1.as_deref().unwrap());
    let encounter_ref = reference(answers[0].1.as_deref().unwrap());
    let patient_id = patient_ref.strip_prefix("Patient/").unwrap();
    for entry in &reply.entries()[..3] {
        assert_eq!(entry["resource"]["subject"]["reference"], patient_ref.as_str());
    }
    assert_eq!(
        reply.entries()[1]["resource"]["encounter"]["reference"],
        encounter_ref.as_str()
    );
    // Stored as answered, found by patient.
    for (_, location) in &answers {
        let location = location.as_deref().unwrap();
        let read = h.get(&format!("/de/v1/fhir/{}", reference(location)), &dr).await;
        assert_eq!(read.status, StatusCode::OK, "{location}");
    }
    let everything = h
        .get(&format!("/de/v1/fhir/Patient/{patient_id}/$everything"), &dr)
        .await;
    assert_eq!(everything.entries().len(), 4, "{:#}", everything.body);
    let text = serde_json::to_string(&everything.body).unwrap();
    assert!(!text.contains("urn:uuid:"), "no urn left: {text}");
}

#[tokio::test]
async fn a_hundred_entries_in_one_transaction() {
    let h = Harness::start(&["DE"]).await;
    let patient = urn();
    let mut entries = vec![post(&patient, resources::patient("H123456789", "Hundert"))];
    for i in 0..99 {
        let mut o = resources::observation(
            "x",
            "8867-4",
            60.0 + i as f64,
            "/min",
            &format!("2026-11-02T{:02}:{:02}:00Z", i / 60, i % 60),
        );
        o["subject"]["reference"] = json!(patient);
        entries.push(post(&urn(), o));
    }
    let bundle = transaction(entries);
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM fhir_resources")
        .fetch_one(&h.admin)
        .await
        .unwrap();
    let started = Instant::now();
    let reply = commit(&h, &bundle).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("bundle100_ms={ms:.1} (debug build)");
    assert_eq!(answers(&reply).iter().filter(|(s, _)| s == "201 Created").count(), 100);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM fhir_resources")
        .fetch_one(&h.admin)
        .await
        .unwrap();
    assert_eq!(after - before, 99);
}

#[tokio::test]
async fn updates_and_deletes_in_a_transaction() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let patient = h
        .post("/de/v1/fhir/Patient", &dr, &resources::patient("U123456789", "Ändern"))
        .await;
    let patient_id = patient.id();
    let keep = h
        .post(
            "/de/v1/fhir/Observation",
            &dr,
            &resources::observation(&patient_id, "8867-4", 72.0, "/min", "2026-11-02T09:10:00Z"),
        )
        .await;
    let doomed = h
        .post(
            "/de/v1/fhir/Observation",
            &dr,
            &resources::observation(&patient_id, "8867-4", 90.0, "/min", "2026-11-02T09:20:00Z"),
        )
        .await;
    let (keep_id, doomed_id) = (keep.id(), doomed.id());
    let mut changed_obs = keep.body.clone();
    changed_obs["valueQuantity"]["value"] = json!(74);
    let mut changed_patient = patient.body.clone();
    changed_patient["gender"] = json!("other");
    let bundle = transaction(vec![
        json!({"resource": changed_obs, "request": {"method": "PUT", "url": format!("Observation/{keep_id}"), "ifMatch": "W/\"1\""}}),
        // Without ifMatch: the current version.
        json!({"resource": changed_patient, "request": {"method": "PUT", "url": format!("Patient/{patient_id}")}}),
        json!({"request": {"method": "DELETE", "url": format!("Observation/{doomed_id}")}}),
    ]);
    let reply = commit(&h, &bundle).await;
    let answers = answers(&reply);
    assert_eq!(
        answers[0],
        ("200 OK".into(), Some(format!("Observation/{keep_id}/_history/2")))
    );
    assert_eq!(
        answers[1],
        ("200 OK".into(), Some(format!("Patient/{patient_id}/_history/2")))
    );
    assert_eq!(answers[2].0, "204 No Content");
    let read = h.get(&format!("/de/v1/fhir/Observation/{keep_id}"), &dr).await;
    assert_eq!(read.body["valueQuantity"]["value"], 74);
    assert_eq!(read.header("etag"), Some("W/\"2\""));
    assert_eq!(
        h.get(&format!("/de/v1/fhir/Patient/{patient_id}"), &dr).await.body["gender"],
        "other"
    );
    assert_eq!(
        h.get(&format!("/de/v1/fhir/Observation/{doomed_id}"), &dr).await.status,
        StatusCode::GONE
    );
    // A stale ifMatch now refuses the whole Bundle.
    let mut again = read.body.clone();
    again["valueQuantity"]["value"] = json!(75);
    let bundle = transaction(vec![
        json!({"resource": again, "request": {"method": "PUT", "url": format!("Observation/{keep_id}"), "ifMatch": "W/\"1\""}}),
    ]);
    let stale = h.post("/de/v1/fhir", &dr, &bundle).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "{:#}", stale.body);
}

#[tokio::test]
async fn conditional_creates_in_a_transaction() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let existing = h
        .post(
            "/de/v1/fhir/Patient",
            &dr,
            &resources::patient("V123456789", "Vorhanden"),
        )
        .await;
    let existing_id = existing.id();
    let conditional = |full_url: &str, kvnr: &str, family: &str| {
        json!({
            "fullUrl": full_url,
            "resource": resources::patient(kvnr, family),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier=http://fhir.de/sid/gkv/kvid-10|{kvnr}")},
        })
    };
    let (known, new) = (urn(), urn());
    let observation = |patient: &str| {
        let mut o = resources::observation("x", "8867-4", 72.0, "/min", "2026-11-02T09:10:00Z");
        o["subject"]["reference"] = json!(patient);
        o
    };
    let bundle = transaction(vec![
        conditional(&known, "V123456789", "Vorhanden"),
        conditional(&new, "N123456789", "Neu"),
        post(&urn(), observation(&known)),
        post(&urn(), observation(&new)),
    ]);
    let reply = commit(&h, &bundle).await;
    let answers = answers(&reply);
    assert_eq!(
        answers[0],
        ("200 OK".into(), Some(format!("Patient/{existing_id}/_history/1")))
    );
    assert_eq!(answers[1].0, "201 Created");
    let new_ref = reference(answers[1].1.as_deref().unwrap());
    assert_eq!(
        reply.entries()[2]["resource"]["subject"]["reference"],
        format!("Patient/{existing_id}"),
        "a reference to a conditional create that matched names what it matched"
    );
    assert_eq!(reply.entries()[3]["resource"]["subject"]["reference"], new_ref.as_str());
    let patients: i64 = sqlx::query_scalar("SELECT count(*) FROM vault.patients")
        .fetch_one(&h.admin)
        .await
        .unwrap();
    assert_eq!(patients, 2, "the known patient was not created again");
    // The same Bundle again creates no patient.
    let again = commit(&h, &bundle).await;
    assert_eq!(
        self::answers(&again)
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>(),
        ["200 OK", "200 OK", "201 Created", "201 Created"]
    );
    let everything = h
        .get(&format!("/de/v1/fhir/Patient/{existing_id}/$everything"), &dr)
        .await;
    assert_eq!(
        everything.entries().len(),
        3,
        "the patient and both observations of them"
    );
}

/// `ifNoneExist` is a URL query: percent-encoded values are decoded, and a condition that
/// names no identifier (which would match any resource) is refused.
#[tokio::test]
async fn if_none_exist_is_read_as_a_query() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let existing = h
        .post(
            "/de/v1/fhir/Patient",
            &dr,
            &resources::patient("V123456789", "Vorhanden"),
        )
        .await;
    let existing_id = existing.id();
    let conditional = |condition: &str| {
        transaction(vec![json!({
            "fullUrl": urn(),
            "resource": resources::patient("W123456789", "Woanders"),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition},
        })])
    };
    let encoded = conditional("identifier=http%3A%2F%2Ffhir.de%2Fsid%2Fgkv%2Fkvid-10%7CV%20123%20456%20789");
    let reply = commit(&h, &encoded).await;
    assert_eq!(
        answers(&reply),
        [("200 OK".to_string(), Some(format!("Patient/{existing_id}/_history/1")))]
    );
    let before = h.counts().await;
    for condition in [
        "identifier=",
        "identifier=http://fhir.de/sid/gkv/kvid-10|",
        "family=Vorhanden",
    ] {
        let reply = h.post("/de/v1/fhir", &dr, &conditional(condition)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{condition}: {:#}",
            reply.body
        );
        assert_eq!(
            reply.expression(),
            Some("Bundle.entry[0].request.ifNoneExist"),
            "{condition}"
        );
    }
    assert_eq!(before, h.counts().await, "nothing written");
}
