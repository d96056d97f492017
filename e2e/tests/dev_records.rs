//! Records in `meridian dev`: a clinician records a German patient with a
//! Krankenversichertennummer, an encounter, two LOINC-coded observations and a prescription
//! through the entry point, searches them and reads `$everything`; the patient reads only
//! their own. Every resource answered is valid FHIR R4 (the official JSON schema); the
//! patient's name and national ID are nowhere in the Region's database in plaintext, and
//! nothing of them reached another Region.

use std::time::Duration;

use meridian_e2e::{Dev, http};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

#[path = "../../workloads/records/tests/support/fhir_schema.rs"]
mod fhir_schema;

/// Sends a request and checks the FHIR answer against the R4 schema.
fn fhir(dev: &Dev, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, body) = http(dev.addr, method, path, &[("Authorization", token)], body);
    if !body.is_null()
        && let Err(errors) = fhir_schema::validate(&body)
    {
        panic!("{method} {path}: not valid FHIR R4: {errors:?}\n{body:#}");
    }
    (status, body)
}

async fn count(port: u16, sql: &str) -> i64 {
    let url = format!("postgres://meridian@127.0.0.1:{port}/meridian");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clinician_records_a_german_patient_who_reads_only_their_own() {
    let work = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_examples(work.path());
    dev.await_ready("de", Duration::from_secs(180));
    let dr = dev.bearer_for("dr-weber", "Practitioner", "DE");
    let anna = dev.bearer_for("anna-login", "Patient", "DE");

    let patient = json!({
        "resourceType": "Patient",
        "extension": [{"url": "https://meridian.dev/fhir/StructureDefinition/account-subject", "valueString": "anna-login"}],
        "identifier": [{"system": "http://fhir.de/sid/gkv/kvid-10", "value": "Q271828182"}],
        "name": [{"family": "Zwiebelhuber", "given": ["Annegret"]}],
        "gender": "female",
        "birthDate": "1979-03-14",
    });
    let (status, created) = fhir(&dev, "POST", "/de/v1/fhir/Patient", &dr, Some(&patient));
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().unwrap().to_string();
    let subject = json!({"reference": format!("Patient/{id}")});
    let encounter = json!({"resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": subject, "period": {"start": "2026-11-02T09:00:00+01:00"}});
    assert_eq!(
        fhir(&dev, "POST", "/de/v1/fhir/Encounter", &dr, Some(&encounter)).0,
        201
    );
    for (code, value, unit) in [("8867-4", 72, "/min"), ("29463-7", 64, "kg")] {
        let observation = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": subject, "effectiveDateTime": "2026-11-02T09:10:00+01:00",
            "valueQuantity": {"value": value, "unit": unit}});
        let (status, body) = fhir(&dev, "POST", "/de/v1/fhir/Observation", &dr, Some(&observation));
        assert_eq!(status, 201, "{body:#}");
    }
    let prescription = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "387517004"}]},
        "subject": subject, "authoredOn": "2026-11-02"});
    assert_eq!(
        fhir(&dev, "POST", "/de/v1/fhir/MedicationRequest", &dr, Some(&prescription)).0,
        201
    );

    let (_, found) = fhir(
        &dev,
        "GET",
        "/de/v1/fhir/Patient?identifier=http://fhir.de/sid/gkv/kvid-10|Q271828182",
        &dr,
        None,
    );
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1), "{found:#}");
    let (_, found) = fhir(
        &dev,
        "GET",
        &format!("/de/v1/fhir/Observation?patient={id}&code=http://loinc.org|8867-4"),
        &dr,
        None,
    );
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1));
    let (status, everything) = fhir(&dev, "GET", &format!("/de/v1/fhir/Patient/{id}/$everything"), &dr, None);
    assert_eq!((status, everything["entry"].as_array().map(Vec::len)), (200, Some(5)));

    // The patient reads their own, and nothing of another patient.
    assert_eq!(
        fhir(&dev, "GET", &format!("/de/v1/fhir/Patient/{id}"), &anna, None).0,
        200
    );
    let (_, own) = fhir(&dev, "GET", "/de/v1/fhir/Observation", &anna, None);
    assert_eq!(own["entry"].as_array().map(Vec::len), Some(2));
    let mut other = patient.clone();
    other.as_object_mut().unwrap().remove("extension");
    other["identifier"][0]["value"] = json!("R314159265");
    let (_, other) = fhir(&dev, "POST", "/de/v1/fhir/Patient", &dr, Some(&other));
    let other_id = other["id"].as_str().unwrap();
    assert_eq!(
        fhir(&dev, "GET", &format!("/de/v1/fhir/Patient/{other_id}"), &anna, None).0,
        404
    );
    // Other roles see no clinical data.
    let admin = dev.bearer_for("admin", "ClinicAdmin", "DE");
    assert_eq!(
        fhir(&dev, "GET", &format!("/de/v1/fhir/Patient/{id}"), &admin, None).0,
        403
    );

    // In Germany's Region only, and never in plaintext.
    for (region, port) in dev.region_ports() {
        let records = count(port, "SELECT count(*) FROM fhir_resources").await;
        let patients = count(port, "SELECT count(*) FROM vault.patients").await;
        if region == "eu-central-1" {
            assert_eq!((records, patients), (4, 2), "{region}");
            for table in [
                "vault.patients",
                "vault.patient_history",
                "patients",
                "fhir_resources",
                "fhir_history",
                "outbox",
                "audit",
            ] {
                let plain = count(
                    port,
                    &format!("SELECT count(*) FROM {table} t WHERE t::text ILIKE '%Zwiebelhuber%' OR t::text LIKE '%Q271828182%'"),
                )
                .await;
                assert_eq!(plain, 0, "plaintext PII in {table}");
            }
        } else {
            assert_eq!((records, patients), (0, 0), "nothing of DE in {region}");
        }
    }
}
