//! The `meridian` binary's subcommands (`crds`, `plan`, `booking`, `records`, `audit verify`, `vault`), run as a
//! user would.

use std::path::Path;
use std::process::Command;

mod sealed;

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

#[test]
fn crds_prints_every_definition_in_the_order_to_apply_them() {
    let out = meridian().arg("crds").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, meridian_crds::crds_yaml());
    let at = |name: &str| text.find(&format!("name: {name}.platform.meridian.dev")).unwrap();
    // Countries and PatientIndexes live in Regions.
    assert!(at("regions") < at("patientindexes") && at("patientindexes") < at("countries"));
}

#[test]
fn plan_on_a_fresh_machine_lists_every_migration_and_partition_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("never-created");
    let out = meridian()
        .arg("plan")
        .arg("--manifests")
        .arg(examples())
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Region eu-central-1 (local, not created yet)"), "{text}");
    assert!(
        text.contains(
            "+ CREATE TABLE IF NOT EXISTS \"appointments_de\" PARTITION OF \"appointments\" FOR VALUES IN ('DE');"
        ),
        "{text}"
    );
    // The vault's partitions, quoted part by part.
    assert!(
        text.contains(
            "+ CREATE TABLE IF NOT EXISTS \"vault\".\"patients_de\" PARTITION OF \"vault\".\"patients\" FOR VALUES IN ('DE');"
        ),
        "{text}"
    );
    // 6 Regions x every migration + 8 Countries x (a partition per table + 2 booking constraints).
    let tables = meridian_shared::schema::PARTITIONED_TABLES.len();
    let changes = 6 * meridian_shared::schema::MIGRATIONS.len() + 8 * (tables + 2);
    assert!(
        text.contains(&format!("{changes} change(s), 0 invalid manifest(s)")),
        "{text}"
    );
    assert!(!data_dir.exists(), "plan created nothing");
}

#[test]
fn plan_exits_non_zero_on_invalid_manifests_and_names_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    for region in ["eu-west-1", "eu-central-1"] {
        std::fs::copy(
            examples().join(format!("regions/{region}.yaml")),
            dir.path().join(format!("{region}.yaml")),
        )
        .unwrap();
    }
    let de = std::fs::read_to_string(examples().join("countries/de.yaml")).unwrap();
    let es = std::fs::read_to_string(examples().join("countries/es.yaml")).unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "bad-tz.yaml",
        de.replace("name: de", "name: xa")
            .replace("code: DE", "code: XA")
            .replace("Europe/Berlin", "Mars/Olympus"),
    );
    write(
        "lowercase.yaml",
        es.replace("name: es", "name: xb").replace("code: ES", "code: xb"),
    );
    write(
        "strict-on-shared.yaml",
        de.replace("region: eu-central-1", "region: eu-west-1")
            .replace("[eu-central-1]", "[eu-west-1]"),
    );
    write("no-region.yaml", es.replace("region: eu-west-1", "region: eu-north-9"));
    write(
        "strict-without-allowed.yaml",
        de.replace("name: de", "name: xc")
            .replace("code: DE", "code: XC")
            .replace("  allowedCloudRegions: [eu-central-1]\n", ""),
    );
    write(
        "broken.yaml",
        "apiVersion: platform.meridian.dev/v1alpha1\nkind: Country\nmetadata: {name: xd}\nspec: {code: XD}\n".into(),
    );

    let data = tempfile::tempdir().unwrap();
    let out = meridian()
        .arg("plan")
        .arg("--manifests")
        .arg(dir.path())
        .arg("--data-dir")
        .arg(data.path().join("d"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "spec.timezone: unknown IANA time zone \"Mars/Olympus\"",
        "spec.code: \"xb\" is not an ISO 3166-1 alpha-2 code",
        "RegionNotDedicated: spec.residency is strict but Region eu-west-1 is shared",
        "RegionNotFound: spec.region: Region eu-north-9 does not exist",
        "residency: strict requires spec.allowedCloudRegions",
        "Country xd: missing field",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
    }
    assert!(text.contains("6 invalid manifest(s)"), "{text}");
}

/// One HTTP/1.1 request over a fresh connection: status line and body.
fn http(addr: &str, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// Starts `meridian <workload>` on a free port of 127.0.0.1 with the issuer and `args`;
/// returns once it answers.
fn start_serving(workload: &str, args: &[std::ffi::OsString]) -> (std::process::Child, String) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut child = meridian()
        .args([workload, "--listen", &addr, "--issuer", "https://idp.example"])
        .args(args)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("meridian {workload} exited: {status}");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "meridian {workload} did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, addr)
}

/// Starts `meridian booking` against `pg`, with `args` on top of the address, the database
/// and the issuer; returns once it answers.
fn start_booking(pg: &meridian_localpg::TempCluster, args: &[std::ffi::OsString]) -> (std::process::Child, String) {
    let mut all = vec!["--database-url".into(), pg.url().into()];
    all.extend_from_slice(args);
    start_serving("booking", &all)
}

/// A Region's database holding DE.
async fn region_database() -> meridian_localpg::TempCluster {
    let pg = meridian_localpg::TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url())
        .await
        .unwrap();
    meridian_shared::schema::prepare(&mut conn, &["DE"]).await.unwrap();
    pg
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success(), "stops cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn booking_runs_on_its_own_for_one_regions_database_and_countries() {
    use meridian_shared::auth::{DevIssuer, Role};
    let pg = region_database().await;
    let issuer = DevIssuer::new("https://idp.example", "meridian");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), issuer.jwks()).unwrap();
    let mut jwks_file = std::ffi::OsString::from("--jwks-file=");
    jwks_file.push(dir.path().join("jwks.json"));
    let (child, addr) = start_booking(&pg, &[jwks_file, "--country=DE=Europe/Berlin".into()]);
    let token = issuer.token(
        "admin",
        &[Role::ClinicAdmin],
        &["DE"],
        std::time::Duration::from_secs(60),
    );
    let body = r#"{"givenName":"Anna","familyName":"Schmidt","specialty":"Kardiologie","city":"Berlin"}"#;
    let request = format!(
        "POST /de/v1/practitioners HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, created) = http(&addr, &request);
    assert_eq!(status, 201, "{created}");
    let (status, problem) = http(
        &addr,
        &format!(
            "GET /fr/v1/practitioners HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
        ),
    );
    assert_eq!(status, 404, "only its Region's countries: {problem}");
    stop(child);

    let refused = meridian()
        .args([
            "booking",
            "--issuer",
            "x",
            "--jwks-file",
            "/nonexistent",
            "--database-url",
            "postgres://x",
            "--country",
            "DE=Mars/Olympus",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown IANA time zone"));
}

#[tokio::test(flavor = "multi_thread")]
async fn booking_follows_its_identity_providers_key_rotation() {
    use meridian_shared::auth::{DevIssuer, Role};
    let pg = region_database().await;
    // The identity provider's jwks_uri, on 127.0.0.1.
    let old = DevIssuer::with_key_id("https://idp.example", "meridian", "2026-10");
    let new = DevIssuer::with_key_id("https://idp.example", "meridian", "2026-11");
    let document = std::sync::Arc::new(std::sync::RwLock::new(old.jwks().to_string()));
    let served = document.clone();
    let idp = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let served = served.clone();
            async move { served.read().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!(
        "--jwks-url=http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, idp).await });

    let (child, addr) = start_booking(&pg, &[jwks_url.into(), "--country=DE=Europe/Berlin".into()]);
    let list = |token: String| {
        format!(
            "GET /de/v1/practitioners HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
    };
    let admin = |issuer: &DevIssuer| {
        issuer.token(
            "admin",
            &[Role::ClinicAdmin],
            &["DE"],
            std::time::Duration::from_secs(60),
        )
    };
    let (status, body) = http(&addr, &list(admin(&old)));
    assert_eq!(status, 200, "{body}");
    // The provider rotates to a new key: the first token signed with it is accepted (the
    // service reads the keys again on meeting an unknown key ID), the old key's are not.
    *document.write().unwrap() = new.jwks().to_string();
    let (status, body) = http(&addr, &list(admin(&new)));
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(&addr, &list(admin(&old)));
    assert_eq!(status, 401, "{body}");
    stop(child);
}

/// `meridian audit verify --database-url URL`: its lines, and its exit code.
fn audit_verify(args: &[&str]) -> (Option<i32>, String, String) {
    let out = meridian().args(["audit", "verify"]).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_says_each_countrys_chains_are_intact_and_where_one_was_tampered_with() {
    use meridian_shared::audit::{Record, append};
    use sqlx::Connection;
    let pg = meridian_localpg::TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    meridian_shared::schema::prepare(&mut conn, &["DE", "FR", "JP"])
        .await
        .unwrap();
    for (code, records) in [("DE", 40), ("FR", 3)] {
        for i in 0..records {
            let resource = format!("patient/{}", i % 13);
            append(
                &mut conn,
                &Record {
                    country_code: code,
                    actor: "practitioner-1",
                    action: "patient.read",
                    resource: &resource,
                    correlation_id: uuid::Uuid::new_v4(),
                },
            )
            .await
            .unwrap();
        }
    }
    let chains = |code: &'static str| {
        let url = pg.url();
        async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar::<_, i64>("SELECT count(DISTINCT chain) FROM audit WHERE country_code = $1")
                .bind(code)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    };
    let (de_chains, fr_chains) = (chains("DE").await, chains("FR").await);
    assert!(de_chains > 1, "records of several resources spread over chains");
    let url = pg.url();
    let (code, out, err) = audit_verify(&["--database-url", &url]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        format!(
            "DE: 40 records in {de_chains} chains, intact\nFR: 3 records in {fr_chains} chains, intact\n\
             JP: 0 records in 0 chains, intact\n"
        )
    );

    // A superuser rewrites who read a record, past the append-only trigger.
    let (chain, seq): (i16, i64) = sqlx::query_as(
        "SELECT chain, seq FROM audit WHERE country_code = 'DE' ORDER BY chain DESC, seq LIMIT 1 OFFSET 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .unwrap();
    let changed =
        sqlx::query("UPDATE audit SET actor = 'someone else' WHERE country_code = 'DE' AND chain = $1 AND seq = $2")
            .bind(chain)
            .bind(seq)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected();
    assert_eq!(changed, 1);
    let (code, out, err) = audit_verify(&["--database-url", &url]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("DE: chain {chain} is broken at record {seq}"),
            format!("FR: 3 records in {fr_chains} chains, intact"),
            "JP: 0 records in 0 chains, intact".to_string(),
        ]
    );

    // A database that does not answer, or a Region that has none yet: 2, and why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, out, err) = audit_verify(&["--database-url", &format!("postgres://meridian@{closed}/meridian")]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("cannot connect to the database"), "{err}");
    let data = tempfile::tempdir().unwrap();
    let (code, out, err) = audit_verify(&[
        "--region",
        "eu-central-1",
        "--manifests",
        examples().to_str().unwrap(),
        "--data-dir",
        data.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("Region eu-central-1 has no database"), "{err}");
    let (code, _, err) = audit_verify(&["--region", "eu-nowhere-1", "--manifests", examples().to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no Region eu-nowhere-1"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_reaches_a_stopped_dev_regions_database_through_its_manifests_and_data_dir() {
    use meridian_shared::audit::{Record, append};
    use sqlx::Connection;
    // What `meridian dev` leaves on disk: the Region's cluster, migrated, with its roles'
    // Secrets, and Germany's partitions and audit records.
    let DevRegion {
        manifests,
        data,
        local,
        ctx: _ctx,
        frankfurt: _frankfurt,
        owner: mut conn,
    } = dev_region("meridian-audit-").await;
    for i in 0..5 {
        let resource = format!("patient/{i}");
        let record = Record {
            country_code: "DE",
            actor: "practitioner-1",
            action: "patient.read",
            resource: &resource,
            correlation_id: uuid::Uuid::new_v4(),
        };
        append(&mut conn, &record).await.unwrap();
    }
    let chains: i64 = sqlx::query_scalar("SELECT count(DISTINCT chain) FROM audit WHERE country_code = 'DE'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let stopping = local.clone();
    tokio::task::spawn_blocking(move || stopping.stop_all()).await.unwrap();

    let (code, out, err) = audit_verify(&[
        "--region",
        "eu-central-1",
        "--manifests",
        manifests.path().to_str().unwrap(),
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, format!("DE: 5 records in {chains} chains, intact\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn records_runs_on_its_own_with_two_roles_and_mounted_keys() {
    use meridian_records::roles::{as_login, create_login};
    use meridian_shared::auth::{DevIssuer, Role};
    let pg = region_database().await;
    let admin = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    create_login(
        &admin,
        "cli_clinical",
        "pw",
        meridian_shared::schema::workload_privileges,
    )
    .await
    .unwrap();
    create_login(&admin, "cli_vault", "pw", meridian_shared::schema::vault_privileges)
        .await
        .unwrap();
    let issuer = DevIssuer::new("https://idp.example", "meridian");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), issuer.jwks()).unwrap();
    // The vault-keys Secret as Kubernetes mounts it: one file per entry.
    let keys = dir.path().join("vault-keys");
    std::fs::create_dir(&keys).unwrap();
    let mut entries = std::collections::BTreeMap::new();
    meridian_records::keys::ensure_country(&mut entries, "DE");
    for (name, value) in &entries {
        std::fs::write(keys.join(name), value).unwrap();
    }
    let (child, addr) = start_serving(
        "records",
        &[
            "--database-url".into(),
            as_login(&pg.url(), "cli_clinical", "pw").into(),
            "--vault-database-url".into(),
            as_login(&pg.url(), "cli_vault", "pw").into(),
            "--vault-keys-dir".into(),
            keys.clone().into(),
            "--jwks-file".into(),
            dir.path().join("jwks.json").into(),
            "--country-manifest".into(),
            examples().join("countries/de.yaml").into(),
        ],
    );
    let (status, metadata) = http(
        &addr,
        "GET /de/v1/fhir/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{metadata}");
    let token = issuer.token("dr", &[Role::Practitioner], &["DE"], std::time::Duration::from_secs(60));
    let body = r#"{"resourceType":"Patient","name":[{"family":"Zwiebelhuber"}],"identifier":[{"system":"http://fhir.de/sid/gkv/kvid-10","value":"Z123456789"}]}"#;
    let request = format!(
        "POST /de/v1/fhir/Patient HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, created) = http(&addr, &request);
    assert_eq!(status, 201, "{created}");
    // Sealed under the mounted key, nothing in plaintext.
    let (key_id, plain): (String, bool) =
        sqlx::query_as("SELECT key_id, p::text LIKE '%Zwiebelhuber%' FROM vault.patients p")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!((key_id.as_str(), plain), ("k1", false));
    stop(child);
}

/// `meridian vault <rotate|rekey>`: its exit code, stdout and stderr.
fn vault(args: &[&str]) -> (Option<i32>, String, String) {
    let out = meridian().arg("vault").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn vault_rotate_adds_a_key_and_moves_a_stopped_dev_regions_vault_onto_it() {
    use meridian_records::keys::{self, Keyring, VAULT_KEYS_SECRET};
    use meridian_records::vault;
    use sqlx::Connection;
    // What `meridian dev` leaves on disk: the Region's cluster with its roles' Secrets and
    // Germany's first data key, and three patients sealed under it (each with a history row).
    let DevRegion {
        manifests,
        data,
        local,
        ctx,
        frankfurt,
        owner: mut conn,
    } = dev_region("meridian-vault-").await;
    let store = ctx.providers.region_secrets(&frankfurt).unwrap();
    let mut secret = store.read("eu-central-1", VAULT_KEYS_SECRET).await.unwrap();
    keys::ensure_country(&mut secret, "DE");
    store.write("eu-central-1", VAULT_KEYS_SECRET, &secret).await.unwrap();
    let first = Keyring::from_secret(&secret, "DE").unwrap();
    let ids = sealed::seal_patients(&mut conn, &first, 3).await;
    conn.close().await.unwrap();
    let stopping = local.clone();
    tokio::task::spawn_blocking(move || stopping.stop_all()).await.unwrap();

    let place = [
        "--region",
        "eu-central-1",
        "--country",
        "de",
        "--manifests",
        manifests.path().to_str().unwrap(),
        "--data-dir",
        data.path().to_str().unwrap(),
    ];
    let (code, out, err) = vault(&[&["rotate"], &place[..]].concat());
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("DE: key k2 added to ") && lines[0].ends_with(" and made active"),
        "{out}"
    );
    assert_eq!(
        lines[1..],
        ["DE: key k2 is active; 3 patients and 3 history versions moved from k1, 0 left"]
    );
    // The Secret holds both keys, k2 active; a rerun has nothing to move.
    let secret = store.read("eu-central-1", VAULT_KEYS_SECRET).await.unwrap();
    let ring = Keyring::from_secret(&secret, "DE").unwrap();
    assert_eq!(ring.active, "k2");
    assert_eq!(ring.get("k1"), first.get("k1"), "the old key is kept");
    let (code, out, err) = vault(&[&["rekey"], &place[..]].concat());
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        "DE: key k2 is active; 0 patients and 0 history versions moved, 0 left\n"
    );

    // Every row is under k2 and opens with k2 alone.
    let mut only_k2 = secret.clone();
    only_k2.remove("DE.k1");
    let only_k2 = Keyring::from_secret(&only_k2, "DE").unwrap();
    local.ensure("eu-central-1").await.unwrap();
    let admin = ctx.providers.admin(&frankfurt).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(admin.url.as_str()).await.unwrap();
    let rows: Vec<(uuid::Uuid, String, Vec<u8>)> = sqlx::query_as(
        "SELECT client_id, key_id, sealed FROM vault.patients
         UNION ALL SELECT client_id, key_id, sealed FROM vault.patient_history",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 6);
    for (id, key_id, sealed) in rows {
        assert_eq!(key_id, "k2");
        assert!(ids.contains(&id));
        vault::open(&only_k2, id, &key_id, &sealed).unwrap();
    }
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE actor = 'system:vault-rotation'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(audited, 2, "one batch of current versions, one of history versions");
    conn.close().await.unwrap();
    let stopping = local.clone();
    tokio::task::spawn_blocking(move || stopping.stop_all()).await.unwrap();

    // A country without keys, a Region not in the manifests: exit 2, nothing changed.
    let mut fr = place;
    fr[3] = "FR";
    let (code, _, err) = vault(&[&["rotate"], &fr[..]].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no key for country FR"), "{err}");
    let mut nowhere = place;
    nowhere[1] = "eu-nowhere-1";
    let (code, _, err) = vault(&[&["rekey"], &nowhere[..]].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no Region eu-nowhere-1"), "{err}");
    assert_eq!(store.read("eu-central-1", VAULT_KEYS_SECRET).await.unwrap(), secret);
}

/// What `meridian dev` leaves for Region eu-central-1: its manifest in a folder, its local
/// cluster under a data directory, reconciled (migrated, with its roles' Secrets), and a
/// connection to its database as the owner, with Germany's partitions.
struct DevRegion {
    manifests: tempfile::TempDir,
    data: tempfile::TempDir,
    local: std::sync::Arc<meridian_operator::providers::LocalClusters>,
    ctx: meridian_operator::controller::Context,
    frankfurt: meridian_crds::Region,
    owner: sqlx::PgConnection,
}

async fn dev_region(prefix: &str) -> DevRegion {
    use meridian_operator::controller::{Context, region};
    use meridian_operator::providers::{LocalClusters, Providers, StaticSecrets};
    use std::sync::Arc;
    let manifests = tempfile::tempdir().unwrap();
    std::fs::copy(
        examples().join("regions/eu-central-1.yaml"),
        manifests.path().join("eu-central-1.yaml"),
    )
    .unwrap();
    let data = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let local = Arc::new(LocalClusters::new(
        data.path().to_path_buf(),
        meridian_localpg::Durability::Durable,
    ));
    let ctx = Context::new(Providers::new(Some(local.clone()), Arc::new(StaticSecrets::default())));
    let frankfurt: meridian_crds::Region =
        serde_yaml_ng::from_str(&std::fs::read_to_string(examples().join("regions/eu-central-1.yaml")).unwrap())
            .unwrap();
    let outcome = region::apply(&frankfurt, &ctx).await;
    assert!(
        meridian_operator::conditions::is_true(&outcome.status.conditions, "Ready"),
        "{:?}",
        outcome.status
    );
    let url = ctx.providers.locate(&frankfurt).await.unwrap().url;
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(url.as_str())
        .await
        .unwrap();
    for sql in meridian_shared::schema::fresh_country_sql("DE") {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut owner)
            .await
            .unwrap();
    }
    DevRegion {
        manifests,
        data,
        local,
        ctx,
        frankfurt,
        owner,
    }
}
