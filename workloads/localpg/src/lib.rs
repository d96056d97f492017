//! Local PostgreSQL clusters: `initdb` + `postgres` on 127.0.0.1, started and stopped by
//! this process. `meridian dev` keeps one per Region under its data directory; tests and
//! benchmarks start throwaway ones in temporary directories.
//!
//! PostgreSQL refuses to run as root. When this process is root, the server runs as the
//! unprivileged system user [`SERVER_USER`] (created on first use, once, however many
//! processes start clusters at the same moment), which owns the data directory; as an
//! ordinary user nothing changes.

mod binaries;
mod cluster;
mod user;

pub use cluster::{Cluster, Durability, TempCluster, kill_postmaster, postmaster, url};
pub use user::{ServerAccount, ensure_system_account};

/// Account that runs the server when this process is root.
pub const SERVER_USER: &str = "meridian";

/// Errors from starting or stopping a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or under /usr/lib/postgresql: \
         install them with `apt-get install -y postgresql` (Debian/Ubuntu) or `brew install postgresql@15` (macOS)"
    )]
    BinariesMissing,
    #[error("failed to run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("initdb failed for {dir}: {output}")]
    Initdb { dir: String, output: String },
    #[error("PostgreSQL in {dir} exited during start-up; its log says:\n{log}")]
    StartupExited { dir: String, log: String },
    #[error("PostgreSQL in {dir} did not accept connections within {secs}s; its log says:\n{log}")]
    StartupTimeout { dir: String, secs: u64, log: String },
    #[error("failed to prepare {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "PostgreSQL runs as user '{user}' because this process is root, and that user cannot reach {dir}: \
         {blocker} is not searchable by other users. Choose a data directory under /tmp or /var/tmp, \
         or run `chmod o+x {blocker}`"
    )]
    Unreachable { user: String, dir: String, blocker: String },
    #[error("failed to set up the unprivileged user '{user}' for PostgreSQL: {message}")]
    User { user: String, message: String },
    #[error("cannot restart PostgreSQL: its data directory {dir} is gone")]
    DataMissing { dir: String },
    #[error("cannot restart PostgreSQL in {dir}: processes of the server that died still run there (pids {pids:?})")]
    StillInUse { dir: String, pids: Vec<u32> },
    #[error("failed to create database {name}: {source}")]
    CreateDatabase { name: String, source: sqlx::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
