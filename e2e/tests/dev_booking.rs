//! A patient books through `meridian dev`'s entry point: `/de/v1/...` reaches the booking
//! service of Germany's Region, and the appointment is stored in that Region only.

use std::time::Duration;

use meridian_e2e::{Dev, http};
use serde_json::json;
use sqlx::{Connection, PgConnection};

async fn appointments(port: u16) -> i64 {
    let url = format!("postgres://meridian@127.0.0.1:{port}/meridian");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM appointments")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_german_booking_lands_in_the_german_region_only() {
    let work = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_examples(work.path());
    dev.await_ready("de", Duration::from_secs(120));
    let bearers = dev.bearers();
    let (admin, patient) = (bearers["clinic-admin"].clone(), bearers["patient"].clone());
    let created = dev.create_anna(&admin);
    let id = created["id"].as_str().unwrap();
    for weekday in 1..=7 {
        let rule =
            json!({"kind": "weekly", "weekday": weekday, "start": "09:00:00", "end": "12:00:00", "slotMinutes": 30});
        let path = format!("/de/v1/practitioners/{id}/availability");
        assert_eq!(
            http(dev.addr, "POST", &path, &[("Authorization", &admin)], Some(&rule)).0,
            201
        );
    }
    let day = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
    let (status, slots) = http(
        dev.addr,
        "GET",
        &format!("/de/v1/practitioners/{id}/slots?from={day}&to={day}"),
        &[("Authorization", &patient)],
        None,
    );
    assert_eq!(status, 200, "{slots}");
    let start = slots["slots"][0]["start"].as_str().unwrap();
    let booking = json!({"practitionerId": id, "start": start, "reason": "Kontrolle"});
    let headers = [("Authorization", patient.as_str()), ("Idempotency-Key", "e2e-1")];
    let (status, booked) = http(dev.addr, "POST", "/de/v1/appointments", &headers, Some(&booking));
    assert_eq!(status, 201, "{booked}");

    // Stored in eu-central-1 and nowhere else.
    for (region, port) in dev.region_ports() {
        let expected = i64::from(region == "eu-central-1");
        assert_eq!(appointments(port).await, expected, "appointments in {region}");
    }
    // Not visible through another country's prefix, and unknown prefixes say so.
    let (status, _) = http(
        dev.addr,
        "GET",
        &format!("/fr/v1/appointments/{}", booked["id"].as_str().unwrap()),
        &[("Authorization", &patient)],
        None,
    );
    assert_eq!(status, 404);
    let (status, problem) = http(
        dev.addr,
        "GET",
        "/xx/v1/practitioners",
        &[("Authorization", &patient)],
        None,
    );
    assert_eq!((status, problem["title"].as_str()), (404, Some("Not found")));
    let (status, _) = dev.interrupt();
    assert!(status.success());
}
