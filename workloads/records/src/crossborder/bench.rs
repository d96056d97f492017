//! `meridian bench crossborder`: French clinicians look German patients up by their
//! Krankenversichertennummer, Germany's records service a separate service over HTTP (two
//! Regions, each its own PostgreSQL: [`super::two_regions`]). Beside it, in turns of one
//! second so that both see the same machine, the plain alternative: the same lookup as bare
//! SQL (the hash looked up in the index, the patient's vault row read and opened at home),
//! without tokens, consent, audit or HTTP. Its last line is `key=value` pairs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use serde_json::{Value, json};
use uuid::Uuid;

use super::two_regions::{Options, TwoRegions};
use crate::mpi::{self, NationalId};

const KVNR: &str = "http://fhir.de/sid/gkv/kvid-10";

/// Options of `meridian bench crossborder`.
#[derive(clap::Args, Clone, Debug)]
pub struct CrossborderBench {
    /// Concurrent clinicians.
    #[arg(long, default_value_t = 32)]
    pub clinicians: usize,
    /// Seconds each way (over HTTP, bare SQL) runs, in one-second turns.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// German patients seeded, each with two observations and a consent to share.
    #[arg(long, default_value_t = 300)]
    pub patients: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

/// Latencies (ms) and failures of one way of looking up.
#[derive(Default)]
struct Tally {
    elapsed: Duration,
    latencies: Vec<f64>,
    errors: u64,
}

impl Tally {
    fn line(&mut self, label: &str) -> String {
        self.latencies.sort_by(f64::total_cmp);
        format!(
            "{label:<14} {:>8.1} lookups/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}\n",
            self.rate(),
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            self.errors
        )
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `workers` calling `attempt(worker)` for `for_how_long`; adds to `tally`.
async fn turn<F, Fut>(workers: usize, for_how_long: Duration, attempt: F, tally: &mut Tally)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let started = Instant::now();
    let deadline = started + for_how_long;
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let attempt = attempt.clone();
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if attempt(worker).await {
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    for task in tasks {
        if let Ok((latencies, errors)) = task.await {
            tally.latencies.extend(latencies);
            tally.errors += errors;
        }
    }
    tally.elapsed += started.elapsed();
}

pub async fn run(options: CrossborderBench) -> anyhow::Result<String> {
    let regions = Arc::new(
        TwoRegions::start(Options {
            connections: (options.clinicians as u32).clamp(4, 32),
            // The benchmark measures lookups, not the guard against guessing.
            lookups_per_minute: u32::MAX,
            durable: true,
            ..Options::default()
        })
        .await?,
    );
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(options.clinicians * 2)
        .build_http();
    let send = {
        let (client, addr) = (client.clone(), regions.addr);
        move |method: &'static str, path: String, token: Arc<String>, body: Option<Value>| {
            let client = client.clone();
            async move {
                let request = http::Request::builder()
                    .method(method)
                    .uri(format!("http://{addr}{path}"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/fhir+json")
                    .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
                    .ok()?;
                let response = client.request(request).await.ok()?;
                let status = response.status();
                let bytes = response.into_body().collect().await.ok()?.to_bytes();
                Some((status, bytes))
            }
        }
    };

    // German patients, each in one transaction: the patient, two observations, a consent.
    let german = Arc::new(regions.clinician("bench-dr-weber", "DE"));
    for i in 0..options.patients {
        let (p, o1, o2, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let subject = json!({"reference": format!("urn:uuid:{p}")});
        let observation = |code: &str, value: u32, at: &str| {
            json!({"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": subject, "effectiveDateTime": at, "valueQuantity": {"value": value, "unit": "1"}})
        };
        let entries = [
            (
                p,
                json!({"resourceType": "Patient", "identifier": [{"system": KVNR, "value": format!("B{i:09}")}],
                "name": [{"family": format!("Bench{i}"), "given": ["Anna"]}], "birthDate": "1970-01-01"}),
                "Patient",
            ),
            (o1, observation("8867-4", 70, "2026-01-02T09:00:00Z"), "Observation"),
            (o2, observation("29463-7", 80, "2026-02-03T09:00:00Z"), "Observation"),
            (
                c,
                json!({"resourceType": "Consent", "status": "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": subject, "dateTime": "2026-01-01T00:00:00Z",
                "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
                "provision": {"type": "permit"}}),
                "Consent",
            ),
        ];
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries.iter().map(|(id, resource, kind)| json!({
            "fullUrl": format!("urn:uuid:{id}"), "resource": resource, "request": {"method": "POST", "url": kind}})).collect::<Vec<_>>()});
        let answer = send("POST", "/de/v1/fhir".into(), german.clone(), Some(bundle)).await;
        match answer {
            Some((status, _)) if status.is_success() => {}
            Some((status, body)) => anyhow::bail!("seeding answered {status}: {}", String::from_utf8_lossy(&body)),
            None => anyhow::bail!("the German records service does not answer"),
        }
    }
    // Every patient in the index, and statistics as autovacuum would have them.
    let started = Instant::now();
    loop {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM mpi.entries")
            .fetch_one(&regions.index)
            .await?;
        if held as usize >= options.patients {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the registrar registered {held} of {} patients",
            options.patients
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pool in [&regions.frankfurt.admin, &regions.paris.admin] {
        sqlx::query("ANALYZE").execute(pool).await?;
    }

    // Over HTTP: clinicians in France, each their own token.
    let tokens: Arc<Vec<Arc<String>>> = Arc::new(
        (0..options.clinicians)
            .map(|i| Arc::new(regions.clinician(&format!("bench-dr-{i}"), "FR")))
            .collect(),
    );
    let patients = options.patients;
    let http_lookup = {
        let (send, tokens) = (send.clone(), tokens.clone());
        move |worker: usize| {
            let (send, token) = (send.clone(), tokens[worker].clone());
            async move {
                let i = rand::rng().random_range(0..patients);
                let path = format!("/fr/v1/fhir/Patient?identifier={KVNR}%7CB{i:09}");
                match send("GET", path, token, None).await {
                    // One patient found, from Germany.
                    Some((status, body)) if status.is_success() => serde_json::from_slice::<Value>(&body)
                        .is_ok_and(|b| b["entry"][0]["resource"]["resourceType"] == "Patient"),
                    _ => false,
                }
            }
        }
    };
    // Bare SQL: the same hash looked up in the index, the row read and opened at home.
    let rules = regions
        .frankfurt
        .countries
        .get("de")
        .expect("DE is served in Frankfurt");
    let keys = regions.frankfurt.link.get().expect("linked").link.keys.clone();
    let index_pool = regions.frankfurt.link.get().expect("linked").index.clone();
    let vault = regions.frankfurt.service.vault.clone();
    let db_lookup = {
        let (rules, keys, index_pool, vault) = (rules.clone(), keys.clone(), index_pool.clone(), vault.clone());
        move |_| {
            let (rules, keys, index_pool, vault) = (rules.clone(), keys.clone(), index_pool.clone(), vault.clone());
            async move {
                let i = rand::rng().random_range(0..patients);
                let Ok(id) = NationalId::checked(&rules.rules, KVNR, &format!("B{i:09}")) else {
                    return false;
                };
                let Ok(Some(entry)) = mpi::lookup(&index_pool, &keys, &id).await else {
                    return false;
                };
                let Ok(mut conn) = vault.acquire().await else {
                    return false;
                };
                let row: Option<(i64, String, Vec<u8>)> = sqlx::query_as(
                    "SELECT version, key_id, sealed FROM vault.patients WHERE country_code = $1 AND client_id = $2",
                )
                .bind(&entry.home_country)
                .bind(entry.client_id)
                .fetch_optional(&mut *conn)
                .await
                .ok()
                .flatten();
                let Some((version, key_id, sealed)) = row else {
                    return false;
                };
                let Ok(ring) = &rules.keys else { return false };
                crate::store::open_row(ring, entry.client_id, version, &key_id, &sealed).is_ok()
            }
        }
    };
    let (mut over_http, mut bare) = (Tally::default(), Tally::default());
    for _ in 0..options.seconds {
        turn(
            options.clinicians,
            Duration::from_secs(1),
            http_lookup.clone(),
            &mut over_http,
        )
        .await;
        turn(options.clinicians, Duration::from_secs(1), db_lookup.clone(), &mut bare).await;
    }
    // The timeline of one patient from abroad, a few times over, one at a time.
    let mut timeline = Vec::new();
    for i in 0..50.min(options.patients) {
        let path = format!("/fr/v1/fhir/Patient/$everything?identifier={KVNR}%7CB{i:09}");
        let t = Instant::now();
        if let Some((status, _)) = send("GET", path, tokens[0].clone(), None).await
            && status.is_success()
        {
            timeline.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    timeline.sort_by(f64::total_cmp);

    let mut out = format!(
        "crossborder benchmark: {} clinicians in FR, {} s each way in 1 s turns, {} DE patients; \
         Germany's records service over HTTP, each Region its own PostgreSQL (durable, fsync on)\n",
        options.clinicians, options.seconds, options.patients
    );
    out += &over_http.line("lookup abroad");
    out += &bare.line("bare SQL");
    out += &format!(
        "timeline ($everything abroad, one at a time): p50 {:.2} ms  p99 {:.2} ms of {}\n",
        percentile(&timeline, 0.5),
        percentile(&timeline, 0.99),
        timeline.len()
    );
    out += &format!(
        "lookup_rps={:.1} lookup_p50_ms={:.2} lookup_p99_ms={:.2} db_rps={:.1} db_p99_ms={:.2} everything_p50_ms={:.2} errors={}\n",
        over_http.rate(),
        percentile(&over_http.latencies, 0.5),
        percentile(&over_http.latencies, 0.99),
        bare.rate(),
        percentile(&bare.latencies, 0.99),
        percentile(&timeline, 0.5),
        over_http.errors + bare.errors
    );
    drop(regions);
    Ok(out)
}
