//! Cross-border records between two Regions, each its own PostgreSQL server and records
//! service, over HTTP: who may ask another Region for a patient (the calling service, the
//! clinician, their country and purpose), what the patient's Consent lets through, the
//! registrar keeping the PatientIndex in line with the patients' national IDs, lookups
//! rate-limited and audited, and a home Region out of reach answering a partial result in
//! bounded time, never a 500.

#[path = "support/fhir_schema.rs"]
mod fhir_schema;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use meridian_records::crossborder::peers::{AUDIENCE, CLINICIAN_HEADER, FROM_HEADER, PURPOSE_HEADER};
use meridian_records::crossborder::two_regions::{Options, TwoRegions};
use meridian_shared::auth::Role;
use serde_json::{Value, json};

const KVNR: &str = "http://fhir.de/sid/gkv/kvid-10";

/// Sends a request to the entry point; every FHIR answer is checked against the R4 schema.
async fn send(
    regions: &TwoRegions,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<axum::body::Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", regions.addr))
        .header("content-type", "application/fhir+json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = client.request(request.body(Full::from(body)).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !body.is_null()
        && let Err(errors) = fhir_schema::validate(&body)
    {
        panic!("{path}: not valid FHIR R4: {errors:?}\n{body:#}");
    }
    (status, body)
}

/// A French clinician's lookup (with `authorization`) of German national ID `kvnr`.
async fn lookup(regions: &TwoRegions, authorization: &str, kvnr: &str) -> (u16, Value) {
    let path = format!("/fr/v1/fhir/Patient?identifier={KVNR}|{kvnr}");
    send(regions, "GET", &path, &[("authorization", authorization)], None).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A German patient with national ID `kvnr`, an observation, and (unless `None`) a Consent
/// with `provision`; answers their id.
async fn german_patient(regions: &TwoRegions, kvnr: &str, provision: Option<Value>) -> String {
    let dr = bearer(&regions.clinician("dr-weber", "DE"));
    let auth = [("authorization", dr.as_str())];
    let patient = json!({"resourceType": "Patient", "identifier": [{"system": KVNR, "value": kvnr}],
        "name": [{"family": "Mustermann", "given": ["Erika"]}], "birthDate": "1964-08-12"});
    let (status, created) = send(regions, "POST", "/de/v1/fhir/Patient", &auth, Some(&patient)).await;
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().unwrap().to_string();
    let observation = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{id}")}, "effectiveDateTime": "2026-05-01T08:00:00Z",
        "valueQuantity": {"value": 64, "unit": "/min"}});
    assert_eq!(
        send(regions, "POST", "/de/v1/fhir/Observation", &auth, Some(&observation))
            .await
            .0,
        201
    );
    if let Some(provision) = provision {
        consent(regions, &id, provision, "2026-01-01T00:00:00Z").await;
    }
    id
}

async fn consent(regions: &TwoRegions, id: &str, provision: Value, at: &str) {
    let dr = bearer(&regions.clinician("dr-weber", "DE"));
    let body = json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{id}")}, "dateTime": at,
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": provision});
    let (status, answer) = send(
        regions,
        "POST",
        "/de/v1/fhir/Consent",
        &[("authorization", dr.as_str())],
        Some(&body),
    )
    .await;
    assert_eq!(status, 201, "{answer:#}");
}

fn permit() -> Value {
    json!({"type": "permit", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]})
}

/// Waits until the index holds `n` entries.
async fn registered(regions: &TwoRegions, n: i64) {
    let started = Instant::now();
    loop {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM mpi.entries")
            .fetch_one(&regions.index)
            .await
            .unwrap();
        if held == n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the index holds {held} entries, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn audited(regions: &TwoRegions, action: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT actor, resource FROM audit WHERE action = $1 ORDER BY seq")
        .bind(action)
        .fetch_all(&regions.frankfurt.admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_another_regions_records_service_on_behalf_of_its_clinician_may_ask() {
    let regions = TwoRegions::start(Options::default()).await.unwrap();
    let id = german_patient(&regions, "A100000001", Some(permit())).await;
    let path = format!("/de/v1/fhir/$disclose?patient={id}&scope=everything");
    let paris_service = regions.issuer.service_token(
        "system:serviceaccount:meridian-region-eu-west-3:records",
        AUDIENCE,
        Duration::from_secs(60),
    );
    let booking = regions.issuer.service_token(
        "system:serviceaccount:meridian-region-eu-west-3:booking",
        AUDIENCE,
        Duration::from_secs(60),
    );
    let french = regions.clinician("dr-martin", "FR");
    let german = regions.clinician("dr-weber", "DE");
    let french_patient = regions
        .issuer
        .token("jean", &[Role::Patient], &["FR"], Duration::from_secs(60));
    let service = bearer(&paris_service);
    let asks = |authorization: String, clinician: Option<String>, from: &str, purpose: &str| {
        let mut headers = vec![
            ("authorization".to_string(), authorization),
            (FROM_HEADER.to_string(), from.to_string()),
            (PURPOSE_HEADER.to_string(), purpose.to_string()),
        ];
        if let Some(c) = clinician {
            headers.push((CLINICIAN_HEADER.to_string(), c));
        }
        headers
    };
    let cases = [
        (
            "no service token",
            asks(String::new(), Some(french.clone()), "FR", "TREAT"),
            401,
        ),
        (
            "a clinician's token as the service's",
            asks(bearer(&french), Some(french.clone()), "FR", "TREAT"),
            401,
        ),
        (
            "booking, not records",
            asks(bearer(&booking), Some(french.clone()), "FR", "TREAT"),
            403,
        ),
        ("no clinician", asks(service.clone(), None, "FR", "TREAT"), 401),
        (
            "a clinician of another country",
            asks(service.clone(), Some(german.clone()), "FR", "TREAT"),
            403,
        ),
        (
            "a patient, not a clinician",
            asks(service.clone(), Some(french_patient.clone()), "FR", "TREAT"),
            403,
        ),
        ("no purpose", asks(service.clone(), Some(french.clone()), "FR", ""), 400),
        (
            "research is not a purpose here",
            asks(service.clone(), Some(french.clone()), "FR", "HRESCH"),
            400,
        ),
        (
            "from the patient's own country",
            asks(service.clone(), Some(german.clone()), "DE", "TREAT"),
            400,
        ),
        (
            "for treatment in France",
            asks(service.clone(), Some(french.clone()), "FR", "TREAT"),
            200,
        ),
    ];
    for (what, headers, expected) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, body) = send(&regions, "GET", &path, &headers, None).await;
        assert_eq!(status, expected, "{what}: {body:#}");
        if expected == 200 {
            let kinds: Vec<&str> = body["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"]["resourceType"].as_str().unwrap())
                .collect();
            assert_eq!(kinds, ["Patient", "Consent", "Observation"], "{what}: by date");
        } else {
            assert_eq!(body["resourceType"], "OperationOutcome", "{what}");
        }
    }
    // A patient deleted since their consent: nothing goes, and the chain says so.
    let dr = bearer(&regions.clinician("dr-weber", "DE"));
    let (status, _) = send(
        &regions,
        "DELETE",
        &format!("/de/v1/fhir/Patient/{id}"),
        &[("authorization", dr.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 204);
    let good = asks(service.clone(), Some(french.clone()), "FR", "TREAT");
    let headers: Vec<(&str, &str)> = good.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, body) = send(&regions, "GET", &path, &headers, None).await;
    assert_eq!(
        (status, body["resourceType"].as_str()),
        (410, Some("OperationOutcome")),
        "{body:#}"
    );
    let failed = audited(&regions, "patient.disclose-failed").await;
    assert!(
        failed.len() == 1 && failed[0].1.contains("nothing disclosed"),
        "{failed:?}"
    );

    let disclosed = audited(&regions, "patient.disclose").await;
    assert_eq!(
        disclosed.len(),
        2,
        "the permitted one, then the one that found nothing: {disclosed:?}"
    );
    assert_eq!(disclosed[0].0, "dr-martin");
    assert!(
        disclosed[0]
            .1
            .contains("to FR for TREAT via system:serviceaccount:meridian-region-eu-west-3:records"),
        "{disclosed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_patients_consent_decides_what_goes_abroad() {
    let regions = TwoRegions::start(Options::default()).await.unwrap();
    let none = german_patient(&regions, "B100000001", None).await;
    let denied = german_patient(&regions, "B100000002", Some(json!({"type": "deny"}))).await;
    let emergencies_only = german_patient(
        &regions,
        "B100000003",
        Some(json!({"type": "permit", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT"}]})),
    )
    .await;
    let expired = german_patient(
        &regions,
        "B100000004",
        Some(json!({"type": "permit", "period": {"start": "2020-01-01", "end": "2021-01-01"}})),
    )
    .await;
    let withdrawn = german_patient(&regions, "B100000005", Some(permit())).await;
    consent(&regions, &withdrawn, json!({"type": "deny"}), "2026-03-01T00:00:00Z").await;
    let permitted = german_patient(&regions, "B100000006", Some(permit())).await;
    registered(&regions, 6).await;
    let paris = bearer(&regions.clinician("dr-martin", "FR"));
    for (kvnr, id, expected, why) in [
        ("B100000001", &none, 403, "no active Consent"),
        ("B100000002", &denied, 403, "does not permit"),
        ("B100000003", &emergencies_only, 403, "for ETREAT only"),
        ("B100000004", &expired, 403, "not in force"),
        ("B100000005", &withdrawn, 403, "does not permit"),
        ("B100000006", &permitted, 200, ""),
    ] {
        let (status, body) = lookup(&regions, &paris, kvnr).await;
        assert_eq!(status, expected, "{kvnr}: {body:#}");
        if expected == 403 {
            let said = body["issue"][0]["diagnostics"].as_str().unwrap();
            assert!(said.contains("DE refused") && said.contains(why), "{kvnr}: {said}");
        } else {
            assert_eq!(body["entry"][0]["resource"]["id"], id.as_str());
        }
    }
    // Asked for emergency treatment, the ETREAT consent lets the records through.
    let (status, _) = send(
        &regions,
        "GET",
        &format!("/fr/v1/fhir/Patient?identifier={KVNR}|B100000003"),
        &[("authorization", paris.as_str()), (PURPOSE_HEADER, "ETREAT")],
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Each refusal is in Germany's chain too.
    assert_eq!(audited(&regions, "patient.disclose-refused").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_index_follows_the_patients_national_ids() {
    let regions = TwoRegions::start(Options::default()).await.unwrap();
    let dr = bearer(&regions.clinician("dr-weber", "DE"));
    let auth = [("authorization", dr.as_str())];
    let id = german_patient(&regions, "C100000001", Some(permit())).await;
    // A patient without a national ID is not indexed.
    let anonymous = json!({"resourceType": "Patient", "name": [{"family": "Ohne"}]});
    assert_eq!(
        send(&regions, "POST", "/de/v1/fhir/Patient", &auth, Some(&anonymous))
            .await
            .0,
        201
    );
    registered(&regions, 1).await;
    let before: Vec<u8> = sqlx::query_scalar("SELECT hash FROM mpi.entries")
        .fetch_one(&regions.index)
        .await
        .unwrap();

    // The number changes: the entry follows, the old number finds nobody.
    let (_, current) = send(&regions, "GET", &format!("/de/v1/fhir/Patient/{id}"), &auth, None).await;
    let mut changed = current.clone();
    changed["identifier"][0]["value"] = json!("C100000002");
    let (status, body) = send(
        &regions,
        "PUT",
        &format!("/de/v1/fhir/Patient/{id}"),
        &[("authorization", dr.as_str()), ("if-match", "W/\"1\"")],
        Some(&changed),
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    let started = Instant::now();
    loop {
        let now: Vec<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM mpi.entries")
            .fetch_all(&regions.index)
            .await
            .unwrap();
        if now.len() == 1 && now[0] != before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the entry did not follow the change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paris = bearer(&regions.clinician("dr-martin", "FR"));
    let (_, old) = lookup(&regions, &paris, "C100000001").await;
    assert!(old["entry"].is_null(), "{old:#}");
    let (_, new) = lookup(&regions, &paris, "C100000002").await;
    assert_eq!(new["entry"][0]["resource"]["id"], id.as_str());

    // Deleted: out of the index.
    assert_eq!(
        send(&regions, "DELETE", &format!("/de/v1/fhir/Patient/{id}"), &auth, None)
            .await
            .0,
        204
    );
    registered(&regions, 0).await;

    // Nothing the index holds is a raw ID or names anyone.
    let raw: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mpi.entries e WHERE e::text LIKE '%C1000000%' OR e::text ILIKE '%Mustermann%'",
    )
    .fetch_one(&regions.index)
    .await
    .unwrap();
    assert_eq!(raw, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_are_rate_limited_per_clinician_and_audited_hit_or_miss() {
    let regions = TwoRegions::start(Options::default()).await.unwrap();
    german_patient(&regions, "D100000001", Some(permit())).await;
    registered(&regions, 1).await;
    let paris = bearer(&regions.clinician("dr-martin", "FR"));
    let limit = meridian_records::crossborder::LOOKUPS_PER_WINDOW as usize;
    for i in 0..limit {
        let kvnr = if i == 0 {
            "D100000001".to_string()
        } else {
            format!("E{i:09}")
        };
        let (status, body) = lookup(&regions, &paris, &kvnr).await;
        assert_eq!(status, 200, "{i}: {body:#}");
    }
    let (status, body) = lookup(&regions, &paris, "F000000001").await;
    assert_eq!(status, 429, "{body:#}");
    assert_eq!(body["issue"][0]["code"], "throttled");
    // Another clinician is not held back.
    let other = bearer(&regions.clinician("dr-bernard", "FR"));
    let (status, _) = lookup(&regions, &other, "F000000001").await;
    assert_eq!(status, 200);
    // A number that is not one is refused before it is hashed.
    let (status, body) = lookup(&regions, &other, "12345").await;
    assert_eq!(
        (status, body["issue"][0]["expression"][0].as_str()),
        (400, Some("identifier")),
        "{body:#}"
    );

    let lookups: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, resource FROM audit WHERE action = 'patient.lookup-abroad' ORDER BY seq")
            .fetch_all(&regions.paris.admin)
            .await
            .unwrap();
    assert_eq!(lookups.len(), limit + 1, "every lookup made, and only those");
    assert_eq!(lookups.iter().filter(|(_, r)| r.ends_with(": hit")).count(), 1);
    assert!(
        lookups
            .iter()
            .all(|(_, r)| !r.contains("D100000001") && !r.contains("E0000")),
        "{lookups:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_home_region_out_of_reach_leaves_a_partial_answer_in_bounded_time() {
    // Paris reaches other Regions at an address where a server accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let timeout = Duration::from_millis(800);
    let regions = TwoRegions::start(Options {
        timeout,
        peer_url: Some(format!("http://{}", silent.local_addr().unwrap())),
        ..Options::default()
    })
    .await
    .unwrap();
    german_patient(&regions, "G100000001", Some(permit())).await;
    registered(&regions, 1).await;
    let paris = bearer(&regions.clinician("dr-martin", "FR"));
    // France holds its own record of the traveller, under the German number.
    let local = json!({"resourceType": "Patient", "identifier": [{"system": KVNR, "value": "G100000001"}],
        "name": [{"family": "Mustermann"}]});
    let (status, _) = send(
        &regions,
        "POST",
        "/fr/v1/fhir/Patient",
        &[("authorization", paris.as_str())],
        Some(&local),
    )
    .await;
    assert_eq!(status, 201);
    let started = Instant::now();
    let (status, body) = lookup(&regions, &paris, "G100000001").await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body:#}");
    assert!(took < timeout + Duration::from_secs(1), "answered after {took:?}");
    let entries = body["entry"].as_array().unwrap();
    assert_eq!(entries[0]["resource"]["resourceType"], "Patient");
    assert_eq!(entries[0]["resource"]["meta"]["tag"][0]["code"], "FR");
    let outcome = &entries.last().unwrap()["resource"];
    assert_eq!(
        (outcome["resourceType"].as_str(), outcome["issue"][0]["code"].as_str()),
        (Some("OperationOutcome"), Some("incomplete"))
    );
    assert!(
        outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("DE"),
        "{outcome:#}"
    );
    drop(silent);
}
