//! One `meridian dev` per data directory: an exclusive lock on `meridian.lock`, and
//! `state.json` beside it telling other commands (`meridian plan`) where the running
//! databases listen.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a running `meridian dev` publishes about itself.
#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct RunningState {
    pub listen: String,
    /// Port of each local Region's PostgreSQL on 127.0.0.1.
    pub regions: HashMap<String, u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another `meridian dev` (pid {pid}) is already using data directory {dir}; stop it first or pass another --data-dir"
    )]
    Busy { dir: String, pid: String },
    #[error("cannot lock data directory {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
}

/// Held for the life of the process; released (and `state.json` removed) on drop.
pub struct DataDirLock {
    file: File,
    dir: PathBuf,
}

impl DataDirLock {
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let path = dir.join("meridian.lock");
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                return Err(LockError::Busy {
                    dir: dir.display().to_string(),
                    pid,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self {
            file,
            dir: dir.to_path_buf(),
        })
    }

    /// Whether a `meridian dev` holds `dir` right now, and what it published.
    pub fn running(dir: &Path) -> Option<RunningState> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(dir.join("meridian.lock"))
            .ok()?;
        match file.try_lock() {
            Ok(()) => None,
            Err(_) => std::fs::read(dir.join("state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
        }
    }

    pub fn write_state(&self, state: &RunningState) -> std::io::Result<()> {
        write_whole(&self.dir.join("state.json"), &serde_json::to_vec_pretty(state)?)
    }
}

/// Writes `path` so that readers see either the old file or the whole new one, never a
/// half-written one: scripts and tests poll for these files while `meridian dev` writes them.
pub fn write_whole(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("state.json"));
        let _ = self.file.unlock();
    }
}
