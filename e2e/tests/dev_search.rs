//! Practitioner search in `meridian dev`: every country has its own index, a new
//! practitioner is found within a second in their country only, and changing a country's
//! analyzer builds a new index version without a single failed search.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_e2e::{Dev, condition, search};
use serde_json::Value;

fn country(dev: &Dev, name: &str) -> Value {
    dev.get(&format!("/apis/platform.meridian.dev/v1alpha1/countries/{name}"))
        .1
}

#[test]
fn search_per_country_and_an_analyzer_change_without_a_failed_search() {
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    let mut dev = Dev::start_examples(work.path());
    for name in ["de", "fr", "gb", "es", "it"] {
        dev.await_ready(name, Duration::from_secs(120));
        let status = country(&dev, name);
        assert_eq!(condition(&status, "SearchIndexReady"), Some("True"), "{status}");
        assert_eq!(
            status["status"]["index"],
            format!("practitioners_{name}_v1"),
            "{status}"
        );
        assert_eq!(status["status"]["indexAlias"], format!("practitioners_{name}"));
    }
    let bearers = dev.bearers();
    let (admin, patient) = (bearers["clinic-admin"].clone(), bearers["patient"].clone());
    dev.create_anna(&admin);
    let took = dev.wait_for("Schmidt searchable in DE", Duration::from_secs(1), |d| {
        search(d.addr, &patient, "de", "Kardiologin").1 == ["Schmidt"]
    });
    println!("found by /de/v1/practitioners/search {took:?} after creation");
    assert_eq!(
        search(dev.addr, &patient, "fr", "Schmidt"),
        (200, vec![]),
        "never through /fr/v1"
    );

    // Search in a loop while the DE analyzer changes.
    let stop = Arc::new(AtomicBool::new(false));
    let (searches, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let searching = {
        let (stop, searches, failures, patient, addr) = (
            stop.clone(),
            searches.clone(),
            failures.clone(),
            patient.clone(),
            dev.addr,
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (status, names) = search(addr, &patient, "de", "Schmidt");
                searches.fetch_add(1, Ordering::SeqCst);
                if status != 200 || names != ["Schmidt"] {
                    failures.fetch_add(1, Ordering::SeqCst);
                    eprintln!("failed search: {status} {names:?}");
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let path = manifests.join("countries/de.yaml");
    let manifest = std::fs::read_to_string(&path).unwrap();
    assert!(manifest.contains("analyzer: german"));
    std::fs::write(&path, manifest.replace("analyzer: german", "analyzer: standard")).unwrap();
    let started = Instant::now();
    dev.wait_for("DE index version 2", Duration::from_secs(30), |d| {
        country(d, "de")["status"]["index"] == "practitioners_de_v2"
    });
    println!(
        "new index version in status {:?} after the manifest changed",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    searching.join().unwrap();
    let (searches, failures) = (searches.load(Ordering::SeqCst), failures.load(Ordering::SeqCst));
    println!("{searches} searches during the change, {failures} failed");
    assert!(searches > 10, "the loop ran ({searches} searches)");
    assert_eq!(failures, 0);
    let status = country(&dev, "de");
    assert_eq!(condition(&status, "Ready"), Some("True"), "{status}");
    dev.interrupt();
}
