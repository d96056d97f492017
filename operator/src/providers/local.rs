use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use meridian_localpg::{Cluster, Durability};
use meridian_search::embedded::Engine;

use super::{Endpoint, ProviderError};

/// Database that holds the platform schema in every local cluster.
const DATABASE: &str = "meridian";
/// How often the supervisor checks that the clusters' servers still run.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);
/// The longest pause between two attempts to restart a server that died.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

type ClusterMap = Mutex<HashMap<String, Cluster>>;

/// The `local` provider: one PostgreSQL cluster per Region under `root/regions/<name>`,
/// started on demand and stopped on shutdown or when the Region goes away, and the
/// Region's embedded search engine beside it. A supervisor restarts a server that dies
/// (same data directory and port); meanwhile the Region's database reports
/// `DatabaseRestarting`.
pub struct LocalClusters {
    root: PathBuf,
    durability: Durability,
    clusters: Arc<ClusterMap>,
    health: Arc<Health>,
    supervising: AtomicBool,
    /// One engine per Region for the whole process: the reconcilers and the workloads share
    /// it (an index has one writer).
    engines: Mutex<HashMap<String, Arc<Engine>>>,
    /// Clusters another process runs (a `meridian dev` that `meridian plan` looks at), by port.
    adopted: HashMap<String, u16>,
}

impl LocalClusters {
    pub fn new(root: PathBuf, durability: Durability) -> Self {
        Self {
            root,
            durability,
            clusters: Arc::default(),
            health: Arc::default(),
            supervising: AtomicBool::new(false),
            engines: Mutex::default(),
            adopted: HashMap::new(),
        }
    }

    /// Read-only view of clusters that a running `meridian dev` owns.
    pub fn adopt(root: PathBuf, ports: HashMap<String, u16>) -> Self {
        Self {
            root,
            durability: Durability::Durable,
            clusters: Arc::default(),
            health: Arc::default(),
            supervising: AtomicBool::new(false),
            engines: Mutex::default(),
            adopted: ports,
        }
    }

    /// Whether Region `name` has a cluster on disk.
    pub fn exists(&self, name: &str) -> bool {
        self.adopted.contains_key(name) || self.dir(name).join("pgdata").join("PG_VERSION").is_file()
    }

    /// The directory every Region's cluster is under.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Where Region `name` keeps its cluster.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join("regions").join(name)
    }

    /// Starts Region `name`'s cluster unless it runs already.
    pub async fn ensure(&self, name: &str) -> Result<Endpoint, ProviderError> {
        match self.locate(name) {
            Ok(endpoint) => return Ok(endpoint),
            // Its supervisor is bringing it back: never start a second server.
            Err(e) if e.reason == DATABASE_RESTARTING => return Err(e),
            Err(_) => {}
        }
        self.supervise();
        let started = Cluster::start(&self.dir(name), self.durability)
            .await
            .map_err(start_failed)?;
        started.ensure_database(DATABASE).await.map_err(start_failed)?;
        let mut clusters = self.clusters.lock().expect("cluster map lock");
        // Two reconciles may race to start the same Region; keep the first, stop ours.
        let cluster = clusters.entry(name.to_string()).or_insert(started);
        Ok(Endpoint::from_url(cluster.url(DATABASE)))
    }

    /// The endpoint of Region `name`'s running cluster.
    pub fn locate(&self, name: &str) -> Result<Endpoint, ProviderError> {
        if let Some(port) = self.adopted.get(name) {
            return Ok(Endpoint::from_url(meridian_localpg::url(*port, DATABASE)));
        }
        if let Some(restarting) = self.health.restarting.lock().expect("health lock").get(name) {
            return Err(ProviderError::new(DATABASE_RESTARTING, restarting.describe(name)));
        }
        let clusters = self.clusters.lock().expect("cluster map lock");
        clusters
            .get(name)
            .map(|c| Endpoint::from_url(c.url(DATABASE)))
            .ok_or_else(|| ProviderError {
                reason: "DatabaseNotStarted",
                message: format!("the local PostgreSQL cluster of Region {name} is not running"),
            })
    }

    /// Ports of the running clusters, by Region name.
    pub fn ports(&self) -> HashMap<String, u16> {
        let clusters = self.clusters.lock().expect("cluster map lock");
        clusters.iter().map(|(name, c)| (name.clone(), c.port())).collect()
    }

    /// Region `name`'s search engine (`root/regions/<name>/search`), opened on first use.
    pub fn search(&self, name: &str) -> Result<Arc<Engine>, ProviderError> {
        let mut engines = self.engines.lock().expect("engine map lock");
        if let Some(engine) = engines.get(name) {
            return Ok(engine.clone());
        }
        let engine = Engine::open(&self.dir(name).join("search")).map_err(|e| ProviderError {
            reason: "SearchUnavailable",
            message: format!("cannot open the search engine of Region {name}: {e}"),
        })?;
        let engine = Arc::new(engine);
        engines.insert(name.to_string(), engine.clone());
        Ok(engine)
    }

    /// How Region `name`'s server was last restarted by the supervisor, if it ever was
    /// since this process started it.
    pub fn last_restart(&self, name: &str) -> Option<String> {
        self.health.restarted.lock().expect("health lock").get(name).cloned()
    }

    /// Regions whose server died or came back since the last call: the caller reconciles
    /// them now rather than at their next resync, so that their status shows it.
    pub fn take_changed(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.health.changed.lock().expect("health lock"))
    }

    /// Starts the supervisor (once): every [`SUPERVISE_EVERY`] it checks each server, and
    /// restarts one that exited.
    fn supervise(&self) {
        if !self.supervising.swap(true, Ordering::SeqCst) {
            tokio::spawn(supervise(
                Arc::downgrade(&self.clusters),
                Arc::downgrade(&self.health),
                self.durability,
            ));
        }
    }

    /// Stops Region `name`'s cluster; with `delete`, removes its files too.
    pub async fn release(&self, name: &str, delete: bool) -> Result<(), ProviderError> {
        // Its files are in use by a server starting up: let the restart finish first.
        if let Some(restarting) = self.health.restarting.lock().expect("health lock").get(name) {
            return Err(ProviderError::new(DATABASE_RESTARTING, restarting.describe(name)));
        }
        self.engines.lock().expect("engine map lock").remove(name);
        self.health.restarted.lock().expect("health lock").remove(name);
        let cluster = self.clusters.lock().expect("cluster map lock").remove(name);
        let dir = self.dir(name);
        tokio::task::spawn_blocking(move || {
            if let Some(cluster) = cluster {
                cluster.stop();
            }
            if delete {
                std::fs::remove_dir_all(&dir).or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
            } else {
                Ok(())
            }
        })
        .await
        .map_err(|e| ProviderError {
            reason: "ReleaseFailed",
            message: e.to_string(),
        })?
        .map_err(|e| ProviderError {
            reason: "ReleaseFailed",
            message: format!("cannot remove the cluster's files: {e}"),
        })
    }

    /// Stops every cluster (shutdown).
    pub fn stop_all(&self) {
        let clusters: Vec<Cluster> = self
            .clusters
            .lock()
            .expect("cluster map lock")
            .drain()
            .map(|(_, c)| c)
            .collect();
        for cluster in clusters {
            cluster.stop();
        }
    }
}

/// The reason a Region's database gives while its server is being restarted.
pub const DATABASE_RESTARTING: &str = "DatabaseRestarting";

/// Servers that died and are being restarted, the last restart of each, and which
/// Regions' health changed.
#[derive(Default)]
struct Health {
    restarting: Mutex<HashMap<String, Restarting>>,
    /// What the last completed restart of each Region's server was, for its status: a
    /// restart can be over before the Region is next reconciled, and must still show.
    restarted: Mutex<HashMap<String, String>>,
    changed: Mutex<BTreeSet<String>>,
}

impl Health {
    fn set(&self, name: &str, restarting: Option<Restarting>) {
        let mut map = self.restarting.lock().expect("health lock");
        match restarting {
            Some(r) => map.insert(name.to_string(), r),
            None => map.remove(name),
        };
        self.changed.lock().expect("health lock").insert(name.to_string());
    }

    fn failed_attempt(&self, name: &str, error: String) {
        if let Some(r) = self.restarting.lock().expect("health lock").get_mut(name) {
            r.attempts += 1;
            r.last_error = Some(error);
        }
        self.changed.lock().expect("health lock").insert(name.to_string());
    }
}

/// A server that died, and how its restart goes.
struct Restarting {
    how: String,
    port: u16,
    attempts: u32,
    last_error: Option<String>,
}

impl Restarting {
    fn describe(&self, name: &str) -> String {
        let mut message = format!(
            "the local PostgreSQL of Region {name} stopped ({}); restarting it on port {}",
            self.how, self.port
        );
        if let Some(error) = &self.last_error {
            message.push_str(&format!("; attempt {} failed: {error}", self.attempts));
        }
        message
    }
}

/// Checks the servers until the provider is dropped; a server that exited is restarted by
/// a task of its own while the others are still watched.
async fn supervise(clusters: Weak<ClusterMap>, health: Weak<Health>, durability: Durability) {
    loop {
        tokio::time::sleep(SUPERVISE_EVERY).await;
        let (Some(clusters), Some(health)) = (clusters.upgrade(), health.upgrade()) else {
            return;
        };
        let died: Vec<(String, PathBuf, u16, String)> = clusters
            .lock()
            .expect("cluster map lock")
            .iter_mut()
            .filter_map(|(name, c)| Some((name.clone(), c.root().to_path_buf(), c.port(), c.exited()?)))
            .collect();
        for (name, root, port, how) in died {
            tracing::warn!(region = %name, port, "the local PostgreSQL {how}; restarting it");
            health.set(
                &name,
                Some(Restarting {
                    how,
                    port,
                    attempts: 0,
                    last_error: None,
                }),
            );
            tokio::spawn(restart(
                Arc::downgrade(&clusters),
                Arc::downgrade(&health),
                name,
                root,
                port,
                durability,
            ));
        }
    }
}

/// Starts Region `name`'s server again until it runs, unless the Region lets it go meanwhile.
async fn restart(
    clusters: Weak<ClusterMap>,
    health: Weak<Health>,
    name: String,
    root: PathBuf,
    port: u16,
    durability: Durability,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let result = Cluster::restart(&root, port, durability).await;
        // The provider is gone (shutdown): a server started here stops as it drops.
        let (Some(clusters), Some(health)) = (clusters.upgrade(), health.upgrade()) else {
            return;
        };
        // Hand the new server over, or learn that nobody wants it any more.
        let failed = {
            let mut map = clusters.lock().expect("cluster map lock");
            match (map.get_mut(&name), result) {
                (Some(dead), Ok(started)) => {
                    tracing::info!(region = %name, port = started.port(), "the local PostgreSQL runs again");
                    // The dead server's handle: dropping it stops nothing (its process is gone).
                    *dead = started;
                    None
                }
                (Some(_), Err(e)) => Some(e),
                // Released meanwhile (stop_all, or the Region was deleted): nothing to bring back.
                (None, result) => {
                    if let Ok(started) = result {
                        tokio::task::spawn_blocking(move || started.stop());
                    }
                    None
                }
            }
        };
        let Some(e) = failed else {
            let done = health.restarting.lock().expect("health lock").get(&name).map(|r| {
                format!(
                    "restarted at {} after it was {}",
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.how
                )
            });
            if let Some(done) = done {
                health.restarted.lock().expect("health lock").insert(name.clone(), done);
            }
            health.set(&name, None);
            return;
        };
        tracing::warn!(region = %name, error = %e, "cannot restart the local PostgreSQL yet");
        health.failed_attempt(&name, e.to_string());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

fn start_failed(e: meridian_localpg::Error) -> ProviderError {
    ProviderError {
        reason: "DatabaseStartFailed",
        message: e.to_string(),
    }
}
