//! The residency report on `meridian dev`: every example country in its own Region's
//! stores, with evidence; a row put where it does not belong is a violation and a
//! non-zero exit.

use std::process::Command;
use std::time::Duration;

use meridian_e2e::{Dev, meridian_bin, search};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

fn report(manifests: &std::path::Path, data_dir: &std::path::Path) -> (i32, Value) {
    let out = Command::new(meridian_bin())
        .args(["residency", "report", "-o", "json"])
        .arg("--manifests")
        .arg(manifests)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// The report's store of `kind` (`database` or `search`) in `region`.
fn store<'a>(report: &'a Value, region: &str, kind: &str) -> &'a Value {
    report["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["region"] == region && s["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} store of {region} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_country_in_its_own_region_and_a_misplaced_row_is_a_violation() {
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    let data_dir = work.path().join("data");
    let mut dev = Dev::start_examples(work.path());
    for name in ["de", "eg", "es", "fr", "gb", "it", "jp", "th"] {
        dev.await_ready(name, Duration::from_secs(120));
    }
    let bearers = dev.bearers();
    dev.create_anna(&bearers["clinic-admin"]);
    dev.wait_for("Schmidt in DE's index", Duration::from_secs(10), |d| {
        search(d.addr, &bearers["patient"], "de", "Schmidt").1 == ["Schmidt"]
    });

    let (code, clean) = report(&manifests, &data_dir);
    assert_eq!(code, 0, "{clean:#}");
    let countries = clean["countries"].as_array().unwrap();
    let codes: Vec<&str> = countries.iter().map(|c| c["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["DE", "EG", "ES", "FR", "GB", "IT", "JP", "TH"]);
    for c in countries {
        assert_eq!(
            c["partitions"].as_array().unwrap().len(),
            meridian_shared::schema::PARTITIONED_TABLES.len(),
            "{c}"
        );
        assert!(c["index"].as_str().unwrap().starts_with("practitioners_"), "{c}");
    }
    assert_eq!(clean["violations"], Value::Array(vec![]));
    let de_store = store(&clean, "eu-central-1", "database");
    let practitioners = de_store["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["query"].as_str().unwrap().contains("FROM practitioners "))
        .unwrap();
    assert_eq!(
        practitioners["rows"]["DE"], 1,
        "the evidence shows DE's row where it belongs"
    );
    let de_index = store(&clean, "eu-central-1", "search");
    let documents: i64 = de_index["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["rows"]["DE"].as_i64())
        .sum();
    assert_eq!(documents, 1, "the evidence shows her in DE's index: {de_index}");

    // Someone puts a German practitioner into the shared Region's database.
    let port = dev
        .region_ports()
        .into_iter()
        .find(|(region, _)| region == "eu-west-1")
        .unwrap()
        .1;
    let mut conn = PgConnection::connect(&format!("postgres://meridian@127.0.0.1:{port}/meridian"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE practitioners_de PARTITION OF practitioners FOR VALUES IN ('DE');
         INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
         VALUES ('DE', gen_random_uuid(), 'Max', 'Falsch', 'Kardiologie', 'Madrid');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let (code, dirty) = report(&manifests, &data_dir);
    assert_eq!(code, 1, "{dirty:#}");
    let violations: Vec<&str> = dirty["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains("eu-west-1") && violations[0].contains("DE") && violations[0].contains("eu-central-1"),
        "{violations:?}"
    );
    dev.interrupt();
}
