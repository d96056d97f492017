use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use meridian_localpg::{Cluster, Durability};
use meridian_search::embedded::Engine;

use super::{Endpoint, ProviderError};

/// Database that holds the platform schema in every local cluster.
const DATABASE: &str = "meridian";

/// The `local` provider: one PostgreSQL cluster per Region under `root/regions/<name>`,
/// started on demand and stopped on shutdown or when the Region goes away, and the
/// Region's embedded search engine beside it.
pub struct LocalClusters {
    root: PathBuf,
    durability: Durability,
    clusters: Mutex<HashMap<String, Cluster>>,
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
            clusters: Mutex::default(),
            engines: Mutex::default(),
            adopted: HashMap::new(),
        }
    }

    /// Read-only view of clusters that a running `meridian dev` owns.
    pub fn adopt(root: PathBuf, ports: HashMap<String, u16>) -> Self {
        Self {
            root,
            durability: Durability::Durable,
            clusters: Mutex::default(),
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
        if let Ok(endpoint) = self.locate(name) {
            return Ok(endpoint);
        }
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

    /// Stops Region `name`'s cluster; with `delete`, removes its files too.
    pub async fn release(&self, name: &str, delete: bool) -> Result<(), ProviderError> {
        self.engines.lock().expect("engine map lock").remove(name);
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

fn start_failed(e: meridian_localpg::Error) -> ProviderError {
    ProviderError {
        reason: "DatabaseStartFailed",
        message: e.to_string(),
    }
}
