//! A patient books through `meridian dev`'s entry point: `/de/v1/...` reaches the booking
//! service of Germany's Region, and the appointment is stored in that Region only; the
//! service connects as the Region's workload role, which cannot truncate the audit trail.

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
    let slots = dev.open_mornings(&admin, id, &patient);
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
    // The billing consumer (on the outbox: meridian dev runs no broker) invoices it at
    // Germany's terms (examples/countries/de.yaml), and the practice manager sees it.
    let manager = bearers["practice-manager"].clone();
    let asked = std::time::Instant::now();
    let invoice = loop {
        let (status, page) = http(dev.addr, "GET", "/de/v1/invoices", &[("Authorization", &manager)], None);
        assert_eq!(status, 200, "{page}");
        if let Some(first) = page["items"].get(0) {
            break first.clone();
        }
        assert!(asked.elapsed() < Duration::from_secs(20), "no invoice: {page}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (
            &invoice["number"],
            &invoice["kind"],
            &invoice["total"],
            &invoice["currency"]
        ),
        (&json!(1), &json!("invoice"), &json!("71.40"), &json!("EUR"))
    );
    assert_eq!(invoice["appointmentId"], booked["id"]);
    // The analytics consumer counted the booking in its minute.
    let counted = loop {
        let (status, report) = http(
            dev.addr,
            "GET",
            "/de/v1/analytics/appointments",
            &[("Authorization", &manager)],
            None,
        );
        assert_eq!(status, 200, "{report}");
        if let Some(first) = report["minutes"].get(0) {
            break first.clone();
        }
        assert!(asked.elapsed() < Duration::from_secs(20), "not counted: {report}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((&counted["booked"], &counted["cancelled"]), (&json!(1), &json!(0)));
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
    // The booking service connects as the Region's workload role, whose Secret is a file
    // beside the Region's cluster; with it the audit trail cannot be emptied or changed.
    let port = dev
        .region_ports()
        .into_iter()
        .find(|(region, _)| region == "eu-central-1")
        .unwrap()
        .1;
    let superuser = format!("postgres://meridian@127.0.0.1:{port}/meridian");
    let mut conn = PgConnection::connect(&superuser).await.unwrap();
    // The appointment names the patient by the client ID that the Region's registry maps
    // the demo patient's token subject to, never by the subject.
    let (subject, client_id): (String, String) =
        sqlx::query_as("SELECT subject, client_id::text FROM patients WHERE country_code = 'DE'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(booked["patientId"], client_id.as_str(), "{booked}");
    let stored: String = sqlx::query_scalar("SELECT patient_id FROM appointments")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!((stored.as_str(), subject == client_id), (client_id.as_str(), false));
    let users: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT usename::text FROM pg_stat_activity
          WHERE datname = 'meridian' AND backend_type = 'client backend'
            AND pid <> pg_backend_pid() AND application_name <> 'meridian-control-plane'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        users,
        ["meridian_eu_central_1_workload"],
        "the booking service's connections"
    );
    let secret = dev.data_dir.join("regions/eu-central-1/secrets/postgres-workload.json");
    let secret: serde_json::Value = serde_json::from_slice(&std::fs::read(&secret).unwrap()).unwrap();
    let mut workload = PgConnection::connect(secret["url"].as_str().unwrap()).await.unwrap();
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit")
        .fetch_one(&mut workload)
        .await
        .unwrap();
    assert!(audited > 0, "the booking left audit records");
    for sql in [
        "TRUNCATE audit",
        "TRUNCATE audit_de",
        "DELETE FROM audit",
        "UPDATE audit SET actor = 'x'",
    ] {
        let refused = sqlx::raw_sql(sql).execute(&mut workload).await.unwrap_err();
        let code = refused
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {refused}");
    }
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM audit")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(still, audited);
    let (status, _) = dev.interrupt();
    assert!(status.success());
}
