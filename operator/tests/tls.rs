//! TLS to a Region's stores, for real: a PostgreSQL started by the test with `ssl=on` and a
//! server certificate the test makes with the operator's own CA code. An `external` Region
//! whose Secret names the right CA is Ready over a verified TLS connection; a wrong CA or a
//! wrong host name is refused in the handshake; a URL asking for less than `verify-full`
//! off this machine, or plain `http://` search, is refused with a condition before any
//! connection is tried.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_crds::Region;
use meridian_localpg::TempCluster;
use meridian_operator::conditions;
use meridian_operator::controller::{Context, region};
use meridian_operator::providers::certificates::Ca;
use meridian_operator::providers::{FileSecrets, Providers, StaticSecrets};
use sqlx::{Connection, PgConnection};

/// A local PostgreSQL serving TLS with a certificate for `names`, signed by the returned CA.
/// The certificate goes beside the cluster's data, owned by the server's account with mode
/// 0600 as PostgreSQL demands; `ssl` is switched on by reloading the configuration.
async fn tls_postgres(names: &[&str]) -> (TempCluster, Ca) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let ca = Ca::generate("test").unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let server = ca.issue("test", &names).unwrap();
    let root = pg.cluster().root();
    let owner = std::fs::metadata(root).unwrap();
    for (file, pem) in [("server.crt", &server.cert_pem), ("server.key", &server.key_pem)] {
        let path = root.join(file);
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    for setting in [
        format!("ssl_cert_file = '{}'", root.join("server.crt").display()),
        format!("ssl_key_file = '{}'", root.join("server.key").display()),
        "ssl = on".to_string(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER SYSTEM SET {setting}")))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query("SELECT pg_reload_conf()").execute(&mut conn).await.unwrap();
    let started = Instant::now();
    loop {
        let mut fresh = PgConnection::connect(&pg.url()).await.unwrap();
        let ssl: String = sqlx::query_scalar("SHOW ssl").fetch_one(&mut fresh).await.unwrap();
        if ssl == "on" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "PostgreSQL did not turn ssl on; see {}/postgres.log",
            root.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (pg, ca)
}

/// An `external` Region whose database URL is `url` and, with `ca`, whose CA bundle is `ca`
/// (both in Secrets); `search_url` its search endpoint, if any.
/// An external Region reached at `url`, and a context whose role Secrets live in the
/// returned directory (kept as long as the test holds it).
fn external(url: &str, ca: Option<&str>, search_url: Option<&str>) -> (Region, Context, tempfile::TempDir) {
    let tls = if ca.is_some() {
        "\n  tls:\n    caBundleSecretRef: {name: frankfurt-ca, key: ca.crt}"
    } else {
        ""
    };
    let search = if search_url.is_some() {
        "\n    searchUrlSecretRef: {name: frankfurt-search, key: url}"
    } else {
        ""
    };
    let mut region: Region = serde_yaml_ng::from_str(&format!(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: Region
metadata: {{name: frankfurt}}
spec:
  provider: external
  cloudRegion: eu-central-1
  external:
    databaseUrlSecretRef: {{name: frankfurt-db, key: url}}{search}{tls}"
    ))
    .unwrap();
    region.metadata.generation = Some(1);
    let mut secrets = StaticSecrets::default();
    secrets.insert("default", "frankfurt-db", BTreeMap::from([("url".into(), url.into())]));
    if let Some(ca) = ca {
        secrets.insert(
            "default",
            "frankfurt-ca",
            BTreeMap::from([("ca.crt".into(), ca.into())]),
        );
    }
    if let Some(search) = search_url {
        secrets.insert(
            "default",
            "frankfurt-search",
            BTreeMap::from([("url".into(), search.into())]),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let roles = Arc::new(FileSecrets::new(dir.path().to_path_buf()));
    let ctx = Context::new(Providers::new(None, Arc::new(secrets)).with_region_secrets(roles));
    (region, ctx, dir)
}

fn verify_full(pg: &TempCluster, host: &str) -> String {
    format!(
        "postgres://meridian@{host}:{}/meridian?sslmode=verify-full",
        pg.cluster().port()
    )
}

#[tokio::test]
async fn verify_full_with_the_regions_ca_connects_and_a_wrong_ca_or_host_name_is_refused() {
    let (pg, ca) = tls_postgres(&["127.0.0.1"]).await;

    // The right CA: Ready, over TLS.
    let (region, ctx, _roles) = external(&verify_full(&pg, "127.0.0.1"), Some(&ca.cert_pem), None);
    let outcome = region::apply(&region, &ctx).await;
    let db = conditions::find(&outcome.status.conditions, "DatabaseReady").unwrap();
    assert_eq!(
        (db.status.as_str(), db.reason.as_str()),
        ("True", "SchemaCurrent"),
        "{}",
        db.message
    );
    let endpoint = ctx.providers.locate(&region).await.unwrap();
    assert_eq!(endpoint.url.ca(), Some(ca.cert_pem.as_str()));
    let pool = ctx.databases.get(&endpoint.url).unwrap();
    let encrypted: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool.pool())
        .await
        .unwrap();
    assert!(encrypted, "the operator's connection is TLS");

    // Another CA: the server's certificate is not one it vouches for.
    let other = Ca::generate("other").unwrap();
    let (region, ctx, _roles) = external(&verify_full(&pg, "127.0.0.1"), Some(&other.cert_pem), None);
    let outcome = region::apply(&region, &ctx).await;
    let db = conditions::find(&outcome.status.conditions, "DatabaseReady").unwrap();
    assert_eq!(
        (db.status.as_str(), db.reason.as_str()),
        ("False", "DatabaseUnreachable")
    );
    assert!(db.message.contains("certificate"), "{}", db.message);
    assert!(!conditions::is_true(&outcome.status.conditions, "Ready"));

    // No CA at all: the system's roots do not vouch for it either.
    let (region, ctx, _roles) = external(&verify_full(&pg, "127.0.0.1"), None, None);
    let outcome = region::apply(&region, &ctx).await;
    let db = conditions::find(&outcome.status.conditions, "DatabaseReady").unwrap();
    assert_eq!(db.reason, "DatabaseUnreachable", "{}", db.message);

    // The right CA, another name: the certificate names 127.0.0.1, not localhost.
    let (region, ctx, _roles) = external(&verify_full(&pg, "localhost"), Some(&ca.cert_pem), None);
    let outcome = region::apply(&region, &ctx).await;
    let db = conditions::find(&outcome.status.conditions, "DatabaseReady").unwrap();
    assert_eq!(
        (db.status.as_str(), db.reason.as_str()),
        ("False", "DatabaseUnreachable")
    );
    assert!(db.message.contains("not valid for name"), "{}", db.message);
}

#[tokio::test]
async fn a_url_asking_for_less_than_verify_full_off_this_machine_is_refused_with_a_condition() {
    for mode in ["disable", "prefer", "require", "verify-ca"] {
        let url = format!("postgres://meridian:s3cret@db.eu-central-1.example:5432/meridian?sslmode={mode}");
        let (region, ctx, _roles) = external(&url, None, None);
        let outcome = region::apply(&region, &ctx).await;
        for type_ in ["DatabaseReady", "Ready"] {
            let condition = conditions::find(&outcome.status.conditions, type_).unwrap();
            assert_eq!(
                (condition.status.as_str(), condition.reason.as_str()),
                ("False", "InsecureDatabaseUrl"),
                "{mode}: {}",
                condition.message
            );
            assert!(
                condition.message.contains(&format!("sslmode={mode}")),
                "{}",
                condition.message
            );
            assert!(condition.message.contains("verify-full"), "{}", condition.message);
            assert!(!condition.message.contains("s3cret"), "{}", condition.message);
        }
    }
}

#[tokio::test]
async fn a_ca_bundle_that_is_missing_or_not_pem_is_a_condition_of_its_own() {
    let url = "postgres://meridian@db.eu-central-1.example:5432/meridian";
    let (region, ctx, _roles) = external(url, Some("not a certificate"), None);
    let outcome = region::apply(&region, &ctx).await;
    let db = conditions::find(&outcome.status.conditions, "DatabaseReady").unwrap();
    assert_eq!(db.reason, "InvalidCaBundle", "{}", db.message);
    assert!(db.message.contains("frankfurt-ca"), "{}", db.message);

    let (mut region, ctx, _roles) = external(url, None, None);
    region.spec.tls = Some(meridian_crds::RegionTls {
        ca_bundle_secret_ref: meridian_crds::SecretKeyRef {
            name: "nowhere".into(),
            namespace: None,
            key: "ca.crt".into(),
        },
    });
    let outcome = region::apply(&region, &ctx).await;
    let db = conditions::find(&outcome.status.conditions, "DatabaseReady").unwrap();
    assert_eq!(db.reason, "CaBundleMissing", "{}", db.message);
}

#[tokio::test]
async fn plain_http_search_off_this_machine_is_refused_with_a_condition() {
    // The database on loopback, without TLS: it never leaves this machine.
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let (region, ctx, _roles) = external(
        &pg.url(),
        None,
        Some("http://admin:s3cret@search.eu-central-1.example:9200"),
    );
    let outcome = region::apply(&region, &ctx).await;
    assert!(conditions::is_true(&outcome.status.conditions, "DatabaseReady"));
    let search = conditions::find(&outcome.status.conditions, "SearchReady").unwrap();
    assert_eq!(
        (search.status.as_str(), search.reason.as_str()),
        ("False", "InsecureSearchUrl")
    );
    assert!(search.message.contains("https"), "{}", search.message);
    assert!(!search.message.contains("s3cret"), "{}", search.message);
}
