//! `meridian bench world`: `meridian dev` holding every country of a manifest folder
//! (`examples/world`: all 249 ISO 3166-1 countries on six shared local Regions). It starts
//! `meridian dev` as a child process on a throwaway data directory, and measures the seconds
//! from the databases being up to every Country being Ready, the child's peak resident
//! memory (`VmHWM`), and the writes of a resync with nothing changed (`POST /dev/resync`:
//! schema statements, status changes, search index changes). Exits non-zero when not every
//! Country becomes Ready.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::dev::manifests;

/// The line `meridian dev` prints once the first pass over the Regions is done.
const DATABASES_UP: &str = "database(s) up";
/// How long the databases may take to come up (initdb of every Region on a slow machine).
const START_UP: Duration = Duration::from_secs(300);

/// Options of `meridian bench world`.
#[derive(clap::Args, Clone, Debug)]
pub struct WorldBench {
    /// Folder of Country and Region manifests to hold.
    #[arg(long, default_value = "examples/world")]
    pub manifests: PathBuf,
    /// Seconds to wait, once the databases are up, for every Country to be Ready.
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
}

/// What the benchmark measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub countries: usize,
    pub regions: usize,
    pub seconds_to_ready: f64,
    pub peak_rss_mib: f64,
    pub noop_writes: crate::metrics::Writes,
    pub resync_seconds: f64,
}

impl Figures {
    /// The human summary, then one line of `key=value` pairs.
    pub fn text(&self) -> String {
        let w = &self.noop_writes;
        format!(
            "world benchmark: meridian dev holding {countries} countries on {regions} Region(s)\n\
             \x20 all Ready {ready:.2} s after the databases were up\n\
             \x20 peak resident memory of meridian dev: {rss:.1} MiB\n\
             \x20 resync with nothing changed: {regions} Region(s) and {countries} countries reconciled in {resync:.2} s, \
             {total} write(s) ({ddl} schema or role statements, {status} status changes, {index} search index changes)\n\
             countries={countries} seconds_to_ready={ready:.2} peak_rss_mib={rss:.1} noop_writes={total}\n",
            countries = self.countries,
            regions = self.regions,
            ready = self.seconds_to_ready,
            rss = self.peak_rss_mib,
            resync = self.resync_seconds,
            total = w.total(),
            ddl = w.ddl,
            status = w.status,
            index = w.index,
        )
    }
}

/// Runs the benchmark; an error when not every Country became Ready.
pub async fn run(options: WorldBench) -> anyhow::Result<Figures> {
    let loaded =
        manifests::load(&options.manifests).with_context(|| format!("--manifests {}", options.manifests.display()))?;
    if !loaded.errors.is_empty() {
        bail!("invalid manifests:\n  {}", loaded.errors.join("\n  "));
    }
    let countries = loaded.countries.len();
    if countries == 0 {
        bail!("--manifests {}: no Country manifest", options.manifests.display());
    }
    let data = ThrowawayDir::new()?;
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("dev")
        .arg("--manifests")
        .arg(&options.manifests)
        .arg("--data-dir")
        .arg(&data.0)
        .arg("--listen")
        .arg(listen.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start meridian dev")?;
    let pid = child.id().ok_or_else(|| anyhow!("meridian dev exited at once"))?;
    let output = Output::default();
    let databases_up: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let (out, up) = (output.clone(), databases_up.clone());
        let stdout = child.stdout.take().expect("piped");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(DATABASES_UP) {
                    up.lock().expect("lock").get_or_insert_with(Instant::now);
                }
                out.push(line);
            }
        });
        let output = output.clone();
        let stderr = child.stderr.take().expect("piped");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                output.push(line);
            }
        });
    }
    let result = measure(&options, countries, listen, pid, &mut child, &databases_up).await;
    stop(&mut child, pid).await;
    result.map_err(|e| anyhow!("{e:#}\nlast lines of meridian dev:\n{}", output.tail(30)))
}

async fn measure(
    options: &WorldBench,
    countries: usize,
    listen: SocketAddr,
    pid: u32,
    child: &mut tokio::process::Child,
    databases_up: &Mutex<Option<Instant>>,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let timeout = Duration::from_secs(options.timeout_seconds);
    let mut last = (0, Vec::new());
    let seconds_to_ready = loop {
        if let Some(status) = child.try_wait()? {
            bail!("meridian dev exited ({status}) before every country was Ready");
        }
        let up = *databases_up.lock().expect("lock");
        match up {
            None if started.elapsed() > START_UP => {
                bail!("the databases were not up within {} s", START_UP.as_secs())
            }
            None => {}
            Some(up) => {
                if let Ok(status) = readiness(listen).await {
                    last = status;
                }
                if last.0 == countries {
                    break up.elapsed().as_secs_f64();
                }
                if up.elapsed() > timeout {
                    let (ready, waiting) = &last;
                    bail!(
                        "only {ready} of {countries} countries were Ready {} s after the databases were up; \
                         not Ready: {}",
                        timeout.as_secs(),
                        waiting.join("; ")
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, report) = http(listen, "POST", "/dev/resync").await.context("POST /dev/resync")?;
    if status != 200 {
        bail!("POST /dev/resync answered {status}: {report}");
    }
    let report: crate::dev::ResyncReport = serde_json::from_value(report).context("the resync's report")?;
    if report.ready != countries {
        bail!(
            "after the resync only {} of {countries} countries are Ready",
            report.ready
        );
    }
    Ok(Figures {
        countries,
        regions: report.regions,
        seconds_to_ready,
        peak_rss_mib: peak_rss_kib(pid)? as f64 / 1024.0,
        noop_writes: report.writes,
        resync_seconds: report.seconds,
    })
}

/// How many Countries are Ready, and why the first few others are not.
async fn readiness(listen: SocketAddr) -> anyhow::Result<(usize, Vec<String>)> {
    let (status, list) = http(listen, "GET", "/apis/platform.meridian.dev/v1alpha1/countries").await?;
    if status != 200 {
        bail!("GET countries answered {status}");
    }
    let mut ready = 0;
    let mut waiting = Vec::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let condition = item["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready");
        match condition {
            Some(c) if c["status"] == "True" => ready += 1,
            other => {
                if waiting.len() < 10 {
                    let name = item["metadata"]["name"].as_str().unwrap_or_default();
                    let why = other.map_or("not reconciled yet".to_string(), |c| {
                        format!(
                            "{}: {}",
                            c["reason"].as_str().unwrap_or_default(),
                            c["message"].as_str().unwrap_or_default()
                        )
                    });
                    waiting.push(format!("{name} ({why})"));
                }
            }
        }
    }
    Ok((ready, waiting))
}

/// The peak resident set size of process `pid` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc (Linux only)")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}

/// Ctrl-C, as a user would (the databases stop cleanly), then a kill if it hangs.
async fn stop(child: &mut tokio::process::Child, pid: u32) {
    let _ = tokio::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await;
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// One HTTP/1.1 request to the entry point: status and JSON body.
async fn http(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    // A resync of every object takes a while; a list answers at once.
    let raw = tokio::time::timeout(Duration::from_secs(120), exchange)
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer within 120 s"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} {path}: not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or_default().trim(), 16).ok())
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
    out
}

/// The last lines `meridian dev` printed, for an error message.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<std::collections::VecDeque<String>>>);

impl Output {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().expect("lock");
        if lines.len() == 200 {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.0.lock().expect("lock");
        let skip = lines.len().saturating_sub(n);
        lines.iter().skip(skip).map(|l| format!("  {l}\n")).collect()
    }
}

/// A data directory of its own, removed afterwards.
struct ThrowawayDir(PathBuf);

impl ThrowawayDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("meridian-bench-world-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for ThrowawayDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_has_the_four_figures() {
        let figures = Figures {
            countries: 249,
            regions: 6,
            seconds_to_ready: 11.337,
            peak_rss_mib: 57.9,
            noop_writes: crate::metrics::Writes {
                ddl: 0,
                status: 1,
                index: 0,
            },
            resync_seconds: 1.6,
        };
        let text = figures.text();
        assert_eq!(
            text.lines().last(),
            Some("countries=249 seconds_to_ready=11.34 peak_rss_mib=57.9 noop_writes=1")
        );
        assert!(text.contains("0 schema or role statements, 1 status changes"), "{text}");
    }

    #[test]
    fn a_chunked_body_is_put_together() {
        assert_eq!(dechunk(b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), b"{\"a\":1}");
    }
}
