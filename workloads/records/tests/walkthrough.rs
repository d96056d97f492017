//! The records walkthrough of issue 12 against a real PostgreSQL: a clinician records a DE
//! patient with a Krankenversichertennummer, an encounter, two LOINC-coded observations and
//! a prescription, searches them and reads `$everything`; the patient reads only their own.
//! Every answer is checked against the official FHIR R4 JSON schema.

mod support;

use axum::http::{Method, StatusCode};
use meridian_shared::auth::Role;
use serde_json::json;
use support::{Harness, resources};

#[tokio::test]
async fn a_clinician_records_a_patient_and_the_patient_reads_only_their_own() {
    let h = Harness::start(&["DE", "FR"]).await;
    let dr = h.clinician("DE");
    let mut patient = resources::patient("A123456789", "Müller");
    patient["extension"] =
        json!([{"url": meridian_records::validate::ACCOUNT_EXTENSION, "valueString": "patient-anna"}]);
    let created = h.post("/de/v1/fhir/Patient", &dr, &patient).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:#}", created.body);
    let id = created.id();
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    assert!(
        created
            .header("location")
            .unwrap()
            .ends_with(&format!("/de/v1/fhir/Patient/{id}/_history/1"))
    );

    let encounter = h
        .post(
            "/de/v1/fhir/Encounter",
            &dr,
            &resources::encounter(&id, "2026-11-02T09:00:00+01:00"),
        )
        .await;
    assert_eq!(encounter.status, StatusCode::CREATED, "{:#}", encounter.body);
    let pulse = h
        .post(
            "/de/v1/fhir/Observation",
            &dr,
            &resources::observation(&id, "8867-4", 72.0, "/min", "2026-11-02T09:10:00+01:00"),
        )
        .await;
    assert_eq!(pulse.status, StatusCode::CREATED, "{:#}", pulse.body);
    let weight = h
        .post(
            "/de/v1/fhir/Observation",
            &dr,
            &resources::observation(&id, "29463-7", 68.5, "kg", "2026-11-02T09:12:00+01:00"),
        )
        .await;
    assert_eq!(weight.status, StatusCode::CREATED, "{:#}", weight.body);
    let rx = h
        .post("/de/v1/fhir/MedicationRequest", &dr, &resources::prescription(&id))
        .await;
    assert_eq!(rx.status, StatusCode::CREATED, "{:#}", rx.body);

    // Search: the patient by national ID (written with spaces), by the start of the family
    // name without its umlaut; observations by code, date and value.
    let found = h
        .get(
            "/de/v1/fhir/Patient?identifier=http://fhir.de/sid/gkv/kvid-10|A%20123%20456%20789",
            &dr,
        )
        .await;
    assert_eq!(found.entries().len(), 1, "{:#}", found.body);
    assert_eq!(found.entries()[0]["resource"]["name"][0]["family"], "Müller");
    let found = h.get("/de/v1/fhir/Patient?family=mull&birthdate=1984-06", &dr).await;
    assert_eq!(found.entries().len(), 1, "{:#}", found.body);
    let found = h
        .get(
            &format!("/de/v1/fhir/Observation?patient={id}&code=http://loinc.org|8867-4"),
            &dr,
        )
        .await;
    assert_eq!(found.entries().len(), 1);
    let found = h
        .get(
            &format!("/de/v1/fhir/Observation?subject=Patient/{id}&value-quantity=gt70&date=ge2026-11-02"),
            &dr,
        )
        .await;
    assert_eq!(found.entries().len(), 1, "{:#}", found.body);
    let found = h
        .get(
            &format!("/de/v1/fhir/Observation?patient={id}&_include=Observation:patient&_sort=-date"),
            &dr,
        )
        .await;
    let modes: Vec<&str> = found
        .entries()
        .iter()
        .map(|e| e["search"]["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["match", "match", "include"]);
    assert_eq!(
        found.entries()[0]["resource"]["code"]["coding"][0]["code"],
        "29463-7",
        "newest first"
    );
    let found = h
        .get(
            &format!("/de/v1/fhir/MedicationRequest?patient={id}&status=active&intent=order"),
            &dr,
        )
        .await;
    assert_eq!(found.entries().len(), 1);
    let found = h
        .get(
            &format!("/de/v1/fhir/Encounter?patient={id}&date=2026-11-02&class=AMB"),
            &dr,
        )
        .await;
    assert_eq!(found.entries().len(), 1, "{:#}", found.body);

    let everything = h.get(&format!("/de/v1/fhir/Patient/{id}/$everything"), &dr).await;
    assert_eq!(everything.status, StatusCode::OK);
    let kinds: Vec<&str> = everything
        .entries()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert_eq!(kinds[0], "Patient");

    // The patient, logged in as the account the Patient names, reads their own only.
    let anna = h.token("patient-anna", &[Role::Patient], &["DE"]);
    assert_eq!(
        h.get(&format!("/de/v1/fhir/Patient/{id}"), &anna).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.get(&format!("/de/v1/fhir/Patient/{id}/$everything"), &anna)
            .await
            .entries()
            .len(),
        5
    );
    assert_eq!(h.get("/de/v1/fhir/Observation", &anna).await.entries().len(), 2);
    let other = h
        .post("/de/v1/fhir/Patient", &dr, &resources::patient("B987654321", "Schmidt"))
        .await;
    let other_id = other.id();
    h.post(
        "/de/v1/fhir/Observation",
        &dr,
        &resources::observation(&other_id, "8867-4", 80.0, "/min", "2026-11-03T10:00:00Z"),
    )
    .await;
    assert_eq!(
        h.get(&format!("/de/v1/fhir/Patient/{other_id}"), &anna).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/de/v1/fhir/Observation", &anna).await.entries().len(),
        2,
        "not the other patient's"
    );
    assert_eq!(h.get("/de/v1/fhir/Patient?family=schm", &anna).await.entries().len(), 0);
    let write = h
        .post(
            "/de/v1/fhir/Observation",
            &anna,
            &resources::observation(&id, "8867-4", 1.0, "/min", "2026-11-03T10:00:00Z"),
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);

    // Update with If-Match, vread, history, delete (410 after), the rows kept.
    let mut changed = everything.entries()[0]["resource"].clone();
    changed["gender"] = json!("other");
    let updated = h
        .put(&format!("/de/v1/fhir/Patient/{id}"), &dr, "W/\"1\"", &changed)
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:#}", updated.body);
    assert_eq!(updated.header("etag"), Some("W/\"2\""));
    let stale = h
        .put(&format!("/de/v1/fhir/Patient/{id}"), &dr, "W/\"1\"", &changed)
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let v1 = h.get(&format!("/de/v1/fhir/Patient/{id}/_history/1"), &dr).await;
    assert_eq!(v1.body["gender"], "female");
    let history = h.get(&format!("/de/v1/fhir/Patient/{id}/_history"), &dr).await;
    assert_eq!(history.body["type"], "history");
    assert_eq!(history.entries().len(), 2);
    let rx_id = rx.id();
    let gone = h.delete(&format!("/de/v1/fhir/MedicationRequest/{rx_id}"), &dr).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.get(&format!("/de/v1/fhir/MedicationRequest/{rx_id}"), &dr)
            .await
            .status,
        StatusCode::GONE
    );
    let kept: (i64, bool) = sqlx::query_as(
        "SELECT count(*), bool_and(retain_until > now() + interval '9 years') FROM fhir_resources WHERE id = $1::uuid",
    )
    .bind(&rx_id)
    .fetch_one(&h.admin)
    .await
    .unwrap();
    assert_eq!(kept, (1, true), "kept for DE's ten years");

    // Every write left its event and every access its audit record, and the chains hold.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE topic = 'patient-events'")
        .fetch_one(&h.admin)
        .await
        .unwrap();
    assert_eq!(
        events, 9,
        "2 patients, 1 encounter, 3 observations, 1 prescription, 1 update, 1 delete"
    );
    let mut conn = h.admin.acquire().await.unwrap();
    let checked = meridian_shared::audit::verify(&mut conn, "DE").await.unwrap().unwrap();
    assert!(checked > 20, "{checked}");
    let actors: Vec<String> = sqlx::query_scalar("SELECT DISTINCT actor FROM audit ORDER BY 1")
        .fetch_all(&h.admin)
        .await
        .unwrap();
    assert_eq!(actors, ["dr-weber", "patient-anna"]);
}

#[tokio::test]
async fn the_capability_statement_lists_what_is_served() {
    let h = Harness::start(&["DE"]).await;
    let reply = h.send(Method::GET, "/de/v1/fhir/metadata", None, &[], None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["fhirVersion"], "4.0.1");
    let types: Vec<&str> = reply.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Patient", "Encounter", "Observation", "MedicationRequest", "Consent"]
    );
    assert_eq!(reply.body["rest"][0]["operation"][0]["name"], "disclose");
}
