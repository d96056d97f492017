use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::{Error, Result, SERVER_USER};

/// The account the server runs as: `None` means "this process's own user".
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerAccount {
    pub uid: u32,
    pub gid: u32,
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// When root, the unprivileged account for the server, created if missing.
pub(crate) fn server_account() -> Result<Option<ServerAccount>> {
    if !is_root() {
        return Ok(None);
    }
    if lookup(SERVER_USER).is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
            ])
            .args(["--shell", "/usr/sbin/nologin", SERVER_USER])
            .output()
            .map_err(|e| user_error(format!("useradd: {e}")))?;
        // A concurrent test may have created it first (exit code 9: user exists).
        if !out.status.success() && lookup(SERVER_USER).is_none() {
            return Err(user_error(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
    }
    lookup(SERVER_USER)
        .map(Some)
        .ok_or_else(|| user_error("user not found after useradd".into()))
}

fn lookup(name: &str) -> Option<ServerAccount> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    Some(ServerAccount {
        uid: id("-u")?,
        gid: id("-g")?,
    })
}

fn user_error(message: String) -> Error {
    Error::User {
        user: SERVER_USER.into(),
        message,
    }
}

/// Hands `dir` (and everything below it) to the server account, after checking that the
/// account can walk down to it.
pub(crate) fn hand_over(dir: &Path, account: ServerAccount) -> Result<()> {
    let dir = dir.canonicalize().map_err(|source| io_error(dir, source))?;
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(|source| io_error(ancestor, source))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(Error::Unreachable {
                user: SERVER_USER.into(),
                dir: dir.display().to_string(),
                blocker: ancestor.display().to_string(),
            });
        }
    }
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", account.uid, account.gid))
        .arg(&dir)
        .status()
        .map_err(|source| io_error(&dir, source))?;
    if !status.success() {
        return Err(io_error(&dir, std::io::Error::other("chown failed")));
    }
    Ok(())
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}
