//! Cross-border records in `meridian dev`: a German patient with a
//! Krankenversichertennummer, observations and a consent to share; a French clinician finds
//! them by that number through `/fr/v1` and sees the German observations in one timeline,
//! each labelled with its country. Afterwards France's database and search hold nothing of
//! the patient, Germany's audit chain shows the disclosure with the French clinician and
//! the correlation ID, France's shows the lookup without the ID, and the PatientIndex holds
//! a keyed hash only. A patient of Japan, whose records are not shared, is refused with an
//! OperationOutcome that says why. `meridian mpi rotate` then moves the index onto a new key
//! while `meridian dev` runs, and the patient is still found.

use std::time::Duration;

use meridian_e2e::{Dev, condition, http};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

#[path = "../../workloads/records/tests/support/fhir_schema.rs"]
mod fhir_schema;

const KVNR: &str = "http://fhir.de/sid/gkv/kvid-10";

/// Sends a request (with `headers`) and checks the FHIR answer against the R4 schema.
fn fhir(dev: &Dev, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> (u16, Value) {
    let (status, body) = http(dev.addr, method, path, headers, body);
    if !body.is_null()
        && let Err(errors) = fhir_schema::validate(&body)
    {
        panic!("{method} {path}: not valid FHIR R4: {errors:?}\n{body:#}");
    }
    (status, body)
}

async fn connect(port: u16) -> PgConnection {
    PgConnection::connect(&format!("postgres://meridian@127.0.0.1:{port}/meridian"))
        .await
        .unwrap()
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(conn)
        .await
        .unwrap()
}

fn tags(entry: &Value) -> Vec<&str> {
    entry["resource"]["meta"]["tag"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["code"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_french_clinician_sees_a_german_patients_records_and_france_keeps_nothing_of_them() {
    let work = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_examples(work.path());
    for country in ["de", "fr", "jp"] {
        dev.await_ready(country, Duration::from_secs(180));
    }
    let index = "/apis/platform.meridian.dev/v1alpha1/patientindexes/global";
    dev.wait_for("PatientIndex global Ready", Duration::from_secs(60), |dev| {
        condition(&dev.get(index).1, "Ready") == Some("True")
    });
    let (_, global) = dev.get(index);
    assert_eq!(global["status"]["activeKeyVersion"], "k1");
    let linked: Vec<&str> = global["status"]["linkedCountries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        linked.contains(&"DE") && linked.contains(&"FR") && !linked.contains(&"JP"),
        "{linked:?}"
    );

    let berlin = dev.bearer_for("dr-weber", "Practitioner", "DE");
    let paris = dev.bearer_for("dr-lefevre", "Practitioner", "FR");
    let de = [("Authorization", berlin.as_str())];

    // Germany: the patient, two observations, and their consent to share for treatment.
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": KVNR, "value": "X314159265"}],
        "name": [{"family": "Zwetschgenbaum", "given": ["Hildegard"]}],
        "birthDate": "1961-07-21",
    });
    let (status, created) = fhir(&dev, "POST", "/de/v1/fhir/Patient", &de, Some(&patient));
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().unwrap().to_string();
    let subject = json!({"reference": format!("Patient/{id}")});
    for (code, value, unit, at) in [
        ("8867-4", 88, "/min", "2026-06-02T09:10:00+02:00"),
        ("29463-7", 71, "kg", "2025-11-20T11:00:00+01:00"),
    ] {
        let observation = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": subject, "effectiveDateTime": at,
            "valueQuantity": {"value": value, "unit": unit}});
        let (status, body) = fhir(&dev, "POST", "/de/v1/fhir/Observation", &de, Some(&observation));
        assert_eq!(status, 201, "{body:#}");
    }
    let consent = json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": subject, "dateTime": "2025-01-10T10:00:00+01:00",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "permit",
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]}});
    let (status, body) = fhir(&dev, "POST", "/de/v1/fhir/Consent", &de, Some(&consent));
    assert_eq!(status, 201, "{body:#}");

    // France: the clinician types the number as it is printed on the card.
    let correlation = uuid::Uuid::new_v4().to_string();
    let fr = [
        ("Authorization", paris.as_str()),
        ("X-Correlation-ID", correlation.as_str()),
    ];
    let search = format!("/fr/v1/fhir/Patient?identifier={KVNR}|x%20314-159-265");
    // The registrar puts the patient in the index (no lookup is spent waiting for it: they
    // are limited per clinician); then France's records service has what the index handed it.
    let ports: std::collections::BTreeMap<String, u16> = dev.region_ports().into_iter().collect();
    let mut berlin_db = connect(ports["eu-central-1"]).await;
    let started = std::time::Instant::now();
    while count(&mut berlin_db, "SELECT count(*) FROM mpi.entries").await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the patient never reached the index"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut found = Value::Null;
    dev.wait_for("France linked to the index", Duration::from_secs(20), |dev| {
        // A refusal until then: `not linked`, which no limit counts.
        let (status, body) = fhir(dev, "GET", &search, &fr, None);
        found = body;
        status == 200
    });
    let entries = found["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{found:#}");
    assert_eq!(entries[0]["resource"]["name"][0]["family"], "Zwetschgenbaum");
    assert_eq!(tags(&entries[0]), ["DE"]);
    assert!(
        entries[0]["fullUrl"]
            .as_str()
            .unwrap()
            .contains(&format!("/de/v1/fhir/Patient/{id}")),
        "{found:#}"
    );

    let timeline = format!("/fr/v1/fhir/Patient/$everything?identifier={KVNR}|X314159265");
    let (status, everything) = fhir(&dev, "GET", &timeline, &fr, None);
    assert_eq!(status, 200, "{everything:#}");
    let kinds: Vec<(&str, &str)> = everything["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["resource"]["resourceType"].as_str().unwrap(), tags(e)[0]))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Patient", "DE"),
            ("Consent", "DE"),
            ("Observation", "DE"),
            ("Observation", "DE")
        ],
        "one timeline, by date, each entry labelled"
    );
    let codes: Vec<&str> = everything["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["resource"]["code"]["coding"][0]["code"].as_str())
        .collect();
    assert_eq!(codes, ["29463-7", "8867-4"], "oldest first");

    // A number nobody has: an empty Bundle. A Japanese one: refused, with the reason.
    let (status, none) = fhir(
        &dev,
        "GET",
        &format!("/fr/v1/fhir/Patient?identifier={KVNR}|Y271828182"),
        &fr,
        None,
    );
    assert_eq!(
        (status, none["entry"].as_array().map(Vec::len)),
        (200, None),
        "{none:#}"
    );
    let (status, refused) = fhir(
        &dev,
        "GET",
        "/fr/v1/fhir/Patient?identifier=urn:oid:1.2.392.200119.6.102|123456789012",
        &fr,
        None,
    );
    assert_eq!(status, 403, "{refused:#}");
    assert_eq!(refused["resourceType"], "OperationOutcome");
    let why = refused["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(why.contains("JP") && why.contains("recordSharing"), "{why}");

    // Nothing of the patient in France: neither in its database...
    let mut paris_db = connect(ports["eu-west-3"]).await;
    for table in [
        "fhir_resources",
        "fhir_history",
        "vault.patients",
        "vault.patient_history",
        "patients",
        "outbox",
        "audit",
    ] {
        let held = count(
            &mut paris_db,
            &format!(
                "SELECT count(*) FROM {table} t WHERE t::text ILIKE '%Zwetschgenbaum%' OR t::text LIKE '%314159265%' OR t::text LIKE '%{id}%'"
            ),
        )
        .await;
        assert_eq!(held, 0, "France's {table} holds something of the German patient");
    }
    assert_eq!(count(&mut paris_db, "SELECT count(*) FROM fhir_resources").await, 0);
    // ... nor in its search engine.
    let (status, names) = meridian_e2e::search(dev.addr, &paris, "fr", "Zwetschgenbaum");
    assert_eq!((status, names), (200, Vec::<String>::new()));
    // France's audit trail has the lookup, hit or miss, without the number.
    let lookups = count(
        &mut paris_db,
        &format!(
            "SELECT count(*) FROM audit WHERE action = 'patient.lookup-abroad' AND actor = 'dr-lefevre'
                AND correlation_id = '{correlation}'"
        ),
    )
    .await;
    assert!(lookups >= 3, "{lookups} lookups audited");

    // Germany's audit chain shows the disclosure to the French clinician, under the
    // correlation ID of their request.
    let disclosed: Vec<String> = sqlx::query_scalar(
        "SELECT resource FROM audit WHERE country_code = 'DE' AND action = 'patient.disclose'
            AND actor = 'dr-lefevre' AND correlation_id = $1::uuid",
    )
    .bind(&correlation)
    .fetch_all(&mut berlin_db)
    .await
    .unwrap();
    assert_eq!(disclosed.len(), 2, "{disclosed:?}");
    assert!(
        disclosed
            .iter()
            .all(|r| r.contains(&format!("Patient/{id} to FR for TREAT"))),
        "{disclosed:?}"
    );
    let (status, verified) = {
        let out = std::process::Command::new(meridian_e2e::meridian_bin())
            .args(["audit", "verify", "--database-url"])
            .arg(format!(
                "postgres://meridian@127.0.0.1:{}/meridian",
                ports["eu-central-1"]
            ))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(status, Some(0), "{verified}");

    // The index: a keyed hash, the home and the client ID; no raw number.
    let entries = count(&mut berlin_db, "SELECT count(*) FROM mpi.entries").await;
    assert_eq!(entries, 1);
    let raw = count(
        &mut berlin_db,
        "SELECT count(*) FROM mpi.entries e WHERE e::text LIKE '%314159265%' OR e::text ILIKE '%Zwetschgenbaum%'",
    )
    .await;
    assert_eq!(raw, 0);

    // The residency report says the same: the index's store holds one entry, no clinical
    // table and nothing that reads as a national ID; and no store holds a row of a country
    // of another Region (France has nothing of Germany's) after the lookups.
    let out = std::process::Command::new(meridian_e2e::meridian_bin())
        .args(["residency", "report", "-o", "json", "--manifests"])
        .arg(work.path().join("manifests"))
        .arg("--data-dir")
        .arg(&dev.data_dir)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["violations"], json!([]));
    let frankfurt = report["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["region"] == "eu-central-1" && s["kind"] == "database")
        .unwrap();
    let checks: Vec<(&str, bool, &str)> = frankfurt["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["claim"].as_str().unwrap().contains("mpi"))
        .map(|c| {
            (
                c["claim"].as_str().unwrap(),
                c["holds"].as_bool().unwrap(),
                c["found"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(checks.len(), 4, "{checks:#?}");
    assert!(checks.iter().all(|(_, holds, _)| *holds), "{checks:#?}");
    assert!(checks[0].2.starts_with("1 entries (DE=1)"), "{checks:#?}");

    // A key rotation while everything runs: the entries move to k2, k1 is retired, and the
    // French clinician still finds the patient.
    let rotated = std::process::Command::new(meridian_e2e::meridian_bin())
        .args(["mpi", "rotate", "--manifests"])
        .arg(work.path().join("manifests"))
        .arg("--data-dir")
        .arg(&dev.data_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(said.contains("key k2 added") && said.contains("retired k1"), "{said}");
    let versions: Vec<String> = sqlx::query_scalar("SELECT DISTINCT key_version FROM mpi.entries")
        .fetch_all(&mut berlin_db)
        .await
        .unwrap();
    assert_eq!(versions, ["k2"]);
    let (status, found) = fhir(&dev, "GET", &search, &fr, None);
    assert_eq!(
        (status, found["entry"][0]["resource"]["id"].as_str()),
        (200, Some(id.as_str())),
        "{found:#}"
    );
    let (status, _) = http(dev.addr, "POST", "/dev/resync", &[], None);
    assert_eq!(status, 200);
    assert_eq!(dev.get(index).1["status"]["keyVersions"], json!(["k2"]));
}
