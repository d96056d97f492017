//! A local Kafka-compatible broker: the `tansu` binary on 127.0.0.1, started and stopped by
//! this process, for the event backbone's tests and `meridian bench events`.
//!
//! tansu keeps its data in memory (`memory://`, gone when it stops) or in a SQLite file
//! (`sqlite://`, kept across restarts: what a test of "no loss across a broker restart"
//! needs). Clients must be given `127.0.0.1`, never `localhost`: the broker listens on IPv4
//! and advertises the address it was started with.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tansu release the project is tested with (`.ci/run` installs it).
pub const TANSU_VERSION: &str = "0.6.0";

/// How to install the broker, for error messages.
pub const INSTALL_HINT: &str = "install it with `cargo install tansu --version 0.6.0 --locked \
     --no-default-features --features dynostore,libsql --root ~/.cache/meridian-tansu/0.6.0` \
     (what .ci/run does; about 15 minutes on 2 cores), or name the binary in MERIDIAN_TANSU";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the tansu broker was not found (MERIDIAN_TANSU, PATH, ~/.cache/meridian-tansu/{TANSU_VERSION}/bin): {INSTALL_HINT}"
    )]
    BinaryMissing,
    #[error("failed to start tansu ({program}): {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("tansu exited during start-up ({status}); its log says:\n{log}")]
    StartupExited { status: String, log: String },
    #[error("tansu did not accept connections on {addr} within {secs}s; its log says:\n{log}")]
    StartupTimeout { addr: SocketAddr, secs: u64, log: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the broker keeps its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In memory: lost when it stops.
    Memory,
    /// A SQLite file in the broker's directory: kept across restarts.
    File,
}

/// The tansu binary: `MERIDIAN_TANSU`, then `tansu` on PATH, then where `.ci/run` installs it.
pub fn binary() -> Result<PathBuf> {
    if let Some(named) = std::env::var_os("MERIDIAN_TANSU") {
        let named = PathBuf::from(named);
        return if named.is_file() {
            Ok(named)
        } else {
            Err(Error::BinaryMissing)
        };
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|p| p.is_file())
    });
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(format!(".cache/meridian-tansu/{TANSU_VERSION}/bin/tansu")))
        .filter(|p| p.is_file());
    on_path.or(cached).ok_or(Error::BinaryMissing)
}

/// A running broker; stopped (killed) when dropped.
pub struct Broker {
    child: Option<Child>,
    addr: SocketAddr,
    storage: Storage,
    dir: PathBuf,
    log: PathBuf,
    // Dropped last: the broker stops before its files go.
    _temp: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker with `storage` in a temporary directory of its own.
    pub async fn start(storage: Storage) -> Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("meridian-tansu-")
            .tempdir()
            .map_err(|e| io("temporary directory", e))?;
        let mut broker = Self::start_in(temp.path(), storage).await?;
        broker._temp = Some(temp);
        Ok(broker)
    }

    /// Starts a broker with `storage` kept in `dir`, on a free port.
    pub async fn start_in(dir: &Path, storage: Storage) -> Result<Self> {
        // Another process may take the port between the probe and the broker's bind; the
        // broker then exits at once and a new port is tried.
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match Self::launch(dir, storage.clone(), port).await {
                Ok(broker) => return Ok(broker),
                Err(e @ Error::StartupExited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three attempts"))
    }

    async fn launch(dir: &Path, storage: Storage, port: u16) -> Result<Self> {
        let program = binary()?;
        std::fs::create_dir_all(dir).map_err(|e| io(&format!("create {}", dir.display()), e))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = dir.join("tansu.log");
        // Appended to: a restart's log follows the one before.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| io(&format!("open {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| io("log file", e))?;
        let url = format!("tcp://{addr}");
        let engine = match storage {
            Storage::Memory => "memory://tansu/",
            // Relative to the working directory (tansu's reading of the URL).
            Storage::File => "sqlite://tansu.db",
        };
        let child = Command::new(&program)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", engine])
            .current_dir(dir)
            // tansu reads a `.env` of its working directory and these variables: none of
            // the caller's may steer it elsewhere.
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env(
                "RUST_LOG",
                std::env::var("MERIDIAN_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        let mut broker = Self {
            child: Some(child),
            addr,
            storage,
            dir: dir.to_path_buf(),
            log,
            _temp: None,
        };
        broker.wait_until_listening(Duration::from_secs(30)).await?;
        Ok(broker)
    }

    async fn wait_until_listening(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(Error::StartupExited {
                    status: status.to_string(),
                    log: self.log(),
                });
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                self.kill();
                return Err(Error::StartupTimeout {
                    addr: self.addr,
                    secs: timeout.as_secs(),
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:<port>`: the bootstrap servers of a client.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// What the broker has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the broker at once (SIGKILL): no orderly shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts it again on the same port with the same storage (a file
    /// broker keeps what it held).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let started = Instant::now();
        loop {
            // The port may linger a moment after the kill.
            match Self::launch(&self.dir, self.storage.clone(), self.addr.port()).await {
                Ok(mut fresh) => {
                    self.child = fresh.child.take();
                    return Ok(());
                }
                Err(Error::StartupExited { .. }) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| io("find a free port", e))
}

fn io(what: &str, source: std::io::Error) -> Error {
    Error::Io {
        what: what.to_string(),
        source,
    }
}
