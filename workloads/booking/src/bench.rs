//! `meridian bench booking`: how fast appointments are booked, and that none is ever booked
//! twice. Starts its own PostgreSQL and booking service, then drives concurrent clients
//! that race for a limited set of slots, first over HTTP, then straight against the
//! database with the same transaction, and prints both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use chrono::{DateTime, NaiveTime, Utc};
use http_body_util::BodyExt;
use meridian_localpg::{Durability, TempCluster};
use meridian_shared::auth::{DevIssuer, Role};
use meridian_shared::bench::Served;
use meridian_shared::schema::prepare;
use rand::Rng;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::appointments::{self, BookRequest, BookingError};
use crate::availability::{self, Entry};
use crate::http::{Countries, CountryEntry, Service, Serving, app};
use crate::schedules::Schedules;
use crate::{Actor, practitioners, slots};

/// Options of `meridian bench booking`.
#[derive(clap::Args, Clone, Debug)]
pub struct BookingBench {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds each phase (HTTP, database only) runs.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Practitioners per country; each offers 16 half-hour slots a day for 14 days.
    #[arg(long, default_value_t = 100)]
    pub practitioners: usize,
    /// Run PostgreSQL with fsync off (faster, not what production does).
    #[arg(long)]
    pub no_fsync: bool,
}

/// One phase's tally.
#[derive(Default)]
struct Tally {
    booked: AtomicU64,
    conflicts: AtomicU64,
    errors: AtomicU64,
}

/// A slot a client may race for.
#[derive(Clone, Copy)]
struct Target {
    practitioner: Uuid,
    /// As [`crate::schedules`] caches it: the database phase checks it too.
    schedule_version: i64,
    start: DateTime<Utc>,
}

pub async fn run(options: BookingBench) -> anyhow::Result<String> {
    let pg = TempCluster::start_with(Durability::fsync(!options.no_fsync)).await?;
    let url = pg.url();
    let mut conn = PgConnection::connect(&url).await?;
    // DE is booked over HTTP, AT straight against the database: same shape, separate slots.
    prepare(&mut conn, &["DE", "AT"]).await?;
    let pool = PgPoolOptions::new()
        .max_connections(options.clients.min(48) as u32)
        .connect(&url)
        .await?;
    let tz = chrono_tz::Europe::Berlin;
    let de = seed(&pool, "DE", tz, options.practitioners).await?;
    let at = seed(&pool, "AT", tz, options.practitioners).await?;
    let de_patients = Arc::new(patients(&pool, "DE", options.clients).await?);
    let at_patients = Arc::new(patients(&pool, "AT", options.clients).await?);
    let mut out = format!(
        "booking benchmark: {} clients, {} s per phase, {} practitioners x {} slots per country, PostgreSQL {}\n",
        options.clients,
        options.seconds,
        options.practitioners,
        de.len() / options.practitioners.max(1),
        if options.no_fsync {
            "with fsync off"
        } else {
            "durable (fsync on)"
        }
    );

    // HTTP: the real service on a real socket.
    let issuer = DevIssuer::new("http://bench", "meridian");
    let countries = Countries::default();
    countries.set([CountryEntry {
        code: "DE".into(),
        timezone: tz,
        serving: Serving::Ready,
        reassignment: true,
    }]);
    let service = Arc::new(Service::new(pool.clone(), Arc::new(issuer.verifier()), countries));
    let served = Served::start(app(service), options.clients).await?;
    let (addr, client) = (served.addr, served.client.clone());
    // Front-desk staff book for patients, by client ID: every attempt is a different patient
    // (until a client's share of patients comes round again), so the races are between
    // patients for a practitioner's slot, not a patient with themselves.
    let token = Arc::new(issuer.token(
        "bench-front-desk",
        &[Role::PracticeManager],
        &["DE"],
        Duration::from_secs(3600),
    ));
    let de = Arc::new(de);
    let http = phase(options.clients, options.seconds, {
        let (client, token, de, patients) = (client.clone(), token.clone(), de.clone(), de_patients.clone());
        move |worker, n| {
            let (client, token, de) = (client.clone(), token.clone(), de.clone());
            let patient = patient_of(&patients, worker, n);
            async move {
                let target = de[rand::rng().random_range(0..de.len())];
                let body = serde_json::json!({"practitionerId": target.practitioner, "start": target.start, "patientId": patient});
                let request = http::Request::post(format!("http://{addr}/de/v1/appointments"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("http-{worker}-{n}"))
                    .body(Body::from(body.to_string()))
                    .expect("a valid request");
                match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        match status.as_u16() {
                            201 => Outcome::Booked,
                            409 => Outcome::Conflict,
                            _ => Outcome::Error,
                        }
                    }
                    Err(_) => Outcome::Error,
                }
            }
        }
    })
    .await;
    drop(served);

    // The database alone: the same transaction, no HTTP, no token, no slot lookup.
    let at = Arc::new(at);
    let db = phase(options.clients, options.seconds, {
        let (pool, at, patients) = (pool.clone(), at.clone(), at_patients.clone());
        move |worker, n| {
            let (pool, at) = (pool.clone(), at.clone());
            let patient = patient_of(&patients, worker, n);
            async move {
                let target = at[rand::rng().random_range(0..at.len())];
                let request = BookRequest {
                    country_code: "AT".into(),
                    practitioner_id: target.practitioner,
                    patient_id: patient,
                    by_patient: false,
                    starts_at: target.start,
                    ends_at: target.start + chrono::Duration::minutes(30),
                    reason: None,
                    idempotency_key: format!("db-{worker}-{n}"),
                    schedule_version: target.schedule_version,
                    actor: "bench-front-desk".into(),
                    correlation_id: Uuid::new_v4(),
                };
                match appointments::book(&pool, &request).await {
                    Ok(_) => Outcome::Booked,
                    Err(BookingError::Conflict(_)) => Outcome::Conflict,
                    Err(e) => {
                        tracing::warn!(error = %e, "booking failed");
                        Outcome::Error
                    }
                }
            }
        }
    })
    .await;

    let double_bookings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM appointments a JOIN appointments b
            ON a.country_code = b.country_code AND a.practitioner_id = b.practitioner_id AND a.id < b.id
           AND a.status = 'booked' AND b.status = 'booked'
           AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)",
    )
    .fetch_one(&pool)
    .await?;
    let per_s = |r: &PhaseResult| r.booked as f64 / r.elapsed.as_secs_f64();
    let (http_rate, db_rate) = (per_s(&http), per_s(&db));
    for (name, r) in [("http", &http), ("db-only", &db)] {
        out += &format!(
            "{name:<8} booked {:>7} ({:>8.1}/s)  conflicts {:>6}  errors {:>3}  p50 {:>6.2} ms  p95 {:>6.2} ms  p99 {:>6.2} ms\n",
            r.booked,
            per_s(r),
            r.conflicts,
            r.errors,
            r.percentile(50.0),
            r.percentile(95.0),
            r.percentile(99.0)
        );
    }
    out += &format!(
        "slots taken by the end: http {:.0}%, db-only {:.0}% (the rest of the attempts raced for taken slots)\n",
        100.0 * http.booked as f64 / de.len().max(1) as f64,
        100.0 * db.booked as f64 / at.len().max(1) as f64
    );
    out += &format!("double bookings found by SQL: {double_bookings}\n");
    out += &format!(
        "bookings_per_s={http_rate:.1} p50_ms={:.2} p95_ms={:.2} p99_ms={:.2} conflicts={} double_bookings={double_bookings} db_only_per_s={db_rate:.1} ratio_to_db={:.2}\n",
        http.percentile(50.0),
        http.percentile(95.0),
        http.percentile(99.0),
        http.conflicts,
        if db_rate > 0.0 { http_rate / db_rate } else { 0.0 }
    );
    pool.close().await;
    // Stopping the server waits for it.
    tokio::task::spawn_blocking(move || drop(pg)).await?;
    Ok(out)
}

/// Patients each client books for in turn.
const PATIENTS_PER_CLIENT: usize = 1024;

/// The client IDs of registered patients of country `code`, [`PATIENTS_PER_CLIENT`] for each
/// of `clients` (patients the clinic recorded, without an account of their own).
async fn patients(pool: &PgPool, code: &str, clients: usize) -> anyhow::Result<Vec<Uuid>> {
    let count = i64::try_from(clients.max(1) * PATIENTS_PER_CLIENT)?;
    Ok(sqlx::query_scalar(
        "INSERT INTO patients (country_code, client_id) SELECT $1, gen_random_uuid() FROM generate_series(1, $2)
         RETURNING client_id",
    )
    .bind(code)
    .bind(count)
    .fetch_all(pool)
    .await?)
}

/// The patient client `worker` books for in its attempt `n`.
fn patient_of(patients: &[Uuid], worker: usize, n: u64) -> Uuid {
    let turn = usize::try_from(n).unwrap_or(usize::MAX) % PATIENTS_PER_CLIENT;
    patients[(worker * PATIENTS_PER_CLIENT + turn) % patients.len()]
}

/// Practitioners with a weekly rule for every day, 09:00–17:00 in 30-minute slots, and the
/// slots of the next 14 days.
async fn seed(pool: &PgPool, code: &str, tz: chrono_tz::Tz, count: usize) -> anyhow::Result<Vec<Target>> {
    let actor = Actor {
        subject: "bench",
        correlation_id: Uuid::new_v4(),
    };
    let profiles: Vec<practitioners::Profile> = (0..count)
        .map(|i| practitioners::Profile {
            external_id: Some(format!("bench-{i}")),
            given_name: "Bench".into(),
            family_name: format!("Practitioner {i}"),
            specialty: "Allgemeinmedizin".into(),
            city: "Berlin".into(),
            languages: vec!["de".into()],
        })
        .collect();
    practitioners::import(pool, code, &profiles, actor).await?;
    let ids = practitioners::list(pool, code, None, 500).await?;
    let mut targets = Vec::new();
    let from = (Utc::now() + chrono::Duration::days(1)).with_timezone(&tz).date_naive();
    let until = from + chrono::Duration::days(13);
    let schedules = Schedules::default();
    for p in ids.iter().take(count) {
        for weekday in 1..=7 {
            let entry = Entry::Weekly {
                weekday,
                start: NaiveTime::from_hms_opt(9, 0, 0).expect("valid"),
                end: NaiveTime::from_hms_opt(17, 0, 0).expect("valid"),
                slot_minutes: 30,
                valid_from: None,
                valid_until: None,
            };
            availability::add(pool, code, p.id, &entry, actor).await?;
        }
        let schedule = schedules
            .get(pool, code, p.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("practitioner {} takes no appointments", p.id))?;
        let free = slots::free_slots(tz, &schedule.availability, &[], from, until);
        targets.extend(free.iter().map(|s| Target {
            practitioner: p.id,
            schedule_version: schedule.version,
            start: s.start,
        }));
    }
    Ok(targets)
}

enum Outcome {
    Booked,
    Conflict,
    Error,
}

struct PhaseResult {
    booked: u64,
    conflicts: u64,
    errors: u64,
    elapsed: Duration,
    /// Every request's latency in milliseconds, sorted.
    latencies: Vec<f64>,
}

impl PhaseResult {
    fn percentile(&self, p: f64) -> f64 {
        meridian_shared::bench::percentile(&self.latencies, p)
    }
}

/// Runs `clients` workers calling `attempt(worker, n)` until `seconds` pass.
async fn phase<F, Fut>(clients: usize, seconds: u64, attempt: F) -> PhaseResult
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + Send,
{
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let (tally, attempt) = (tally.clone(), attempt.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let outcome = attempt(worker, n).await;
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    let counter = match outcome {
                        Outcome::Booked => &tally.booked,
                        Outcome::Conflict => &tally.conflicts,
                        Outcome::Error => &tally.errors,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    PhaseResult {
        booked: tally.booked.load(Ordering::Relaxed),
        conflicts: tally.conflicts.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
        elapsed,
        latencies,
    }
}
