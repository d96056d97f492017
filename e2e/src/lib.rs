//! Helpers for the user journeys in `tests/`: run the `meridian` binary the way a user
//! would, talk to its HTTP entry point, and wait for conditions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `meridian` binary built alongside the tests (`cargo test --workspace` builds it), or
/// the one `MERIDIAN_BIN` names.
pub fn meridian_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MERIDIAN_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("meridian"))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} not found: build it first with `cargo build -p meridian-operator` (`cargo test --workspace` does)",
        bin.display()
    );
    bin
}

/// A free port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A running `meridian dev`, with its output collected; killed if the test fails.
pub struct Dev {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    output: Arc<Mutex<String>>,
    /// What it wrote to stderr alone: its log lines.
    stderr: Arc<Mutex<String>>,
}

impl Dev {
    /// Starts `meridian dev` on `manifests` and `data_dir`, listening on a free port.
    pub fn start(manifests: &Path, data_dir: &Path) -> Self {
        Self::start_with(manifests, data_dir, &[], &[])
    }

    /// [`Dev::start`], with `args` before the subcommand (`--log-format json`) and `env` set.
    pub fn start_with(manifests: &Path, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let addr = free_addr();
        let mut child = Command::new(meridian_bin())
            .args(args)
            .arg("dev")
            .arg("--manifests")
            .arg(manifests)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meridian dev");
        let output = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        for (stream, alone) in [
            (Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, None),
            (Box::new(child.stderr.take().unwrap()), Some(stderr.clone())),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(alone) = &alone {
                        alone.lock().unwrap().push_str(&format!("{line}\n"));
                    }
                    output.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        Self {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            output,
            stderr,
        }
    }

    /// Everything it wrote to stderr so far (its logs).
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The process ID of `meridian dev`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// `meridian dev` on a copy of `examples/` (`work/manifests`) with its data in
    /// `work/data`.
    pub fn start_examples(work: &Path) -> Self {
        let manifests = work.join("manifests");
        copy_dir(&examples(), &manifests);
        Self::start(&manifests, &work.join("data"))
    }

    /// `GET path` on the entry point: status code and JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        http_get(self.addr, path)
    }

    /// Waits until `check` holds, or fails the test with `what` and the output so far.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut check: impl FnMut(&Dev) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            if check(self) {
                return started.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "meridian dev exited ({status}) while waiting for {what}:\n{}",
                    self.output()
                );
            }
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until country `name` has condition Ready=True.
    pub fn await_ready(&mut self, name: &str, timeout: Duration) -> Duration {
        let path = format!("/apis/platform.meridian.dev/v1alpha1/countries/{name}");
        self.wait_for(&format!("country {name} Ready"), timeout, |dev| {
            condition(&dev.get(&path).1, "Ready") == Some("True")
        })
    }

    /// The demo users' `Authorization` header values, by role (`patient`, `clinic-admin`,
    /// ...), once `meridian dev` has written them.
    pub fn bearers(&mut self) -> std::collections::BTreeMap<String, String> {
        self.wait_for("demo tokens", Duration::from_secs(10), |d| {
            d.data_dir.join("tokens.json").is_file()
        });
        let tokens: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&std::fs::read(self.data_dir.join("tokens.json")).unwrap()).unwrap();
        tokens
            .into_iter()
            .map(|(role, token)| (role, format!("Bearer {token}")))
            .collect()
    }

    /// An `Authorization` header value for `sub` with `roles` (comma-separated) in
    /// `countries` (comma-separated), from the dev issuer's `/auth/token`.
    pub fn bearer_for(&self, sub: &str, roles: &str, countries: &str) -> String {
        use std::io::{Read, Write};
        let addr = self.addr;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /auth/token?sub={sub}&roles={roles}&countries={countries} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        format!("Bearer {}", response.split_once("\r\n\r\n").unwrap().1.trim())
    }

    /// Creates cardiologist Anna Schmidt in Berlin through `/de/v1`; returns her as created.
    pub fn create_anna(&self, admin: &str) -> Value {
        let anna = serde_json::json!({"givenName": "Anna", "familyName": "Schmidt", "specialty": "Kardiologie", "city": "Berlin"});
        let (status, created) = http(
            self.addr,
            "POST",
            "/de/v1/practitioners",
            &[("Authorization", admin)],
            Some(&anna),
        );
        assert_eq!(status, 201, "{created}");
        created
    }

    /// Opens German practitioner `id`'s mornings (09:00 to 12:00, 30-minute slots) on every
    /// weekday, and answers tomorrow's slots as `token` sees them.
    pub fn open_mornings(&self, admin: &str, id: &str, token: &str) -> Value {
        for weekday in 1..=7 {
            let rule = serde_json::json!({"kind": "weekly", "weekday": weekday, "start": "09:00:00", "end": "12:00:00", "slotMinutes": 30});
            let path = format!("/de/v1/practitioners/{id}/availability");
            let (status, body) = http(self.addr, "POST", &path, &[("Authorization", admin)], Some(&rule));
            assert_eq!(status, 201, "{body}");
        }
        let day = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
        let path = format!("/de/v1/practitioners/{id}/slots?from={day}&to={day}");
        let (status, slots) = http(self.addr, "GET", &path, &[("Authorization", token)], None);
        assert_eq!(status, 200, "{slots}");
        slots
    }

    /// The PostgreSQL port of each local Region, as published in `state.json`.
    pub fn region_ports(&self) -> Vec<(String, u16)> {
        let state: Value = serde_json::from_slice(&std::fs::read(self.data_dir.join("state.json")).unwrap()).unwrap();
        let mut ports: Vec<(String, u16)> = state["regions"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, port)| (name.clone(), port.as_u64().unwrap() as u16))
            .collect();
        ports.sort();
        ports
    }

    /// [`Dev::interrupt`], answering with what it wrote to stderr alone (its logs).
    pub fn interrupt_logs(self) -> (ExitStatus, String) {
        let stderr = self.stderr.clone();
        let (status, _) = self.interrupt();
        let logs = stderr.lock().unwrap().clone();
        (status, logs)
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to exit.
    pub fn interrupt(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the readers drain
                return (status, self.output());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "meridian dev ignored Ctrl-C:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// The status of condition `type_` in an object's JSON.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

/// A minimal HTTP/1.1 GET, enough for the entry point's JSON (no client dependency).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    http(addr, "GET", path, &[], None)
}

/// A minimal HTTP/1.1 request with JSON in and out: status and body (`Null` when not JSON).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, _, body) = http_typed(addr, method, path, headers, body);
    (status, body)
}

/// [`http`], with the response's `Content-Type` (empty when it has none).
pub fn http_typed(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String, Value) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new(), Value::Null);
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(stream, "{head}\r\n{body}").unwrap();
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).is_err() {
        return (0, String::new(), Value::Null);
    }
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    let content_type = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    (status, content_type, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Copies every file of `from` into `to`, flattening nothing (subfolders are kept).
/// `GET /{cc}/v1/practitioners/search?q=` with `token`: status code and the family names found.
pub fn search(addr: SocketAddr, token: &str, cc: &str, q: &str) -> (u16, Vec<String>) {
    let (status, body) = http(
        addr,
        "GET",
        &format!("/{cc}/v1/practitioners/search?q={q}"),
        &[("Authorization", token)],
        None,
    );
    let names = body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["familyName"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (status, names)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The repository's `examples/` folder.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}
