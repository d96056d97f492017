//! The analytics consumer against a real PostgreSQL: per-minute counts by specialty, each
//! event once, late events within the allowed lateness counted in their minute, older ones
//! rejected to the dead letters (and counted when replayed), every change published.

use chrono::{DateTime, TimeDelta, Utc};
use meridian_analytics::AnalyticsHandler;
use meridian_analytics::minutes::{self, Minute};
use meridian_events::consumer::{self, Incoming, Outcome};
use meridian_localpg::TempCluster;
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

async fn database() -> (TempCluster, PgPool) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    meridian_shared::schema::prepare(&mut conn, &["DE", "FR"])
        .await
        .unwrap();
    let pool = PgPool::connect(&pg.url()).await.unwrap();
    (pg, pool)
}

async fn practitioner(pool: &PgPool, country: &str, specialty: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
         VALUES ($1, $2, 'Ada', 'Lovelace', $3, 'Berlin')",
    )
    .bind(country)
    .bind(id)
    .bind(specialty)
    .execute(pool)
    .await
    .unwrap();
    id
}

fn event(kind: &str, country: &str, practitioner: Uuid, at: DateTime<Utc>) -> Incoming {
    Incoming {
        topic: "appointment-events".into(),
        event_id: Uuid::new_v4(),
        event_type: format!("appointment.{kind}"),
        country_code: country.into(),
        key: Some(practitioner.to_string()),
        correlation_id: Some(Uuid::new_v4()),
        occurred_at: at,
        payload: json!({
            "id": Uuid::new_v4(), "countryCode": country, "practitionerId": practitioner,
            "patientId": Uuid::new_v4().to_string(), "status": kind,
        }),
        replayed: false,
    }
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn minute(at: &str, specialty: &str, counts: [i32; 3]) -> Minute {
    Minute {
        minute: t(at),
        specialty: specialty.into(),
        booked: counts[0],
        cancelled: counts[1],
        reassigned: counts[2],
    }
}

async fn counts(pool: &PgPool, country: &str) -> Vec<Minute> {
    minutes::report(pool, country, t("2026-01-01T00:00:00Z"), t("2027-01-01T00:00:00Z"))
        .await
        .unwrap()
        .minutes
}

#[tokio::test]
async fn each_event_counts_once_in_its_minute_and_specialty() {
    let (_pg, pool) = database().await;
    let analytics = AnalyticsHandler;
    let gp = practitioner(&pool, "DE", "general-practice").await;
    let cardio = practitioner(&pool, "DE", "cardiology").await;
    let fr = practitioner(&pool, "FR", "general-practice").await;

    let booked = event("booked", "DE", gp, t("2026-11-30T10:00:05Z"));
    assert_eq!(consumer::apply(&pool, &analytics, &booked).await, Outcome::Applied);
    // Delivered again (the relay and Kafka deliver at least once): counted once.
    assert_eq!(consumer::apply(&pool, &analytics, &booked).await, Outcome::Duplicate);
    for e in [
        event("booked", "DE", gp, t("2026-11-30T10:00:59.999Z")),
        event("cancelled", "DE", gp, t("2026-11-30T10:00:30Z")),
        event("booked", "DE", gp, t("2026-11-30T10:01:00Z")),
        // A re-assignment counts under the new practitioner's specialty.
        event("reassigned", "DE", cardio, t("2026-11-30T10:01:10Z")),
        // Neither a move nor an appointment left to rebook is counted.
        event("rescheduled", "DE", gp, t("2026-11-30T10:01:20Z")),
        event("needs_rebooking", "DE", gp, t("2026-11-30T10:01:30Z")),
        event("booked", "FR", fr, t("2026-11-30T10:01:40Z")),
    ] {
        assert_eq!(consumer::apply(&pool, &analytics, &e).await, Outcome::Applied);
    }
    assert_eq!(
        counts(&pool, "DE").await,
        [
            minute("2026-11-30T10:00:00Z", "general-practice", [2, 1, 0]),
            minute("2026-11-30T10:01:00Z", "cardiology", [0, 0, 1]),
            minute("2026-11-30T10:01:00Z", "general-practice", [1, 0, 0]),
        ]
    );
    assert_eq!(
        counts(&pool, "FR").await,
        [minute("2026-11-30T10:01:00Z", "general-practice", [1, 0, 0])]
    );

    // Every change of a minute went to the outbox for `analytics-results`, with its counts
    // then, keyed by the minute (one key per country, minute and specialty).
    let published: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT aggregate_id, payload FROM outbox WHERE topic = 'analytics-results' AND country_code = 'DE' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(published.len(), 5);
    assert_eq!(
        published[2].1,
        json!({"countryCode": "DE", "minute": "2026-11-30T10:00:00+00:00", "specialty": "general-practice",
               "booked": 2, "cancelled": 1, "reassigned": 0})
    );
    assert_eq!(published[0].0, published[2].0);
    assert_ne!(published[0].0, published[3].0);
}

#[tokio::test]
async fn a_late_event_updates_its_minute_within_five_minutes_and_is_rejected_after() {
    let (_pg, pool) = database().await;
    let analytics = AnalyticsHandler;
    let gp = practitioner(&pool, "DE", "general-practice").await;
    let now = t("2026-11-30T12:00:00Z");
    let latest = event("booked", "DE", gp, now);
    assert_eq!(consumer::apply(&pool, &analytics, &latest).await, Outcome::Applied);

    // Five minutes behind: its minute is not final, and takes it.
    let late = event("booked", "DE", gp, now - TimeDelta::minutes(5));
    assert_eq!(consumer::apply(&pool, &analytics, &late).await, Outcome::Applied);
    // Later than that: rejected at once (no point trying again), recorded as a dead letter.
    let too_late = event(
        "cancelled",
        "DE",
        gp,
        now - TimeDelta::minutes(5) - TimeDelta::milliseconds(1),
    );
    match consumer::apply(&pool, &analytics, &too_late).await {
        Outcome::Failed { error, attempts } => {
            assert_eq!(attempts, 1);
            assert!(error.contains("minute 2026-11-30 11:54:00 UTC is final"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let dead: (String, i32) = sqlx::query_as("SELECT consumer, attempts FROM dead_letters WHERE event_id = $1")
        .bind(too_late.event_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dead, ("analytics".to_string(), 1));
    // Delivered again: passed over, not counted and not dead-lettered twice.
    assert_eq!(
        consumer::apply(&pool, &analytics, &too_late).await,
        Outcome::DeadLettered
    );
    let expected = [
        minute("2026-11-30T11:55:00Z", "general-practice", [1, 0, 0]),
        minute("2026-11-30T12:00:00Z", "general-practice", [1, 0, 0]),
    ];
    assert_eq!(counts(&pool, "DE").await, expected);
    let report = minutes::report(&pool, "DE", t("2026-11-30T11:00:00Z"), t("2026-11-30T13:00:00Z"))
        .await
        .unwrap();
    assert_eq!(report.final_before, Some(t("2026-11-30T11:55:00Z")));
    assert_eq!(report.minutes, expected);
    // The range is half-open and by minute start.
    let noon = minutes::report(&pool, "DE", t("2026-11-30T11:56:00Z"), t("2026-11-30T12:00:00Z"))
        .await
        .unwrap();
    assert!(noon.minutes.is_empty());

    // Replayed from the dead letters (someone decided it counts): counted in its minute.
    let replayed = Incoming {
        replayed: true,
        ..too_late.clone()
    };
    assert_eq!(consumer::apply(&pool, &analytics, &replayed).await, Outcome::Applied);
    assert_eq!(
        counts(&pool, "DE").await[0],
        minute("2026-11-30T11:54:00Z", "general-practice", [0, 1, 0])
    );
}

#[tokio::test]
async fn an_event_of_an_unknown_practitioner_fails_and_changes_nothing() {
    let (_pg, pool) = database().await;
    let unknown = event("booked", "DE", Uuid::new_v4(), Utc::now());
    match consumer::apply(&pool, &AnalyticsHandler, &unknown).await {
        Outcome::Failed { error, attempts } => {
            assert_eq!(attempts, consumer::MAX_ATTEMPTS);
            assert!(error.contains("not found"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let watermarks: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics_watermarks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(watermarks, 0);
    assert!(counts(&pool, "DE").await.is_empty());
}
