//! What the records tests share: a real PostgreSQL with the platform schema and the
//! Region's roles (clinical and vault, with exactly the privileges the schema grants them),
//! the records app connected as those roles, tokens from a local issuer, and requests whose
//! FHIR answers are all checked against the official R4 JSON schema.
#![allow(dead_code)]

#[path = "fhir_schema.rs"]
pub mod fhir_schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use meridian_crds::Country;
use meridian_crds::serving::Serving;
use meridian_localpg::TempCluster;
use meridian_records::http::{Countries, CountryEntry, Service, app};
use meridian_records::keys::{self, Keyring};
use meridian_records::roles::{as_login, create_login};
use meridian_records::validate::Rules;
use meridian_shared::auth::{DevIssuer, Role};
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

pub const CLINICAL: &str = "records_clinical";
pub const VAULT: &str = "records_vault";

pub struct Harness {
    pub pg: TempCluster,
    pub app: axum::Router,
    pub issuer: DevIssuer,
    /// As the superuser: for reading raw tables in tests.
    pub admin: PgPool,
    pub clinical: PgPool,
    pub vault: PgPool,
    pub keys: BTreeMap<String, String>,
    pub countries: Countries,
}

/// The Country of `examples/countries/{cc}.yaml`.
pub fn example(cc: &str) -> Country {
    let path = format!("{}/../../examples/countries/{cc}.yaml", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

impl Harness {
    /// Records for `codes` (examples), all Ready.
    pub async fn start(codes: &[&str]) -> Self {
        let pg = TempCluster::start().await.expect("start PostgreSQL");
        let admin = PgPool::connect(&pg.url()).await.unwrap();
        {
            let mut conn = admin.acquire().await.unwrap();
            let upper: Vec<String> = codes.iter().map(|c| c.to_ascii_uppercase()).collect();
            let refs: Vec<&str> = upper.iter().map(String::as_str).collect();
            meridian_shared::schema::prepare(&mut conn, &refs).await.unwrap();
        }
        create_login(&admin, CLINICAL, "secret", meridian_shared::schema::workload_privileges)
            .await
            .unwrap();
        create_login(&admin, VAULT, "secret", meridian_shared::schema::vault_privileges)
            .await
            .unwrap();
        let clinical = meridian_records::pool_options(8)
            .connect(&as_login(&pg.url(), CLINICAL, "secret"))
            .await
            .unwrap();
        let vault = meridian_records::pool_options(8)
            .connect(&as_login(&pg.url(), VAULT, "secret"))
            .await
            .unwrap();
        let mut keys = BTreeMap::new();
        for code in codes {
            keys::ensure_country(&mut keys, code);
        }
        let countries = Countries::default();
        countries.set(codes.iter().map(|code| entry(code, &keys)));
        let issuer = DevIssuer::new("http://issuer.test", "meridian");
        // As in a Region: `$disclose` checks callers against the records services' audience.
        let crossborder = meridian_records::crossborder::CrossBorder {
            accept: Some(meridian_records::crossborder::Accept::Jwt(Arc::new(
                issuer.verifier_for(meridian_records::crossborder::peers::AUDIENCE),
            ))),
            ..Default::default()
        };
        let service = Service::new(
            meridian_shared::pool::Pool::like(&clinical),
            meridian_shared::pool::Pool::like(&vault),
            Arc::new(issuer.verifier()),
            countries.clone(),
        )
        .with_crossborder(crossborder);
        Self {
            pg,
            app: app(Arc::new(service)),
            issuer,
            admin,
            clinical,
            vault,
            keys,
            countries,
        }
    }

    pub fn token(&self, subject: &str, roles: &[Role], countries: &[&str]) -> String {
        self.issuer.token(subject, roles, countries, Duration::from_secs(600))
    }

    /// A clinician of `cc`.
    pub fn clinician(&self, cc: &str) -> String {
        self.token("dr-weber", &[Role::Practitioner], &[cc])
    }

    /// Sends a request and checks that every FHIR resource answered is valid R4.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        self.send_bytes(method, path, token, headers, body).await
    }

    /// [`Harness::send`] with the body as given (not JSON, or broken JSON): FHIR JSON unless
    /// `headers` name a Content-Type.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            request = request.header(header::CONTENT_TYPE, "application/fhir+json");
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let body = body.map_or(Body::empty(), Body::from);
        let response = self.app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !body.is_null() {
            assert!(
                headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.to_str().unwrap().starts_with("application/fhir+json")),
                "{path}: FHIR answers are application/fhir+json: {headers:?}"
            );
            if let Err(errors) = fhir_schema::validate(&body) {
                panic!("{path}: the answer is not valid FHIR R4: {errors:?}\n{body:#}");
            }
        }
        Reply { status, headers, body }
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(token), &[], Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), &[], None).await
    }

    /// An update with `If-Match: if_match`.
    pub async fn put(&self, path: &str, token: &str, if_match: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(token), &[("if-match", if_match)], Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.send(Method::DELETE, path, Some(token), &[], None).await
    }

    /// Rows of every records table, for checking that a refused request wrote nothing.
    pub async fn counts(&self) -> Vec<(String, i64)> {
        let mut counts = Vec::new();
        for table in [
            "patients",
            "fhir_resources",
            "fhir_history",
            "vault.patients",
            "vault.patient_history",
            "outbox",
            "audit",
        ] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&self.admin)
                .await
                .unwrap();
            counts.push((table.to_string(), n));
        }
        counts
    }
}

/// A Ready country entry for `code`, from the examples.
pub fn entry(code: &str, keys: &BTreeMap<String, String>) -> CountryEntry {
    let country = example(&code.to_ascii_lowercase());
    CountryEntry {
        rules: Rules::of(&country.spec),
        serving: Serving::Ready,
        keys: Keyring::from_secret(keys, code).map_err(|e| e.to_string()),
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The id of a created resource.
    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {:#}", self.body))
            .to_string()
    }

    /// `issue[0].expression[0]` of an OperationOutcome.
    pub fn expression(&self) -> Option<&str> {
        self.body["issue"][0]["expression"][0].as_str()
    }

    pub fn diagnostics(&self) -> &str {
        self.body["issue"][0]["diagnostics"].as_str().unwrap_or_default()
    }

    pub fn entries(&self) -> Vec<&Value> {
        self.body["entry"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }
}

/// Resources of the walkthrough: a DE patient with a Krankenversichertennummer.
pub mod resources {
    use serde_json::{Value, json};

    pub fn patient(kvnr: &str, family: &str) -> Value {
        json!({
            "resourceType": "Patient",
            "identifier": [{"system": "http://fhir.de/sid/gkv/kvid-10", "value": kvnr}],
            "name": [{"family": family, "given": ["Anna", "Maria"]}],
            "gender": "female",
            "birthDate": "1984-06-02",
            "telecom": [{"system": "email", "value": "anna@example.de"}],
            "address": [{"city": "Berlin", "line": ["Invalidenstraße 1"]}],
        })
    }

    pub fn encounter(patient: &str, start: &str) -> Value {
        json!({
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": format!("Patient/{patient}")},
            "period": {"start": start, "end": start},
        })
    }

    pub fn observation(patient: &str, loinc: &str, value: f64, unit: &str, at: &str) -> Value {
        json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": at,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
        })
    }

    pub fn prescription(patient: &str) -> Value {
        json!({
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "387517004", "display": "Paracetamol"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "authoredOn": "2026-11-02",
        })
    }
}
