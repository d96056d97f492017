//! A Region's PostgreSQL dies under `meridian dev` (SIGKILL to its postmaster): bookings to
//! its countries fail fast with a 503 problem, the Region's status shows the restart
//! (`DatabaseRestarting` while it lasts, then `DatabaseReady=True` with the restart on
//! record), and bookings work again within seconds without restarting `meridian dev`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_e2e::{Dev, http, http_get, http_typed};
use meridian_localpg::{kill_postmaster, postmaster};
use serde_json::{Value, json};

/// `DatabaseReady`'s status and reason in a Region's JSON.
fn database_ready(region: &Value) -> Option<(String, String)> {
    let c = region["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "DatabaseReady")?;
    Some((c["status"].as_str()?.to_string(), c["reason"].as_str()?.to_string()))
}

#[test]
fn a_killed_region_database_is_restarted_and_bookings_recover_by_themselves() {
    let work = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_examples(work.path());
    dev.await_ready("de", Duration::from_secs(120));
    let bearers = dev.bearers();
    let (admin, patient) = (bearers["clinic-admin"].clone(), bearers["patient"].clone());
    let anna = dev.create_anna(&admin);
    let id = anna["id"].as_str().unwrap().to_string();
    let slots = dev.open_mornings(&admin, &id, &patient);
    let booking = |start: &str| json!({"practitionerId": id, "start": start, "reason": "Kontrolle"});
    let first = booking(slots["slots"][0]["start"].as_str().unwrap());
    let headers = [("Authorization", patient.as_str()), ("Idempotency-Key", "restart-1")];
    let (status, booked) = http(dev.addr, "POST", "/de/v1/appointments", &headers, Some(&first));
    assert_eq!(status, 201, "{booked}");

    let (_, de) = dev.get("/apis/platform.meridian.dev/v1alpha1/countries/de");
    let region = de["spec"]["region"].as_str().unwrap().to_string();
    let region_path = format!("/apis/platform.meridian.dev/v1alpha1/regions/{region}");
    let pgdata = dev.data_dir.join("regions").join(&region).join("pgdata");
    let (pid, port) = postmaster(&pgdata).unwrap();
    let before = database_ready(&dev.get(&region_path).1);
    assert!(before.as_ref().is_some_and(|(s, _)| s == "True"), "{before:?}");

    // Watch the Region's DatabaseReady condition from before the kill, every 20 ms.
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (seen, watching, addr, path) = (seen.clone(), watching.clone(), dev.addr, region_path.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::SeqCst) {
                let (_, region) = http_get(addr, &path);
                if let Some((status, reason)) = database_ready(&region) {
                    let message = region["status"]["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "DatabaseReady"))
                        .and_then(|c| c["message"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    let mut seen = seen.lock().unwrap();
                    if seen.last().is_none_or(|(s, r, _)| (s, r) != (&status, &reason)) {
                        seen.push((status, reason, message));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    assert_eq!(kill_postmaster(&pgdata).unwrap(), pid);
    let killed = Instant::now();

    // While it is down: a booking fails fast, as a 503 problem that tells nothing internal.
    // The restart can win the race (it takes ~0.3 s, the pool waits up to 1 s for a
    // connection, and a killed postmaster's backends may answer one last query), so a
    // booking that succeeds here is the recovery arriving first, not a failure.
    let second = booking(slots["slots"][1]["start"].as_str().unwrap());
    let headers = [("Authorization", patient.as_str()), ("Idempotency-Key", "restart-2")];
    let asked = Instant::now();
    let (status, content_type, problem) = http_typed(dev.addr, "POST", "/de/v1/appointments", &headers, Some(&second));
    let answered_in = asked.elapsed();
    println!("booking while the database is down: {status} in {answered_in:?}");
    assert!(answered_in < Duration::from_secs(2), "answered in {answered_in:?}");
    if status != 201 {
        assert_eq!(status, 503, "{problem}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["status"], 503);
        let detail = problem["detail"].as_str().unwrap().to_ascii_lowercase();
        for internal in ["refused", "pool", "sqlx", "timed out", "127.0.0.1", "postgres"] {
            assert!(!detail.contains(internal), "the problem tells {internal:?}: {problem}");
        }
    }

    // Bookings work again by themselves (the same idempotency key: an answer lost in the
    // outage cannot book twice).
    let recovered = loop {
        let (status, body) = http(dev.addr, "POST", "/de/v1/appointments", &headers, Some(&second));
        if status == 201 || status == 200 {
            assert_eq!(body["practitionerId"], id.as_str(), "{body}");
            break killed.elapsed();
        }
        assert_eq!(status, 503, "only 503 while the database is away: {body}");
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "bookings did not recover:\n{}",
            dev.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("bookings work again {recovered:?} after the kill");
    assert!(
        recovered < Duration::from_secs(10),
        "recovered only after {recovered:?}"
    );

    // The Region says so: ready again, with the restart on record (however fast it was,
    // the DatabaseReady message keeps it), and DatabaseRestarting while it lasted if a
    // poll caught it.
    let mut ready = String::new();
    dev.wait_for(
        "Region ready again, with the restart on record",
        Duration::from_secs(10),
        |d| {
            let region = d.get(&region_path).1;
            ready = region["status"]["conditions"]
                .as_array()
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c["type"] == "DatabaseReady" && c["status"] == "True")
                })
                .and_then(|c| c["message"].as_str())
                .unwrap_or_default()
                .to_string();
            ready.contains("restarted at")
        },
    );
    watching.store(false, Ordering::SeqCst);
    watcher.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    println!("Region {region} DatabaseReady over the outage: {seen:?}; now: {ready}");
    assert!(ready.contains("signal 9"), "the message says what happened: {ready}");
    if let Some(restarting) = seen
        .iter()
        .position(|(s, r, _)| s == "False" && r == "DatabaseRestarting")
    {
        assert!(
            seen[restarting].2.contains("signal 9"),
            "the message says what happened: {:?}",
            seen[restarting].2
        );
    }

    // The same data directory and port, a new server; the data from before is there (once
    // the Country, reconciled after its Region, is Ready again).
    dev.await_ready("de", Duration::from_secs(10));
    let (new_pid, new_port) = postmaster(&pgdata).unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(new_port, port);
    let (status, mine) = http(
        dev.addr,
        "GET",
        "/de/v1/appointments",
        &[("Authorization", &patient)],
        None,
    );
    assert_eq!(status, 200, "{mine}\n{}", dev.output());
    assert!(mine.to_string().contains(booked["id"].as_str().unwrap()), "{mine}");

    let (status, _) = dev.interrupt();
    assert!(status.success());
}
