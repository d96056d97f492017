//! What the notifications tests share: a real PostgreSQL with the platform schema and the
//! Region's two roles (workload and vault, holding exactly what the schema grants), patients
//! written into the vault by the records service itself (sealed under a real keyring), the
//! Countries' rules from the example manifests, and events as the outbox carries them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use meridian_crds::Country;
use meridian_events::consumer::Incoming;
use meridian_localpg::TempCluster;
use meridian_notifications::dispatch::{Dispatcher, Settings};
use meridian_notifications::rules::region_rules;
use meridian_notifications::transport::Transports;
use meridian_notifications::{NotificationsHandler, Rules};
use meridian_records::roles::{as_login, create_login};
use meridian_shared::auth::{DevIssuer, Role};
use meridian_shared::pool::Pool;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

pub const WORKLOAD: &str = "notify_workload";
pub const VAULT: &str = "notify_vault";

pub struct World {
    pub pg: TempCluster,
    /// As the superuser: for reading raw tables.
    pub admin: PgPool,
    pub workload: PgPool,
    pub vault: PgPool,
    pub keys: BTreeMap<String, String>,
    pub countries: Vec<Country>,
    pub rules: Rules,
    records: axum::Router,
    issuer: DevIssuer,
}

/// The Country of `examples/countries/{cc}.yaml`, Ready, bound to no Region (as a manifest
/// given to `--country-manifest` is).
pub fn example(cc: &str) -> Country {
    let path = format!("{}/../../examples/countries/{cc}.yaml", env!("CARGO_MANIFEST_DIR"));
    meridian_records::served::read_manifests(&[path.into()])
        .unwrap()
        .remove(0)
}

impl World {
    /// DE (reminders need an opt-in; no SMS) and FR (no opt-in needed; SMS), as their
    /// example manifests say.
    pub async fn start() -> Self {
        let pg = TempCluster::start().await.expect("start PostgreSQL");
        let admin = PgPool::connect(&pg.url()).await.unwrap();
        meridian_shared::schema::prepare(&mut admin.acquire().await.unwrap(), &["DE", "FR"])
            .await
            .unwrap();
        create_login(&admin, WORKLOAD, "secret", meridian_shared::schema::workload_privileges)
            .await
            .unwrap();
        create_login(&admin, VAULT, "secret", meridian_shared::schema::vault_privileges)
            .await
            .unwrap();
        let connect = |role| {
            meridian_shared::serve::pool_options(8)
                .connect_lazy_with(as_login(&pg.url(), role, "secret").parse().unwrap())
        };
        let (workload, vault) = (connect(WORKLOAD), connect(VAULT));
        let mut keys = BTreeMap::new();
        for cc in ["DE", "FR"] {
            meridian_records::keys::ensure_country(&mut keys, cc);
        }
        let countries = vec![example("de"), example("fr")];
        let served = meridian_records::http::Countries::default();
        served.set(meridian_records::served::entries(&countries, "", &keys));
        let issuer = DevIssuer::new("http://issuer.test", "meridian");
        let service = meridian_records::http::Service::new(
            Pool::like(&workload),
            Pool::like(&vault),
            Arc::new(issuer.verifier()),
            served,
        );
        let rules = Rules::default();
        rules.set(region_rules(&countries, "", &keys));
        Self {
            pg,
            admin,
            workload,
            vault,
            keys,
            countries,
            rules,
            records: meridian_records::http::app(Arc::new(service)),
            issuer,
        }
    }

    pub fn handler(&self) -> NotificationsHandler {
        NotificationsHandler {
            rules: self.rules.clone(),
        }
    }

    /// A `kind` event (happening now) of a new appointment of `patient` at `starts_at`,
    /// through the consumer; returns the appointment's ID.
    pub async fn schedule(&self, kind: &str, cc: &str, patient: Uuid, starts_at: DateTime<Utc>) -> Uuid {
        let appointment = Uuid::new_v4();
        let e = event(kind, cc, appointment, patient, starts_at, Utc::now());
        let outcome = meridian_events::consumer::apply(&self.workload, &self.handler(), &e).await;
        assert_eq!(outcome, meridian_events::consumer::Outcome::Applied);
        appointment
    }

    /// A dispatcher through `transports` that tries again at once.
    pub fn dispatcher(&self, transports: Transports, max_attempts: i32) -> Dispatcher {
        Dispatcher::new(
            self.workload.clone(),
            self.vault.clone(),
            self.rules.clone(),
            transports,
            Settings {
                max_attempts,
                first_backoff: Duration::ZERO,
                idle: Duration::from_millis(20),
            },
        )
    }

    /// Changes country `cc`'s manifest, as an edit of the Country would.
    pub fn edit(&mut self, cc: &str, change: impl FnOnce(&mut meridian_crds::CountrySpec)) {
        let country = self.countries.iter_mut().find(|c| c.spec.code == cc).unwrap();
        change(&mut country.spec);
        self.rules.set(region_rules(&self.countries, "", &self.keys));
    }

    async fn post(&self, cc: &str, resource: &str, body: &Value) -> Value {
        let token = self
            .issuer
            .token("dr-weber", &[Role::Practitioner], &[cc], Duration::from_secs(600));
        let request = Request::post(format!("/{}/v1/fhir/{resource}", cc.to_ascii_lowercase()))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = self.records.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer
    }

    /// A Patient of `cc` with `telecom`, created through the records service (so sealed in
    /// the vault); returns their client ID.
    pub async fn patient(&self, cc: &str, family: &str, telecom: Value) -> Uuid {
        let patient = json!({
            "resourceType": "Patient",
            "name": [{"family": family, "given": ["Anna"]}],
            "birthDate": "1984-06-02",
            "telecom": telecom,
        });
        self.post(cc, "Patient", &patient).await["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The patient's choice on reminders, given at `at`: a Consent through records.
    pub async fn reminders_consent(&self, cc: &str, patient: Uuid, permit: bool, at: &str) {
        let consent = json!({
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{
                "system": meridian_notifications::consent::REMINDERS_SYSTEM,
                "code": meridian_notifications::consent::REMINDERS_CATEGORY,
            }]}],
            "patient": {"reference": format!("Patient/{patient}")},
            "dateTime": at,
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": if permit { "OPTIN" } else { "OPTOUT" }}]},
            "provision": {"type": if permit { "permit" } else { "deny" }},
        });
        self.post(cc, "Consent", &consent).await;
    }

    /// Every notice, oldest first, as (kind, status, channel, due_at, last_error).
    pub async fn notices(&self, appointment: Uuid) -> Vec<Notice> {
        sqlx::query_as(
            "SELECT kind, status, channel, due_at, attempts, last_error FROM notifications
              WHERE appointment_id = $1 ORDER BY created_at, kind",
        )
        .bind(appointment)
        .fetch_all(&self.admin)
        .await
        .unwrap()
    }
}

/// A notice as the table holds it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Notice {
    pub kind: String,
    pub status: String,
    pub channel: Option<String>,
    pub due_at: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// An appointment event as the outbox carries it (booking's camelCase payload), having
/// happened at `occurred_at`.
pub fn event(
    kind: &str,
    cc: &str,
    appointment: Uuid,
    patient: Uuid,
    starts_at: DateTime<Utc>,
    occurred_at: DateTime<Utc>,
) -> Incoming {
    Incoming {
        topic: "appointment-events".into(),
        event_id: Uuid::new_v4(),
        event_type: format!("appointment.{kind}"),
        country_code: cc.into(),
        key: None,
        correlation_id: Some(Uuid::new_v4()),
        occurred_at,
        payload: json!({
            "id": appointment, "countryCode": cc, "practitionerId": Uuid::new_v4(),
            "patientId": patient.to_string(), "startsAt": starts_at, "endsAt": starts_at + chrono::Duration::minutes(30),
            "status": "booked", "reason": "Chest pain since Tuesday",
        }),
        replayed: false,
    }
}
