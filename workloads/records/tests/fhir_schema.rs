//! The FHIR R4 JSON schema helper that other tests validate every response with: it accepts
//! valid resources of each kind the records service returns and refuses invalid ones.
//! Needs the official schema (`.ci/run` installs it; the helper's panic says how otherwise).

#[path = "support/fhir_schema.rs"]
mod fhir_schema;

use std::time::Instant;

use serde_json::{Value, json};

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "4f1c2a9e-8d2b-4a43-9c1e-2b7f3d0e5a61",
        "meta": { "versionId": "1", "lastUpdated": "2026-11-29T22:00:00.000+00:00" },
        "identifier": [{
            "use": "official",
            "system": "http://fhir.de/sid/gkv/kvid-10",
            "value": "A123456780"
        }],
        "active": true,
        "name": [{ "use": "official", "family": "Müller", "given": ["Anna", "Maria"] }],
        "telecom": [{ "system": "phone", "value": "+49 30 1234567", "use": "mobile" }],
        "gender": "female",
        "birthDate": "1984-03-02",
        "address": [{ "line": ["Invalidenstraße 1"], "city": "Berlin", "postalCode": "10115", "country": "DE" }]
    })
}

fn encounter() -> Value {
    json!({
        "resourceType": "Encounter",
        "id": "enc-1",
        "meta": { "versionId": "1", "lastUpdated": "2026-11-29T22:01:00+00:00" },
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory"
        },
        "subject": { "reference": "Patient/4f1c2a9e-8d2b-4a43-9c1e-2b7f3d0e5a61" },
        "period": { "start": "2026-11-29T09:00:00+01:00", "end": "2026-11-29T09:20:00+01:00" }
    })
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": { "versionId": "1", "lastUpdated": "2026-11-29T22:02:00+00:00" },
        "status": "final",
        "category": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs",
                "display": "Vital Signs"
            }]
        }],
        "code": {
            "coding": [{ "system": "http://loinc.org", "code": "8867-4", "display": "Heart rate" }],
            "text": "Heart rate"
        },
        "subject": { "reference": "Patient/4f1c2a9e-8d2b-4a43-9c1e-2b7f3d0e5a61" },
        "encounter": { "reference": "Encounter/enc-1" },
        "effectiveDateTime": "2026-11-29T09:05:00+01:00",
        "valueQuantity": {
            "value": 72,
            "unit": "beats/minute",
            "system": "http://unitsofmeasure.org",
            "code": "/min"
        }
    })
}

fn medication_request() -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "id": "rx-1",
        "meta": { "versionId": "1", "lastUpdated": "2026-11-29T22:03:00+00:00" },
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{
                "system": "http://snomed.info/sct",
                "code": "109081006",
                "display": "Metformin"
            }]
        },
        "subject": { "reference": "Patient/4f1c2a9e-8d2b-4a43-9c1e-2b7f3d0e5a61" },
        "encounter": { "reference": "Encounter/enc-1" },
        "authoredOn": "2026-11-29T09:15:00+01:00",
        "requester": { "reference": "Practitioner/pr-7", "display": "Dr. Weber" },
        "dosageInstruction": [{
            "text": "500 mg twice a day with meals",
            "timing": { "repeat": { "frequency": 2, "period": 1, "periodUnit": "d" } },
            "doseAndRate": [{
                "doseQuantity": {
                    "value": 500,
                    "unit": "mg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mg"
                }
            }]
        }]
    })
}

fn operation_outcome() -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error",
            "code": "invalid",
            "diagnostics": "8867-5 is not a valid LOINC code: its check digit should be 4",
            "expression": ["Observation.code.coding[0].code"]
        }]
    })
}

fn searchset(entries: Vec<Value>) -> Value {
    let total = entries.len();
    let entry: Vec<Value> = entries
        .into_iter()
        .map(|resource| {
            let url = format!(
                "https://de.example.org/de/v1/fhir/{}/{}",
                resource["resourceType"].as_str().unwrap(),
                resource["id"].as_str().unwrap()
            );
            let mode = if resource["resourceType"] == "Patient" {
                "include"
            } else {
                "match"
            };
            json!({ "fullUrl": url, "resource": resource, "search": { "mode": mode } })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "id": "9b7e1d1c-0f3e-4f7a-8f44-5f0d2f1f6c10",
        "meta": { "lastUpdated": "2026-11-29T22:04:00+00:00" },
        "type": "searchset",
        "total": total,
        "link": [
            { "relation": "self", "url": "https://de.example.org/de/v1/fhir/Observation?patient=4f1c2a9e&_count=2" },
            { "relation": "next", "url": "https://de.example.org/de/v1/fhir/Observation?patient=4f1c2a9e&_count=2&_cursor=abc" }
        ],
        "entry": entry
    })
}

fn capability_statement() -> Value {
    let resource = |kind: &str, params: Value| {
        json!({
            "type": kind,
            "interaction": [
                { "code": "read" }, { "code": "vread" }, { "code": "update" },
                { "code": "delete" }, { "code": "history-instance" },
                { "code": "create" }, { "code": "search-type" }
            ],
            "versioning": "versioned",
            "readHistory": true,
            "updateCreate": false,
            "conditionalCreate": true,
            "conditionalUpdate": false,
            "conditionalDelete": "not-supported",
            "searchParam": params
        })
    };
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "publisher": "Meridian",
        "kind": "instance",
        "software": { "name": "Meridian records", "version": "0.1.0" },
        "implementation": {
            "description": "Meridian records, Germany",
            "url": "https://de.example.org/de/v1/fhir"
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "resource": [
                resource("Patient", json!([
                    { "name": "family", "type": "string" },
                    { "name": "birthdate", "type": "date" },
                    { "name": "identifier", "type": "token" }
                ])),
                resource("Observation", json!([
                    { "name": "code", "type": "token" },
                    { "name": "value-quantity", "type": "quantity" },
                    { "name": "patient", "type": "reference" }
                ]))
            ],
            "interaction": [{ "code": "transaction" }]
        }]
    })
}

fn assert_valid(resource: &Value) {
    if let Err(errors) = fhir_schema::validate(resource) {
        panic!(
            "the {} should validate:\n  {}",
            resource["resourceType"],
            errors.join("\n  ")
        );
    }
}

/// Asserts that `resource` is refused, with an error at `pointer` (a JSON pointer into it).
fn assert_refused(resource: &Value, pointer: &str) -> Vec<String> {
    let errors = fhir_schema::validate(resource).expect_err(&format!("this should not validate: {resource:#}"));
    assert!(
        errors.iter().any(|e| e.starts_with(&format!("{pointer}: "))),
        "no error at {pointer:?}:\n  {}",
        errors.join("\n  ")
    );
    errors
}

#[test]
fn valid_resources_validate() {
    for resource in [
        patient(),
        encounter(),
        observation(),
        medication_request(),
        operation_outcome(),
        capability_statement(),
        searchset(vec![observation(), patient()]),
        searchset(vec![]),
    ] {
        assert_valid(&resource);
    }
}

#[test]
fn a_transaction_response_and_a_history_bundle_validate() {
    assert_valid(&json!({
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{
            "response": {
                "status": "201 Created",
                "location": "Patient/4f1c2a9e-8d2b-4a43-9c1e-2b7f3d0e5a61/_history/1",
                "etag": "W/\"1\"",
                "lastModified": "2026-11-29T22:00:00+00:00"
            }
        }]
    }));
    assert_valid(&json!({
        "resourceType": "Bundle",
        "type": "history",
        "total": 1,
        "entry": [{
            "fullUrl": "https://de.example.org/de/v1/fhir/Observation/obs-1",
            "resource": observation(),
            "request": { "method": "PUT", "url": "Observation/obs-1" },
            "response": { "status": "200 OK", "etag": "W/\"2\"" }
        }]
    }));
}

#[test]
fn an_unknown_gender_is_refused() {
    let mut p = patient();
    p["gender"] = json!("x");
    assert_refused(&p, "/gender");
}

#[test]
fn an_impossible_date_is_refused() {
    let mut p = patient();
    p["birthDate"] = json!("2024-13-45");
    assert_refused(&p, "/birthDate");
    let mut o = observation();
    o["effectiveDateTime"] = json!("2026-11-29 09:05");
    assert_refused(&o, "/effectiveDateTime");
}

#[test]
fn an_unknown_element_is_refused() {
    let mut p = patient();
    p["favouriteColour"] = json!("blue");
    assert_refused(&p, "");
    let mut o = observation();
    o["valueQuantity"]["precision"] = json!(2);
    assert_refused(&o, "/valueQuantity");
}

#[test]
fn an_observation_without_code_is_refused() {
    let mut o = observation();
    o.as_object_mut().unwrap().remove("code");
    assert_refused(&o, "");
}

/// The official JSON schema requires no primitive element (a primitive may be present only
/// as its `_element` extension), so an Observation without `status`, which FHIR requires
/// (1..1), passes it: the service must refuse that itself.
#[test]
fn the_schema_does_not_require_status() {
    let mut o = observation();
    o.as_object_mut().unwrap().remove("status");
    assert_valid(&o);
    // A status outside its value set is refused.
    o["status"] = json!("done");
    assert_refused(&o, "/status");
}

#[test]
fn wrong_types_are_refused() {
    let mut o = observation();
    o["valueQuantity"]["value"] = json!("72");
    assert_refused(&o, "/valueQuantity/value");
    let mut m = medication_request();
    m["dosageInstruction"] = json!({ "text": "once" });
    assert_refused(&m, "/dosageInstruction");
    let mut oo = operation_outcome();
    oo["issue"][0]["severity"] = json!("fatal-ish");
    assert_refused(&oo, "/issue/0/severity");
}

#[test]
fn a_bundle_whose_entry_is_bad_is_refused() {
    let mut bad = patient();
    bad["gender"] = json!("x");
    let bundle = searchset(vec![observation(), bad]);
    let errors = assert_refused(&bundle, "/entry/1/resource");
    println!("a bad entry:\n  {}", errors.join("\n  "));
    // The entry's own error says what is wrong with it.
    assert!(
        errors.iter().any(|e| e.starts_with("/entry/1/resource/gender: ")),
        "{errors:#?}"
    );
    // An entry that is no FHIR resource at all.
    let mut bundle = searchset(vec![observation()]);
    bundle["entry"][0]["resource"] = json!({ "resourceType": "Appointmentt", "id": "a" });
    assert_refused(&bundle, "/entry/0/resource/resourceType");
    // A bundle type that does not exist.
    let mut bundle = searchset(vec![observation()]);
    bundle["type"] = json!("search-set");
    assert_refused(&bundle, "/type");
}

#[test]
fn not_a_resource_is_refused() {
    assert_refused(&json!({ "id": "1" }), "/resourceType");
    assert_refused(&json!({ "resourceType": "Patients" }), "/resourceType");
    assert_refused(&json!({ "resourceType": 7 }), "/resourceType");
}

#[test]
fn validating_one_resource_is_fast() {
    let started = Instant::now();
    assert_valid(&observation());
    let first_observation = started.elapsed();
    let bundle = searchset((0..20).map(|_| observation()).collect());
    let started = Instant::now();
    assert_valid(&bundle);
    let first_bundle = started.elapsed();

    let rounds = 200;
    let measure = |resource: &Value| {
        assert_valid(resource); // compiled before the clock starts
        let started = Instant::now();
        for _ in 0..rounds {
            assert!(fhir_schema::validate(resource).is_ok());
        }
        started.elapsed() / rounds
    };
    let per_patient = measure(&patient());
    let per_observation = measure(&observation());
    let per_bundle = measure(&bundle);
    println!(
        "FHIR R4 schema validation: first Observation {first_observation:?} (schema load and compile), \
         first 20-entry Bundle {first_bundle:?} (compile); then per resource: \
         Patient {per_patient:?}, Observation {per_observation:?}, 20-entry searchset Bundle {per_bundle:?}"
    );
}
