//! A platform engineer's first hour with `meridian dev`: start it, watch the eight example
//! countries become Ready on their own PostgreSQL clusters, launch a ninth country by
//! writing a manifest, remove it again (Retain keeps its data), restart, stop.

use std::time::Duration;

use meridian_e2e::{Dev, condition, copy_dir, examples, http};
use serde_json::json;
use sqlx::{Connection, PgConnection};

const COUNTRIES: [&str; 8] = ["de", "eg", "es", "fr", "gb", "it", "jp", "th"];
/// Partitioned tables, hence partitions per country.
const TABLES: usize = meridian_shared::schema::PARTITIONED_TABLES.len();

const PORTUGAL: &str = "apiVersion: platform.meridian.dev/v1alpha1
kind: Country
metadata:
  name: pt
spec:
  code: PT
  displayName: Portugal
  timezone: Europe/Lisbon
  locale: pt-PT
  languages: [pt]
  currency: EUR
  region: eu-west-1
  residency: shared
  regulatory:
    retentionYears: 10
    minimumAge: 16
  deletionPolicy: Retain
";

/// `(partition, attached)` of every per-country partition in one Region's database.
async fn partitions(port: u16) -> Vec<(String, bool)> {
    let url = format!("postgres://meridian@127.0.0.1:{port}/meridian");
    let mut conn = PgConnection::connect(&url).await.expect("connect to a Region database");
    sqlx::query_as(
        "SELECT oid::regclass::text, relispartition FROM pg_class
          WHERE relnamespace IN ('public'::regnamespace, 'vault'::regnamespace)
            AND relkind = 'r' AND relname ~ '_[a-z]{2}$'
          ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// The country codes that have partitions (attached or not) in a database.
fn codes(parts: &[(String, bool)]) -> Vec<String> {
    let mut codes: Vec<String> = parts
        .iter()
        .map(|(name, _)| name.rsplit('_').next().unwrap().to_string())
        .collect();
    codes.dedup();
    codes.sort();
    codes.dedup();
    codes
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_brings_countries_up_launches_and_retires_one_and_restarts_with_its_data() {
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    copy_dir(&examples(), &manifests);
    let data_dir = work.path().join("data");

    let mut dev = Dev::start(&manifests, &data_dir);
    for name in COUNTRIES {
        dev.await_ready(name, Duration::from_secs(120));
    }
    // Ready shows in the API a moment before the status output is printed.
    dev.wait_for("the start-up timing", Duration::from_secs(5), |d| {
        d.output().contains("timing: all countries Ready")
    });
    let out = dev.output();
    let line = out
        .lines()
        .find(|l| l.starts_with("timing: all countries Ready"))
        .expect("start-up timing printed");
    let secs: f64 = line
        .split_whitespace()
        .nth(4)
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(secs < 10.0, "all countries Ready within 10s of the databases: {line}");

    // Every object is served the way `kubectl get -o json` shows it.
    let (code, list) = dev.get("/apis/platform.meridian.dev/v1alpha1/countries");
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "CountryList");
    assert_eq!(list["items"].as_array().unwrap().len(), COUNTRIES.len());
    let (code, region) = dev.get("/apis/platform.meridian.dev/v1alpha1/regions/eu-central-1");
    assert_eq!((code, condition(&region, "Ready")), (200, Some("True")));
    let (code, missing) = dev.get("/apis/platform.meridian.dev/v1alpha1/countries/xx");
    assert_eq!((code, missing["reason"].as_str()), (404, Some("NotFound")));

    // Each country's partitions exist in its Region's cluster and nowhere else.
    let expected = [
        ("ap-southeast-1", vec!["jp", "th"]),
        ("eu-central-1", vec!["de"]),
        ("eu-west-1", vec!["es", "it"]),
        ("eu-west-2", vec!["gb"]),
        ("eu-west-3", vec!["fr"]),
        ("me-central-1", vec!["eg"]),
    ];
    let ports = dev.region_ports();
    assert_eq!(
        ports.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    for ((region, port), (_, want)) in ports.iter().zip(&expected) {
        let parts = partitions(*port).await;
        assert_eq!(codes(&parts), *want, "partitions in {region}: {parts:?}");
        assert_eq!(
            parts.len(),
            want.len() * TABLES,
            "one partition per table and country in {region}"
        );
    }
    let eu_west_1 = ports.iter().find(|(n, _)| n == "eu-west-1").unwrap().1;

    // A second instance on the same data directory is refused.
    let second = std::process::Command::new(meridian_e2e::meridian_bin())
        .args(["dev", "--listen", &meridian_e2e::free_addr().to_string(), "--data-dir"])
        .arg(&data_dir)
        .arg("--manifests")
        .arg(&manifests)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already using data directory"),
        "{second:?}"
    );

    // Launching a country is writing a manifest.
    std::fs::write(manifests.join("countries/pt.yaml"), PORTUGAL).unwrap();
    let took = dev.await_ready("pt", Duration::from_secs(30));
    assert!(
        took < Duration::from_secs(5),
        "pt Ready {took:?} after its manifest was written"
    );
    dev.wait_for("launch timing", Duration::from_secs(5), |d| {
        d.output().contains("timing: country pt Ready")
    });
    assert_eq!(codes(&partitions(eu_west_1).await), ["es", "it", "pt"]);
    // Its prefix answers as soon as it is Ready.
    let admin = dev.bearers()["system-admin"].clone();
    let list = |dev: &Dev, cc: &str| {
        http(
            dev.addr,
            "GET",
            &format!("/{cc}/v1/practitioners"),
            &[("Authorization", &admin)],
            None,
        )
    };
    let (_, pt) = dev.get("/apis/platform.meridian.dev/v1alpha1/countries/pt");
    assert_eq!(pt["status"]["routes"], json!(["/pt/v1"]), "{pt}");
    let (status, body) = list(&dev, "pt");
    assert_eq!(status, 200, "{body}");

    // Editing a manifest is reconciled within seconds: suspending Italy.
    let it = std::fs::read_to_string(manifests.join("countries/it.yaml")).unwrap();
    std::fs::write(
        manifests.join("countries/it.yaml"),
        it.replace("  deletionPolicy: Retain", "  suspend: true\n  deletionPolicy: Retain"),
    )
    .unwrap();
    dev.wait_for("it suspended", Duration::from_secs(5), |d| {
        let (_, it) = d.get("/apis/platform.meridian.dev/v1alpha1/countries/it");
        it["metadata"]["generation"] == 2
            && it["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["reason"] == "Suspended"))
    });
    let (status, body) = list(&dev, "it");
    assert_eq!(status, 503, "a suspended country says so: {body}");
    assert!(body["detail"].as_str().unwrap().contains("suspended"), "{body}");
    std::fs::write(manifests.join("countries/it.yaml"), it).unwrap();
    dev.await_ready("it", Duration::from_secs(5));

    // Removing it detaches its partitions and keeps them (Retain).
    std::fs::remove_file(manifests.join("countries/pt.yaml")).unwrap();
    dev.wait_for("pt deleted", Duration::from_secs(10), |d| {
        d.get("/apis/platform.meridian.dev/v1alpha1/countries/pt").0 == 404
    });
    let (status, body) = list(&dev, "pt");
    assert_eq!(status, 404, "a deleted country's prefix stops answering: {body}");
    assert!(body["detail"].as_str().unwrap().contains("pt"), "{body}");
    let parts = partitions(eu_west_1).await;
    let pt: Vec<_> = parts.iter().filter(|(n, _)| n.ends_with("_pt")).collect();
    assert_eq!(pt.len(), TABLES, "Retain keeps pt's partitions: {parts:?}");
    assert!(pt.iter().all(|(_, attached)| !attached), "and detaches them: {pt:?}");

    // A second Country with Germany's code is refused, never served, and removing its
    // manifest (with deletionPolicy: Delete) touches none of Germany's data.
    let de = std::fs::read_to_string(manifests.join("countries/de.yaml")).unwrap();
    let dupe = de
        .replace("name: de\n", "name: de-test\n")
        .replace("deletionPolicy: Retain", "deletionPolicy: Delete");
    assert!(
        dupe.contains("name: de-test") && dupe.contains("deletionPolicy: Delete"),
        "{dupe}"
    );
    std::fs::write(manifests.join("countries/de-test.yaml"), dupe).unwrap();
    dev.wait_for("de-test refused", Duration::from_secs(10), |d| {
        let (_, c) = d.get("/apis/platform.meridian.dev/v1alpha1/countries/de-test");
        c["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["reason"] == "CodeConflict"))
    });
    let eu_central_1 = ports.iter().find(|(n, _)| n == "eu-central-1").unwrap().1;
    let germany = partitions(eu_central_1).await;
    assert_eq!(list(&dev, "de").0, 200, "Germany is still served");
    std::fs::remove_file(manifests.join("countries/de-test.yaml")).unwrap();
    dev.wait_for("de-test deleted", Duration::from_secs(10), |d| {
        d.get("/apis/platform.meridian.dev/v1alpha1/countries/de-test").0 == 404
    });
    assert_eq!(
        partitions(eu_central_1).await,
        germany,
        "Germany's partitions untouched"
    );
    assert!(germany.iter().all(|(_, attached)| *attached));
    dev.await_ready("de", Duration::from_secs(5));
    assert_eq!(list(&dev, "de").0, 200, "and still served");

    // Ctrl-C stops everything cleanly.
    let (status, out) = dev.interrupt();
    assert!(status.success(), "exit {status}:\n{out}");
    assert!(out.contains("meridian dev: stopped"), "{out}");
    for (region, _) in &expected {
        let pid_file = data_dir.join("regions").join(region).join("pgdata/postmaster.pid");
        assert!(!pid_file.exists(), "PostgreSQL of {region} still running");
    }

    // A restart keeps the data: the retained partitions are still there.
    let mut dev = Dev::start(&manifests, &data_dir);
    for name in COUNTRIES {
        dev.await_ready(name, Duration::from_secs(60));
    }
    let eu_west_1 = dev
        .region_ports()
        .into_iter()
        .find(|(n, _)| n == "eu-west-1")
        .unwrap()
        .1;
    assert_eq!(codes(&partitions(eu_west_1).await), ["es", "it", "pt"]);
    let (status, out) = dev.interrupt();
    assert!(status.success(), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_reports_bad_manifests_as_conditions_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::copy(
        examples().join("regions/eu-west-1.yaml"),
        manifests.join("eu-west-1.yaml"),
    )
    .unwrap();
    let de = std::fs::read_to_string(examples().join("countries/de.yaml")).unwrap();
    // Strict residency on a shared Region, an unknown time zone, a Region that does not exist.
    std::fs::write(
        manifests.join("de.yaml"),
        de.replace("region: eu-central-1", "region: eu-west-1")
            .replace("[eu-central-1]", "[eu-west-1]"),
    )
    .unwrap();
    std::fs::write(
        manifests.join("xa.yaml"),
        de.replace("name: de", "name: xa")
            .replace("code: DE", "code: XA")
            .replace("Europe/Berlin", "Europe/Atlantis"),
    )
    .unwrap();
    std::fs::write(
        manifests.join("xb.yaml"),
        de.replace("name: de", "name: xb")
            .replace("code: DE", "code: XB")
            .replace("region: eu-central-1", "region: eu-north-9"),
    )
    .unwrap();

    let mut dev = Dev::start(&manifests, &work.path().join("data"));
    let reason = |dev: &Dev, name: &str| {
        let (_, obj) = dev.get(&format!("/apis/platform.meridian.dev/v1alpha1/countries/{name}"));
        obj["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
    };
    dev.wait_for("conditions on all three", Duration::from_secs(60), |d| {
        ["de", "xa", "xb"].iter().all(|n| reason(d, n).is_some())
    });
    let ready = reason(&dev, "de").unwrap();
    assert_eq!(ready["reason"], "RegionNotDedicated", "{ready}");
    assert!(ready["message"].as_str().unwrap().contains("spec.residency"));
    let ready = reason(&dev, "xa").unwrap();
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"].as_str().unwrap().contains("spec.timezone"), "{ready}");
    dev.wait_for("xb RegionNotFound", Duration::from_secs(10), |d| {
        reason(d, "xb").is_some_and(|r| r["reason"] == "RegionNotFound")
    });
    assert!(
        reason(&dev, "xb").unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("spec.region")
    );

    let port = dev.region_ports()[0].1;
    assert!(
        partitions(port).await.is_empty(),
        "no partition was created for a refused country"
    );

    // A manifest saved half-written is an error to report, never a deletion.
    let es = std::fs::read_to_string(examples().join("countries/es.yaml")).unwrap();
    std::fs::write(manifests.join("es.yaml"), &es).unwrap();
    dev.await_ready("es", Duration::from_secs(10));
    std::fs::write(manifests.join("es.yaml"), &es[..es.len() / 2]).unwrap();
    dev.wait_for("the manifest error", Duration::from_secs(5), |d| {
        d.output().contains("es.yaml (document 1)")
    });
    std::thread::sleep(Duration::from_secs(2));
    let (code, obj) = dev.get("/apis/platform.meridian.dev/v1alpha1/countries/es");
    assert_eq!((code, condition(&obj, "Ready")), (200, Some("True")), "{obj}");
    assert!(obj["metadata"]["deletionTimestamp"].is_null());
    assert_eq!(partitions(port).await.len(), TABLES);

    // A field the CRD does not have is refused as an API server refuses it, naming its
    // path; the rest of that manifest (a new retention) is not applied either.
    let generation = obj["metadata"]["generation"].clone();
    std::fs::write(
        manifests.join("es.yaml"),
        es.replace("retentionYears: ", "retentionYear: 12\n    retentionYears: 1"),
    )
    .unwrap();
    dev.wait_for("the unknown field", Duration::from_secs(5), |d| {
        d.output()
            .contains("es.yaml (document 1): Country es: unknown field spec.regulatory.retentionYear\n")
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, obj) = dev.get("/apis/platform.meridian.dev/v1alpha1/countries/es");
    assert_eq!(obj["metadata"]["generation"], generation, "{obj}");
    assert_eq!(condition(&obj, "Ready"), Some("True"), "{obj}");
    assert!(obj["metadata"]["deletionTimestamp"].is_null());
}
