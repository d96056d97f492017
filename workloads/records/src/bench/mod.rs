//! `meridian bench records`: a mix of FHIR creates, reads, updates and searches over HTTP
//! against the real service (token checks, validation, the vault, an outbox event for every
//! write and an audit record for every operation), then the same operations as bare SQL on
//! the same tables twice: writing the same rows (event and audit record included), and
//! writing the resource's rows alone; and a 100-entry transaction Bundle. Starts its own
//! PostgreSQL.

pub mod bare;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use meridian_localpg::{Durability, TempCluster};
use meridian_shared::auth::{DevIssuer, Role};
use meridian_shared::bench::{Served, percentile};
use meridian_shared::pool::Pool;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use self::bare::Trail;

use crate::http::{Countries, CountryEntry, Service, app};
use crate::keys::{self, Keyring};
use crate::validate::Rules;

/// Options of `meridian bench records`.
#[derive(clap::Args, Clone, Debug)]
pub struct RecordsBench {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds each phase (HTTP, bare SQL) runs, in one-second turns.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Patients seeded, each with a few observations.
    #[arg(long, default_value_t = 500)]
    pub patients: usize,
    /// Run PostgreSQL with fsync off (faster, not what production does).
    #[arg(long)]
    pub no_fsync: bool,
    /// Operations per second of the paced phases, which measure latency at a given load
    /// rather than at saturation (0 leaves them out). The default is the throughput the
    /// service is required to carry.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
}

/// The operations of the mix, in the share each takes: reads 40%, creates 20%, updates 20%,
/// searches 20%.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Create,
    Read,
    Update,
    Search,
}

const OPS: [Op; 4] = [Op::Create, Op::Read, Op::Update, Op::Search];

fn pick() -> Op {
    match rand::rng().random_range(0..10) {
        0 | 1 => Op::Create,
        2..=5 => Op::Read,
        6 | 7 => Op::Update,
        _ => Op::Search,
    }
}

/// Per operation: latencies in ms, and failures.
#[derive(Default)]
struct Tally {
    latencies: Vec<(Op, f64)>,
    errors: u64,
}

#[derive(Default)]
struct Phase {
    elapsed: Duration,
    latencies: Vec<(Op, f64)>,
    errors: u64,
}

impl Phase {
    fn add(&mut self, more: Phase) {
        self.elapsed += more.elapsed;
        self.latencies.extend(more.latencies);
        self.errors += more.errors;
    }

    fn sorted(&self, op: Option<Op>) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .latencies
            .iter()
            .filter(|(o, _)| op.is_none_or(|op| *o == op))
            .map(|(_, l)| *l)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn rate(&self, op: Option<Op>) -> f64 {
        self.sorted(op).len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` workers calling `attempt(worker)` until `seconds` pass.
async fn phase<F, Fut>(clients: usize, seconds: u64, attempt: F) -> Phase
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Op, bool)> + Send,
{
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let attempt = attempt.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let (op, ok) = attempt(worker).await;
                    if ok {
                        tally.latencies.push((op, t.elapsed().as_secs_f64() * 1000.0));
                    } else {
                        tally.errors += 1;
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for w in workers {
        if let Ok(t) = w.await {
            all.latencies.extend(t.latencies);
            all.errors += t.errors;
        }
    }
    Phase {
        elapsed: started.elapsed(),
        latencies: all.latencies,
        errors: all.errors,
    }
}

/// Starts `attempt` `rate` times a second, evenly spaced, for one second, whether or not
/// earlier ones have finished (an open loop, as independent clients arrive), then waits for
/// them all. Each latency runs from when the operation was due, not from when it started:
/// an operation held up behind a stall counts the stall, which a closed loop like [`phase`]
/// hides by sending less while the service is slow.
async fn paced<F, Fut>(rate: u32, attempt: F) -> Phase
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Op, bool)> + Send + 'static,
{
    let started = tokio::time::Instant::now();
    let gap = Duration::from_secs(1) / rate.max(1);
    let mut running = Vec::with_capacity(rate as usize);
    for i in 0..rate {
        let due = started + gap * i;
        tokio::time::sleep_until(due).await;
        let attempt = attempt.clone();
        running.push(tokio::spawn(async move {
            let (op, ok) = attempt(i as usize).await;
            (op, ok, due.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut all = Tally::default();
    for task in running {
        match task.await {
            Ok((op, true, ms)) => all.latencies.push((op, ms)),
            _ => all.errors += 1,
        }
    }
    Phase {
        // The load offered, not the time the last operation took to finish.
        elapsed: Duration::from_secs(1),
        latencies: all.latencies,
        errors: all.errors,
    }
}

fn observation(patient: Uuid, value: f64) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-11-02T09:10:00+01:00",
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    })
}

/// A created Observation the workers read and update: its id, its patient and the last
/// version a client saw of it.
#[derive(Clone, Copy)]
struct Known {
    id: Uuid,
    patient: Uuid,
    version: i64,
}

/// What the clients know: shared, as a client application's cache would be.
type Knowns = Arc<std::sync::Mutex<Vec<Known>>>;

fn some_known(known: &Knowns) -> (usize, Known) {
    let known = known.lock().expect("lock");
    let i = rand::rng().random_range(0..known.len());
    (i, known[i])
}

/// Records that a client saw version `version` of the resource at `i`.
fn saw(known: &Knowns, i: usize, version: i64) {
    let mut known = known.lock().expect("lock");
    known[i].version = known[i].version.max(version);
}

/// What the service answered.
struct Answer {
    status: http::StatusCode,
    location: Option<String>,
    /// The version in the `ETag`.
    version: Option<i64>,
    body: axum::body::Bytes,
}

pub async fn run(options: RecordsBench) -> anyhow::Result<String> {
    let pg = TempCluster::start_with(Durability::fsync(!options.no_fsync)).await?;
    let url = pg.url();
    let admin = PgPool::connect(&url).await?;
    {
        let mut conn = admin.acquire().await?;
        // DE is used over HTTP, AT by bare SQL: same tables, separate partitions.
        meridian_shared::schema::prepare(&mut conn, &["DE", "AT"]).await?;
    }
    crate::roles::create_login(
        &admin,
        "bench_clinical",
        "bench",
        meridian_shared::schema::workload_privileges,
    )
    .await?;
    crate::roles::create_login(
        &admin,
        "bench_vault",
        "bench",
        meridian_shared::schema::vault_privileges,
    )
    .await?;
    let connections = options.clients.min(40) as u32;
    let login = |name: &str| crate::roles::as_login(&url, name, "bench").parse::<sqlx::postgres::PgConnectOptions>();
    let clinical = Pool::new(login("bench_clinical")?, connections);
    let vault = Pool::new(login("bench_vault")?, connections / 2 + 1);
    let mut secret = std::collections::BTreeMap::new();
    keys::ensure_country(&mut secret, "DE");
    let de = meridian_crds::CountrySpec {
        code: "DE".into(),
        ..serde_yaml_ng::from_str::<meridian_crds::Country>(include_str!("../../../../examples/countries/de.yaml"))?
            .spec
    };
    let countries = Countries::default();
    countries.set([CountryEntry {
        rules: Rules::of(&de),
        serving: meridian_crds::serving::Serving::Ready,
        keys: Keyring::from_secret(&secret, "DE").map_err(|e| e.to_string()),
    }]);
    let issuer = DevIssuer::new("http://bench", "meridian");
    let service = Arc::new(Service::new(
        clinical.clone(),
        vault.clone(),
        Arc::new(issuer.verifier()),
        countries,
    ));
    let served = Served::start(app(service), options.clients).await?;
    let (addr, client) = (served.addr, served.client.clone());
    let token = Arc::new(issuer.token(
        "bench-clinician",
        &[Role::Practitioner],
        &["DE"],
        Duration::from_secs(3600),
    ));
    // The body as JSON, where the bench needs what it says (an id, a version).
    let json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);
    let send = {
        let (client, token) = (client.clone(), token.clone());
        move |method: &str, path: String, headers: Vec<(&'static str, String)>, body: Option<Value>| {
            let (client, token) = (client.clone(), token.clone());
            let method: http::Method = method.parse().expect("a method");
            async move {
                let mut request = http::Request::builder()
                    .method(method)
                    .uri(format!("http://{addr}{path}"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/fhir+json");
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
                let response = client.request(request.body(body).expect("a request")).await.ok()?;
                let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
                let location = header(http::header::LOCATION).map(String::from);
                // W/"3"
                let version =
                    header(http::header::ETAG).and_then(|v| v.trim_start_matches("W/").trim_matches('"').parse().ok());
                let status = response.status();
                let body = response.into_body().collect().await.ok()?.to_bytes();
                Some(Answer {
                    status,
                    location,
                    version,
                    body,
                })
            }
        }
    };

    // The id of what a seeding request created.
    let created = |answer: Option<Answer>, what: &str| -> anyhow::Result<Uuid> {
        let answer = answer.ok_or_else(|| anyhow::anyhow!("the service does not answer"))?;
        let body = json(&answer.body);
        body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no {what} created: {body}"))
    };
    // Patients through the API (sealed in the vault), one observation each to start from.
    let mut patients = Vec::with_capacity(options.patients);
    let known: Knowns = Arc::default();
    for i in 0..options.patients {
        let patient = json!({
            "resourceType": "Patient",
            "identifier": [{"system": "http://fhir.de/sid/gkv/kvid-10", "value": format!("B{:09}", i)}],
            "name": [{"family": format!("Bench{i}"), "given": ["Anna"]}],
            "gender": "female",
            "birthDate": "1980-01-01",
        });
        let id = created(
            send("POST", "/de/v1/fhir/Patient".into(), vec![], Some(patient)).await,
            "patient",
        )?;
        patients.push(id);
        let sent = send(
            "POST",
            "/de/v1/fhir/Observation".into(),
            vec![],
            Some(observation(id, 70.0)),
        );
        let obs = created(sent.await, "observation")?;
        known.lock().expect("lock").push(Known {
            id: obs,
            patient: id,
            version: 1,
        });
    }
    let patients = Arc::new(patients);
    let mut out = format!(
        "records benchmark: {} clients, {} s per phase, {} patients, PostgreSQL {}\n",
        options.clients,
        options.seconds,
        options.patients,
        if options.no_fsync {
            "with fsync off"
        } else {
            "durable (fsync on)"
        }
    );

    // AT's rows, for the bare SQL: the same tables, another partition.
    let at_patients: Vec<Uuid> = (0..options.patients).map(|_| Uuid::new_v4()).collect();
    let at_known: Knowns = Arc::default();
    // Bare SQL's reads log their audit records as the service's do: in batches, on a
    // connection of their own.
    let same_rows = Trail::Same(meridian_shared::audit::ReadLog::start(clinical.connect_options()));
    for &patient in &at_patients {
        let id = Uuid::new_v4();
        let mut conn = admin.acquire().await?;
        bare::create(&mut conn, &same_rows, id, patient, &observation(patient, 70.0)).await?;
        at_known.lock().expect("lock").push(Known {
            id,
            patient,
            version: 1,
        });
    }
    let at_patients = Arc::new(at_patients);
    // Statistics, as autovacuum gathers them on a live database: without any, the planner
    // may scan a whole country's observations for one patient's.
    sqlx::query("ANALYZE").execute(&admin).await?;

    let http_op = {
        let (send, patients, known) = (send.clone(), patients.clone(), known.clone());
        move |_| {
            let (send, patients, known) = (send.clone(), patients.clone(), known.clone());
            async move {
                let op = pick();
                let patient = patients[rand::rng().random_range(0..patients.len())];
                // Like a client that keeps what it sent: no copy back, the id from Location,
                // the version from ETag.
                let minimal = || vec![("prefer", "return=minimal".to_string())];
                let ok = match op {
                    Op::Create => {
                        let r = send(
                            "POST",
                            "/de/v1/fhir/Observation".into(),
                            minimal(),
                            Some(observation(patient, 72.0)),
                        )
                        .await;
                        match r {
                            Some(a) if a.status.as_u16() == 201 => {
                                // Observation/{id}/_history/1
                                if let Some(id) = a
                                    .location
                                    .as_deref()
                                    .and_then(|l| l.split('/').nth_back(2))
                                    .and_then(|s| s.parse().ok())
                                {
                                    known.lock().expect("lock").push(Known {
                                        id,
                                        patient,
                                        version: 1,
                                    });
                                }
                                true
                            }
                            _ => false,
                        }
                    }
                    Op::Read => {
                        let (_, k) = some_known(&known);
                        let path = format!("/de/v1/fhir/Observation/{}", k.id);
                        matches!(send("GET", path, vec![], None).await, Some(a) if a.status.is_success())
                    }
                    Op::Update => {
                        // A client changing a value it has: a PUT guarded by the version it
                        // last saw. When another client changed it since (412), it reads the
                        // current version and tries once more, all in the one update.
                        let (i, k) = some_known(&known);
                        let path = format!("/de/v1/fhir/Observation/{}", k.id);
                        let mut body = observation(k.patient, rand::rng().random_range(50..120) as f64);
                        body["id"] = json!(k.id);
                        let put = |version: i64| {
                            let mut headers = minimal();
                            headers.push(("if-match", format!("W/\"{version}\"")));
                            send("PUT", path.clone(), headers, Some(body.clone()))
                        };
                        let mut answer = put(k.version).await;
                        if matches!(&answer, Some(a) if a.status.as_u16() == 412)
                            && let Some(current) = send("GET", path.clone(), vec![], None).await.and_then(|a| a.version)
                        {
                            answer = put(current).await;
                        }
                        match answer {
                            Some(a) if a.status.is_success() => {
                                saw(&known, i, a.version.unwrap_or(k.version + 1));
                                true
                            }
                            _ => false,
                        }
                    }
                    Op::Search => {
                        let path = format!(
                            "/de/v1/fhir/Observation?patient={patient}&code=http://loinc.org%7C8867-4&_count=10"
                        );
                        matches!(send("GET", path, vec![], None).await, Some(a) if a.status.is_success())
                    }
                };
                (op, ok)
            }
        }
    };

    // The same operations as bare SQL on the same tables: no HTTP, token, validation or
    // vault; with `trail` the same outbox events and audit records as the service.
    let db_op = |trail: &Trail| {
        let (pool, patients, known, trail) = (clinical.clone(), at_patients.clone(), at_known.clone(), trail.clone());
        move |_| {
            let (pool, patients, known, trail) = (pool.clone(), patients.clone(), known.clone(), trail.clone());
            async move {
                let op = pick();
                let patient = patients[rand::rng().random_range(0..patients.len())];
                let Ok(mut conn) = pool.acquire().await else {
                    return (op, false);
                };
                let ok = match op {
                    Op::Create => {
                        let id = Uuid::new_v4();
                        let ok = bare::create(&mut conn, &trail, id, patient, &observation(patient, 72.0))
                            .await
                            .is_ok();
                        if ok {
                            known.lock().expect("lock").push(Known {
                                id,
                                patient,
                                version: 1,
                            });
                        }
                        ok
                    }
                    // Nothing found is a failure, as the service's 404 would be.
                    Op::Read => matches!(
                        bare::read(&mut conn, &trail, some_known(&known).1.id).await,
                        Ok(Some(_))
                    ),
                    Op::Update => {
                        let (i, k) = some_known(&known);
                        let body = observation(k.patient, rand::rng().random_range(50..120) as f64);
                        let mut written = bare::update(&mut conn, &trail, k.id, k.patient, k.version, &body).await;
                        if let Ok(None) = written
                            && let Ok(Some(current)) = bare::version(&mut conn, &trail, k.id).await
                        {
                            written = bare::update(&mut conn, &trail, k.id, k.patient, current, &body).await;
                        }
                        match written {
                            Ok(Some(version)) => {
                                saw(&known, i, version);
                                true
                            }
                            _ => false,
                        }
                    }
                    Op::Search => bare::search(&mut conn, &trail, patient).await.is_ok(),
                };
                (op, ok)
            }
        }
    };

    // The phases take turns a second at a time, so that all see the same machine: a shared
    // machine's speed drifts from one minute to the next, and the ratios are what counts.
    let (mut http, mut db, mut floor) = (Phase::default(), Phase::default(), Phase::default());
    for _ in 0..options.seconds {
        http.add(phase(options.clients, 1, http_op.clone()).await);
        db.add(phase(options.clients, 1, db_op(&same_rows)).await);
        floor.add(phase(options.clients, 1, db_op(&Trail::None)).await);
    }

    // The same mix at a fixed rate, over HTTP and as bare SQL, for latency under a given
    // load: 32 clients in a closed loop keep the service saturated, so their latency is
    // mostly waiting in line.
    let (mut http_paced, mut db_paced) = (Phase::default(), Phase::default());
    if options.rate > 0 {
        for _ in 0..options.seconds {
            http_paced.add(paced(options.rate, http_op.clone()).await);
            db_paced.add(paced(options.rate, db_op(&same_rows)).await);
        }
    }

    // A transaction Bundle: a new patient and 99 observations referring to it by urn:uuid.
    let mut bundle_ms = Vec::new();
    for round in 0..5 {
        let mut entries = vec![json!({
            "fullUrl": "urn:uuid:11111111-2222-4333-8444-555555555555",
            "resource": {"resourceType": "Patient", "name": [{"family": format!("Bundle{round}")}], "birthDate": "1970-01-01"},
            "request": {"method": "POST", "url": "Patient"},
        })];
        for i in 0..99 {
            let mut o = observation(Uuid::nil(), 60.0 + i as f64);
            o["subject"]["reference"] = json!("urn:uuid:11111111-2222-4333-8444-555555555555");
            entries.push(json!({"resource": o, "request": {"method": "POST", "url": "Observation"}}));
        }
        let t = Instant::now();
        let r = send(
            "POST",
            "/de/v1/fhir".into(),
            vec![],
            Some(json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})),
        )
        .await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        match r {
            Some(a) if a.status.is_success() => bundle_ms.push(ms),
            Some(a) => anyhow::bail!("the 100-entry Bundle failed: {} {}", a.status, json(&a.body)),
            None => anyhow::bail!("the 100-entry Bundle failed: the service does not answer"),
        }
    }
    bundle_ms.sort_by(f64::total_cmp);
    let bundle100 = percentile(&bundle_ms, 50.0);
    drop(served);

    for (name, p) in [
        ("http", &http),
        ("bare SQL, the same rows (events, audit records)", &db),
        ("bare SQL, the resource's rows alone", &floor),
    ] {
        out += &format!("{name}: {:.1} ops/s  errors {}\n", p.rate(None), p.errors);
        for op in OPS {
            let l = p.sorted(Some(op));
            out += &format!(
                "  {:<7} {:>8.1}/s  p50 {:>6.2} ms  p99 {:>6.2} ms\n",
                format!("{op:?}").to_lowercase(),
                p.rate(Some(op)),
                percentile(&l, 50.0),
                percentile(&l, 99.0)
            );
        }
    }
    if options.rate > 0 {
        for (name, p) in [("http", &http_paced), ("bare-sql", &db_paced)] {
            let l = p.sorted(None);
            out += &format!(
                "{name:<9} paced at {}/s: p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}\n",
                options.rate,
                percentile(&l, 50.0),
                percentile(&l, 99.0),
                p.errors
            );
        }
    }
    out += &format!("transaction Bundle of 100 entries: median {bundle100:.1} ms of 5\n");
    let all = http.sorted(None);
    let ratio = |to: &Phase| {
        if to.rate(None) > 0.0 {
            http.rate(None) / to.rate(None)
        } else {
            0.0
        }
    };
    out += &format!(
        "crud_rps={:.1} p50_ms={:.2} p99_ms={:.2} search_p99_ms={:.2} db_rps={:.1} db_p99_ms={:.2} ratio_to_db={:.2} rows_only_rps={:.1} ratio_to_rows_only={:.2} bundle100_ms={bundle100:.1} paced_rps={} paced_p99_ms={:.2} db_paced_p99_ms={:.2} errors={} db_errors={}\n",
        http.rate(None),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        percentile(&http.sorted(Some(Op::Search)), 99.0),
        db.rate(None),
        percentile(&db.sorted(None), 99.0),
        ratio(&db),
        floor.rate(None),
        ratio(&floor),
        options.rate,
        percentile(&http_paced.sorted(None), 99.0),
        percentile(&db_paced.sorted(None), 99.0),
        http.errors + http_paced.errors,
        db.errors + floor.errors + db_paced.errors
    );
    clinical.close().await;
    vault.close().await;
    admin.close().await;
    // Stopping the server waits for it.
    tokio::task::spawn_blocking(move || drop(pg)).await?;
    Ok(out)
}
