//! The whole world in `meridian dev`: the 249 countries of `examples/world` on six shared
//! Regions all become Ready, the process stays small, and a resync with nothing changed
//! writes nothing (no schema statement, no status change, no search index change), as the
//! writes counters of `/metrics` show too. `meridian bench world` measures the same and
//! fails clearly when a country never becomes Ready.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_e2e::{Dev, condition, examples, meridian_bin};
use serde_json::Value;

/// `method path` with a long read timeout (a resync reconciles every object): status, body.
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// `meridian_writes_total` by kind, from `/metrics`.
fn writes(addr: SocketAddr) -> Vec<(String, u64)> {
    let (status, text) = request(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    let mut out: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("meridian_writes_total{kind=\""))
        .map(|l| {
            let (kind, value) = l.split_once("\"} ").unwrap();
            (kind.to_string(), value.trim().parse().unwrap())
        })
        .collect();
    out.sort();
    out
}

fn ready_count(dev: &Dev) -> usize {
    let (status, list) = dev.get("/apis/platform.meridian.dev/v1alpha1/countries");
    assert_eq!(status, 200, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| condition(c, "Ready") == Some("True"))
        .count()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}

#[test]
fn all_249_countries_are_ready_and_a_resync_with_nothing_changed_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&examples().join("world"), &work.path().join("data"));
    dev.wait_for("the databases", Duration::from_secs(300), |d| {
        d.output().contains("database(s) up")
    });
    let up = Instant::now();
    dev.wait_for("all 249 countries Ready", Duration::from_secs(120), |d| {
        ready_count(d) == 249
    });
    let seconds = up.elapsed().as_secs_f64();
    let rss = peak_rss_mib(dev.pid());
    println!("all 249 Ready {seconds:.1} s after the databases were up; peak RSS {rss:.1} MiB");
    assert!(rss < 512.0, "meridian dev peaked at {rss:.1} MiB");

    // Countries of the languages the issue names, each with its index and its route.
    for (name, locale) in [("eg", "ar-EG"), ("jp", "ja-JP"), ("th", "th-TH"), ("br", "pt-BR")] {
        let (_, country) = dev.get(&format!("/apis/platform.meridian.dev/v1alpha1/countries/{name}"));
        assert_eq!(country["spec"]["locale"], locale);
        assert_eq!(condition(&country, "SearchIndexReady"), Some("True"), "{country}");
        assert_eq!(country["status"]["index"], format!("practitioners_{name}_v1"));
        assert_eq!(country["status"]["routes"][0], format!("/{name}/v1"));
    }

    // A resync of everything, nothing changed: no write of any kind, by its own report
    // and by the counters.
    let before = writes(dev.addr);
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(
        before.iter().any(|(kind, n)| kind == "ddl" && *n > 0),
        "the launch itself was counted: {before:?}"
    );
    let (status, body) = request(dev.addr, "POST", "/dev/resync");
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&report["regions"], &report["countries"], &report["ready"]),
        (&Value::from(6), &Value::from(249), &Value::from(249)),
        "{report}"
    );
    assert_eq!(
        report["writes"],
        serde_json::json!({"ddl": 0, "status": 0, "index": 0}),
        "{report}"
    );
    assert_eq!(writes(dev.addr), before);
    // The line is printed before the answer is sent, but reaches this test through a pipe
    // and a reader thread, possibly after the answer.
    dev.wait_for("the resync's line", Duration::from_secs(10), |d| {
        d.output()
            .contains("resync: 6 region(s) and 249 country(ies) reconciled")
    });
    let (status, output) = dev.interrupt();
    assert!(status.success(), "{output}");
}

fn write_manifests(dir: &Path, second_region: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        examples().join("world/regions/world-europe.yaml"),
        dir.join("world-europe.yaml"),
    )
    .unwrap();
    std::fs::copy(examples().join("world/countries/mt.yaml"), dir.join("mt.yaml")).unwrap();
    let lu = std::fs::read_to_string(examples().join("world/countries/lu.yaml")).unwrap();
    std::fs::write(
        dir.join("lu.yaml"),
        lu.replace("region: world-europe", &format!("region: {second_region}")),
    )
    .unwrap();
}

#[test]
fn bench_world_prints_its_figures_and_fails_clearly_when_a_country_is_never_ready() {
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good");
    write_manifests(&good, "world-europe");
    let run = Command::new(meridian_bin())
        .args(["bench", "world", "--manifests"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap();
    let figures: Vec<(&str, &str)> = last.split(' ').map(|kv| kv.split_once('=').unwrap()).collect();
    let keys: Vec<&str> = figures.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        ["countries", "seconds_to_ready", "peak_rss_mib", "noop_writes"],
        "{stdout}"
    );
    assert_eq!(figures[0].1, "2", "{stdout}");
    assert_eq!(figures[3].1, "0", "{stdout}");
    let rss: f64 = figures[2].1.parse().unwrap();
    assert!(rss > 1.0 && rss < 512.0, "{stdout}");

    // Luxembourg names a Region that does not exist: it never becomes Ready.
    let bad = work.path().join("bad");
    write_manifests(&bad, "world-nowhere");
    let run = Command::new(meridian_bin())
        .args(["bench", "world", "--timeout-seconds", "3", "--manifests"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("only 1 of 2 countries were Ready"), "{stderr}");
    assert!(stderr.contains("lu (RegionNotFound"), "{stderr}");
}
