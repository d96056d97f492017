use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where `initdb` and `postgres` live: PATH first, then Debian's versioned directories
/// (newest first), because Debian keeps the server binaries off PATH.
pub(crate) struct Binaries {
    pub initdb: PathBuf,
    pub postgres: PathBuf,
}

impl Binaries {
    pub(crate) fn find() -> Result<Self> {
        if let (Some(initdb), Some(postgres)) = (on_path("initdb"), on_path("postgres")) {
            return Ok(Self { initdb, postgres });
        }
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
            .unwrap_or_default();
        versions.sort_by_key(|p| std::cmp::Reverse(version_of(p)));
        versions
            .into_iter()
            .find(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
            .map(|bin| Self {
                initdb: bin.join("initdb"),
                postgres: bin.join("postgres"),
            })
            .ok_or(Error::BinariesMissing)
    }
}

fn version_of(bin: &Path) -> u32 {
    bin.parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
