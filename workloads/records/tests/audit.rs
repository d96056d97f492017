//! The audit trail of the records service: every read and write of a mix of operations
//! leaves its records under the request's correlation ID (`X-Correlation-ID`), refusals
//! leave none, and the country's hash chains verify (and stop verifying once a record is
//! changed or removed).

mod support;

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use meridian_shared::auth::Role;
use serde_json::{Value, json};
use support::{Harness, Reply, resources};
use uuid::Uuid;

struct Run<'a> {
    h: &'a Harness,
    /// The actions each correlation ID must have left, sorted.
    wanted: BTreeMap<Uuid, Vec<&'static str>>,
}

impl Run<'_> {
    /// Sends under a new correlation ID, wanting `status` and the audit `actions`.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
        status: StatusCode,
        actions: &[&'static str],
    ) -> Reply {
        let correlation_id = Uuid::new_v4();
        let id = correlation_id.to_string();
        let mut all = vec![("x-correlation-id", id.as_str())];
        all.extend_from_slice(headers);
        let reply = self.h.send(method.clone(), path, Some(token), &all, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {:#}", reply.body);
        let mut actions = actions.to_vec();
        actions.sort_unstable();
        self.wanted.insert(correlation_id, actions);
        reply
    }
}

#[tokio::test]
async fn every_access_is_audited_under_its_correlation_id_and_the_chains_verify() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let mut run = Run {
        h: &h,
        wanted: BTreeMap::new(),
    };
    let ok = StatusCode::OK;
    let mut anna = resources::patient("A123456789", "Müller");
    anna["extension"] = json!([{"url": meridian_records::validate::ACCOUNT_EXTENSION, "valueString": "patient-anna"}]);
    let p = run
        .send(
            Method::POST,
            "/de/v1/fhir/Patient",
            &dr,
            &[],
            Some(&anna),
            StatusCode::CREATED,
            &["patient.create"],
        )
        .await
        .id();
    let obs = resources::observation(&p, "8867-4", 72.0, "/min", "2026-11-02T09:10:00Z");
    let o = run
        .send(
            Method::POST,
            "/de/v1/fhir/Observation",
            &dr,
            &[],
            Some(&obs),
            StatusCode::CREATED,
            &["observation.create"],
        )
        .await;
    let (o, mut changed) = (o.id(), o.body);
    run.send(
        Method::GET,
        &format!("/de/v1/fhir/Patient/{p}"),
        &dr,
        &[],
        None,
        ok,
        &["patient.read"],
    )
    .await;
    changed["status"] = json!("amended");
    run.send(
        Method::PUT,
        &format!("/de/v1/fhir/Observation/{o}"),
        &dr,
        &[("if-match", "W/\"1\"")],
        Some(&changed),
        ok,
        &["observation.update"],
    )
    .await;
    run.send(
        Method::GET,
        &format!("/de/v1/fhir/Observation/{o}/_history/1"),
        &dr,
        &[],
        None,
        ok,
        &["observation.history"],
    )
    .await;
    run.send(
        Method::GET,
        &format!("/de/v1/fhir/Observation/{o}/_history"),
        &dr,
        &[],
        None,
        ok,
        &["observation.history"],
    )
    .await;
    run.send(
        Method::GET,
        &format!("/de/v1/fhir/Observation?patient={p}"),
        &dr,
        &[],
        None,
        ok,
        &["observation.search"],
    )
    .await;
    run.send(
        Method::GET,
        "/de/v1/fhir/Patient?family=mull",
        &dr,
        &[],
        None,
        ok,
        &["patient.search"],
    )
    .await;
    run.send(
        Method::GET,
        &format!("/de/v1/fhir/Patient/{p}/$everything"),
        &dr,
        &[],
        None,
        ok,
        &["patient.read", "patient.everything"],
    )
    .await;
    // A conditional create that finds the patient reads it.
    run.send(
        Method::POST,
        "/de/v1/fhir/Patient",
        &dr,
        &[("if-none-exist", "identifier=http://fhir.de/sid/gkv/kvid-10|A123456789")],
        Some(&resources::patient("A123456789", "Müller")),
        ok,
        &["patient.read"],
    )
    .await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0d3f4c1a-3b9e-4f3e-9a47-6c2d1e0b9a01", "resource": resources::patient("B987654321", "Schmidt"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:0d3f4c1a-3b9e-4f3e-9a47-6c2d1e0b9a02",
         "resource": {"resourceType": "Observation", "status": "final",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                      "subject": {"reference": "urn:uuid:0d3f4c1a-3b9e-4f3e-9a47-6c2d1e0b9a01"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]});
    run.send(
        Method::POST,
        "/de/v1/fhir",
        &dr,
        &[],
        Some(&bundle),
        ok,
        &["patient.create", "observation.create"],
    )
    .await;
    run.send(
        Method::DELETE,
        &format!("/de/v1/fhir/Observation/{o}"),
        &dr,
        &[],
        None,
        StatusCode::NO_CONTENT,
        &["observation.delete"],
    )
    .await;
    // The patient reads their own; refusals leave nothing.
    let patient = h.token("patient-anna", &[Role::Patient], &["DE"]);
    run.send(
        Method::GET,
        &format!("/de/v1/fhir/Patient/{p}"),
        &patient,
        &[],
        None,
        ok,
        &["patient.read"],
    )
    .await;
    run.send(
        Method::POST,
        "/de/v1/fhir/Observation",
        &patient,
        &[],
        Some(&obs),
        StatusCode::FORBIDDEN,
        &[],
    )
    .await;
    let admin = h.token("admin-1", &[Role::ClinicAdmin], &["DE"]);
    run.send(
        Method::GET,
        &format!("/de/v1/fhir/Patient/{p}"),
        &admin,
        &[],
        None,
        StatusCode::FORBIDDEN,
        &[],
    )
    .await;
    let unknown = Uuid::new_v4();
    run.send(
        Method::GET,
        &format!("/de/v1/fhir/Patient/{unknown}"),
        &dr,
        &[],
        None,
        StatusCode::NOT_FOUND,
        &[],
    )
    .await;
    run.send(
        Method::POST,
        "/de/v1/fhir/Observation",
        &dr,
        &[],
        Some(&resources::observation(
            &p,
            "8867-5",
            72.0,
            "/min",
            "2026-11-02T09:10:00Z",
        )),
        StatusCode::UNPROCESSABLE_ENTITY,
        &[],
    )
    .await;

    let rows: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT correlation_id, action, actor FROM audit WHERE country_code = 'DE'")
            .fetch_all(&h.admin)
            .await
            .unwrap();
    let mut found: BTreeMap<Uuid, Vec<&str>> = BTreeMap::new();
    for (correlation_id, action, actor) in &rows {
        assert!(
            run.wanted.contains_key(correlation_id),
            "a record under an ID no request sent: {action} by {actor}"
        );
        found.entry(*correlation_id).or_default().push(action.as_str());
    }
    for actions in found.values_mut() {
        actions.sort_unstable();
    }
    for (correlation_id, wanted) in &run.wanted {
        let got = found.get(correlation_id).cloned().unwrap_or_default();
        assert_eq!(&got, wanted, "the records of request {correlation_id}");
    }
    println!(
        "{} audit records under {} correlation IDs",
        rows.len(),
        run.wanted.len()
    );

    let mut conn = h.admin.acquire().await.unwrap();
    let checked = meridian_shared::audit::verify(&mut conn, "DE").await.unwrap();
    assert_eq!(checked, Ok(rows.len() as u64));

    // Its trigger refuses changes even to the superuser...
    let refused = sqlx::query("UPDATE audit SET actor = 'someone-else'")
        .execute(&mut *conn)
        .await;
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    // ...and a record changed behind it (triggers off) breaks the chain.
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE audit SET actor = 'someone-else' WHERE seq = (SELECT min(seq) FROM audit WHERE action = 'patient.read')")
        .execute(&mut *conn)
        .await
        .unwrap();
    let broken = meridian_shared::audit::verify(&mut conn, "DE").await.unwrap();
    assert!(broken.is_err(), "a changed record is found: {broken:?}");
}
