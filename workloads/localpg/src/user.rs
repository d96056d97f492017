use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Error, Result, SERVER_USER};

/// How long a newly created account may take to become visible to the name service
/// (nscd/sssd caches) before we give up.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often `useradd` is tried when the account database is locked by someone else.
const USERADD_ATTEMPTS: u32 = 10;

/// A system account: its IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerAccount {
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
    ensure_system_account(SERVER_USER).map(Some)
}

/// Creates the system account `name` (own group, no home, no login shell) unless it exists,
/// and returns it once the name service resolves it both ways (name to ID and ID to name,
/// which is what `initdb` checks). Safe to call from any number of threads and processes
/// at once: creation is serialised by a lock file shared by every process on the machine,
/// an account created meanwhile by someone else counts as success, and nobody returns
/// before the account resolves. Needs root.
pub fn ensure_system_account(name: &str) -> Result<ServerAccount> {
    let user_error = |message: String| Error::User {
        user: name.into(),
        message,
    };
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(user_error("not a valid account name".into()));
    }
    if let Some(account) = resolved(name) {
        return Ok(account);
    }
    let _lock = AccountLock::acquire().map_err(|e| user_error(format!("cannot take the account lock: {e}")))?;
    // Someone may have created it while we waited for the lock.
    if lookup(name).is_none() {
        create(name).map_err(user_error)?;
    }
    wait_resolvable(name).map_err(user_error)
}

/// Runs `useradd`, tolerating "already exists" and retrying while another program (not one
/// of ours: those hold the lock) has the account database locked.
fn create(name: &str) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..USERADD_ATTEMPTS {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
            ])
            .args(["--shell", "/usr/sbin/nologin", name])
            .output()
            .map_err(|e| format!("useradd: {e}"))?;
        // Exit code 9: the name is taken (created by someone who does not use our lock).
        if out.status.success() || out.status.code() == Some(9) || lookup(name).is_some() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // Exit code 10: cannot update (lock) the password file; others: give up at once.
        if out.status.code() != Some(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100 << attempt.min(4)));
    }
    Err(format!("useradd failed: {last}"))
}

/// Waits until `name` resolves to its IDs and its uid back to `name`, asking nscd (when
/// present) to forget what it cached about the account database.
fn wait_resolvable(name: &str) -> Result<ServerAccount, String> {
    let started = Instant::now();
    let mut invalidated = false;
    loop {
        if let Some(account) = resolved(name) {
            return Ok(account);
        }
        if !invalidated {
            for table in ["passwd", "group"] {
                let _ = Command::new("nscd").args(["-i", table]).output();
            }
            invalidated = true;
        }
        if started.elapsed() > RESOLVE_TIMEOUT {
            return Err(format!(
                "the account exists in /etc/passwd but the name service did not resolve it within {}s \
                 (a name-service cache such as nscd or sssd may hold a stale entry)",
                RESOLVE_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The account when both getpwnam(name) and getpwuid(its uid) find it.
fn resolved(name: &str) -> Option<ServerAccount> {
    let account = lookup(name)?;
    (name_of(account.uid).as_deref() == Some(name)).then_some(account)
}

/// getpwnam(3), re-entrant.
fn lookup(name: &str) -> Option<ServerAccount> {
    let name = CString::new(name).ok()?;
    getpw(
        |pwd, buf, result| {
            // SAFETY: every pointer is valid for the call; buf's length is passed with it.
            unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result) }
        },
        |pwd| ServerAccount {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        },
    )
}

/// getpwuid(3), re-entrant: the account name of `uid`.
fn name_of(uid: u32) -> Option<String> {
    getpw(
        |pwd, buf, result| {
            // SAFETY: as in `lookup`.
            unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result) }
        },
        // SAFETY: on success pw_name points into the buffer, NUL-terminated.
        |pwd| unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned(),
    )
}

/// Calls a `getpw*_r` function with a buffer that grows while it reports ERANGE, and reads
/// what it found with `read` while the buffer lives.
fn getpw<T>(
    mut call: impl FnMut(&mut libc::passwd, &mut Vec<libc::c_char>, &mut *mut libc::passwd) -> libc::c_int,
    read: impl FnOnce(&libc::passwd) -> T,
) -> Option<T> {
    let mut size = 1024;
    loop {
        // SAFETY: passwd is plain data; all-zero is a valid (empty) value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf: Vec<libc::c_char> = vec![0; size];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, &mut buf, &mut result);
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        return (rc == 0 && !result.is_null()).then(|| read(&pwd));
    }
}

/// An exclusive flock(2) on a file every process of this machine agrees on, held while an
/// account is created. In /run (root-only) where it exists, else in /tmp, opened without
/// following symlinks.
struct AccountLock {
    /// Closing it releases the lock.
    _file: File,
}

impl AccountLock {
    fn acquire() -> std::io::Result<Self> {
        let dir = if Path::new("/run").is_dir() { "/run" } else { "/tmp" };
        let path = Path::new(dir).join("meridian-localpg-account.lock");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
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
