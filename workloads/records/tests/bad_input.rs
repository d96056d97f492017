//! Bad input gets a precise OperationOutcome (status, `issue.code`, and `issue.expression`
//! naming the element where there is one) and writes nothing: every table of the records
//! service has the rows it had before.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Harness, Reply, resources};

/// What a refusal must say.
struct Wanted<'a> {
    status: StatusCode,
    code: &'a str,
    expression: Option<&'a str>,
}

fn refused(what: &str, reply: &Reply, wanted: Wanted<'_>) {
    assert_eq!(reply.status, wanted.status, "{what}: {:#}", reply.body);
    assert_eq!(
        reply.body["resourceType"], "OperationOutcome",
        "{what}: {:#}",
        reply.body
    );
    assert_eq!(reply.body["issue"][0]["severity"], "error", "{what}");
    assert_eq!(reply.body["issue"][0]["code"], wanted.code, "{what}: {:#}", reply.body);
    assert_eq!(reply.expression(), wanted.expression, "{what}: {:#}", reply.body);
    assert!(!reply.diagnostics().is_empty(), "{what}: says why");
}

const fn wanted(status: StatusCode, code: &'static str, expression: Option<&'static str>) -> Wanted<'static> {
    Wanted {
        status,
        code,
        expression,
    }
}

struct World {
    h: Harness,
    dr: String,
    patient: String,
    observation: String,
}

async fn world() -> World {
    let h = Harness::start(&["DE", "FR"]).await;
    let dr = h.clinician("DE");
    let patient = h
        .post("/de/v1/fhir/Patient", &dr, &resources::patient("A123456789", "Müller"))
        .await;
    assert_eq!(patient.status, StatusCode::CREATED);
    let patient = patient.id();
    let observation = h
        .post(
            "/de/v1/fhir/Observation",
            &dr,
            &resources::observation(&patient, "8867-4", 72.0, "/min", "2026-11-02T09:10:00+01:00"),
        )
        .await;
    assert_eq!(observation.status, StatusCode::CREATED);
    World {
        observation: observation.id(),
        h,
        dr,
        patient,
    }
}

impl World {
    fn pulse(&self) -> Value {
        resources::observation(&self.patient, "8867-4", 80.0, "/min", "2026-11-03T09:10:00+01:00")
    }

    async fn current(&self) -> Value {
        self.h
            .get(&format!("/de/v1/fhir/Observation/{}", self.observation), &self.dr)
            .await
            .body
    }

    /// Sends, then checks the refusal and that nothing was written.
    async fn refuses(
        &self,
        what: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        wanted: Wanted<'_>,
    ) -> Reply {
        let before = self.h.counts().await;
        let reply = self.h.send_bytes(method, path, Some(&self.dr), headers, body).await;
        refused(what, &reply, wanted);
        assert_eq!(before, self.h.counts().await, "{what}: wrote nothing");
        reply
    }
}

fn json_bytes(value: &Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn bad_requests_are_refused_precisely_and_write_nothing() {
    let w = world().await;
    let obs_path = format!("/de/v1/fhir/Observation/{}", w.observation);

    let reply = w
        .refuses(
            "malformed JSON",
            Method::POST,
            "/de/v1/fhir/Observation",
            &[],
            Some(br#"{"resourceType": "Observation", "status": "final",,}"#.to_vec()),
            wanted(StatusCode::BAD_REQUEST, "structure", None),
        )
        .await;
    assert!(reply.diagnostics().contains("line 1 column"), "{}", reply.diagnostics());

    w.refuses(
        "unknown resourceType in the body",
        Method::POST,
        "/de/v1/fhir/Observation",
        &[],
        json_bytes(&json!({"resourceType": "Specimen", "status": "available"})),
        wanted(StatusCode::BAD_REQUEST, "not-supported", Some("resourceType")),
    )
    .await;
    w.refuses(
        "unknown resource type in the URL",
        Method::POST,
        "/de/v1/fhir/Specimen",
        &[],
        json_bytes(&json!({"resourceType": "Specimen"})),
        wanted(StatusCode::NOT_FOUND, "not-supported", None),
    )
    .await;
    w.refuses(
        "the body's resourceType is not the URL's",
        Method::POST,
        "/de/v1/fhir/Observation",
        &[],
        json_bytes(&resources::patient("A123456780", "Schulz")),
        wanted(StatusCode::BAD_REQUEST, "invalid", Some("resourceType")),
    )
    .await;
    w.refuses(
        "no resourceType",
        Method::POST,
        "/de/v1/fhir/Observation",
        &[],
        json_bytes(&json!({"status": "final"})),
        wanted(StatusCode::BAD_REQUEST, "required", Some("resourceType")),
    )
    .await;
    w.refuses(
        "an unknown element",
        Method::POST,
        "/de/v1/fhir/Observation",
        &[],
        json_bytes(&{
            let mut o = w.pulse();
            o["colour"] = json!("red");
            o
        }),
        wanted(StatusCode::BAD_REQUEST, "structure", Some("Observation.colour")),
    )
    .await;

    // Updates: the id, If-Match.
    let mut changed = w.current().await;
    changed["status"] = json!("amended");
    let mut other_id = changed.clone();
    other_id["id"] = json!(uuid::Uuid::new_v4().to_string());
    w.refuses(
        "an id in the body that is not the URL's",
        Method::PUT,
        &obs_path,
        &[("if-match", "W/\"1\"")],
        json_bytes(&other_id),
        wanted(StatusCode::BAD_REQUEST, "invalid", Some("Observation.id")),
    )
    .await;
    w.refuses(
        "an update without If-Match",
        Method::PUT,
        &obs_path,
        &[],
        json_bytes(&changed),
        wanted(StatusCode::PRECONDITION_REQUIRED, "required", None),
    )
    .await;
    w.refuses(
        "a stale If-Match",
        Method::PUT,
        &obs_path,
        &[("if-match", "W/\"7\"")],
        json_bytes(&changed),
        wanted(StatusCode::PRECONDITION_FAILED, "conflict", None),
    )
    .await;
    let updated = w.h.put(&obs_path, &w.dr, "W/\"1\"", &changed).await;
    assert_eq!(
        updated.status,
        StatusCode::OK,
        "the same update with the right version passes"
    );
    w.refuses(
        "If-Match of the version before",
        Method::PUT,
        &obs_path,
        &[("if-match", "W/\"1\"")],
        json_bytes(&changed),
        wanted(StatusCode::PRECONDITION_FAILED, "conflict", None),
    )
    .await;

    // Media types.
    for media in ["text/plain", "application/xml", "application/fhir+xml"] {
        w.refuses(
            media,
            Method::POST,
            "/de/v1/fhir/Observation",
            &[("content-type", media)],
            json_bytes(&w.pulse()),
            wanted(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", None),
        )
        .await;
    }

    // Content rules.
    w.refuses(
        "an invalid LOINC check digit",
        Method::POST,
        "/de/v1/fhir/Observation",
        &[],
        json_bytes(&resources::observation(
            &w.patient,
            "8867-5",
            72.0,
            "/min",
            "2026-11-02T09:10:00+01:00",
        )),
        wanted(
            StatusCode::UNPROCESSABLE_ENTITY,
            "value",
            Some("Observation.code.coding[0].code"),
        ),
    )
    .await;
    w.refuses(
        "a national ID that is not DE's Krankenversichertennummer",
        Method::POST,
        "/de/v1/fhir/Patient",
        &[],
        json_bytes(&resources::patient("12345", "Schulz")),
        wanted(
            StatusCode::UNPROCESSABLE_ENTITY,
            "value",
            Some("Patient.identifier[0].value"),
        ),
    )
    .await;
    let mut child = resources::patient("C123456789", "Klein");
    let ten_years_ago = chrono::Utc::now().date_naive() - chrono::Days::new(10 * 365);
    child["birthDate"] = json!(ten_years_ago.to_string());
    child["extension"] = json!([{"url": meridian_records::validate::ACCOUNT_EXTENSION, "valueString": "child-1"}]);
    let reply = w
        .refuses(
            "a child (under DE's minimumAge 16) holding their own account",
            Method::POST,
            "/de/v1/fhir/Patient",
            &[],
            json_bytes(&child),
            wanted(
                StatusCode::UNPROCESSABLE_ENTITY,
                "business-rule",
                Some("Patient.extension[0]"),
            ),
        )
        .await;
    assert!(reply.diagnostics().contains("16"), "{}", reply.diagnostics());
    // Without the account the child is recorded.
    child.as_object_mut().unwrap().remove("extension");
    assert_eq!(
        w.h.post("/de/v1/fhir/Patient", &w.dr, &child).await.status,
        StatusCode::CREATED
    );

    // A reference to a patient of another country.
    let fr = w.h.clinician("FR");
    let mut french = resources::patient("1840675123456", "Dupont");
    french["identifier"] = json!([]);
    let french = w.h.post("/fr/v1/fhir/Patient", &fr, &french).await;
    assert_eq!(french.status, StatusCode::CREATED, "{:#}", french.body);
    let french = french.id();
    w.refuses(
        "a DE observation of a FR patient",
        Method::POST,
        "/de/v1/fhir/Observation",
        &[],
        json_bytes(&resources::observation(
            &french,
            "8867-4",
            72.0,
            "/min",
            "2026-11-02T09:10:00+01:00",
        )),
        wanted(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-found",
            Some("Observation.subject.reference"),
        ),
    )
    .await;
    assert_eq!(
        w.h.get(&format!("/de/v1/fhir/Patient/{french}"), &w.dr).await.status,
        StatusCode::NOT_FOUND,
        "not readable from DE either"
    );

    // Search parameters.
    w.refuses(
        "an unknown search parameter",
        Method::GET,
        "/de/v1/fhir/Observation?colour=red",
        &[],
        None,
        wanted(StatusCode::BAD_REQUEST, "invalid", Some("colour")),
    )
    .await;
    let lenient =
        w.h.send(
            Method::GET,
            &format!("/de/v1/fhir/Observation?colour=red&patient={}", w.patient),
            Some(&w.dr),
            &[("prefer", "handling=lenient")],
            None,
        )
        .await;
    assert_eq!(lenient.status, StatusCode::OK, "{:#}", lenient.body);
    let entries = lenient.entries();
    let matches = entries.iter().filter(|e| e["search"]["mode"] == "match").count();
    assert_eq!(matches, 1, "the known parameters still apply: {:#}", lenient.body);
    let outcome = entries
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("an outcome entry");
    assert_eq!(outcome["resource"]["resourceType"], "OperationOutcome");
    assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
    assert!(
        outcome["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    assert!(
        !lenient.body["link"][0]["url"].as_str().unwrap().contains("colour"),
        "the self link names what was applied: {:#}",
        lenient.body["link"]
    );
}

fn entry(full_url: &str, resource: Value, method: &str, url: &str) -> Value {
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": method, "url": url}})
}

#[tokio::test]
async fn bad_bundles_are_refused_whole_and_write_nothing() {
    let w = world().await;
    // Over the limit.
    let entries: Vec<Value> = (0..1001)
        .map(|i| {
            entry(
                &format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                w.pulse(),
                "POST",
                "Observation",
            )
            .tap(i)
        })
        .collect();
    w.refuses(
        "1001 entries",
        Method::POST,
        "/de/v1/fhir",
        &[],
        json_bytes(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})),
        wanted(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", Some("Bundle.entry")),
    )
    .await;

    // An entry that is wrong in itself: nothing is written, the entry's element is named.
    let patient_url = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let mut bad_code = resources::observation("x", "8867-5", 72.0, "/min", "2026-11-02T09:10:00+01:00");
    bad_code["subject"]["reference"] = json!(patient_url);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(&patient_url, resources::patient("D123456789", "Neu"), "POST", "Patient"),
        entry(&format!("urn:uuid:{}", uuid::Uuid::new_v4()), bad_code, "POST", "Observation"),
    ]});
    w.refuses(
        "a bad LOINC code in entry 1",
        Method::POST,
        "/de/v1/fhir",
        &[],
        json_bytes(&bundle),
        wanted(
            StatusCode::UNPROCESSABLE_ENTITY,
            "value",
            Some("Bundle.entry[1].resource.code.coding[0].code"),
        ),
    )
    .await;

    // An entry in the middle that fails when it is written (its patient is not one of DE's):
    // the entries processed before it are rolled back.
    let patient_url = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let mut first = w.pulse();
    first["subject"]["reference"] = json!(patient_url);
    let mut encounter = resources::encounter("x", "2026-11-02T09:00:00+01:00");
    encounter["subject"]["reference"] = json!(patient_url);
    let stray = resources::observation(
        &uuid::Uuid::new_v4().to_string(),
        "8867-4",
        72.0,
        "/min",
        "2026-11-02T09:10:00+01:00",
    );
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(&patient_url, resources::patient("E123456789", "Neumann"), "POST", "Patient"),
        entry(&format!("urn:uuid:{}", uuid::Uuid::new_v4()), first, "POST", "Observation"),
        entry(&format!("urn:uuid:{}", uuid::Uuid::new_v4()), stray, "POST", "Observation"),
        entry(&format!("urn:uuid:{}", uuid::Uuid::new_v4()), encounter, "POST", "Encounter"),
    ]});
    w.refuses(
        "an observation of an unknown patient in entry 2",
        Method::POST,
        "/de/v1/fhir",
        &[],
        json_bytes(&bundle),
        wanted(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-found",
            Some("Bundle.entry[2].resource.subject.reference"),
        ),
    )
    .await;
    let found =
        w.h.get(
            "/de/v1/fhir/Patient?identifier=http://fhir.de/sid/gkv/kvid-10|E123456789",
            &w.dr,
        )
        .await;
    assert!(found.entries().is_empty(), "the patient of entry 0 was rolled back");

    // A stale ifMatch in the middle.
    let current = w.current().await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(&format!("urn:uuid:{}", uuid::Uuid::new_v4()), w.pulse(), "POST", "Observation"),
        {"resource": current, "request": {"method": "PUT", "url": format!("Observation/{}", w.observation), "ifMatch": "W/\"9\""}},
        entry(&format!("urn:uuid:{}", uuid::Uuid::new_v4()), w.pulse(), "POST", "Observation"),
    ]});
    w.refuses(
        "a stale ifMatch in entry 1",
        Method::POST,
        "/de/v1/fhir",
        &[],
        json_bytes(&bundle),
        wanted(StatusCode::PRECONDITION_FAILED, "conflict", Some("Bundle.entry[1]")),
    )
    .await;

    // Not a transaction, or not a Bundle.
    w.refuses(
        "a batch",
        Method::POST,
        "/de/v1/fhir",
        &[],
        json_bytes(&json!({"resourceType": "Bundle", "type": "batch", "entry": []})),
        wanted(StatusCode::BAD_REQUEST, "not-supported", Some("Bundle.type")),
    )
    .await;
    w.refuses(
        "a Patient posted to the base",
        Method::POST,
        "/de/v1/fhir",
        &[],
        json_bytes(&resources::patient("F123456789", "Basis")),
        wanted(StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("Bundle.resourceType")),
    )
    .await;
}

trait Tap {
    fn tap(self, i: usize) -> Self;
}

impl Tap for Value {
    /// Tells the entries apart.
    fn tap(mut self, i: usize) -> Self {
        self["resource"]["valueQuantity"]["value"] = json!(i);
        self
    }
}
