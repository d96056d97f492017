//! Concurrency: identical conditional creates sent at once create exactly one resource, and
//! search pages followed by their `next` links see every resource that existed through the
//! whole walk exactly once while other resources are created and deleted.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{Method, StatusCode};
use futures::future::join_all;
use serde_json::{Value, json};
use support::{Harness, resources};

const KVNR_SYSTEM: &str = "http://fhir.de/sid/gkv/kvid-10";

/// Sends `body` 64 times at once with `If-None-Exist: identifier=<condition>`; returns the
/// one id every answer names.
async fn sixty_four(h: &Harness, path: &str, body: &Value, condition: &str) -> String {
    let dr = h.clinician("DE");
    let header = format!("identifier={condition}");
    let headers = [("if-none-exist", header.as_str())];
    let replies = join_all((0..64).map(|_| h.send(Method::POST, path, Some(&dr), &headers, Some(body)))).await;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for reply in &replies {
        assert!(
            reply.status == StatusCode::CREATED || reply.status == StatusCode::OK,
            "{path}: {} {:#}",
            reply.status,
            reply.body
        );
        *statuses.entry(reply.status.as_u16()).or_default() += 1;
        ids.insert(reply.id());
    }
    println!("{path} x64 with If-None-Exist: {statuses:?}");
    assert_eq!(statuses.get(&201), Some(&1), "exactly one created: {statuses:?}");
    assert_eq!(ids.len(), 1, "every answer names the one resource: {ids:?}");
    ids.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_identical_conditional_creates_create_one() {
    let h = Harness::start(&["DE"]).await;
    let patient = resources::patient("K123456789", "Krüger");
    let id = sixty_four(
        &h,
        "/de/v1/fhir/Patient",
        &patient,
        &format!("{KVNR_SYSTEM}|K123456789"),
    )
    .await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM vault.patients WHERE country_code = 'DE'")
        .fetch_one(&h.admin)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let registry: i64 = sqlx::query_scalar("SELECT count(*) FROM patients WHERE country_code = 'DE'")
        .fetch_one(&h.admin)
        .await
        .unwrap();
    assert_eq!(registry, 1);

    let mut observation = resources::observation(&id, "8867-4", 72.0, "/min", "2026-11-02T09:10:00+01:00");
    observation["identifier"] = json!([{"system": "urn:meridian:device-reading", "value": "reading-0001"}]);
    sixty_four(
        &h,
        "/de/v1/fhir/Observation",
        &observation,
        "urn:meridian:device-reading|reading-0001",
    )
    .await;
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM fhir_resources WHERE country_code = 'DE' AND resource_type = 'Observation'",
    )
    .fetch_one(&h.admin)
    .await
    .unwrap();
    assert_eq!(rows, 1);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&h.admin)
        .await
        .unwrap();
    assert_eq!(events, 2, "one event per resource created");
}

/// The next link's path and query.
fn next_of(reply: &support::Reply) -> Option<String> {
    reply.body["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| {
            let url = l["url"].as_str().unwrap();
            url.strip_prefix("http://localhost").unwrap_or(url).to_string()
        })
}

fn at(i: usize) -> String {
    // Three observations share each minute: ties are broken by id.
    format!("2026-11-01T10:{:02}:00Z", i % 15)
}

/// Walks the search `query` of patient `patient`'s observations, 10 a page, while another
/// task creates and deletes other observations of the patient; returns the ids seen in
/// order and with their dates.
async fn walk(h: &Harness, patient: &str, query: &str) -> Vec<(String, String)> {
    let dr = h.clinician("DE");
    let done = AtomicBool::new(false);
    let walker = async {
        let mut seen = Vec::new();
        let mut path = Some(format!("/de/v1/fhir/Observation?patient={patient}&_count=10{query}"));
        let mut pages = 0;
        while let Some(p) = path {
            let reply = h.get(&p, &dr).await;
            assert_eq!(reply.status, StatusCode::OK, "{p}: {:#}", reply.body);
            let entries = reply.entries();
            assert!(entries.len() <= 10, "{p}: {} entries", entries.len());
            for e in entries {
                let r = &e["resource"];
                seen.push((
                    r["id"].as_str().unwrap().to_string(),
                    r["effectiveDateTime"].as_str().unwrap().to_string(),
                ));
            }
            path = next_of(&reply);
            pages += 1;
            assert!(pages < 100, "the walk ends");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        done.store(true, Ordering::SeqCst);
        seen
    };
    let churner = async {
        let mut alive: Vec<String> = Vec::new();
        let mut n = 0;
        // At most 60, so that a walk by _lastUpdated, which meets every new one, ends.
        while !done.load(Ordering::SeqCst) && n < 60 {
            n += 1;
            let body = resources::observation(patient, "29463-7", 60.0 + n as f64, "kg", &at(n * 7));
            let created = h.post("/de/v1/fhir/Observation", &dr, &body).await;
            assert_eq!(created.status, StatusCode::CREATED, "{:#}", created.body);
            alive.push(created.id());
            if n % 2 == 0 {
                let doomed = alive.remove(0);
                let gone = h.delete(&format!("/de/v1/fhir/Observation/{doomed}"), &dr).await;
                assert_eq!(gone.status, StatusCode::NO_CONTENT);
            }
        }
        n
    };
    let (seen, churned) = tokio::join!(walker, churner);
    println!(
        "walk {query:?}: {} seen while {churned} others were created (half deleted again)",
        seen.len()
    );
    assert!(churned >= 3, "the data changed during the walk ({churned} creates)");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_stay_correct_while_data_changes() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let patient = h
        .post("/de/v1/fhir/Patient", &dr, &resources::patient("P123456789", "Seiten"))
        .await;
    let patient = patient.id();
    let mut stable = BTreeSet::new();
    for i in 0..45 {
        let body = resources::observation(&patient, "8867-4", 60.0 + i as f64, "/min", &at(i));
        let created = h.post("/de/v1/fhir/Observation", &dr, &body).await;
        assert_eq!(created.status, StatusCode::CREATED);
        stable.insert(created.id());
    }
    for query in ["", "&_sort=-date", "&_sort=date", "&_sort=_lastUpdated"] {
        let seen = walk(&h, &patient, query).await;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, _) in &seen {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{query}: seen more than once: {twice:?}");
        let missed: Vec<_> = stable.iter().filter(|id| !counts.contains_key(id.as_str())).collect();
        assert!(missed.is_empty(), "{query}: never seen: {missed:?}");
        let dates: Vec<&str> = seen.iter().map(|(_, d)| d.as_str()).collect();
        if query == "&_sort=-date" {
            assert!(
                dates.windows(2).all(|w| w[0] >= w[1]),
                "{query}: newest first: {dates:?}"
            );
        }
        if query == "&_sort=date" {
            assert!(
                dates.windows(2).all(|w| w[0] <= w[1]),
                "{query}: oldest first: {dates:?}"
            );
        }
    }
}

/// The same Krankenversichertennummer written two ways is one condition: concurrent
/// conditional creates that spell it differently still create one Patient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_national_id_written_two_ways_is_one_condition() {
    let h = Harness::start(&["DE"]).await;
    let dr = h.clinician("DE");
    let patient = resources::patient("K123456789", "Krüger");
    let spellings = [
        format!("identifier={KVNR_SYSTEM}|K123456789"),
        format!("identifier={KVNR_SYSTEM}|K%20123%20456%20789"),
        format!("identifier={KVNR_SYSTEM}|k123456789"),
    ];
    let headers: Vec<[(&str, &str); 1]> = spellings.iter().map(|s| [("if-none-exist", s.as_str())]).collect();
    let replies = join_all((0..48).map(|i| {
        h.send(
            Method::POST,
            "/de/v1/fhir/Patient",
            Some(&dr),
            &headers[i % 3],
            Some(&patient),
        )
    }))
    .await;
    let created = replies.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert!(
        replies.iter().all(|r| r.status.is_success()),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let ids: BTreeSet<String> = replies.iter().map(|r| r.id()).collect();
    assert_eq!(
        (created, ids.len()),
        (1, 1),
        "one Patient, whichever way the ID is written"
    );
}
