//! `meridian dev`: the whole control plane on one machine, with no cluster and no cloud.
//! One PostgreSQL cluster per `local` Region, the same reconcilers as the operator, driven
//! by the manifests in a folder, and one HTTP entry point.

mod api;
pub mod issuer;
mod lock;
pub mod manifests;
mod store;
pub mod table;
mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use meridian_crds::condition_types::READY;
use meridian_crds::{Country, Region};
use meridian_localpg::Durability;

pub use lock::{DataDirLock, LockError, RunningState};
use store::Store;

use futures::StreamExt;
use tracing::Instrument;

use crate::conditions;
use crate::controller::{Context, country, patient_index, region};
use crate::metrics::WriteKind;
use crate::providers::{LocalClusters, Providers, StaticSecrets};

/// How often the folder is scanned for changes.
const SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// Countries of one Region reconciled at once: as many as the control plane's pool of that
/// Region's database holds connections, so that a wave of launches queues here rather than
/// timing out on the pool and retrying.
const COUNTRIES_AT_ONCE_PER_REGION: usize = crate::backends::postgres::POOL_CONNECTIONS as usize;

/// Asks the loop to reconcile every object once more (`POST /dev/resync`) and answers what
/// that pass did: with nothing changed it writes nothing.
#[derive(Default)]
pub struct Resync {
    requested: std::sync::atomic::AtomicU64,
    done: tokio::sync::watch::Sender<(u64, ResyncReport)>,
}

/// What one requested resync pass did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ResyncReport {
    /// Objects reconciled in the pass.
    pub regions: usize,
    pub countries: usize,
    /// Countries Ready after it.
    pub ready: usize,
    /// Writes made during the pass, by kind.
    pub writes: crate::metrics::Writes,
    pub seconds: f64,
}

impl Resync {
    /// Requests a pass and waits for it.
    pub async fn run(&self) -> ResyncReport {
        let ticket = self.requested.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let mut done = self.done.subscribe();
        match done.wait_for(|(pass, _)| *pass >= ticket).await {
            Ok(answer) => answer.1.clone(),
            Err(_) => ResyncReport::default(),
        }
    }

    /// The pass the loop owes, if any.
    fn wanted(&self) -> Option<u64> {
        let requested = self.requested.load(std::sync::atomic::Ordering::SeqCst);
        (requested > self.done.borrow().0).then_some(requested)
    }
}

/// Options of `meridian dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    pub manifests: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir)?;
    let lock = DataDirLock::acquire(&options.data_dir)?;
    if !options.manifests.is_dir() {
        anyhow::bail!("--manifests {}: not a directory", options.manifests.display());
    }
    let local = Arc::new(LocalClusters::new(options.data_dir.clone(), Durability::Durable));
    let secrets = Arc::new(DevSecrets::default());
    let ctx = Arc::new(Context::new(Providers::new(Some(local.clone()), secrets.clone())));
    // The only reconciler there is: it leads.
    ctx.metrics.leader().set(1);
    let store = Arc::new(RwLock::new(Store::default()));
    let resync = Arc::new(Resync::default());

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.listen))?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let workloads = Arc::new(workloads::Workloads::new(options.listen));
    let app = api::router(store.clone(), ctx.clone(), resync.clone()).merge(workloads.clone().router());
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    println!(
        "meridian dev: manifests {}, data {}, API http://{}",
        options.manifests.display(),
        options.data_dir.display(),
        options.listen
    );

    tokio::spawn(async move {
        meridian_shared::shutdown::signal().await;
        let _ = stop_tx.send(true);
    });

    let mut dev = Dev {
        workloads,
        options,
        ctx,
        store,
        secrets,
        local: local.clone(),
        lock,
        timings: Timings::default(),
        last_table: String::new(),
        resync,
    };
    let result = tokio::select! {
        result = dev.run_loop() => result,
        _ = stop_rx.wait_for(|s| *s) => Ok(()),
    };
    println!("meridian dev: stopping");
    let _ = server.await;
    tokio::task::spawn_blocking(move || local.stop_all()).await?;
    println!("meridian dev: stopped");
    result
}

/// Secrets from the folder; replaced on every scan.
#[derive(Default)]
struct DevSecrets(RwLock<StaticSecrets>);

impl crate::providers::SecretSource for DevSecrets {
    fn get<'a>(
        &'a self,
        namespace: Option<&'a str>,
        name: &'a str,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<String>, String>> {
        let secrets = self.0.read().expect("secrets lock").clone();
        Box::pin(async move { secrets.get(namespace, name, key).await })
    }
}

/// Start-up and launch timings the status output reports.
#[derive(Default)]
struct Timings {
    /// When every Region of the first scan had its database up.
    databases_up: Option<Instant>,
    /// Countries of the first scan not Ready yet; `None` once reported.
    first_wave: Option<BTreeSet<String>>,
    /// Countries added or changed later, with when their manifest was written.
    launches: BTreeMap<String, SystemTime>,
    /// Timing lines not printed yet.
    pending_lines: Vec<String>,
}

struct Dev {
    workloads: Arc<workloads::Workloads>,
    options: DevOptions,
    ctx: Arc<Context>,
    store: Arc<RwLock<Store>>,
    secrets: Arc<DevSecrets>,
    local: Arc<LocalClusters>,
    lock: DataDirLock,
    timings: Timings,
    last_table: String,
    resync: Arc<Resync>,
}

impl Dev {
    async fn run_loop(&mut self) -> anyhow::Result<()> {
        let mut first = true;
        let mut last_errors = Vec::new();
        loop {
            let now = Instant::now();
            // A folder that cannot be read for a moment (an editor swapping files, a
            // mount hiccup) must not take the whole stack down: keep the last state.
            let manifests = match manifests::load(&self.options.manifests) {
                Ok(manifests) => manifests,
                Err(e) => {
                    println!("manifest error: cannot read {}: {e}", self.options.manifests.display());
                    tokio::time::sleep(SCAN_INTERVAL).await;
                    continue;
                }
            };
            if manifests.errors != last_errors {
                for error in &manifests.errors {
                    println!("manifest error: {error}");
                }
                last_errors = manifests.errors.clone();
            }
            *self.secrets.0.write().expect("secrets lock") = manifests.secrets.clone();
            let mut report = store::SyncReport::default();
            {
                let mut store = self.store.write().expect("store lock");
                store
                    .regions
                    .sync(&manifests.regions, &manifests.unreadable, &mut report, now);
                store
                    .countries
                    .sync(&manifests.countries, &manifests.unreadable, &mut report, now);
                store
                    .indexes
                    .sync(&manifests.indexes, &manifests.unreadable, &mut report, now);
                // Which countries an index links, and where their Regions are, follow the
                // Countries.
                if report
                    .added
                    .iter()
                    .chain(&report.changed)
                    .chain(&report.removed)
                    .any(|l| l.starts_with("countries "))
                {
                    for entry in store.indexes.entries.values_mut() {
                        entry.due = Some(now);
                    }
                }
            }
            for line in &report.rejected {
                println!("manifest error: {line}");
            }
            if first {
                self.timings.first_wave = Some(manifests.countries.keys().cloned().collect());
            } else {
                for line in report.added.iter().chain(&report.changed).chain(&report.removed) {
                    println!("manifest: {line}");
                }
                for name in report
                    .added
                    .iter()
                    .chain(&report.changed)
                    .filter_map(|l| l.strip_prefix("countries "))
                {
                    if let Some(loaded) = manifests.countries.get(name) {
                        self.timings.launches.insert(name.to_string(), loaded.modified);
                    }
                }
            }

            // A requested resync: everything is due now, and the pass's writes are counted.
            let pass = self.resync.wanted().map(|ticket| {
                let now = Instant::now();
                let mut store = self.store.write().expect("store lock");
                for entry in store.regions.entries.values_mut() {
                    entry.due = Some(now);
                }
                for entry in store.countries.entries.values_mut() {
                    entry.due = Some(now);
                }
                for entry in store.indexes.entries.values_mut() {
                    entry.due = Some(now);
                }
                let counts = (store.regions.entries.len(), store.countries.entries.len());
                (ticket, counts, self.ctx.metrics.writes(), now)
            });
            let regions_changed = self.reconcile_regions().await;
            if first {
                self.timings.databases_up = Some(Instant::now());
                self.lock.write_state(&RunningState {
                    listen: self.options.listen.to_string(),
                    regions: self.local.ports(),
                })?;
                println!("meridian dev: {} database(s) up", self.local.ports().len());
            } else if regions_changed {
                self.lock.write_state(&RunningState {
                    listen: self.options.listen.to_string(),
                    regions: self.local.ports(),
                })?;
            }
            self.reconcile_countries().await;
            let (regions, countries) = {
                let store = self.store.read().expect("store lock");
                (store.regions.objects(), store.countries.objects())
            };
            self.workloads.sync(&regions, &countries, &self.ctx).await;
            // After the workloads, so that a country's change reaches them without waiting for
            // the index; then once more when an index was reconciled, so that what it handed
            // over reaches them at once.
            if self.reconcile_indexes().await {
                self.workloads.sync(&regions, &countries, &self.ctx).await;
            }
            if let Some((ticket, (regions, countries), before, started)) = pass {
                let ready = self
                    .store
                    .read()
                    .expect("store lock")
                    .countries
                    .entries
                    .values()
                    .filter(|e| ready(e.object.status.as_ref().map(|s| s.conditions.as_slice())))
                    .count();
                let report = ResyncReport {
                    regions,
                    countries,
                    ready,
                    writes: self.ctx.metrics.writes().since(&before),
                    seconds: started.elapsed().as_secs_f64(),
                };
                println!(
                    "resync: {regions} region(s) and {countries} country(ies) reconciled in {:.2}s, {} write(s) \
                     ({} ddl, {} status, {} index)",
                    report.seconds,
                    report.writes.total(),
                    report.writes.ddl,
                    report.writes.status,
                    report.writes.index
                );
                self.resync.done.send_replace((ticket, report));
            }
            if first {
                self.print_tokens(&countries)?;
            }
            self.print_status();
            first = false;
            tokio::time::sleep(SCAN_INTERVAL).await;
        }
    }

    /// Reconciles the due Regions concurrently (their databases start in parallel).
    /// Returns whether any Region's status changed.
    async fn reconcile_regions(&mut self) -> bool {
        let now = Instant::now();
        let (due, countries, indexes) = {
            let mut store = self.store.write().expect("store lock");
            // A local database that died or came back: its Region's status says so now.
            for name in self.local.take_changed() {
                if let Some(entry) = store.regions.entries.get_mut(&name) {
                    entry.due = Some(now);
                }
            }
            let due: Vec<Region> = store
                .regions
                .due(now)
                .iter()
                .map(|n| store.regions.entries[n].object.clone())
                .collect();
            (due, store.countries.objects(), store.indexes.objects())
        };
        let ctx = &self.ctx;
        let results = futures::future::join_all(due.iter().map(|r| {
            let (countries, indexes) = (&countries, &indexes);
            let span = crate::controller::reconcile_span("Region", r.metadata.name.as_deref().unwrap_or_default());
            async move {
                let started = Instant::now();
                let result = if r.metadata.deletion_timestamp.is_some() {
                    Err(region::cleanup(r, countries, indexes, ctx).await)
                } else {
                    Ok(region::apply(r, ctx).await)
                };
                (r, result, started.elapsed())
            }
            .instrument(span)
        }))
        .await;
        let mut changed = false;
        let mut store = self.store.write().expect("store lock");
        for (region, result, elapsed) in results {
            let name = region.metadata.name.clone().unwrap_or_default();
            match result {
                Ok(outcome) => {
                    ctx.metrics.observe("Region", elapsed, outcome.failure);
                    let was_ready = ready(region.status.as_ref().map(|s| s.conditions.as_slice()));
                    let is_ready = conditions::is_true(&outcome.status.conditions, READY);
                    ctx.metrics.set_ready("Region", &name, is_ready);
                    if store.set_region_status(&name, outcome.status) {
                        ctx.metrics.wrote(WriteKind::Status, 1);
                        changed = true;
                    }
                    store.regions.schedule(&name, outcome.next);
                    if was_ready != is_ready {
                        wake_countries_of(&mut store, &name);
                    }
                }
                Err(Ok(())) => {
                    ctx.metrics.observe("Region", elapsed, None);
                    ctx.metrics.forget("Region", &name);
                    store.regions.entries.remove(&name);
                    println!("region {name} deleted ({:?})", region.spec.deletion_policy);
                    changed = true;
                    wake_countries_of(&mut store, &name);
                }
                Err(Err(blocked)) => {
                    ctx.metrics.observe("Region", elapsed, Some(blocked.reason));
                    let previous = region.status.clone().unwrap_or_default();
                    let conditions = blocked.conditions(&previous.conditions, region.metadata.generation);
                    ctx.metrics
                        .set_ready("Region", &name, ready(Some(conditions.as_slice())));
                    if store.set_region_status(&name, meridian_crds::RegionStatus { conditions, ..previous }) {
                        ctx.metrics.wrote(WriteKind::Status, 1);
                        changed = true;
                    }
                    store.regions.schedule(&name, blocked.next);
                }
            }
        }
        changed
    }

    /// Reconciles the due Countries: the Regions' concurrently, at most
    /// [`COUNTRIES_AT_ONCE_PER_REGION`] of one Region at a time.
    async fn reconcile_countries(&mut self) {
        let now = Instant::now();
        let (due, countries, regions) = {
            let store = self.store.read().expect("store lock");
            let due: Vec<Country> = store
                .countries
                .due(now)
                .iter()
                .map(|n| store.countries.entries[n].object.clone())
                .collect();
            let regions: BTreeMap<String, Region> = store
                .regions
                .entries
                .iter()
                .map(|(n, e)| (n.clone(), e.object.clone()))
                .collect();
            (due, store.countries.objects(), regions)
        };
        let ctx = &self.ctx;
        let mut by_region: BTreeMap<&str, Vec<&Country>> = BTreeMap::new();
        for c in &due {
            by_region.entry(c.spec.region.as_str()).or_default().push(c);
        }
        let results = futures::future::join_all(by_region.into_values().map(|group| {
            let (countries, regions) = (&countries, &regions);
            futures::stream::iter(group)
                .map(move |c| {
                    let span =
                        crate::controller::reconcile_span("Country", c.metadata.name.as_deref().unwrap_or_default());
                    async move {
                        let started = Instant::now();
                        let region = regions.get(&c.spec.region);
                        let world = country::World { region, countries };
                        let result = if c.metadata.deletion_timestamp.is_some() {
                            Err(country::cleanup(c, world, ctx).await)
                        } else {
                            Ok(country::apply(c, world, ctx).await)
                        };
                        (c, result, started.elapsed())
                    }
                    .instrument(span)
                })
                .buffer_unordered(COUNTRIES_AT_ONCE_PER_REGION)
                .collect::<Vec<_>>()
        }))
        .await
        .into_iter()
        .flatten();
        let mut store = self.store.write().expect("store lock");
        for (country, result, elapsed) in results {
            let name = country.metadata.name.clone().unwrap_or_default();
            match result {
                Ok(outcome) => {
                    ctx.metrics.observe("Country", elapsed, outcome.failure);
                    let is_ready = conditions::is_true(&outcome.status.conditions, READY);
                    ctx.metrics.set_ready("Country", &name, is_ready);
                    if is_ready {
                        self.timings.country_ready(&name);
                    }
                    if store.set_country_status(&name, outcome.status) {
                        ctx.metrics.wrote(WriteKind::Status, 1);
                    }
                    store.countries.schedule(&name, outcome.next);
                }
                Err(Ok(changes)) => {
                    ctx.metrics.observe("Country", elapsed, None);
                    ctx.metrics.forget("Country", &name);
                    store.countries.entries.remove(&name);
                    let what = if changes.is_empty() {
                        "stores left untouched".to_string()
                    } else {
                        format!("{} partition change(s)", changes.len())
                    };
                    println!("country {name} deleted ({:?}: {what})", country.spec.deletion_policy);
                    for change in changes {
                        println!("  {change}");
                    }
                    // A dedicated Region it held may now serve another Country, and a Country
                    // refused for its code may now hold it.
                    wake_countries_of(&mut store, &country.spec.region);
                    wake_countries(&mut store, |c| c.spec.code == country.spec.code);
                }
                Err(Err(blocked)) => {
                    ctx.metrics.observe("Country", elapsed, Some(blocked.reason));
                    let previous = country.status.clone().unwrap_or_default();
                    let conditions = blocked.conditions(&previous.conditions, country.metadata.generation);
                    ctx.metrics
                        .set_ready("Country", &name, ready(Some(conditions.as_slice())));
                    if store.set_country_status(&name, meridian_crds::CountryStatus { conditions, ..previous }) {
                        ctx.metrics.wrote(WriteKind::Status, 1);
                    }
                    store.countries.schedule(&name, blocked.next);
                }
            }
        }
    }

    /// Reconciles the due PatientIndexes; answers whether there were any.
    async fn reconcile_indexes(&mut self) -> bool {
        let now = Instant::now();
        let (due, indexes, regions, countries) = {
            let store = self.store.read().expect("store lock");
            let due: Vec<meridian_crds::PatientIndex> = store
                .indexes
                .due(now)
                .iter()
                .map(|n| store.indexes.entries[n].object.clone())
                .collect();
            (
                due,
                store.indexes.objects(),
                store.regions.objects(),
                store.countries.objects(),
            )
        };
        let any = !due.is_empty();
        let ctx = &self.ctx;
        let world = patient_index::World {
            regions: &regions,
            countries: &countries,
            indexes: &indexes,
        };
        for index in due {
            let name = index.metadata.name.clone().unwrap_or_default();
            let started = Instant::now();
            let result = async {
                if index.metadata.deletion_timestamp.is_some() {
                    Err(patient_index::cleanup(&index, world, ctx).await)
                } else {
                    Ok(patient_index::apply(&index, world, ctx).await)
                }
            }
            .instrument(crate::controller::reconcile_span("PatientIndex", &name))
            .await;
            let mut store = self.store.write().expect("store lock");
            match result {
                Ok(outcome) => {
                    ctx.metrics.observe("PatientIndex", started.elapsed(), outcome.failure);
                    let is_ready = conditions::is_true(&outcome.status.conditions, READY);
                    ctx.metrics.set_ready("PatientIndex", &name, is_ready);
                    if store.set_index_status(&name, outcome.status) {
                        ctx.metrics.wrote(WriteKind::Status, 1);
                    }
                    store.indexes.schedule(&name, outcome.next);
                }
                Err(Ok(())) => {
                    ctx.metrics.observe("PatientIndex", started.elapsed(), None);
                    ctx.metrics.forget("PatientIndex", &name);
                    store.indexes.entries.remove(&name);
                    println!("patientindex {name} deleted ({:?})", index.spec.deletion_policy);
                    // Another index may serve now.
                    for entry in store.indexes.entries.values_mut() {
                        entry.due = Some(now);
                    }
                }
                Err(Err(blocked)) => {
                    ctx.metrics
                        .observe("PatientIndex", started.elapsed(), Some(blocked.reason));
                    let previous = index.status.clone().unwrap_or_default();
                    let conditions = blocked.conditions(&previous.conditions, index.metadata.generation);
                    ctx.metrics
                        .set_ready("PatientIndex", &name, ready(Some(conditions.as_slice())));
                    if store.set_index_status(&name, meridian_crds::PatientIndexStatus { conditions, ..previous }) {
                        ctx.metrics.wrote(WriteKind::Status, 1);
                    }
                    store.indexes.schedule(&name, blocked.next);
                }
            }
        }
        any
    }

    /// Demo tokens for each role, printed and written to `<data-dir>/tokens.json`.
    fn print_tokens(&self, countries: &[Country]) -> anyhow::Result<()> {
        let codes: Vec<String> = countries.iter().map(|c| c.spec.code.clone()).collect();
        let tokens = self.workloads.demo_tokens(&codes);
        let path = self.options.data_dir.join("tokens.json");
        lock::write_whole(&path, &serde_json::to_vec_pretty(&tokens)?)?;
        println!(
            "demo tokens (valid 24 h, also in {}): Authorization: Bearer <token>",
            path.display()
        );
        for (role, token) in &tokens {
            println!("  {role:<17} {token}");
        }
        println!(
            "  other subjects and roles: GET http://{}/auth/token?sub=ID&roles=Practitioner&countries=DE",
            self.options.listen
        );
        Ok(())
    }

    fn print_status(&mut self) {
        let table = {
            let store = self.store.read().expect("store lock");
            table::render(
                &store.regions.objects(),
                &store.countries.objects(),
                &store.indexes.objects(),
            )
        };
        if table != self.last_table {
            println!("\n{table}");
            self.last_table = table;
        }
        for line in self.timings.take_lines() {
            println!("{line}");
        }
    }
}

impl Timings {
    fn country_ready(&mut self, name: &str) {
        if let Some(wave) = self.first_wave.as_mut() {
            wave.remove(name);
        }
        if let Some(written) = self.launches.remove(name) {
            let secs = SystemTime::now()
                .duration_since(written)
                .unwrap_or_default()
                .as_secs_f64();
            self.pending_lines.push(format!(
                "timing: country {name} Ready {secs:.2}s after its manifest was written"
            ));
        }
    }

    fn take_lines(&mut self) -> Vec<String> {
        if let (Some(wave), Some(up)) = (&self.first_wave, self.databases_up)
            && wave.is_empty()
        {
            self.pending_lines.push(format!(
                "timing: all countries Ready {:.2}s after the databases were up",
                up.elapsed().as_secs_f64()
            ));
            self.first_wave = None;
        }
        std::mem::take(&mut self.pending_lines)
    }
}

fn ready(conds: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>) -> bool {
    conds.is_some_and(|c| conditions::is_true(c, READY))
}

/// Makes every Country for which `which` holds due now.
fn wake_countries(store: &mut Store, which: impl Fn(&Country) -> bool) {
    let now = Instant::now();
    for entry in store.countries.entries.values_mut().filter(|e| which(&e.object)) {
        entry.due = Some(now);
    }
}

fn wake_countries_of(store: &mut Store, region: &str) {
    wake_countries(store, |c| c.spec.region == region);
}
