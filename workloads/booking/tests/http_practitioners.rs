//! The practitioners API as a client sees it: status codes, problem bodies, roles and
//! countries, against a real PostgreSQL cluster.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use meridian_booking::http::{Countries, CountryEntry, Service, Serving, app};
use meridian_localpg::TempCluster;
use meridian_shared::auth::{DevIssuer, Role};
use meridian_shared::schema::prepare;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

mod support;

struct Api {
    _pg: TempCluster,
    app: axum::Router,
    issuer: DevIssuer,
    countries: Countries,
}

async fn api() -> Api {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    prepare(&mut conn, &["DE", "AT"]).await.unwrap();
    let issuer = DevIssuer::new("http://issuer.test", "meridian");
    let countries = Countries::default();
    countries.set([
        CountryEntry::ready("DE", chrono_tz::Europe::Berlin),
        CountryEntry::ready("AT", chrono_tz::Europe::Vienna),
    ]);
    let pool = PgPool::connect(&pg.url()).await.unwrap();
    let service = Service::new(pool, Arc::new(issuer.verifier()), countries.clone());
    Api {
        _pg: pg,
        app: app(Arc::new(service)),
        issuer,
        countries,
    }
}

impl Api {
    fn token(&self, roles: &[Role], countries: &[&str]) -> String {
        self.issuer.token("user-1", roles, countries, Duration::from_secs(300))
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.raw(request.body(body).unwrap()).await
    }

    async fn raw(&self, request: Request<Body>) -> (StatusCode, Value, String) {
        support::send(&self.app, request).await
    }
}

fn anna() -> Value {
    json!({"externalId": "lanr-1", "givenName": "Anna", "familyName": "Schmidt", "specialty": "Kardiologie", "city": "Berlin", "languages": ["de"]})
}

#[tokio::test]
async fn a_clinic_admin_manages_practitioners_and_a_patient_browses_them() {
    let api = api().await;
    let admin = api.token(&[Role::ClinicAdmin], &["DE"]);
    let (status, created, _) = api
        .call("POST", "/de/v1/practitioners", Some(&admin), Some(anna()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    let patient = api.token(&[Role::Patient], &["DE"]);
    let (status, page, _) = api
        .call("GET", "/de/v1/practitioners?limit=10", Some(&patient), None)
        .await;
    assert_eq!(
        (status, page["items"][0]["familyName"].as_str()),
        (StatusCode::OK, Some("Schmidt"))
    );

    let mut changed = anna();
    changed["city"] = "Potsdam".into();
    let request = Request::put(format!("/de/v1/practitioners/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::IF_MATCH, "1")
        .body(Body::from(changed.to_string()))
        .unwrap();
    let (status, updated, _) = api.raw(request).await;
    assert_eq!((status, updated["version"].as_i64()), (StatusCode::OK, Some(2)));

    let (status, _, _) = api
        .call(
            "POST",
            &format!("/de/v1/practitioners/{id}/deactivate"),
            Some(&patient),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "patients do not manage practitioners");
    let (status, off, _) = api
        .call(
            "POST",
            &format!("/de/v1/practitioners/{id}/deactivate"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((status, off["active"].as_bool()), (StatusCode::OK, Some(false)));
}

#[tokio::test]
async fn countries_are_walls() {
    let api = api().await;
    let de_admin = api.token(&[Role::ClinicAdmin], &["DE"]);
    let (status, problem, content_type) = api
        .call("POST", "/at/v1/practitioners", Some(&de_admin), Some(anna()))
        .await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::FORBIDDEN, "application/problem+json")
    );
    assert!(problem["detail"].as_str().unwrap().contains("AT"), "{problem}");

    let (_, created, _) = api
        .call("POST", "/de/v1/practitioners", Some(&de_admin), Some(anna()))
        .await;
    let everywhere = api.token(&[Role::SystemAdmin], &["*"]);
    let id = created["id"].as_str().unwrap();
    let (status, _, _) = api
        .call("GET", &format!("/at/v1/practitioners/{id}"), Some(&everywhere), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a German practitioner is not found under /at"
    );

    let (status, problem, _) = api.call("GET", "/fr/v1/practitioners", Some(&everywhere), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains("no country"), "{problem}");
    api.countries.set([CountryEntry {
        code: "DE".into(),
        timezone: chrono_tz::Europe::Berlin,
        serving: Serving::NotReady("RegionNotReady: waiting".into()),
        reassignment: true,
    }]);
    let (status, problem, _) = api.call("GET", "/de/v1/practitioners", Some(&everywhere), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(problem["detail"].as_str().unwrap().contains("not ready"), "{problem}");
}

#[tokio::test]
async fn a_country_that_is_not_ready_says_nothing_before_the_token_and_never_why() {
    let api = api().await;
    let why = "DatabaseUnreachable: error connecting to server: password authentication failed for user \"meridian_owner\" at 10.0.3.7:5432";
    api.countries.set([CountryEntry {
        code: "DE".into(),
        timezone: chrono_tz::Europe::Berlin,
        serving: Serving::NotReady(why.into()),
        reassignment: true,
    }]);
    // Without a token, or with a bad one: 401, whatever the country.
    for token in [None, Some("not-a-jwt")] {
        for path in ["/de/v1/practitioners", "/fr/v1/practitioners"] {
            let (status, problem, content_type) = api.call("GET", path, token, None).await;
            assert_eq!(
                (status, content_type.as_str()),
                (StatusCode::UNAUTHORIZED, "application/problem+json"),
                "{path}: {problem}"
            );
            let text = problem.to_string();
            assert!(
                !text.contains("Database") && !text.contains("10.0.3.7") && !text.contains("Ready"),
                "{text}"
            );
        }
    }
    // With one: a generic 503 that names a correlation ID, and none of the reason.
    let admin = api.token(&[Role::ClinicAdmin], &["DE"]);
    let (status, problem, content_type) = api.call("GET", "/de/v1/practitioners", Some(&admin), None).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "application/problem+json"),
        "{problem}"
    );
    let correlation: uuid::Uuid = problem["correlationId"].as_str().unwrap().parse().unwrap();
    assert!(!correlation.is_nil());
    let text = problem.to_string();
    for secret in ["DatabaseUnreachable", "password", "meridian_owner", "10.0.3.7"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
}

#[tokio::test]
async fn bad_requests_get_problem_bodies_that_name_the_field() {
    let api = api().await;
    let admin = api.token(&[Role::ClinicAdmin], &["DE"]);
    let (status, problem, content_type) = api.call("GET", "/de/v1/practitioners", None, None).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::UNAUTHORIZED, "application/problem+json")
    );
    assert!(problem["detail"].as_str().unwrap().contains("Bearer"), "{problem}");

    let mut bad = anna();
    bad["givenName"] = "".into();
    let (status, problem, _) = api.call("POST", "/de/v1/practitioners", Some(&admin), Some(bad)).await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("givenName"))
    );

    let mut missing = anna();
    missing.as_object_mut().unwrap().remove("city");
    let (status, problem, _) = api
        .call("POST", "/de/v1/practitioners", Some(&admin), Some(missing))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("city"), "{problem}");

    let malformed = Request::post("/de/v1/practitioners")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"givenName\": "))
        .unwrap();
    let (status, problem, _) = api.raw(malformed).await;
    assert_eq!(
        (status, problem["title"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Malformed request"))
    );

    let huge = Request::post("/de/v1/practitioners")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!(
            "{{\"givenName\": \"{}\"}}",
            "x".repeat(3 * 1024 * 1024)
        )))
        .unwrap();
    let (status, _, content_type) = api.raw(huge).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "application/problem+json")
    );

    let (status, problem, _) = api
        .call("GET", "/de/v1/practitioners?limit=9999", Some(&admin), None)
        .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );
}

#[tokio::test]
async fn malformed_paths_and_parameters_get_problem_bodies_too() {
    let api = api().await;
    let admin = api.token(&[Role::ClinicAdmin], &["DE"]);
    for (uri, expected) in [
        ("/de/v1/practitioners/not-an-id", StatusCode::NOT_FOUND),
        ("/de/v1/practitioners?limit=many", StatusCode::BAD_REQUEST),
        ("/de/v1/practitioners?colour=blue", StatusCode::BAD_REQUEST),
        (
            "/de/v1/practitioners/00000000-0000-0000-0000-000000000000/slots?from=soon&to=later",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, problem, content_type) = api.call("GET", uri, Some(&admin), None).await;
        assert_eq!(
            (status, content_type.as_str()),
            (expected, "application/problem+json"),
            "{uri}: {problem}"
        );
        assert!(problem["detail"].is_string(), "{uri}: {problem}");
    }
}

#[tokio::test]
async fn an_import_reports_bad_rows_and_keeps_the_good_ones() {
    let api = api().await;
    let admin = api.token(&[Role::ClinicAdmin], &["DE"]);
    let rows: Vec<Value> = (0..2000)
        .map(|i| {
            let mut row = anna();
            row["externalId"] = format!("lanr-{i}").into();
            if i == 7 {
                row["city"] = "".into();
            }
            row
        })
        .collect();
    let (status, report, _) = api
        .call("POST", "/de/v1/practitioners/import", Some(&admin), Some(json!(rows)))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["errors"][0]["row"].as_u64()),
        (Some(1999), Some(7))
    );
    let (_, again, _) = api
        .call("POST", "/de/v1/practitioners/import", Some(&admin), Some(json!(rows)))
        .await;
    assert_eq!(
        (again["created"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(1999))
    );
}

#[tokio::test]
async fn weekly_availability_becomes_slots_in_local_time() {
    let api = api().await;
    let admin = api.token(&[Role::ClinicAdmin], &["DE"]);
    let (_, created, _) = api
        .call("POST", "/de/v1/practitioners", Some(&admin), Some(anna()))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let monday = json!({"kind": "weekly", "weekday": 1, "start": "09:00:00", "end": "10:00:00", "slotMinutes": 30});
    let (status, stored, _) = api
        .call(
            "POST",
            &format!("/de/v1/practitioners/{id}/availability"),
            Some(&admin),
            Some(monday),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let bad = json!({"kind": "weekly", "weekday": 8, "start": "10:00:00", "end": "09:00:00", "slotMinutes": 30});
    let (status, problem, _) = api
        .call(
            "POST",
            &format!("/de/v1/practitioners/{id}/availability"),
            Some(&admin),
            Some(bad),
        )
        .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        (status, fields),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["end", "weekday"])
    );

    let patient = api.token(&[Role::Patient], &["DE"]);
    // 22 and 29 March 2027 are Mondays either side of the change to summer time (28 March).
    let (status, body, _) = api
        .call(
            "GET",
            &format!("/de/v1/practitioners/{id}/slots?from=2027-03-22&to=2027-03-29"),
            Some(&patient),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let starts: Vec<&str> = body["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["localStart"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2027-03-22T09:00:00+01:00",
            "2027-03-22T09:30:00+01:00",
            "2027-03-29T09:00:00+02:00",
            "2027-03-29T09:30:00+02:00"
        ]
    );
    assert_eq!(body["slots"][2]["start"], "2027-03-29T07:00:00Z");
    let (status, _, _) = api
        .call(
            "GET",
            &format!("/de/v1/practitioners/{id}/slots?from=2027-03-22&to=2027-09-22"),
            Some(&patient),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "ranges are bounded");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_route_in_it_exists() {
    let api = api().await;
    let (status, doc, content_type) = api.call("GET", "/de/v1/openapi.json", None, None).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "application/json"));
    assert_eq!(doc["servers"][0]["url"], "/de/v1");
    let admin = api.token(&[Role::SystemAdmin], &["*"]);
    for (method, path, ..) in meridian_booking::http::OPERATIONS {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} documented");
        // Routed: a missing route would be a bare 404/405 without a problem body.
        let uri = format!("/de/v1{}", path.replace("{id}", "00000000-0000-0000-0000-000000000000"));
        let (status, body, _) = api
            .call(&method.to_uppercase(), &uri, Some(&admin), Some(json!({})))
            .await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            status != StatusCode::NOT_FOUND || body["title"].is_string(),
            "{method} {path} is routed"
        );
    }
}
