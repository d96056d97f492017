//! Practitioner search over HTTP, end to end: the embedded engine, the indexes built from
//! PostgreSQL, the indexer following the outbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use meridian_booking::http::{Countries, CountryEntry, Service, app};
use meridian_localpg::TempCluster;
use meridian_search::embedded::Engine;
use meridian_search::indexer::Indexer;
use meridian_search::{Backend, IndexSettings, Language, versions};
use meridian_shared::auth::{DevIssuer, Role};
use meridian_shared::schema::prepare;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tower::ServiceExt;

struct Api {
    _pg: TempCluster,
    _dir: tempfile::TempDir,
    app: axum::Router,
    issuer: DevIssuer,
    _indexer: tokio::task::JoinHandle<()>,
}

impl Api {
    async fn start() -> Self {
        let pg = TempCluster::start().await.expect("start PostgreSQL");
        let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
        prepare(&mut conn, &["DE", "FR"]).await.unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(&pg.url())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::Embedded(Arc::new(Engine::open(dir.path()).unwrap()));
        for (code, language) in [("DE", Language::German), ("FR", Language::French)] {
            let settings = IndexSettings {
                language,
                synonyms: vec!["Hausarzt => Allgemeinmedizin".into()],
            };
            versions::ensure(&backend, &pool, code, &settings).await.unwrap();
        }
        let indexer = Indexer::start(pool.clone(), backend.clone(), "search-indexer")
            .await
            .unwrap()
            .spawn();
        let issuer = DevIssuer::new("http://issuer.test", "meridian");
        let countries = Countries::default();
        countries.set(["DE", "FR"].map(|code| CountryEntry::ready(code, chrono_tz::Europe::Berlin)));
        let service = Service::new(pool, Arc::new(issuer.verifier()), countries).with_search(backend);
        Api {
            _pg: pg,
            _dir: dir,
            app: app(Arc::new(service)),
            issuer,
            _indexer: indexer,
        }
    }

    fn token(&self, roles: &[Role]) -> String {
        self.issuer
            .token("someone", roles, &["DE", "FR"], Duration::from_secs(300))
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let token = self.token(&[Role::ClinicAdmin, Role::Patient]);
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let response = self.app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn found(&self, cc: &str, query: &str) -> Vec<String> {
        let (status, body) = self
            .call("GET", &format!("/{cc}/v1/practitioners/search?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["familyName"].as_str().unwrap().to_string())
            .collect()
    }

    /// Searches until `query` finds `name` in `cc`; returns how long that took.
    async fn until_found(&self, cc: &str, query: &str, name: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.found(cc, query).await.iter().any(|n| n == name) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{name} not found by {query} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_new_practitioner_is_found_in_their_country_only_by_language_aware_and_misspelt_queries() {
    let api = Api::start().await;
    let profile = json!({"givenName": "Anna", "familyName": "Schmidt", "specialty": "Kardiologie", "city": "Berlin", "languages": ["de", "en"]});
    let (status, _) = api.call("POST", "/de/v1/practitioners", Some(profile)).await;
    assert_eq!(status, StatusCode::CREATED);
    let took = api
        .until_found("de", "q=Kardiologin", "Schmidt", Duration::from_secs(1))
        .await;
    println!("searchable after {took:?}");
    assert_eq!(api.found("de", "q=Kardiolgie%20Berlin").await, ["Schmidt"]);
    assert_eq!(api.found("de", "specialty=kardiologie&language=en").await, ["Schmidt"]);
    assert!(api.found("de", "city=Hamburg").await.is_empty());
    assert!(
        api.found("fr", "q=Kardiologie").await.is_empty(),
        "never another country's"
    );
    assert!(api.found("fr", "q=Schmidt").await.is_empty(), "never another country's");

    // Deactivated: gone from search.
    let (_, list) = api.call("GET", "/de/v1/practitioners", None).await;
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    api.call("POST", &format!("/de/v1/practitioners/{id}/deactivate"), None)
        .await;
    let started = Instant::now();
    while !api.found("de", "q=Schmidt").await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a deactivated practitioner stays findable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ten_thousand_imported_practitioners_are_searchable_within_seconds() {
    let api = Api::start().await;
    let cities = ["Berlin", "Hamburg", "München", "Köln", "Frankfurt"];
    let specialties = ["Kardiologie", "Dermatologie", "Allgemeinmedizin", "Kinderheilkunde"];
    let rows: Vec<Value> = (0..10_000)
        .map(|i| {
            json!({"externalId": format!("import-{i}"), "givenName": "Test", "familyName": format!("Arzt{i}"),
                   "specialty": specialties[i % 4], "city": cities[i % 5], "languages": ["de"]})
        })
        .collect();
    let started = Instant::now();
    let (status, report) = api.call("POST", "/de/v1/practitioners/import", Some(json!(rows))).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let imported = started.elapsed();
    let searchable = api
        .until_found("de", "q=Arzt9999", "Arzt9999", Duration::from_secs(10))
        .await;
    println!("import took {imported:?}, the last row searchable {searchable:?} later");
    let (_, body) = api
        .call(
            "GET",
            "/de/v1/practitioners/search?specialty=Kardiologie&city=Berlin&limit=1",
            None,
        )
        .await;
    assert_eq!(body["total"], 500, "{body}");
    // Synonyms from the Country spec.
    let (_, body) = api
        .call("GET", "/de/v1/practitioners/search?q=Hausarzt&limit=1", None)
        .await;
    assert_eq!(body["total"], 2500, "{body}");
}

#[tokio::test]
async fn available_between_keeps_practitioners_with_a_free_slot_then() {
    let api = Api::start().await;
    let mut ids = Vec::new();
    for family in ["Frei", "Belegt"] {
        let profile = json!({"givenName": "Eva", "familyName": family, "specialty": "Kardiologie", "city": "Berlin"});
        let (_, created) = api.call("POST", "/de/v1/practitioners", Some(profile)).await;
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    // Only "Frei" works: every day 09:00-10:00 Berlin time.
    for weekday in 1..=7 {
        let rule =
            json!({"kind": "weekly", "weekday": weekday, "start": "09:00:00", "end": "10:00:00", "slotMinutes": 30});
        let (status, _) = api
            .call(
                "POST",
                &format!("/de/v1/practitioners/{}/availability", ids[0]),
                Some(rule),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    api.until_found("de", "q=Eva", "Belegt", Duration::from_secs(2)).await;
    let day = (chrono::Utc::now() + chrono::Duration::days(2)).date_naive();
    let window = |from: &str, to: &str| format!("q=Eva&availableFrom={day}T{from}Z&availableTo={day}T{to}Z");
    assert_eq!(api.found("de", &window("06:00:00", "12:00:00")).await, ["Frei"]);
    assert!(api.found("de", &window("13:00:00", "15:00:00")).await.is_empty());

    let (status, problem) = api
        .call(
            "GET",
            &format!("/de/v1/practitioners/search?availableFrom={day}T06:00:00Z"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "availableTo", "{problem}");
    let (status, problem) = api.call("GET", "/de/v1/practitioners/search?limit=0", None).await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );
}
