use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::binaries::Binaries;
use crate::user::{ServerAccount, hand_over, io_error, server_account};
use crate::{Error, Result};

/// The superuser that `initdb` creates; connections from 127.0.0.1 are trusted.
const SUPERUSER: &str = "meridian";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the processes of a server that died may take to exit before a restart gives up.
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// How hard the server works to keep committed data across a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults: what `meridian dev` keeps across restarts.
    Durable,
    /// fsync off: for throwaway clusters in tests, where a crash loses nothing of value.
    Throwaway,
}

impl Durability {
    /// Durable when `fsync`, throwaway otherwise (a benchmark's `--no-fsync`).
    pub fn fsync(fsync: bool) -> Self {
        if fsync { Self::Durable } else { Self::Throwaway }
    }
}

/// A running PostgreSQL cluster on 127.0.0.1. Stopped (fast shutdown) on drop.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    port: u16,
    durability: Durability,
    child: Option<Child>,
}

impl Cluster {
    /// Starts the cluster kept under `root` (`root/pgdata`, log in `root/postgres.log`),
    /// running `initdb` first if there is none yet, and waits until it accepts connections.
    pub async fn start(root: &Path, durability: Durability) -> Result<Self> {
        let binaries = Binaries::find()?;
        std::fs::create_dir_all(root).map_err(|e| io_error(root, e))?;
        let root = root.canonicalize().map_err(|e| io_error(root, e))?;
        let account = server_account()?;
        if let Some(account) = account {
            hand_over(&root, account)?;
        }
        let pgdata = root.join("pgdata");
        if !pgdata.join("PG_VERSION").is_file() {
            initdb(&binaries, &pgdata, account, durability)?;
        }
        stop_orphan(&pgdata);
        // Another process may take the port between our probe and the server's bind;
        // the server then exits at once and we try again with a new port.
        Self::launch(&binaries, root, account, durability, 3, |_| free_port(), Duration::ZERO).await
    }

    /// Starts the cluster under `root` again after its server died, on `port` if it can be
    /// had (another process may have taken it meanwhile; then on a new one). Never runs
    /// `initdb`: a data directory that is gone is an error, not a fresh empty cluster.
    ///
    /// Before starting, waits until no process of the dead server is left (its backends
    /// exit by themselves once they notice the postmaster is gone: two servers must never
    /// share a data directory), and only then removes the dead server's `postmaster.pid`.
    pub async fn restart(root: &Path, port: u16, durability: Durability) -> Result<Self> {
        let binaries = Binaries::find()?;
        let root = root.canonicalize().map_err(|e| io_error(root, e))?;
        let pgdata = root.join("pgdata");
        if !pgdata.join("PG_VERSION").is_file() {
            return Err(Error::DataMissing {
                dir: pgdata.display().to_string(),
            });
        }
        let account = server_account()?;
        match wait_until_unused(&pgdata, LEFTOVER_TIMEOUT).await {
            (true, leftovers) if leftovers.is_empty() => remove_stale_pid_file(&pgdata)?,
            (true, pids) => {
                return Err(Error::StillInUse {
                    dir: pgdata.display().to_string(),
                    pids,
                });
            }
            // Without /proc the file stays: the server itself ignores it when its pid is gone.
            (false, _) => {}
        }
        // The port first (a few times: its last owner may be releasing it), then any.
        let port_for = |attempt| if attempt < 4 { Ok(port) } else { free_port() };
        Self::launch(
            &binaries,
            root,
            account,
            durability,
            6,
            port_for,
            Duration::from_millis(250),
        )
        .await
    }

    /// Starts the server on `port_for(attempt)` until one attempt binds its port (a server
    /// that cannot bind exits at once: another process took the port), pausing `pause`
    /// between attempts; any other failure ends it.
    async fn launch(
        binaries: &Binaries,
        root: PathBuf,
        account: Option<ServerAccount>,
        durability: Durability,
        attempts: usize,
        port_for: impl Fn(usize) -> std::io::Result<u16>,
        pause: Duration,
    ) -> Result<Self> {
        let mut last_error = None;
        for attempt in 0..attempts {
            let port = port_for(attempt).map_err(|e| io_error(&root, e))?;
            let child = spawn_postgres(binaries, &root, port, account, durability)?;
            let mut cluster = Self {
                root: root.clone(),
                port,
                durability,
                child: Some(child),
            };
            match cluster.wait_ready().await {
                Ok(()) => return Ok(cluster),
                Err(err @ Error::StartupExited { .. }) if err.to_string().contains("could not bind") => {
                    last_error = Some(err);
                    tokio::time::sleep(pause).await;
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.expect("every attempt recorded an error"))
    }

    /// Whether the server has exited since the last call, and how (reaps it): `None` while
    /// it runs, and once its exit has been reported or after [`Cluster::stop`].
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(match status.signal() {
            Some(signal) => format!("killed by signal {signal}"),
            None => format!("exited with {status}"),
        })
    }

    /// How hard the server works to keep committed data.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the cluster keeps its files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        url(self.port, database)
    }

    /// Creates `name` if it does not exist yet.
    pub async fn ensure_database(&self, name: &str) -> Result<()> {
        let err = |source| Error::CreateDatabase {
            name: name.into(),
            source,
        };
        let mut conn = PgConnection::connect(&self.url("postgres")).await.map_err(err)?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .map_err(err)?;
        if !exists {
            let quoted = name.replace('"', "\"\"");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
                .execute(&mut conn)
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// Stops the server (fast shutdown: clients are disconnected, data is flushed).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(root = %self.root.display(), "PostgreSQL ignored fast shutdown; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let url = self.url("postgres");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return Err(Error::StartupExited {
                    dir: self.root.display().to_string(),
                    log: self.log_tail(),
                });
            }
            if PgConnection::connect(&url).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                let log = self.log_tail();
                self.shutdown();
                return Err(Error::StartupTimeout {
                    dir: self.root.display().to_string(),
                    secs: STARTUP_TIMEOUT.as_secs(),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Connection URL for `database` on a local cluster listening on `port`.
pub fn url(port: u16, database: &str) -> String {
    format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{database}")
}

/// A cluster in a temporary directory, removed when dropped. For tests and benchmarks.
#[derive(Debug)]
pub struct TempCluster {
    cluster: Cluster,
    // Dropped after `cluster`: the server stops before its files go.
    _dir: tempfile::TempDir,
}

impl TempCluster {
    /// Starts a throwaway cluster with a `meridian` database.
    pub async fn start() -> Result<Self> {
        Self::start_with(Durability::Throwaway).await
    }

    /// [`TempCluster::start`] with `durability` (a benchmark that commits as production does).
    pub async fn start_with(durability: Durability) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("meridian-pg-")
            .tempdir()
            .map_err(|e| io_error(Path::new("temporary directory"), e))?;
        let cluster = Cluster::start(dir.path(), durability).await?;
        cluster.ensure_database("meridian").await?;
        Ok(Self { cluster, _dir: dir })
    }

    /// The running cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// URL of the `meridian` database.
    pub fn url(&self) -> String {
        self.cluster.url("meridian")
    }
}

fn initdb(binaries: &Binaries, pgdata: &Path, account: Option<ServerAccount>, durability: Durability) -> Result<()> {
    let mut cmd = Command::new(&binaries.initdb);
    cmd.arg("-D").arg(pgdata);
    cmd.args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale"]);
    if durability == Durability::Throwaway {
        cmd.arg("--no-sync");
    }
    run_as(&mut cmd, account);
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: binaries.initdb.display().to_string(),
        source,
    })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(pgdata);
        return Err(Error::Initdb {
            dir: pgdata.display().to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

fn spawn_postgres(
    binaries: &Binaries,
    root: &Path,
    port: u16,
    account: Option<ServerAccount>,
    durability: Durability,
) -> Result<Child> {
    let log_path = root.join("postgres.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io_error(&log_path, e))?;
    let log_err = log.try_clone().map_err(|e| io_error(&log_path, e))?;
    let mut cmd = Command::new(&binaries.postgres);
    cmd.arg("-D").arg(root.join("pgdata"));
    cmd.args([
        "-p",
        &port.to_string(),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
    ]);
    cmd.args(["-c", "max_connections=200", "-c", "shared_buffers=64MB"]);
    if durability == Durability::Durable && syncfs_supported(&root.join("pgdata")) {
        // After a crash the server first flushes the whole data directory to disk; file by
        // file that takes seconds, one syncfs(2) a fraction of one (Linux, PostgreSQL 14+).
        cmd.args(["-c", "recovery_init_sync_method=syncfs"]);
    }
    if durability == Durability::Throwaway {
        cmd.args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    }
    cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
    // Own process group: a Ctrl-C in the terminal reaches us, and we stop the server in order.
    cmd.process_group(0);
    run_as(&mut cmd, account);
    cmd.spawn().map_err(|source| Error::Spawn {
        program: binaries.postgres.display().to_string(),
        source,
    })
}

fn run_as(cmd: &mut Command, account: Option<ServerAccount>) {
    if let Some(account) = account {
        cmd.uid(account.uid).gid(account.gid);
    }
}

/// The pid and port of the server `pgdata`'s `postmaster.pid` names (its lines 1 and 4),
/// while the file is there.
pub fn postmaster(pgdata: &Path) -> Option<(libc::pid_t, u16)> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let port = lines.nth(2)?.trim().parse().ok()?;
    Some((pid, port))
}

/// Kills the server of `pgdata` with SIGKILL, as a crash or the OOM killer would: for tests
/// of what survives one. Answers the killed postmaster's pid.
pub fn kill_postmaster(pgdata: &Path) -> std::io::Result<libc::pid_t> {
    let (pid, _) =
        postmaster(pgdata).ok_or_else(|| std::io::Error::other(format!("no server runs in {}", pgdata.display())))?;
    // SAFETY: kill(2) with a pid read from the server's own pid file; no memory is involved.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid)
}

/// A server left running by an earlier process that was killed before it could stop it.
/// Callers own `pgdata` (`meridian dev` holds a lock on its data directory), so a live
/// postmaster there is an orphan: ask it to shut down so this start can proceed.
fn stop_orphan(pgdata: &Path) {
    let Some((pid, _)) = postmaster(pgdata) else {
        return;
    };
    let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres");
    if !is_postgres {
        return;
    }
    tracing::warn!(pid, dir = %pgdata.display(), "stopping a PostgreSQL server left over from an earlier run");
    // SAFETY: kill(2) with a pid read from the server's own lock file, checked to be postgres.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && std::path::Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the server of `pgdata` can flush it with one syncfs(2) after a crash.
fn syncfs_supported(pgdata: &Path) -> bool {
    let major = std::fs::read_to_string(pgdata.join("PG_VERSION"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    cfg!(target_os = "linux") && major >= 14
}

/// Processes whose working directory is `pgdata`: every PostgreSQL process of a cluster
/// (postmaster and backends) works in its data directory. `None` where /proc is missing.
fn processes_in(pgdata: &Path) -> Option<Vec<u32>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == pgdata))
            .collect(),
    )
}

/// Waits until no process works in `pgdata`: whether that could be checked (/proc), and
/// the processes still there at the deadline.
async fn wait_until_unused(pgdata: &Path, timeout: Duration) -> (bool, Vec<u32>) {
    let deadline = Instant::now() + timeout;
    loop {
        let Some(left) = processes_in(pgdata) else {
            return (false, Vec::new());
        };
        if left.is_empty() || Instant::now() > deadline {
            return (true, left);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes the `postmaster.pid` of a server that is gone. Callers have checked that no
/// process works in `pgdata` any more, so whatever pid the file names, it is not a server
/// of this cluster (the pid may since belong to an unrelated process, which would make
/// the new server refuse to start).
fn remove_stale_pid_file(pgdata: &Path) -> Result<()> {
    let pid_file = pgdata.join("postmaster.pid");
    match std::fs::remove_file(&pid_file) {
        Ok(()) => {
            tracing::info!(dir = %pgdata.display(), "removed the postmaster.pid of the server that died");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&pid_file, e)),
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}
