//! Booking against a real PostgreSQL cluster: races, replays and refusals.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use meridian_booking::Actor;
use meridian_booking::appointments::{BookRequest, BookingError, Clash, NewSlot, Scope, book, reschedule};
use meridian_localpg::TempCluster;
use meridian_shared::patients::client_id_for_subject;
use meridian_shared::schema::prepare;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// A migrated database holding country DE, with one practitioner.
async fn database() -> (TempCluster, PgPool, Uuid) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    prepare(&mut conn, &["DE"]).await.unwrap();
    let practitioner = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
         VALUES ('DE', $1, 'Anna', 'Schmidt', 'cardiology', 'Berlin')",
    )
    .bind(practitioner)
    .execute(&mut conn)
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(32)
        .connect(&pg.url())
        .await
        .unwrap();
    (pg, pool, practitioner)
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Patient `patient` (their token subject) books for themselves, by their client ID.
async fn request(pool: &PgPool, practitioner: Uuid, patient: &str, start: &str, key: &str) -> BookRequest {
    let mut conn = pool.acquire().await.unwrap();
    let client_id = client_id_for_subject(&mut conn, "DE", patient).await.unwrap();
    let starts_at = at(start);
    BookRequest {
        country_code: "DE".into(),
        practitioner_id: practitioner,
        patient_id: client_id,
        by_patient: true,
        starts_at,
        ends_at: starts_at + Duration::minutes(30),
        reason: Some("Kontrolle".into()),
        idempotency_key: key.into(),
        schedule_version: 1,
        actor: patient.into(),
        correlation_id: Uuid::new_v4(),
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// `meridian_bookings_total{country="DE",outcome}` as exposed (the process's, shared by
/// the tests running beside this one).
fn bookings_counted(outcome: &str) -> u64 {
    let prefix = format!("meridian_bookings_total{{country=\"DE\",outcome=\"{outcome}\"}} ");
    meridian_shared::metrics::workload()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

#[tokio::test]
async fn many_patients_racing_for_one_slot_exactly_one_wins() {
    let (_pg, pool, practitioner) = database().await;
    let (booked_before, conflicts_before) = (bookings_counted("booked"), bookings_counted("conflict"));
    let pool = Arc::new(pool);
    let racers: Vec<_> = (0..32)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let r = request(
                    &pool,
                    practitioner,
                    &format!("patient-{i}"),
                    "2026-12-01T09:00:00Z",
                    &format!("key-{i}"),
                )
                .await;
                book(&pool, &r).await
            })
        })
        .collect();
    let mut won = 0;
    let mut lost = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(booked) => {
                assert!(!booked.replayed);
                won += 1;
            }
            Err(BookingError::Conflict(Clash::PractitionerBusy)) => lost += 1,
            Err(other) => panic!("a lost race must be a conflict, not {other}"),
        }
    }
    assert_eq!((won, lost), (1, 31));
    // Counted for the dashboards (other tests may book meanwhile: at least these).
    assert!(bookings_counted("booked") > booked_before);
    assert!(bookings_counted("conflict") >= conflicts_before + 31);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM appointments WHERE status = 'booked'").await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM outbox WHERE event_type = 'appointment.booked'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM audit WHERE action = 'appointment.book'").await,
        1
    );
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(meridian_shared::audit::verify(&mut conn, "DE").await.unwrap(), Ok(1));
}

#[tokio::test]
async fn reschedules_and_bookings_racing_for_one_slot_exactly_one_wins() {
    let (_pg, pool, practitioner) = database().await;
    let pool = Arc::new(pool);
    let mut held = Vec::new();
    for i in 0..16 {
        let start = (at("2026-12-01T10:00:00Z") + Duration::minutes(30 * i)).to_rfc3339();
        let booked = book(
            &pool,
            &request(
                &pool,
                practitioner,
                &format!("holder-{i}"),
                &start,
                &format!("hold-{i}"),
            )
            .await,
        )
        .await
        .unwrap();
        held.push(booked.appointment.id);
    }
    let target = at("2026-12-01T09:00:00Z");
    let movers = held.into_iter().map(|id| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let actor = Actor {
                subject: "clinic-admin",
                correlation_id: Uuid::new_v4(),
            };
            let to = NewSlot {
                starts_at: target,
                ends_at: target + Duration::minutes(30),
                schedule_version: 1,
            };
            reschedule(&pool, "DE", id, &Scope::Country, to, actor)
                .await
                .map(|_| ())
        })
    });
    let bookers = (0..16).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let r = request(
                &pool,
                practitioner,
                &format!("newcomer-{i}"),
                "2026-12-01T09:00:00Z",
                &format!("new-{i}"),
            )
            .await;
            book(&pool, &r).await.map(|_| ())
        })
    });
    let racers: Vec<_> = movers.chain(bookers).collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(()) => won += 1,
            Err(BookingError::Conflict(Clash::PractitionerBusy)) => {}
            Err(other) => panic!("a lost race must be a conflict, not {other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM appointments WHERE starts_at = '2026-12-01T09:00:00Z'"
        )
        .await,
        1
    );
    let mut conn = pool.acquire().await.unwrap();
    assert!(meridian_shared::audit::verify(&mut conn, "DE").await.unwrap().is_ok());
}

#[tokio::test]
async fn a_replayed_idempotency_key_returns_the_first_booking_and_books_nothing_more() {
    let (_pg, pool, practitioner) = database().await;
    let first = book(
        &pool,
        &request(&pool, practitioner, "p1", "2026-12-01T10:00:00Z", "k1").await,
    )
    .await
    .unwrap();
    let again = book(
        &pool,
        &request(&pool, practitioner, "p1", "2026-12-01T10:00:00Z", "k1").await,
    )
    .await
    .unwrap();
    assert!(again.replayed);
    assert_eq!(again.appointment, first.appointment);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 1);

    let other = book(
        &pool,
        &request(&pool, practitioner, "p1", "2026-12-01T11:00:00Z", "k1").await,
    )
    .await
    .unwrap_err();
    assert!(matches!(other, BookingError::KeyReused), "{other}");
}

#[tokio::test]
async fn a_patient_cannot_hold_two_overlapping_appointments() {
    let (_pg, pool, practitioner) = database().await;
    let mut conn = pool.acquire().await.unwrap();
    let colleague = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
         VALUES ('DE', $1, 'Jonas', 'Weber', 'cardiology', 'Berlin')",
    )
    .bind(colleague)
    .execute(&mut *conn)
    .await
    .unwrap();
    book(
        &pool,
        &request(&pool, practitioner, "p1", "2026-12-01T09:00:00Z", "a").await,
    )
    .await
    .unwrap();
    let overlap = book(
        &pool,
        &request(&pool, colleague, "p1", "2026-12-01T09:15:00Z", "b").await,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(overlap, BookingError::Conflict(Clash::PatientBusy)),
        "{overlap}"
    );
    // Back to back is fine.
    book(
        &pool,
        &request(&pool, colleague, "p1", "2026-12-01T09:30:00Z", "c").await,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn unknown_or_inactive_practitioners_take_no_bookings_and_nothing_is_half_written() {
    let (_pg, pool, practitioner) = database().await;
    let unknown = Uuid::new_v4();
    let err = book(&pool, &request(&pool, unknown, "p1", "2026-12-01T09:00:00Z", "a").await)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::NotBookable(id) if id == unknown));
    sqlx::query("UPDATE practitioners SET active = false")
        .execute(&pool)
        .await
        .unwrap();
    let err = book(
        &pool,
        &request(&pool, practitioner, "p1", "2026-12-01T09:00:00Z", "b").await,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BookingError::NotBookable(_)));
    for table in ["appointments", "outbox", "audit"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

fn staff() -> Actor<'static> {
    Actor {
        subject: "clinic-admin",
        correlation_id: Uuid::new_v4(),
    }
}

fn slot(start: &str, schedule_version: i64) -> NewSlot {
    NewSlot {
        starts_at: at(start),
        ends_at: at(start) + Duration::minutes(30),
        schedule_version,
    }
}

#[tokio::test]
async fn a_reschedule_checked_against_a_schedule_that_changes_meanwhile_is_refused() {
    let (_pg, pool, practitioner) = database().await;
    let booked = book(
        &pool,
        &request(&pool, practitioner, "p1", "2026-12-01T09:00:00Z", "a").await,
    )
    .await
    .unwrap()
    .appointment;
    // Time off from 10:00 is being recorded (schedule version 1 -> 2) and not committed yet,
    // while the patient moves to 10:00 on the schedule as it was (version 1).
    let mut time_off = pool.begin().await.unwrap();
    sqlx::query("UPDATE practitioners SET schedule_version = schedule_version + 1 WHERE id = $1")
        .bind(practitioner)
        .execute(&mut *time_off)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO availability (country_code, id, practitioner_id, kind, starts_at, ends_at)
         VALUES ('DE', $1, $2, 'time_off', '2026-12-01T10:00:00Z', '2026-12-01T11:00:00Z')",
    )
    .bind(Uuid::new_v4())
    .bind(practitioner)
    .execute(&mut *time_off)
    .await
    .unwrap();
    let moving = {
        let pool = pool.clone();
        let id = booked.id;
        tokio::spawn(async move {
            reschedule(
                &pool,
                "DE",
                id,
                &Scope::Country,
                slot("2026-12-01T10:00:00Z", 1),
                staff(),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !moving.is_finished(),
        "the move waits for the schedule change in progress"
    );
    time_off.commit().await.unwrap();
    let refused = moving.await.unwrap().unwrap_err();
    assert!(
        matches!(refused, BookingError::NotBookable(id) if id == practitioner),
        "{refused}"
    );
    let starts: DateTime<Utc> = sqlx::query_scalar("SELECT starts_at FROM appointments WHERE id = $1")
        .bind(booked.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(starts, booked.starts_at, "not moved into the time off");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM outbox WHERE event_type = 'appointment.rescheduled'"
        )
        .await,
        0
    );

    // Checked against the current schedule, a move outside the time off goes through.
    let moved = reschedule(
        &pool,
        "DE",
        booked.id,
        &Scope::Country,
        slot("2026-12-01T11:00:00Z", 2),
        staff(),
    )
    .await
    .unwrap();
    assert_eq!(moved.starts_at, at("2026-12-01T11:00:00Z"));
    let stale = reschedule(
        &pool,
        "DE",
        booked.id,
        &Scope::Country,
        slot("2026-12-01T12:00:00Z", 1),
        staff(),
    )
    .await
    .unwrap_err();
    assert!(matches!(stale, BookingError::NotBookable(_)), "{stale}");
}

#[tokio::test]
async fn staff_book_only_for_registered_patients_and_a_refusal_writes_nothing() {
    let (_pg, pool, practitioner) = database().await;
    let staff_books_for = |patient: Uuid, key: &str| BookRequest {
        country_code: "DE".into(),
        practitioner_id: practitioner,
        patient_id: patient,
        by_patient: false,
        starts_at: at("2026-12-01T09:00:00Z"),
        ends_at: at("2026-12-01T09:30:00Z"),
        reason: None,
        idempotency_key: key.into(),
        schedule_version: 1,
        actor: "front-desk".into(),
        correlation_id: Uuid::new_v4(),
    };
    let nobody = Uuid::new_v4();
    let refused = book(&pool, &staff_books_for(nobody, "a")).await.unwrap_err();
    assert!(
        matches!(refused, BookingError::UnknownPatient(id) if id == nobody),
        "{refused}"
    );

    // A patient whose record was deleted cannot be named by staff any more...
    let mut conn = pool.acquire().await.unwrap();
    let deleted = client_id_for_subject(&mut conn, "DE", "kc|deleted").await.unwrap();
    sqlx::query("UPDATE patients SET deleted_at = now() WHERE client_id = $1")
        .bind(deleted)
        .execute(&mut *conn)
        .await
        .unwrap();
    let refused = book(&pool, &staff_books_for(deleted, "b")).await.unwrap_err();
    assert!(
        matches!(refused, BookingError::UnknownPatient(id) if id == deleted),
        "{refused}"
    );
    for table in ["appointments", "outbox", "audit"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    // ...but still signs in and books for themselves.
    let own = book(
        &pool,
        &request(&pool, practitioner, "kc|deleted", "2026-12-01T09:00:00Z", "c").await,
    )
    .await
    .unwrap();
    assert_eq!(own.appointment.patient_id, deleted.to_string());

    // A registered patient (recorded by the clinic, no account) is booked by client ID.
    let recorded = Uuid::new_v4();
    sqlx::query("INSERT INTO patients (country_code, client_id, version) VALUES ('DE', $1, 1)")
        .bind(recorded)
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut later = staff_books_for(recorded, "d");
    later.starts_at = at("2026-12-01T10:00:00Z");
    later.ends_at = at("2026-12-01T10:30:00Z");
    let booked = book(&pool, &later).await.unwrap();
    assert_eq!(booked.appointment.patient_id, recorded.to_string());
    // The replay of that key is recognised as the same booking.
    assert!(book(&pool, &later).await.unwrap().replayed);
}
