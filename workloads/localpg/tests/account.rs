//! The server's system account on a brand-new machine: many processes (each with several
//! threads) ensure it at the same instant, as parallel test binaries starting PostgreSQL do.
//! Every one of them must come back with the same account, resolvable by name and by uid
//! (what `initdb` checks), and the account must be created exactly once.
//!
//! Creating accounts needs root (as in CI); the test uses a throwaway account name and
//! deletes the account afterwards.

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_localpg::{ServerAccount, ensure_system_account};

/// Set in the child processes: the account name to ensure.
const CHILD_ENV: &str = "MERIDIAN_ACCOUNT_RACE_NAME";
/// Set in the child processes: when to start (ms since the epoch), so that they all race.
const START_ENV: &str = "MERIDIAN_ACCOUNT_RACE_START";
const PROCESSES: usize = 8;
const THREADS: usize = 4;

#[test]
fn many_processes_and_threads_ensure_a_new_account_at_once() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
        let wait = start.saturating_sub(now_ms());
        std::thread::sleep(Duration::from_millis(wait));
        let account = race_threads(&name);
        println!("account {}:{}", account.uid, account.gid);
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: creating system accounts needs root (CI runs the tests as root)");
        return;
    }
    let name = format!("mrdn-race-{}", std::process::id());
    let _cleanup = Delete(name.clone());
    delete(&name);
    assert!(!in_passwd(&name), "{name} exists before the test");

    let exe = std::env::current_exe().unwrap();
    let start = now_ms() + 1500;
    let spawned: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "many_processes_and_threads_ensure_a_new_account_at_once",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &name)
                .env(START_ENV, start.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(start.saturating_sub(now_ms())));
    let here = race_threads(&name);
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "a racing process failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("account {}:{}", here.uid, here.gid)),
            "a racing process saw another account than {here:?}:\n{stdout}"
        );
    }
    let lines = std::fs::read_to_string("/etc/passwd").unwrap();
    let entries = lines.lines().filter(|l| l.split(':').next() == Some(&name)).count();
    assert_eq!(entries, 1, "{name} must be created exactly once");
}

/// Ensures the account from several threads at once; each checks that a process running as
/// it can name itself. Returns the account all of them agree on.
fn race_threads(name: &str) -> ServerAccount {
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (barrier, name) = (barrier.clone(), name.to_string());
            std::thread::spawn(move || {
                barrier.wait();
                let account = ensure_system_account(&name).unwrap_or_else(|e| panic!("{e}"));
                assert_names_itself(&name, account);
                account
            })
        })
        .collect();
    let accounts: Vec<ServerAccount> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(accounts.windows(2).all(|w| w[0] == w[1]), "{accounts:?}");
    accounts[0]
}

/// What `initdb` does first: look its own effective uid up.
fn assert_names_itself(name: &str, account: ServerAccount) {
    use std::os::unix::process::CommandExt;
    let out = Command::new("whoami")
        .uid(account.uid)
        .gid(account.gid)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "uid {} cannot look itself up: {}",
        account.uid,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
}

fn in_passwd(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

fn delete(name: &str) {
    let _ = Command::new("userdel").arg(name).output();
    let _ = Command::new("groupdel").arg(name).output();
}

/// Deletes the throwaway account when the test ends, passed or not.
struct Delete(String);

impl Drop for Delete {
    fn drop(&mut self) {
        delete(&self.0);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}
