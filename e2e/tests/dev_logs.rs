//! Logs and traces of `meridian dev`, as an operator of the platform sees them: run with
//! `--log-format json`, debug logs of Meridian's own crates, and an OTLP/HTTP collector (a
//! receiver this test runs on 127.0.0.1). A clinician records a German patient (name,
//! Krankenversichertennummer, e-mail, phone, address, birth date), searches and reads them,
//! sends a bad request or two, and a French clinician looks the patient up across the border.
//!
//! Then: every log line is a JSON object, and no log line and no exported span holds any of
//! the patient's personal data or a bearer token. A request sent with a W3C `traceparent` and
//! an `X-Correlation-ID` yields a server span in that trace, child of the caller's span, with
//! the route template and the correlation ID; the cross-border lookup is one trace: France's
//! server span, its client call, and Germany's `$disclose` server span as that call's child.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use meridian_e2e::{Dev, condition, http};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};

const KVNR: &str = "http://fhir.de/sid/gkv/kvid-10";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const CROSSBORDER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CROSSBORDER_CALLER: &str = "b7ad6b7169203331";

/// What the collector received: each export's raw body.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Bytes>>>);

impl Received {
    fn spans(&self) -> Vec<(String, Span)> {
        let bodies = self.0.lock().unwrap().clone();
        let mut spans = Vec::new();
        for body in bodies {
            let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
                }
            }
        }
        spans
    }

    /// Every export as text, for scanning (protobuf keeps strings as they are).
    fn text(&self) -> String {
        let bodies = self.0.lock().unwrap();
        bodies.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
    }
}

fn text(value: &Any) -> Option<String> {
    match value {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on a free port of 127.0.0.1: `POST /v1/traces`.
async fn collector() -> (std::net::SocketAddr, Received) {
    let received = Received::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.0.lock().unwrap().push(body);
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_and_traces_carry_no_personal_data_and_follow_the_callers_trace() {
    let (collector, received) = collector().await;
    let endpoint = format!("http://{collector}");
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    meridian_e2e::copy_dir(&meridian_e2e::examples(), &manifests);
    let mut dev = Dev::start_with(
        &manifests,
        &work.path().join("data"),
        &["--log-format", "json"],
        &[
            ("RUST_LOG", "info,meridian=debug"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    for country in ["de", "fr"] {
        dev.await_ready(country, Duration::from_secs(180));
    }
    let index = "/apis/platform.meridian.dev/v1alpha1/patientindexes/global";
    dev.wait_for("PatientIndex global Ready", Duration::from_secs(60), |dev| {
        condition(&dev.get(index).1, "Ready") == Some("True")
    });

    let berlin = dev.bearer_for("dr-weber", "Practitioner", "DE");
    let paris = dev.bearer_for("dr-lefevre", "Practitioner", "FR");
    let de = [("Authorization", berlin.as_str())];

    // The personal data: none of it may reach a log line or a span.
    let (family, given, kvnr, printed_kvnr) = ("Zwetschgenbaum", "Hildegard", "X314159265", "x 314-159-265");
    let (email, phone, street, birth) = (
        "hildegard.zwetschgenbaum@example.de",
        "+49 30 5550172",
        "Kastanienallee 77",
        "1961-07-21",
    );
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": KVNR, "value": kvnr}],
        "name": [{"family": family, "given": [given]}],
        "telecom": [{"system": "email", "value": email}, {"system": "phone", "value": phone}],
        "address": [{"line": [street], "city": "Berlin", "postalCode": "10435", "country": "DE"}],
        "birthDate": birth,
    });
    let (status, created) = http(dev.addr, "POST", "/de/v1/fhir/Patient", &de, Some(&patient));
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().unwrap().to_string();
    let consent = json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{id}")}, "dateTime": "2025-01-10T10:00:00+01:00",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "permit",
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]}});
    let (status, body) = http(dev.addr, "POST", "/de/v1/fhir/Consent", &de, Some(&consent));
    assert_eq!(status, 201, "{body:#}");

    // Searches that carry the personal data in their queries, and requests that are refused.
    for query in [
        format!("identifier={KVNR}|{kvnr}"),
        format!("family={family}"),
        format!("birthdate={birth}"),
        format!("name={given}"),
    ] {
        let (status, body) = http(dev.addr, "GET", &format!("/de/v1/fhir/Patient?{query}"), &de, None);
        assert_eq!(status, 200, "{query}: {body:#}");
    }
    let malformed_id = json!({"resourceType": "Patient",
        "identifier": [{"system": KVNR, "value": "X3141"}],
        "name": [{"family": family, "given": [given]}],
        "telecom": [{"system": "email", "value": email}]});
    let (status, body) = http(dev.addr, "POST", "/de/v1/fhir/Patient", &de, Some(&malformed_id));
    assert_eq!(status, 422, "{body:#}");
    let (status, _) = http(
        dev.addr,
        "GET",
        &format!("/de/v1/fhir/Patient?identifier={KVNR}|{kvnr}"),
        &[("Authorization", "Bearer not-a-token")],
        None,
    );
    assert_eq!(status, 401);

    // A read in the caller's trace, with its correlation ID.
    let correlation = uuid::Uuid::new_v4().to_string();
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let (status, read) = http(
        dev.addr,
        "GET",
        &format!("/de/v1/fhir/Patient/{id}"),
        &[
            ("Authorization", berlin.as_str()),
            ("traceparent", traceparent.as_str()),
            ("X-Correlation-ID", correlation.as_str()),
        ],
        None,
    );
    assert_eq!(status, 200, "{read:#}");

    // France: the number as printed on the card, in another trace of the caller's.
    let crossborder = format!("00-{CROSSBORDER_TRACE}-{CROSSBORDER_CALLER}-01");
    let fr = [("Authorization", paris.as_str()), ("traceparent", crossborder.as_str())];
    let search = format!("/fr/v1/fhir/Patient?identifier={KVNR}|x%20314-159-265");
    let mut found = Value::Null;
    dev.wait_for("the patient found from France", Duration::from_secs(60), |dev| {
        let (status, body) = http(dev.addr, "GET", &search, &fr, None);
        found = body;
        status == 200 && found["entry"].as_array().is_some_and(|e| e.len() == 1)
    });
    assert_eq!(found["entry"][0]["resource"]["name"][0]["family"], family);

    let (status, logs) = dev.interrupt_logs();
    assert!(status.success(), "{logs}");

    // The logs: JSON objects, one per line, holding nothing personal.
    let secrets = [
        family,
        given,
        kvnr,
        printed_kvnr,
        "x%20314-159-265",
        email,
        phone,
        "5550172",
        street,
        birth,
        berlin.trim_start_matches("Bearer "),
        paris.trim_start_matches("Bearer "),
    ];
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 10, "too few log lines to prove anything:\n{logs}");
    for line in &lines {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(object.get(key).is_some(), "no {key}: {line}");
        }
        let lower = line.to_lowercase();
        for secret in secrets {
            assert!(
                !lower.contains(&secret.to_lowercase()),
                "{secret:?} in a log line: {line}"
            );
        }
    }

    // The spans: none holds anything personal either.
    let exported = received.text().to_lowercase();
    for secret in secrets {
        assert!(
            !exported.contains(&secret.to_lowercase()),
            "{secret:?} in an exported span"
        );
    }
    let spans = received.spans();
    assert!(
        spans.iter().all(|(service, _)| service == "meridian-dev"),
        "service.name"
    );

    // The read: a server span in the caller's trace, under the caller's span.
    let read = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| hex(&s.trace_id) == TRACE && s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no server span in trace {TRACE}: {:#?}", spans.len()));
    assert_eq!(hex(&read.parent_span_id), CALLER_SPAN);
    assert_eq!(read.name, "GET /{cc}/v1/fhir/{resource_type}/{id}");
    assert_eq!(
        attribute(read, "http.route").as_deref(),
        Some("/{cc}/v1/fhir/{resource_type}/{id}")
    );
    assert_eq!(attribute(read, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attribute(read, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(
        attribute(read, "meridian.correlation_id").as_deref(),
        Some(correlation.as_str())
    );

    // The lookup abroad: one trace through France's records service and Germany's.
    let trace: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == CROSSBORDER_TRACE)
        .collect();
    let german = trace
        .iter()
        .find(|s| {
            s.kind == SpanKind::Server as i32
                && attribute(s, "http.route").as_deref() == Some("/{cc}/v1/fhir/$disclose")
        })
        .unwrap_or_else(|| {
            let all: Vec<(String, &str, i32)> = spans
                .iter()
                .filter(|(_, s)| s.name.contains("fhir") || s.name.contains("disclose"))
                .map(|(_, s)| (hex(&s.trace_id), s.name.as_str(), s.kind))
                .collect();
            panic!("no German $disclose server span: {trace:#?}\n{all:#?}")
        });
    let call = trace
        .iter()
        .find(|s| s.span_id == german.parent_span_id && s.kind == SpanKind::Client as i32)
        .unwrap_or_else(|| panic!("Germany's span is no child of France's call: {trace:#?}"));
    assert_eq!(
        attribute(call, "meridian.correlation_id"),
        attribute(german, "meridian.correlation_id"),
        "the correlation ID travels with the call"
    );
    // France's call is made while serving the clinician's request, under the caller's span.
    let mut french = *call;
    while french.kind != SpanKind::Server as i32 {
        french = *trace
            .iter()
            .find(|s| s.span_id == french.parent_span_id)
            .unwrap_or_else(|| panic!("France's call is outside a server span: {trace:#?}"));
    }
    assert_eq!(hex(&french.parent_span_id), CROSSBORDER_CALLER);
    assert_eq!(
        attribute(french, "http.route").as_deref(),
        Some("/{cc}/v1/fhir/{resource_type}")
    );
}
