//! Booking over HTTP: idempotency keys, races answered with 409, who sees what.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use meridian_booking::http::{Countries, CountryEntry, Service, app};
use meridian_localpg::TempCluster;
use meridian_shared::auth::{DevIssuer, Role};
use meridian_shared::schema::prepare;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tower::ServiceExt;

struct Api {
    _pg: TempCluster,
    pool: PgPool,
    app: axum::Router,
    issuer: DevIssuer,
    countries: Countries,
    /// A practitioner available every day 09:00–12:00 Berlin time, in 30-minute slots.
    practitioner: String,
}

impl Api {
    async fn start() -> Self {
        let pg = TempCluster::start().await.expect("start PostgreSQL");
        let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
        // AT is there only to hold another country's patients.
        prepare(&mut conn, &["DE", "AT"]).await.unwrap();
        let issuer = DevIssuer::new("http://issuer.test", "meridian");
        let countries = Countries::default();
        countries.set([CountryEntry::ready("DE", chrono_tz::Europe::Berlin)]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(&pg.url())
            .await
            .unwrap();
        let service = Service::new(pool.clone(), Arc::new(issuer.verifier()), countries.clone());
        let mut api = Api {
            _pg: pg,
            countries,
            pool,
            app: app(Arc::new(service)),
            issuer,
            practitioner: String::new(),
        };
        let admin = api.token("admin", &[Role::ClinicAdmin]);
        let profile =
            json!({"givenName": "Anna", "familyName": "Schmidt", "specialty": "Kardiologie", "city": "Berlin"});
        let (_, created, _) = api
            .call("POST", "/de/v1/practitioners", &admin, None, Some(profile))
            .await;
        api.practitioner = created["id"].as_str().unwrap().to_string();
        for weekday in 1..=7 {
            let rule = json!({"kind": "weekly", "weekday": weekday, "start": "09:00:00", "end": "12:00:00", "slotMinutes": 30});
            let path = format!("/de/v1/practitioners/{}/availability", api.practitioner);
            let (status, _, _) = api.call("POST", &path, &admin, None, Some(rule)).await;
            assert_eq!(status, StatusCode::CREATED);
        }
        api
    }

    fn token(&self, subject: &str, roles: &[Role]) -> String {
        self.issuer.token(subject, roles, &["DE"], Duration::from_secs(300))
    }

    /// Another replica of the service, on the same database, with caches of its own.
    fn replica(&self) -> axum::Router {
        let verifier = Arc::new(self.issuer.verifier());
        app(Arc::new(Service::new(
            self.pool.clone(),
            verifier,
            self.countries.clone(),
        )))
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, Option<String>) {
        self.call_on(&self.app, method, uri, token, key, body).await
    }

    async fn call_on(
        &self,
        app: &axum::Router,
        method: &str,
        uri: &str,
        token: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, Option<String>) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let response = app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), replayed)
    }

    /// Opens the practitioner's slot event stream as `token`, resuming after `last`.
    async fn watch_slots(&self, token: &str, last: Option<&str>) -> axum::response::Response {
        let mut request = Request::get(format!("/de/v1/practitioners/{}/slots/events", self.practitioner))
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        self.app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// A second cardiologist, available the same hours as the first; returns their ID.
    async fn colleague(&self, admin: &str) -> String {
        let profile =
            json!({"givenName": "Jonas", "familyName": "Weber", "specialty": "Kardiologie", "city": "Berlin"});
        let (_, created, _) = self
            .call("POST", "/de/v1/practitioners", admin, None, Some(profile))
            .await;
        let id = created["id"].as_str().unwrap().to_string();
        for weekday in 1..=7 {
            let rule = json!({"kind": "weekly", "weekday": weekday, "start": "09:00:00", "end": "12:00:00", "slotMinutes": 30});
            let (status, _, _) = self
                .call(
                    "POST",
                    &format!("/de/v1/practitioners/{id}/availability"),
                    admin,
                    None,
                    Some(rule),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED);
        }
        id
    }

    /// The first free slot tomorrow, in UTC.
    async fn tomorrow_first_slot(&self, token: &str) -> String {
        let day = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
        let path = format!("/de/v1/practitioners/{}/slots?from={day}&to={day}", self.practitioner);
        let (status, body, _) = self.call("GET", &path, token, None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["slots"][0]["start"].as_str().unwrap().to_string()
    }

    /// The client ID the registry maps DE patient `subject` to, if any.
    async fn client_id(&self, subject: &str) -> Option<String> {
        sqlx::query_scalar("SELECT client_id::text FROM patients WHERE country_code = 'DE' AND subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    fn booking(&self, start: &str) -> Value {
        json!({"practitionerId": self.practitioner, "start": start, "reason": "Kontrolle"})
    }
}

#[tokio::test]
async fn a_patient_books_and_a_replay_returns_the_first_result() {
    let api = Api::start().await;
    let patient = api.token("patient-1", &[Role::Patient]);
    let start = api.tomorrow_first_slot(&patient).await;
    let (status, first, replayed) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k-1"),
            Some(api.booking(&start)),
        )
        .await;
    assert_eq!((status, replayed), (StatusCode::CREATED, None), "{first}");
    let client_id = api.client_id("patient-1").await.expect("registered on first use");
    assert_eq!(
        first["patientId"],
        client_id.as_str(),
        "the patient's client ID, not the subject"
    );
    let (status, again, replayed) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k-1"),
            Some(api.booking(&start)),
        )
        .await;
    assert_eq!((status, replayed.as_deref()), (StatusCode::OK, Some("true")));
    assert_eq!(again["id"], first["id"]);

    // The slot is gone from /slots, and comes back when cancelled.
    assert_ne!(api.tomorrow_first_slot(&patient).await, start);
    let id = first["id"].as_str().unwrap();
    let (status, cancelled, _) = api
        .call(
            "POST",
            &format!("/de/v1/appointments/{id}/cancel"),
            &patient,
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    assert_eq!(api.tomorrow_first_slot(&patient).await, start);
}

/// What two replicas leave behind: the patient's first-slot booking made through `api`'s
/// replica (which now caches the practitioner's schedule), then time off from 09:30 to 10:30
/// recorded through another replica.
struct StaleReplica {
    patient: String,
    first_at: chrono::DateTime<chrono::Utc>,
    booked: Value,
}

impl StaleReplica {
    async fn set_up(api: &Api) -> Self {
        let other = api.replica();
        let admin = api.token("admin", &[Role::ClinicAdmin]);
        let patient = api.token("patient-1", &[Role::Patient]);
        let first = api.tomorrow_first_slot(&patient).await;
        let first_at = chrono::DateTime::parse_from_rfc3339(&first).unwrap().to_utc();
        let (status, booked, _) = api
            .call(
                "POST",
                "/de/v1/appointments",
                &patient,
                Some("a"),
                Some(api.booking(&first)),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{booked}");
        let stale = Self {
            patient,
            first_at,
            booked,
        };
        let off = json!({"kind": "timeOff", "startsAt": stale.slot(30), "endsAt": stale.slot(90)});
        let path = format!("/de/v1/practitioners/{}/availability", api.practitioner);
        let (status, _, _) = api.call_on(&other, "POST", &path, &admin, None, Some(off)).await;
        assert_eq!(status, StatusCode::CREATED);
        stale
    }

    /// The slot `minutes` after the first one, as RFC 3339.
    fn slot(&self, minutes: i64) -> String {
        (self.first_at + chrono::Duration::minutes(minutes)).to_rfc3339()
    }
}

#[tokio::test]
async fn a_replica_with_a_stale_schedule_does_not_book_into_time_off_taken_through_another() {
    let api = Api::start().await;
    let stale = StaleReplica::set_up(&api).await;
    let patient = &stale.patient;

    // The first replica's cached schedule still offers 10:00; the database refuses it, the
    // replica reloads the schedule and answers that 10:00 is not a slot any more.
    let (status, body, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            patient,
            Some("b"),
            Some(api.booking(&stale.slot(60))),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "start", "{body}");
    // 10:30 is still a slot, on the fresh schedule.
    let (status, body, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            patient,
            Some("c"),
            Some(api.booking(&stale.slot(90))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let booked: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(booked, 2);
}

#[tokio::test]
async fn a_replica_with_a_stale_schedule_does_not_reschedule_into_time_off_taken_through_another() {
    let api = Api::start().await;
    let stale = StaleReplica::set_up(&api).await;
    let (patient, booked) = (&stale.patient, &stale.booked);
    let moves = format!("/de/v1/appointments/{}/reschedule", booked["id"].as_str().unwrap());

    // This replica's cached schedule still offers 10:00: the database refuses the move, the
    // replica reloads the schedule and answers that 10:00 is not a slot any more.
    let (status, body, _) = api
        .call("POST", &moves, patient, None, Some(json!({"start": stale.slot(60)})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "start", "{body}");
    let (_, still, _) = api
        .call(
            "GET",
            &format!("/de/v1/appointments/{}", booked["id"].as_str().unwrap()),
            patient,
            None,
            None,
        )
        .await;
    assert_eq!(still["startsAt"], booked["startsAt"], "not moved into the time off");
    // 10:30 is still a slot, on the fresh schedule.
    let (status, moved, _) = api
        .call("POST", &moves, patient, None, Some(json!({"start": stale.slot(90)})))
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let moved_at = chrono::DateTime::parse_from_rfc3339(moved["startsAt"].as_str().unwrap()).unwrap();
    assert_eq!(moved_at, stale.first_at + chrono::Duration::minutes(90));
}

#[tokio::test]
async fn racing_patients_get_one_booking_and_409s() {
    let api = Arc::new(Api::start().await);
    let probe = api.token("probe", &[Role::Patient]);
    let start = api.tomorrow_first_slot(&probe).await;
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let (api, start) = (api.clone(), start.clone());
            tokio::spawn(async move {
                let token = api.token(&format!("patient-{i}"), &[Role::Patient]);
                api.call(
                    "POST",
                    "/de/v1/appointments",
                    &token,
                    Some(&format!("k-{i}")),
                    Some(api.booking(&start)),
                )
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        let (status, body, _) = racer.await.unwrap();
        if status == StatusCode::CONFLICT {
            assert_eq!(body["conflict"], "practitionerBusy", "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(),
        19,
        "{statuses:?}"
    );
    let booked: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments WHERE status = 'booked'")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(booked, 1);
}

#[tokio::test]
async fn patients_see_their_own_appointments_only() {
    let api = Api::start().await;
    let alice = api.token("alice", &[Role::Patient]);
    let bob = api.token("bob", &[Role::Patient]);
    let start = api.tomorrow_first_slot(&alice).await;
    let (_, booked, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &alice,
            Some("a"),
            Some(api.booking(&start)),
        )
        .await;
    let id = booked["id"].as_str().unwrap();
    let bobs_start = api.tomorrow_first_slot(&bob).await;
    let (status, bobs, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &bob,
            Some("b"),
            Some(api.booking(&bobs_start)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bobs}");
    assert_ne!(bobs["patientId"], booked["patientId"], "two patients, two client IDs");
    let (status, _, _) = api
        .call("GET", &format!("/de/v1/appointments/{id}"), &alice, None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = api
        .call("GET", &format!("/de/v1/appointments/{id}"), &bob, None, None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another patient's appointment does not exist for bob"
    );
    let (status, _, _) = api
        .call("POST", &format!("/de/v1/appointments/{id}/cancel"), &bob, None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let later = api.tomorrow_first_slot(&bob).await;
    let (status, _, _) = api
        .call(
            "POST",
            &format!("/de/v1/appointments/{id}/reschedule"),
            &bob,
            None,
            Some(json!({"start": later})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let bobs_id = bobs["id"].as_str().unwrap();
    let (status, _, _) = api
        .call("GET", &format!("/de/v1/appointments/{bobs_id}"), &alice, None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nor bob's for alice");
    let ids = |list: &Value| -> Vec<Value> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].clone())
            .collect()
    };
    let (_, mine, _) = api.call("GET", "/de/v1/appointments", &bob, None, None).await;
    assert_eq!(ids(&mine), [bobs["id"].clone()]);
    let (_, mine, _) = api.call("GET", "/de/v1/appointments", &alice, None, None).await;
    assert_eq!(ids(&mine), [booked["id"].clone()]);
    let doctor = api.token(&api.practitioner, &[Role::Practitioner]);
    let (_, theirs, _) = api.call("GET", "/de/v1/appointments", &doctor, None, None).await;
    assert_eq!(ids(&theirs), [booked["id"].clone(), bobs["id"].clone()]);
    let trail: Vec<(String, String)> =
        sqlx::query_as("SELECT action, actor FROM audit WHERE action LIKE 'appointment.%' ORDER BY at, action")
            .fetch_all(&api.pool)
            .await
            .unwrap();
    let mut trail: Vec<(&str, &str)> = trail.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // Every read and write of an appointment, and the refused attempts on another's (a move
    // reads the appointment first).
    let mut expected = vec![
        ("appointment.book", "alice"),
        ("appointment.book", "bob"),
        ("appointment.read", "alice"),
        ("appointment.read.denied", "bob"),
        ("appointment.cancel.denied", "bob"),
        ("appointment.read.denied", "bob"),
        ("appointment.read.denied", "alice"),
        ("appointment.list", "bob"),
        ("appointment.list", "alice"),
        ("appointment.list", api.practitioner.as_str()),
    ];
    trail.sort();
    expected.sort();
    assert_eq!(trail, expected);
}

#[tokio::test]
async fn a_patients_appointment_holds_their_client_id_and_their_subject_appears_nowhere_but_as_actor() {
    let api = Api::start().await;
    // A subject as an identity provider issues it: opaque, and distinctive enough to find.
    let subject = "f:1e9c52d4-idp:alice.meyer@example.org";
    let patient = api.token(subject, &[Role::Patient]);
    let start = api.tomorrow_first_slot(&patient).await;
    let (status, booked, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k"),
            Some(api.booking(&start)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{booked}");
    let id = booked["id"].as_str().unwrap();
    let later = api.tomorrow_first_slot(&patient).await;
    for (path, body) in [
        (
            format!("/de/v1/appointments/{id}/reschedule"),
            Some(json!({"start": later})),
        ),
        (format!("/de/v1/appointments/{id}/cancel"), None),
    ] {
        let (status, body, _) = api.call("POST", &path, &patient, None, body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _, _) = api.call("GET", "/de/v1/appointments", &patient, None, None).await;
    assert_eq!(status, StatusCode::OK);

    let client_id = api.client_id(subject).await.expect("registered");
    let stored: Vec<String> = sqlx::query_scalar("SELECT patient_id FROM appointments")
        .fetch_all(&api.pool)
        .await
        .unwrap();
    assert_eq!(stored, std::slice::from_ref(&client_id));
    let mentions = |sql: &'static str| {
        let pool = api.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(format!("%{subject}%"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // The whole row as text: no column of appointments or the outbox holds the subject.
    assert_eq!(
        mentions("SELECT count(*) FROM appointments a WHERE a::text LIKE $1").await,
        0
    );
    assert_eq!(mentions("SELECT count(*) FROM outbox o WHERE o::text LIKE $1").await, 0);
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, payload->>'patientId' FROM outbox WHERE event_type LIKE 'appointment.%' ORDER BY id",
    )
    .fetch_all(&api.pool)
    .await
    .unwrap();
    let expected: Vec<(String, String)> = ["appointment.booked", "appointment.rescheduled", "appointment.cancelled"]
        .into_iter()
        .map(|e| (e.to_string(), client_id.clone()))
        .collect();
    assert_eq!(events, expected);
    // The audit trail says who acted (the subject) and on what (never the subject).
    assert_eq!(mentions("SELECT count(*) FROM audit WHERE resource LIKE $1").await, 0);
    let resources: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, resource FROM audit WHERE actor = $1 AND action LIKE 'appointment.%' ORDER BY at, action",
    )
    .bind(subject)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    assert!(
        resources.contains(&("appointment.list".into(), format!("patient/{client_id}/appointments"))),
        "{resources:?}"
    );
    // book, read and move (a move reads first), cancel, list.
    assert_eq!(resources.len(), 5, "{resources:?}");
    // The subject is in the registry, once.
    assert_eq!(
        mentions("SELECT count(*) FROM patients p WHERE p::text LIKE $1").await,
        1
    );
}

#[tokio::test]
async fn staff_book_for_a_patient_by_client_id_and_the_patient_sees_it() {
    let api = Api::start().await;
    let desk = api.token("front-desk", &[Role::PracticeManager]);
    let patient = api.token("kc|carla", &[Role::Patient]);
    let start = api.tomorrow_first_slot(&desk).await;
    let field = |body: &Value| body["errors"][0]["field"].as_str().map(String::from);
    let booking = |patient_id: &str| {
        let mut b = api.booking(&start);
        b["patientId"] = patient_id.into();
        b
    };
    // Named by anything but a registered DE patient's client ID: refused, naming the field.
    let austrian: String = sqlx::query_scalar(
        "INSERT INTO patients (country_code, client_id, subject) VALUES ('AT', gen_random_uuid(), 'kc|carla')
         RETURNING client_id::text",
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    let nobody = uuid::Uuid::new_v4().to_string();
    for named in ["kc|carla", nobody.as_str(), austrian.as_str()] {
        let (status, body, _) = api
            .call("POST", "/de/v1/appointments", &desk, Some(named), Some(booking(named)))
            .await;
        assert_eq!(
            (status, field(&body).as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("patientId")),
            "{named}: {body}"
        );
    }
    let (status, body, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &desk,
            Some("none"),
            Some(api.booking(&start)),
        )
        .await;
    assert_eq!(
        (status, field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("patientId")),
        "staff must name the patient: {body}"
    );
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(written, 0);
    assert_eq!(
        api.client_id("kc|carla").await,
        None,
        "staff naming a subject registers nobody"
    );

    // Carla signs in once (her client ID is what the clinic knows her by), then the desk books
    // for her, and she sees the appointment as hers.
    let (status, _, _) = api.call("GET", "/de/v1/appointments", &patient, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let carla = api.client_id("kc|carla").await.expect("registered");
    assert_ne!(carla, austrian, "her Austrian record is another client ID");
    let (status, booked, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &desk,
            Some("carla"),
            Some(booking(&carla)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{booked}");
    assert_eq!(booked["patientId"], carla.as_str());
    let (_, mine, _) = api.call("GET", "/de/v1/appointments", &patient, None, None).await;
    assert_eq!(mine["items"][0]["id"], booked["id"], "{mine}");
    // And she cannot hold another appointment at that time, whoever books it.
    let colleague = api.colleague(&api.token("admin", &[Role::ClinicAdmin])).await;
    let mut overlapping = api.booking(&start);
    overlapping["practitionerId"] = colleague.into();
    let (status, clash, _) = api
        .call("POST", "/de/v1/appointments", &patient, Some("own"), Some(overlapping))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{clash}");
    assert_eq!(clash["conflict"], "patientBusy", "{clash}");
}

#[tokio::test]
async fn bad_bookings_are_refused_with_the_field_named_and_nothing_written() {
    let api = Api::start().await;
    let patient = api.token("patient-1", &[Role::Patient]);
    let start = api.tomorrow_first_slot(&patient).await;
    let field = |body: &Value| body["errors"][0]["field"].as_str().map(String::from);

    let (status, body, _) = api
        .call("POST", "/de/v1/appointments", &patient, None, Some(api.booking(&start)))
        .await;
    assert_eq!(
        (status, field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Idempotency-Key"))
    );
    let (status, body, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k"),
            Some(api.booking("2020-01-01T09:00:00Z")),
        )
        .await;
    assert_eq!(
        (status, field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("start"))
    );
    let off_grid = start.replace(":00:00Z", ":10:00Z");
    let (status, body, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k"),
            Some(api.booking(&off_grid)),
        )
        .await;
    assert_eq!(
        (status, field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("start")),
        "{body}"
    );
    let mut unknown = api.booking(&start);
    unknown["practitionerId"] = uuid::Uuid::new_v4().to_string().into();
    let (status, body, _) = api
        .call("POST", "/de/v1/appointments", &patient, Some("k"), Some(unknown))
        .await;
    assert_eq!(
        (status, field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("practitionerId"))
    );
    let mut for_someone = api.booking(&start);
    for_someone["patientId"] = "someone-else".into();
    let (status, body, _) = api
        .call("POST", "/de/v1/appointments", &patient, Some("k"), Some(for_someone))
        .await;
    assert_eq!(
        (status, field(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("patientId"))
    );
    let mut notes = api.booking(&start);
    notes["clinicalNotes"] = "confidential".into();
    let (status, _, _) = api
        .call("POST", "/de/v1/appointments", &patient, Some("k"), Some(notes))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields such as clinical notes are refused"
    );

    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(written, 0);
}

/// Reads the next SSE event (skipping heartbeats) from a streaming body: `(id, event, data)`.
async fn next_event(body: &mut axum::body::Body, buffer: &mut String) -> (String, String, Value) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_string())
            };
            if let Some(event) = field("event") {
                let data = serde_json::from_str(&field("data").unwrap_or_default()).unwrap();
                return (field("id").unwrap_or_default(), event, data);
            }
            continue;
        }
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s");
        let bytes = frame.unwrap().unwrap().into_data().unwrap();
        buffer.push_str(&String::from_utf8_lossy(&bytes));
    }
}

#[tokio::test]
async fn watchers_see_slots_taken_and_freed_live_and_catch_up_after_a_reconnect() {
    let api = Api::start().await;
    let patient = api.token("patient-1", &[Role::Patient]);
    let response = api.watch_slots(&patient, None).await;
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut stream = response.into_body();
    let mut buffer = String::new();

    let start = api.tomorrow_first_slot(&patient).await;
    let (_, booked, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k"),
            Some(api.booking(&start)),
        )
        .await;
    // From the moment the booking is committed (its answer is back) to the watcher seeing it.
    let booked_at = std::time::Instant::now();
    let (taken_id, kind, data) = next_event(&mut stream, &mut buffer).await;
    let latency = booked_at.elapsed();
    assert_eq!(
        (kind.as_str(), data["start"].as_str()),
        ("slot.taken", Some(start.as_str()))
    );
    assert!(
        data.get("patientId").is_none(),
        "watchers learn nothing about the patient"
    );
    assert!(latency < Duration::from_secs(1), "seen {latency:?} after booking");

    // Moving it frees the old slot and takes the new one: two events, in that order.
    let id = booked["id"].as_str().unwrap();
    let later = (chrono::DateTime::parse_from_rfc3339(&start).unwrap() + chrono::Duration::minutes(30)).to_utc();
    let later = later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, moved, _) = api
        .call(
            "POST",
            &format!("/de/v1/appointments/{id}/reschedule"),
            &patient,
            None,
            Some(json!({"start": later})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let (freed_id, kind, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (kind.as_str(), data["start"].as_str()),
        ("slot.freed", Some(start.as_str()))
    );
    let (_, kind, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (kind.as_str(), data["start"].as_str()),
        ("slot.taken", Some(later.as_str()))
    );

    api.call(
        "POST",
        &format!("/de/v1/appointments/{id}/cancel"),
        &patient,
        None,
        None,
    )
    .await;
    let (_, kind, _) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(kind, "slot.freed");

    // A client that saw only the first events gets the rest replayed on reconnect, even
    // from between the two halves of the reschedule.
    for (last_seen, first_missed) in [(&taken_id, ("slot.freed", &start)), (&freed_id, ("slot.taken", &later))] {
        let mut resumed = api.watch_slots(&patient, Some(last_seen)).await.into_body();
        let mut buffer = String::new();
        let (_, kind, data) = next_event(&mut resumed, &mut buffer).await;
        assert_eq!(
            (kind.as_str(), data["start"].as_str()),
            (first_missed.0, Some(first_missed.1.as_str()))
        );
    }
}

#[tokio::test]
async fn a_reschedule_onto_a_taken_slot_is_a_conflict_and_changes_nothing() {
    let api = Api::start().await;
    let alice = api.token("alice", &[Role::Patient]);
    let bob = api.token("bob", &[Role::Patient]);
    let first = api.tomorrow_first_slot(&alice).await;
    let (_, a, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &alice,
            Some("a"),
            Some(api.booking(&first)),
        )
        .await;
    let second = api.tomorrow_first_slot(&bob).await;
    api.call(
        "POST",
        "/de/v1/appointments",
        &bob,
        Some("b"),
        Some(api.booking(&second)),
    )
    .await;
    let id = a["id"].as_str().unwrap();
    let (status, problem, _) = api
        .call(
            "POST",
            &format!("/de/v1/appointments/{id}/reschedule"),
            &alice,
            None,
            Some(json!({"start": second})),
        )
        .await;
    assert_eq!(
        (status, problem["conflict"].as_str()),
        (StatusCode::CONFLICT, Some("practitionerBusy"))
    );
    let (_, still, _) = api
        .call("GET", &format!("/de/v1/appointments/{id}"), &alice, None, None)
        .await;
    assert_eq!(still["startsAt"], a["startsAt"]);
}

#[tokio::test]
async fn when_a_practitioner_becomes_unavailable_appointments_move_to_a_free_colleague_or_need_rebooking() {
    let api = Api::start().await;
    let admin = api.token("admin", &[Role::ClinicAdmin]);
    let patient = api.token("patient-1", &[Role::Patient]);
    // A colleague of the same specialty who works the same hours.
    let colleague = api.colleague(&admin).await;
    let start = api.tomorrow_first_slot(&patient).await;
    let (_, booked, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k"),
            Some(api.booking(&start)),
        )
        .await;
    let id = booked["id"].as_str().unwrap();

    // Anna takes the day off: the appointment moves to Jonas, same time.
    let day_start = chrono::DateTime::parse_from_rfc3339(&start).unwrap().to_utc() - chrono::Duration::hours(2);
    let off = json!({"kind": "timeOff", "startsAt": day_start, "endsAt": day_start + chrono::Duration::hours(12)});
    let (status, _, _) = api
        .call(
            "POST",
            &format!("/de/v1/practitioners/{}/availability", api.practitioner),
            &admin,
            None,
            Some(off),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, moved, _) = api
        .call("GET", &format!("/de/v1/appointments/{id}"), &patient, None, None)
        .await;
    assert_eq!(
        (moved["practitionerId"].as_str(), moved["startsAt"].as_str()),
        (Some(colleague.as_str()), Some(start.as_str()))
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'appointment.reassigned'")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(events, 1, "the patient is told through an event");

    // Jonas leaves too, and nobody else is free: the patient must rebook.
    let (status, _, _) = api
        .call(
            "POST",
            &format!("/de/v1/practitioners/{colleague}/deactivate"),
            &admin,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, stranded, _) = api
        .call("GET", &format!("/de/v1/appointments/{id}"), &patient, None, None)
        .await;
    assert_eq!(stranded["status"], "needs_rebooking");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'appointment.needs_rebooking'")
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(events, 1);
}

#[tokio::test]
async fn where_reassignment_is_switched_off_patients_are_asked_to_rebook() {
    let api = Api::start().await;
    api.countries.set([CountryEntry {
        reassignment: false,
        ..CountryEntry::ready("DE", chrono_tz::Europe::Berlin)
    }]);
    let admin = api.token("admin", &[Role::ClinicAdmin]);
    let patient = api.token("patient-1", &[Role::Patient]);
    // A colleague of the same specialty who works the same hours.
    api.colleague(&admin).await;
    let start = api.tomorrow_first_slot(&patient).await;
    let (_, booked, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k"),
            Some(api.booking(&start)),
        )
        .await;
    api.call(
        "POST",
        &format!("/de/v1/practitioners/{}/deactivate", api.practitioner),
        &admin,
        None,
        None,
    )
    .await;
    let (_, after, _) = api
        .call(
            "GET",
            &format!("/de/v1/appointments/{}", booked["id"].as_str().unwrap()),
            &patient,
            None,
            None,
        )
        .await;
    assert_eq!(
        (after["status"].as_str(), after["practitionerId"].as_str()),
        (Some("needs_rebooking"), Some(api.practitioner.as_str())),
        "a free colleague exists, but the country does not re-assign"
    );
}

#[tokio::test]
async fn slots_and_live_changes_for_a_specialty_in_a_city() {
    let api = Api::start().await;
    let admin = api.token("admin", &[Role::ClinicAdmin]);
    let patient = api.token("patient-1", &[Role::Patient]);
    let colleague = api.colleague(&admin).await;
    let day = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
    let (status, body, _) = api
        .call(
            "GET",
            &format!("/de/v1/slots?specialty=kardiologie&city=berlin&from={day}&to={day}"),
            &patient,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found = body["practitioners"].as_array().unwrap();
    assert_eq!(
        found.len(),
        2,
        "both cardiologists in Berlin, matched without regard to case"
    );
    assert!(found.iter().all(|p| p["slots"].as_array().unwrap().len() == 6));

    let request = Request::get("/de/v1/slots/events?specialty=Kardiologie&city=Berlin")
        .header(header::AUTHORIZATION, format!("Bearer {patient}"))
        .body(Body::empty())
        .unwrap();
    let mut stream = api.app.clone().oneshot(request).await.unwrap().into_body();
    let mut buffer = String::new();
    let start = found
        .iter()
        .find(|p| p["practitionerId"] == colleague.as_str())
        .unwrap()["slots"][0]["start"]
        .as_str()
        .unwrap()
        .to_string();
    let booking = json!({"practitionerId": colleague, "start": start});
    let (status, _, _) = api
        .call("POST", "/de/v1/appointments", &patient, Some("k"), Some(booking))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, kind, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (kind.as_str(), data["practitionerId"].as_str()),
        ("slot.taken", Some(colleague.as_str()))
    );
}

/// How long the late transaction stays open.
const HOLD: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_slot_change_whose_transaction_commits_30_s_late_is_streamed_once_and_replayed_after_a_reconnect() {
    let api = Api::start().await;
    let patient = api.token("patient-1", &[Role::Patient]);
    let mut stream = api.watch_slots(&patient, None).await.into_body();
    let mut buffer = String::new();
    let first = api.tomorrow_first_slot(&patient).await;
    let first_at = chrono::DateTime::parse_from_rfc3339(&first).unwrap().to_utc();
    let at = |minutes: i64| {
        (first_at + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };

    // A transaction writes its event (taking an outbox ID) and stays open.
    let began = std::time::Instant::now();
    let mut late = api.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload)
         VALUES ('DE', 'appointment-events', 'appointment.booked', $1, $2)",
    )
    .bind(api.practitioner.parse::<uuid::Uuid>().unwrap())
    .bind(json!({"startsAt": at(120), "endsAt": at(150)}))
    .execute(&mut *late)
    .await
    .unwrap();

    // Meanwhile, later changes commit and are streamed at once.
    let (status, booked, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k1"),
            Some(api.booking(&first)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{booked}");
    let (seen, kind, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (kind.as_str(), data["start"].as_str()),
        ("slot.taken", Some(first.as_str()))
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cancel = format!("/de/v1/appointments/{}/cancel", booked["id"].as_str().unwrap());
    let (status, _, _) = api.call("POST", &cancel, &patient, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, kind, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (kind.as_str(), data["start"].as_str()),
        ("slot.freed", Some(first.as_str()))
    );

    // Committed after 30 s, the late change is streamed, once.
    tokio::time::sleep(HOLD.saturating_sub(began.elapsed())).await;
    late.commit().await.unwrap();
    assert!(began.elapsed() >= HOLD);
    let (_, kind, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (kind.as_str(), data["start"].as_str()),
        ("slot.taken", Some(at(120).as_str()))
    );
    let (status, _, _) = api
        .call(
            "POST",
            "/de/v1/appointments",
            &patient,
            Some("k2"),
            Some(api.booking(&at(30))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, kind, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        (kind.as_str(), data["start"].as_str()),
        ("slot.taken", Some(at(30).as_str())),
        "the next change, not the late one again"
    );

    // A client that saw only the first booking (before the late commit) gets everything
    // after it on reconnect, the late change included, once each. (Replays come in the
    // order the rows were written: writers of one practitioner take turns, so that is the
    // order they committed in; this test's late writer did not take a turn.)
    let mut resumed = api.watch_slots(&patient, Some(&seen)).await.into_body();
    let mut buffer = String::new();
    let mut replayed = Vec::new();
    for _ in 0..3 {
        let (_, kind, data) = next_event(&mut resumed, &mut buffer).await;
        replayed.push((kind, data["start"].as_str().unwrap().to_string()));
    }
    replayed.sort();
    assert_eq!(
        replayed,
        [
            ("slot.freed".to_string(), first.clone()),
            ("slot.taken".to_string(), at(30)),
            ("slot.taken".to_string(), at(120)),
        ]
    );
}

/// Alice and Bob each book tomorrow's first slot, and Alice cancels hers: their tokens and
/// the two appointments' IDs.
async fn two_bookings_one_cancelled(api: &Api) -> (String, String, Vec<String>) {
    let (alice, bob) = (api.token("alice", &[Role::Patient]), api.token("bob", &[Role::Patient]));
    let mut ids = Vec::new();
    for (who, key) in [(&alice, "a1"), (&bob, "b1")] {
        let start = api.tomorrow_first_slot(who).await;
        let (status, booked, _) = api
            .call("POST", "/de/v1/appointments", who, Some(key), Some(api.booking(&start)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{booked}");
        ids.push(booked["id"].as_str().unwrap().to_string());
    }
    let cancel = format!("/de/v1/appointments/{}/cancel", ids[0]);
    let (status, _, _) = api.call("POST", &cancel, &alice, None, None).await;
    assert_eq!(status, StatusCode::OK);
    (alice, bob, ids)
}

/// Invoices issued by the billing consumer from the bookings' events (here the embedded way:
/// straight from the outbox), read through the API by each role.
#[tokio::test]
async fn invoices_are_shown_to_the_practice_manager_and_to_their_patient_only() {
    let api = Api::start().await;
    let rates = meridian_billing::Rates::default();
    let mut de: meridian_crds::Country =
        serde_yaml_ng::from_str(include_str!("../../../examples/countries/de.yaml")).unwrap();
    de.spec.billing = Some(meridian_crds::Billing {
        appointment_fee: "60.00".into(),
        tax_rate: "0.19".into(),
    });
    rates.set([(
        "DE".to_string(),
        meridian_billing::CountryRates::of(&de.spec).unwrap().unwrap(),
    )]);
    let billing = meridian_billing::BillingHandler { rates };
    let consumer = tokio::spawn(meridian_events::consumer::run_outbox(
        api.pool.clone(),
        billing,
        std::future::pending(),
    ));

    let (alice, bob, ids) = two_bookings_one_cancelled(&api).await;

    let manager = api.token("manager", &[Role::PracticeManager]);
    let started = std::time::Instant::now();
    let all = loop {
        let (status, page, _) = api.call("GET", "/de/v1/invoices", &manager, None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if page["items"].as_array().unwrap().len() == 3 {
            break page;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kinds: Vec<(i64, &str, &str)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["number"].as_i64().unwrap(),
                i["kind"].as_str().unwrap(),
                i["total"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (3, "credit_note", "-71.40"),
            (2, "invoice", "71.40"),
            (1, "invoice", "71.40")
        ]
    );

    // Alice sees her invoice and its credit note; Bob his invoice.
    let (status, mine, _) = api.call("GET", "/de/v1/invoices", &alice, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let appointments: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["appointmentId"].as_str().unwrap())
        .collect();
    assert_eq!(appointments, [ids[0].as_str(), ids[0].as_str()]);
    let (_, his, _) = api.call("GET", "/de/v1/invoices", &bob, None, None).await;
    assert_eq!(his["items"][0]["appointmentId"], ids[1].as_str());
    assert_eq!(his["items"].as_array().unwrap().len(), 1);

    // Pages.
    let (_, page, _) = api.call("GET", "/de/v1/invoices?limit=2", &manager, None, None).await;
    assert_eq!(page["next"], 2);
    let (_, rest, _) = api
        .call("GET", "/de/v1/invoices?before=2&limit=2", &manager, None, None)
        .await;
    assert_eq!(rest["items"][0]["number"], 1);
    assert_eq!(rest["next"], Value::Null);

    // Deny by default: every other role, another country's manager, no token, bad paging.
    for roles in [&[Role::Practitioner][..], &[Role::ClinicAdmin], &[Role::SystemAdmin]] {
        let token = api.token("someone", roles);
        let (status, problem, _) = api.call("GET", "/de/v1/invoices", &token, None, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{roles:?}: {problem}");
    }
    let austrian = api.issuer.token(
        "manager-at",
        &[Role::PracticeManager],
        &["AT"],
        Duration::from_secs(300),
    );
    let (status, _, _) = api.call("GET", "/de/v1/invoices", &austrian, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = api.call("GET", "/de/v1/invoices", "not-a-token", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, problem, _) = api.call("GET", "/de/v1/invoices?limit=0", &manager, None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, _, _) = api.call("GET", "/de/v1/invoices?page=2", &manager, None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Each read is on the audit trail.
    let reads: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE action = 'invoice.list'")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert!(reads >= 5, "{reads}");
    consumer.abort();
}

/// Appointment analytics counted by the analytics consumer from the bookings' events (the
/// embedded way, from the outbox), read through the API by each role.
#[tokio::test]
async fn appointment_analytics_are_shown_to_practice_managers_only() {
    let api = Api::start().await;
    let consumer = tokio::spawn(meridian_events::consumer::run_outbox(
        api.pool.clone(),
        meridian_analytics::AnalyticsHandler,
        std::future::pending(),
    ));
    two_bookings_one_cancelled(&api).await;

    let manager = api.token("manager", &[Role::PracticeManager]);
    let started = std::time::Instant::now();
    let report = loop {
        let (status, report, _) = api
            .call("GET", "/de/v1/analytics/appointments", &manager, None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let total = |field: &str| -> i64 {
            report["minutes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m[field].as_i64().unwrap())
                .sum()
        };
        if (total("booked"), total("cancelled")) == (2, 1) {
            break report;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["country"], "DE");
    assert!(report["finalBefore"].is_string(), "{report}");
    let minute = &report["minutes"][0];
    assert!(minute["specialty"].is_string() && minute["reassigned"] == 0, "{report}");
    assert!(minute.get("patientId").is_none() && minute.get("practitionerId").is_none());
    // A range with none of them.
    let (status, empty, _) = api
        .call(
            "GET",
            "/de/v1/analytics/appointments?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z",
            &manager,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty["minutes"], json!([]));

    // Deny by default: every other role, another country's manager, no token.
    for roles in [
        &[Role::Patient][..],
        &[Role::Practitioner],
        &[Role::ClinicAdmin],
        &[Role::SystemAdmin],
    ] {
        let token = api.token("someone", roles);
        let (status, problem, _) = api
            .call("GET", "/de/v1/analytics/appointments", &token, None, None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{roles:?}: {problem}");
    }
    let austrian = api.issuer.token(
        "manager-at",
        &[Role::PracticeManager],
        &["AT"],
        Duration::from_secs(300),
    );
    let (status, _, _) = api
        .call("GET", "/de/v1/analytics/appointments", &austrian, None, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = api
        .call("GET", "/de/v1/analytics/appointments", "not-a-token", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Bad ranges name the field; unknown parameters and bad times are refused.
    let cases = [
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "from=2026-01-01T00:00:00Z&to=2026-01-09T00:00:00Z",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("since=2026-01-01T00:00:00Z", StatusCode::BAD_REQUEST),
        ("from=yesterday", StatusCode::BAD_REQUEST),
    ];
    for (query, expected) in cases {
        let path = format!("/de/v1/analytics/appointments?{query}");
        let (status, problem, _) = api.call("GET", &path, &manager, None, None).await;
        assert_eq!(status, expected, "{query}: {problem}");
        if expected == StatusCode::UNPROCESSABLE_ENTITY {
            assert_eq!(problem["errors"][0]["field"], "from", "{problem}");
        }
    }
    consumer.abort();
}
