//! The notifications consumer and dispatcher against a real PostgreSQL, with patients sealed
//! in the vault by the records service: which notices each event schedules (once, however
//! often it arrives), the Country's consent and SMS rules, what the dispatcher does with
//! notices that no longer apply or cannot be delivered, two dispatchers at once sending each
//! notice once, that the table never holds a contact or a name, and what each database role
//! may do.

mod support;

use std::sync::Arc;

use chrono::{Duration, Utc};
use meridian_events::consumer::{self, Outcome};
use meridian_notifications::dispatch::Outcome as Sent;
use meridian_notifications::plan::Channel;
use meridian_notifications::transport::Transports;
use meridian_notifications::transport::held::Held;
use meridian_records::roles::as_login;
use serde_json::json;
use sqlx::PgPool;
use support::{World, event};
use uuid::Uuid;

fn email(address: &str) -> serde_json::Value {
    json!([{"system": "email", "value": address}])
}

#[tokio::test]
async fn each_event_schedules_its_notices_once_and_cancellations_cancel_the_reminder() {
    let w = World::start().await;
    let handler = w.handler();
    // France asks no opt-in for reminders.
    let patient = w.patient("FR", "Martin", email("claire@example.fr")).await;
    let (appointment, starts) = (Uuid::new_v4(), Utc::now() + Duration::days(3));
    let booked = event("booked", "FR", appointment, patient, starts, Utc::now());
    assert_eq!(consumer::apply(&w.workload, &handler, &booked).await, Outcome::Applied);
    // Delivered again: the inbox has it. The same event under a new ID (a second relay
    // publication would keep its ID; a replay too): the table's key keeps one reminder.
    assert_eq!(
        consumer::apply(&w.workload, &handler, &booked).await,
        Outcome::Duplicate
    );
    let mut again = booked.clone();
    again.event_id = Uuid::new_v4();
    assert_eq!(consumer::apply(&w.workload, &handler, &again).await, Outcome::Applied);
    let notices = w.notices(appointment).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(
        (
            notices[0].kind.as_str(),
            notices[0].status.as_str(),
            notices[0].channel.as_deref()
        ),
        ("reminder", "pending", None)
    );
    assert_eq!(
        notices[0].due_at.timestamp_micros(),
        (starts - Duration::hours(24)).timestamp_micros()
    );

    // Re-assigned: a notice at once, the reminder stays.
    let reassigned = event("reassigned", "FR", appointment, patient, starts, Utc::now());
    assert_eq!(
        consumer::apply(&w.workload, &handler, &reassigned).await,
        Outcome::Applied
    );
    let kinds: Vec<(String, String)> = w
        .notices(appointment)
        .await
        .into_iter()
        .map(|n| (n.kind, n.status))
        .collect();
    assert_eq!(
        kinds,
        [
            ("reminder".into(), "pending".into()),
            ("reassigned".into(), "pending".into())
        ]
    );
    // Cancelled: the reminder is cancelled, the sent-or-pending service notice is not.
    let cancelled = event("cancelled", "FR", appointment, patient, starts, Utc::now());
    assert_eq!(
        consumer::apply(&w.workload, &handler, &cancelled).await,
        Outcome::Applied
    );
    let notices = w.notices(appointment).await;
    assert_eq!(notices[0].status, "cancelled");
    assert!(
        notices[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("appointment.cancelled"),
        "{notices:?}"
    );
    assert_eq!(notices[1].status, "pending");

    // Needs rebooking: its notice, and the reminder cancelled.
    let other = Uuid::new_v4();
    let booked = event("booked", "FR", other, patient, starts, Utc::now());
    consumer::apply(&w.workload, &handler, &booked).await;
    let rebook = event("needs_rebooking", "FR", other, patient, starts, Utc::now());
    assert_eq!(consumer::apply(&w.workload, &handler, &rebook).await, Outcome::Applied);
    let kinds: Vec<(String, String)> = w.notices(other).await.into_iter().map(|n| (n.kind, n.status)).collect();
    assert_eq!(
        kinds,
        [
            ("reminder".into(), "cancelled".into()),
            ("needs_rebooking".into(), "pending".into())
        ]
    );

    // Moved: the old reminder cancelled, one for the new time; moved back: the first one
    // returns rather than a second row.
    let third = Uuid::new_v4();
    consumer::apply(
        &w.workload,
        &handler,
        &event("booked", "FR", third, patient, starts, Utc::now()),
    )
    .await;
    let later = starts + Duration::days(2);
    consumer::apply(
        &w.workload,
        &handler,
        &event("rescheduled", "FR", third, patient, later, Utc::now()),
    )
    .await;
    consumer::apply(
        &w.workload,
        &handler,
        &event("rescheduled", "FR", third, patient, starts, Utc::now()),
    )
    .await;
    let statuses: Vec<(String, String)> = w
        .notices(third)
        .await
        .into_iter()
        .map(|n| (n.status, n.due_at.format("%d").to_string()))
        .collect();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert!(statuses.contains(&(
        "pending".into(),
        (starts - Duration::hours(24)).format("%d").to_string()
    )));
    assert!(statuses.contains(&(
        "cancelled".into(),
        (later - Duration::hours(24)).format("%d").to_string()
    )));

    // Booked less than a day ahead: no reminder.
    let soon = Uuid::new_v4();
    let booked = event(
        "booked",
        "FR",
        soon,
        patient,
        Utc::now() + Duration::hours(20),
        Utc::now(),
    );
    assert_eq!(consumer::apply(&w.workload, &handler, &booked).await, Outcome::Applied);
    assert!(w.notices(soon).await.is_empty());
}

#[tokio::test]
async fn where_reminders_need_consent_only_patients_who_opted_in_get_them() {
    let w = World::start().await;
    let handler = w.handler();
    // Germany: regulatory.consent.reminders is true.
    let anna = w.patient("DE", "Schmidt", email("anna@example.de")).await;
    let starts = Utc::now() + Duration::days(3);
    let first = Uuid::new_v4();
    consumer::apply(
        &w.workload,
        &handler,
        &event("booked", "DE", first, anna, starts, Utc::now()),
    )
    .await;
    assert!(w.notices(first).await.is_empty(), "no reminder without an opt-in");
    // A service notice needs none.
    consumer::apply(
        &w.workload,
        &handler,
        &event("reassigned", "DE", first, anna, starts, Utc::now()),
    )
    .await;
    assert_eq!(w.notices(first).await[0].kind, "reassigned");

    // Opted in: reminded.
    w.reminders_consent("DE", anna, true, "2026-01-01T00:00:00Z").await;
    let second = Uuid::new_v4();
    consumer::apply(
        &w.workload,
        &handler,
        &event("booked", "DE", second, anna, starts, Utc::now()),
    )
    .await;
    assert_eq!(w.notices(second).await[0].status, "pending");

    // Withdrawn before it is due: the dispatcher cancels it rather than send it.
    w.reminders_consent("DE", anna, false, "2026-02-01T00:00:00Z").await;
    let third = Uuid::new_v4();
    let due_now = event(
        "booked",
        "DE",
        third,
        anna,
        Utc::now() + Duration::hours(12),
        Utc::now() - Duration::days(2),
    );
    // (Scheduled while the opt-in held: the handler read an older state.)
    sqlx::query(
        "INSERT INTO notifications (country_code, id, appointment_id, patient_id, kind, starts_at, due_at, next_at, event_id)
         VALUES ('DE', gen_random_uuid(), $1, $2, 'reminder', $3, now() - interval '1 hour', now() - interval '1 hour', $4)",
    )
    .bind(third)
    .bind(anna.to_string())
    .bind(Utc::now() + Duration::hours(12))
    .bind(due_now.event_id)
    .execute(&w.admin)
    .await
    .unwrap();
    let held = Held::default();
    let dispatcher = w.dispatcher(Transports::all(Arc::new(held.clone())), 3);
    let outcomes = dispatcher.dispatch_due().await.unwrap();
    // The re-assignment notice goes out; the reminder is cancelled.
    let reasons: Vec<&Sent> = outcomes.iter().map(|(_, o)| o).collect();
    assert!(reasons.contains(&&Sent::Held(Channel::Email)), "{reasons:?}");
    assert!(
        reasons.contains(&&Sent::Cancelled("the patient has not opted in to reminders".into())),
        "{reasons:?}"
    );
    assert_eq!(w.notices(third).await[0].status, "cancelled");
    assert_eq!(held.messages().len(), 1);
}

/// A notice's status and channel.
async fn channel(w: &World, appointment: Uuid) -> (String, String) {
    let n = w.notices(appointment).await.remove(0);
    (n.status, n.channel.unwrap_or_default())
}

#[tokio::test]
async fn sms_goes_only_where_the_country_enables_it_and_the_patient_has_a_mobile() {
    let mut w = World::start().await;
    let handler = w.handler();
    let both = json!([
        {"system": "email", "value": "claire@example.fr"},
        {"system": "phone", "value": "+33 6 12 34 56 78", "use": "mobile"},
    ]);
    let claire = w.patient("FR", "Martin", both.clone()).await;
    let paul = w.patient("FR", "Durand", email("paul@example.fr")).await;
    let anna = w.patient("DE", "Schmidt", both).await;
    let starts = Utc::now() + Duration::days(2);
    let mut appointments = Vec::new();
    for (cc, patient) in [("FR", claire), ("FR", paul), ("DE", anna)] {
        let appointment = Uuid::new_v4();
        consumer::apply(
            &w.workload,
            &handler,
            &event("reassigned", cc, appointment, patient, starts, Utc::now()),
        )
        .await;
        appointments.push(appointment);
    }
    let held = Held::default();
    let dispatcher = w.dispatcher(Transports::all(Arc::new(held.clone())), 3);
    assert_eq!(dispatcher.dispatch_due().await.unwrap().len(), 3);
    // France has smsReminders: by SMS to Claire's mobile; Paul has none: by e-mail. Germany
    // has not: by e-mail though Anna has a mobile.
    assert_eq!(channel(&w, appointments[0]).await, ("held".into(), "sms".into()));
    assert_eq!(channel(&w, appointments[1]).await, ("held".into(), "email".into()));
    assert_eq!(channel(&w, appointments[2]).await, ("held".into(), "email".into()));
    let shown: Vec<(String, String)> = held.messages().into_iter().map(|m| (m.country, m.recipient)).collect();
    assert_eq!(
        shown,
        [
            ("DE".into(), "c***@example.fr".into()),
            ("FR".into(), "p***@example.fr".into()),
            ("FR".into(), "+33*******78".into()),
        ]
    );

    // Each contact read is in the audit trail, by the notifications consumer, under the
    // correlation ID of the event that caused the notice.
    let reads: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT country_code, action, resource FROM audit WHERE actor = 'notifications' ORDER BY country_code, resource",
    )
    .fetch_all(&w.admin)
    .await
    .unwrap();
    let mut expected = vec![
        ("DE".to_string(), "patient.read".to_string(), format!("Patient/{anna}")),
        (
            "FR".to_string(),
            "patient.read".to_string(),
            format!("Patient/{claire}"),
        ),
        ("FR".to_string(), "patient.read".to_string(), format!("Patient/{paul}")),
    ];
    expected.sort();
    assert_eq!(reads, expected);

    // Germany turns SMS on: the next notice to Anna goes by SMS.
    w.edit("DE", |spec| spec.features.sms_reminders = true);
    let appointment = Uuid::new_v4();
    consumer::apply(
        &w.workload,
        &handler,
        &event("needs_rebooking", "DE", appointment, anna, starts, Utc::now()),
    )
    .await;
    dispatcher.dispatch_due().await.unwrap();
    assert_eq!(channel(&w, appointment).await, ("held".into(), "sms".into()));
}

#[tokio::test]
async fn undeliverable_and_void_notices_end_with_a_reason_never_a_loop() {
    let w = World::start().await;
    let handler = w.handler();
    let nobody = w
        .patient(
            "FR",
            "Sans",
            json!([{"system": "phone", "value": "+33 1 23 45 67 89", "use": "home"}]),
        )
        .await;
    let unknown = Uuid::new_v4();
    let starts = Utc::now() + Duration::days(2);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    consumer::apply(
        &w.workload,
        &handler,
        &event("reassigned", "FR", a, nobody, starts, Utc::now()),
    )
    .await;
    consumer::apply(
        &w.workload,
        &handler,
        &event("reassigned", "FR", b, unknown, starts, Utc::now()),
    )
    .await;
    // A reminder whose appointment began (the consumer was far behind).
    let c = Uuid::new_v4();
    let late = event(
        "booked",
        "FR",
        c,
        nobody,
        Utc::now() - Duration::hours(1),
        Utc::now() - Duration::days(3),
    );
    consumer::apply(&w.workload, &handler, &late).await;

    let held = Held::default();
    let dispatcher = w.dispatcher(Transports::all(Arc::new(held.clone())), 3);
    let outcomes = dispatcher.dispatch_due().await.unwrap();
    assert_eq!(outcomes.len(), 3, "each once: {outcomes:?}");
    let last = async |appointment| w.notices(appointment).await.remove(0);
    let (na, nb, nc) = (last(a).await, last(b).await, last(c).await);
    assert_eq!(
        (na.status.as_str(), na.last_error.as_deref()),
        (
            "failed",
            Some("the patient has no mobile number or e-mail address in their record")
        )
    );
    assert_eq!(nb.status, "failed");
    assert_eq!(
        nb.last_error.as_deref(),
        Some(format!("Patient/{unknown} is not known here").as_str())
    );
    assert_eq!(
        (nc.status.as_str(), nc.last_error.as_deref()),
        ("cancelled", Some("the appointment has begun"))
    );
    assert!(held.messages().is_empty());
    assert!(
        dispatcher.dispatch_due().await.unwrap().is_empty(),
        "nothing is tried again"
    );
}

#[tokio::test]
async fn bad_events_are_refused_with_a_clear_reason() {
    let w = World::start().await;
    let handler = w.handler();
    let starts = Utc::now() + Duration::days(2);
    let mut no_start = event("booked", "FR", Uuid::new_v4(), Uuid::new_v4(), starts, Utc::now());
    no_start.payload.as_object_mut().unwrap().remove("startsAt");
    let mut not_a_client = event("booked", "FR", Uuid::new_v4(), Uuid::new_v4(), starts, Utc::now());
    not_a_client.payload["patientId"] = json!("Anna Schmidt");
    let elsewhere = event("booked", "JP", Uuid::new_v4(), Uuid::new_v4(), starts, Utc::now());
    let cases = [
        (no_start, "appointment.booked payload: missing field `startsAt`"),
        (
            not_a_client,
            "appointment.booked payload: patientId \"Anna Schmidt\" is not a client ID (a UUID)",
        ),
        (elsewhere, "country JP is not served by this consumer"),
    ];
    for (bad, why) in cases {
        assert_eq!(
            consumer::apply(&w.workload, &handler, &bad).await,
            Outcome::Failed {
                error: why.into(),
                attempts: consumer::MAX_ATTEMPTS
            }
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&w.admin)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn the_notifications_table_holds_no_contact_name_or_reason() {
    let w = World::start().await;
    let handler = w.handler();
    let telecom = json!([
        {"system": "email", "value": "claire.martin@example.fr"},
        {"system": "phone", "value": "+33 6 12 34 56 78", "use": "mobile"},
    ]);
    let claire = w.patient("FR", "Martin-Lefebvre", telecom).await;
    let starts = Utc::now() + Duration::hours(12);
    let appointment = Uuid::new_v4();
    for kind in ["booked", "reassigned", "needs_rebooking"] {
        let e = event(kind, "FR", appointment, claire, starts, Utc::now() - Duration::days(2));
        consumer::apply(&w.workload, &handler, &e).await;
    }
    // Sent (held) and failed rows too, with their errors.
    let failing = Transports {
        email: None,
        sms: Some(Arc::new(Held::default())),
    };
    w.dispatcher(failing, 1).dispatch_due().await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(n)::text FROM notifications n")
        .fetch_all(&w.admin)
        .await
        .unwrap();
    assert!(rows.len() >= 2, "{rows:?}");
    for row in &rows {
        for secret in [
            "claire",
            "Martin",
            "Lefebvre",
            "Anna",
            "example.fr",
            "612345678",
            "6 12 34",
            "Chest pain",
        ] {
            assert!(!row.contains(secret), "{secret} in {row}");
        }
        assert!(
            row.contains(&claire.to_string()),
            "the client ID names the patient: {row}"
        );
    }
}

#[tokio::test]
async fn each_role_holds_only_what_it_needs_on_the_notices() {
    let w = World::start().await;
    let role = |name| PgPool::connect_lazy(&as_login(&w.pg.url(), name, "secret")).unwrap();
    let (workload, vault) = (role(support::WORKLOAD), role(support::VAULT));
    let insert = "INSERT INTO notifications (country_code, id, appointment_id, patient_id, kind, starts_at, due_at, next_at, event_id)
                  VALUES ('FR', gen_random_uuid(), gen_random_uuid(), 'x', 'reminder', now(), now(), now(), gen_random_uuid())";
    // The workload role schedules, reads and marks notices, and never deletes one.
    sqlx::query(insert).execute(&workload).await.unwrap();
    sqlx::query("UPDATE notifications SET status = 'cancelled'")
        .execute(&workload)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM notifications")
        .execute(&workload)
        .await
        .unwrap();
    for refused in [
        "DELETE FROM notifications",
        "TRUNCATE notifications",
        "DELETE FROM notifications_fr",
        "SELECT count(*) FROM vault.patients",
        "ALTER TABLE notifications ADD COLUMN email text",
    ] {
        let err = sqlx::query(refused).execute(&workload).await.unwrap_err();
        assert!(
            err.to_string().contains("permission denied") || err.to_string().contains("must be owner"),
            "{refused}: {err}"
        );
    }
    // The vault role, which reads the contacts, holds nothing on the notices.
    for refused in [
        "SELECT count(*) FROM notifications",
        insert,
        "UPDATE notifications SET attempts = 0",
    ] {
        let err = sqlx::query(refused).execute(&vault).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{refused}: {err}");
    }
}

#[tokio::test]
async fn two_dispatchers_at_once_send_each_notice_once() {
    let w = World::start().await;
    let paul = w.patient("FR", "Durand", email("paul@example.fr")).await;
    let starts = Utc::now() + Duration::days(2);
    for _ in 0..40 {
        w.schedule("reassigned", "FR", paul, starts).await;
    }
    let (first, second) = (Held::default(), Held::default());
    let replicas = [first.clone(), second.clone()].map(|held| {
        let dispatcher = w.dispatcher(Transports::all(Arc::new(held)), 3);
        tokio::spawn(async move { dispatcher.dispatch_due().await.unwrap().len() })
    });
    let mut taken = 0;
    for replica in replicas {
        taken += replica.await.unwrap();
    }
    assert_eq!(taken, 40);
    let mut ids: Vec<Uuid> = first
        .messages()
        .iter()
        .chain(&second.messages())
        .map(|m| m.id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "no notice sent twice");
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE status = 'held'")
        .fetch_one(&w.admin)
        .await
        .unwrap();
    assert_eq!(held, 40);
}
