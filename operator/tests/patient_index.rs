//! The PatientIndex reconciler against real PostgreSQL clusters: the index's schema and role
//! in its Region only, the role kept to the index's entries, the first key made once, the
//! keys and the index's connection handed to the Regions of the linked countries (and only
//! those), one serving index, repeats that change nothing, and deletion by policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_crds::{Country, PatientIndex, Region, ResourceOrigin};
use meridian_localpg::TempCluster;
use meridian_operator::conditions;
use meridian_operator::controller::{Context, patient_index, region};
use meridian_operator::providers::{FileSecrets, Providers, RegionSecrets, StaticSecrets};
use meridian_records::mpi::{IndexKeys, LINK_SECRET, Link};
use sqlx::{Connection, PgConnection};

fn region(name: &str) -> Region {
    let mut r: Region = serde_yaml_ng::from_str(&format!(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: Region
metadata: {{name: {name}}}
spec:
  provider: external
  cloudRegion: {name}
  external:
    databaseUrlSecretRef: {{name: {name}-db, key: url}}"
    ))
    .unwrap();
    r.metadata.generation = Some(1);
    r
}

fn country(code: &str, region: &str, sharing: bool) -> Country {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: Country
metadata: {{name: {name}}}
spec:
  code: {code}
  displayName: {code}
  timezone: Europe/Berlin
  locale: de-DE
  languages: [de]
  currency: EUR
  region: {region}
  residency: shared
  regulatory:
    retentionYears: 10
    minimumAge: 16
    nationalIdPattern: '[A-Z][0-9]{{9}}'
    consent: {{recordSharing: {sharing}}}",
        name = code.to_ascii_lowercase()
    ))
    .unwrap()
}

fn index(name: &str, region: &str, policy: &str) -> PatientIndex {
    let mut i: PatientIndex = serde_yaml_ng::from_str(&format!(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: PatientIndex
metadata: {{name: {name}}}
spec:
  region: {region}
  keySecretRef: {{name: patient-index-keys}}
  deletionPolicy: {policy}"
    ))
    .unwrap();
    i.metadata.generation = Some(1);
    i
}

/// Frankfurt (the index's Region, holding DE) and Paris (FR, and XX which does not share
/// records), both Ready.
struct Fixture {
    ctx: Context,
    secrets: FileSecrets,
    _secrets_dir: tempfile::TempDir,
    frankfurt: (TempCluster, Region),
    paris: (TempCluster, Region),
    countries: Vec<Country>,
}

impl Fixture {
    async fn new() -> Self {
        let (a, b) = tokio::join!(TempCluster::start(), TempCluster::start());
        let (a, b) = (a.expect("start PostgreSQL"), b.expect("start PostgreSQL"));
        let mut static_secrets = StaticSecrets::default();
        static_secrets.insert("default", "eu-central-1-db", BTreeMap::from([("url".into(), a.url())]));
        static_secrets.insert("default", "eu-west-3-db", BTreeMap::from([("url".into(), b.url())]));
        let secrets_dir = tempfile::tempdir().unwrap();
        let providers = Providers::new(None, Arc::new(static_secrets))
            .with_region_secrets(Arc::new(FileSecrets::new(secrets_dir.path().to_path_buf())));
        let ctx = Context::new(providers);
        let mut frankfurt = region("eu-central-1");
        let mut paris = region("eu-west-3");
        for r in [&mut frankfurt, &mut paris] {
            let outcome = region::apply(r, &ctx).await;
            assert!(
                conditions::is_true(&outcome.status.conditions, "Ready"),
                "{:?}",
                outcome.status
            );
            r.status = Some(outcome.status);
        }
        Self {
            ctx,
            secrets: FileSecrets::new(secrets_dir.path().to_path_buf()),
            _secrets_dir: secrets_dir,
            frankfurt: (a, frankfurt),
            paris: (b, paris),
            countries: vec![
                country("DE", "eu-central-1", true),
                country("FR", "eu-west-3", true),
                country("XX", "eu-west-3", false),
            ],
        }
    }

    fn regions(&self) -> Vec<Region> {
        vec![self.frankfurt.1.clone(), self.paris.1.clone()]
    }

    /// Reconciles `i` among `all`, and keeps the status it got.
    async fn apply(&self, i: &mut PatientIndex, all: &[PatientIndex]) -> meridian_crds::PatientIndexStatus {
        let regions = self.regions();
        let world = patient_index::World {
            regions: &regions,
            countries: &self.countries,
            indexes: all,
        };
        let outcome = patient_index::apply(i, world, &self.ctx).await;
        i.status = Some(outcome.status.clone());
        outcome.status
    }

    /// Reconciles `i` as the only PatientIndex.
    async fn apply_alone(&self, i: &mut PatientIndex) -> meridian_crds::PatientIndexStatus {
        let all = [i.clone()];
        self.apply(i, &all).await
    }

    async fn cleanup(&self, i: &PatientIndex) {
        let regions = self.regions();
        let world = patient_index::World {
            regions: &regions,
            countries: &self.countries,
            indexes: &[],
        };
        patient_index::cleanup(i, world, &self.ctx).await.unwrap();
    }

    async fn link(&self, region: &str) -> Option<Link> {
        let data = self.secrets.read(region, LINK_SECRET).await.unwrap();
        Link::from_secret(&data).unwrap()
    }

    async fn superuser(&self, cluster: &TempCluster) -> PgConnection {
        PgConnection::connect(&cluster.url()).await.unwrap()
    }
}

fn condition<'a>(status: &'a meridian_crds::PatientIndexStatus, kind: &str) -> &'a str {
    conditions::find(&status.conditions, kind).map_or("", |c| c.reason.as_str())
}

async fn exists(conn: &mut PgConnection, sql: &str) -> bool {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_index_gets_its_store_and_keys_in_its_region_and_the_linked_regions_get_the_keys() {
    let f = Fixture::new().await;
    let mut global = index("global", "eu-central-1", "Retain");
    let all = [global.clone()];
    let status = f.apply(&mut global, &all).await;
    assert!(conditions::is_true(&status.conditions, "Ready"), "{status:#?}");
    assert_eq!(status.active_key_version.as_deref(), Some("k1"));
    assert_eq!(status.linked_countries, ["DE", "FR"], "XX does not share records");
    assert_eq!(status.linked_regions, ["eu-central-1", "eu-west-3"]);
    assert_eq!(status.schema, Some(ResourceOrigin::Created));
    let role = status.database_role.clone().unwrap();
    assert_eq!(role.name, "meridian_global_mpi");

    // The store is in Frankfurt only.
    let mut frankfurt = f.superuser(&f.frankfurt.0).await;
    let mut paris = f.superuser(&f.paris.0).await;
    let has_schema = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'mpi')";
    assert!(exists(&mut frankfurt, has_schema).await);
    assert!(!exists(&mut paris, has_schema).await);

    // Each linked Region's records service got the keys, the index's connection and the
    // linked countries; the key is the one in the index's key Secret.
    let keys = f.secrets.read("eu-central-1", "patient-index-keys").await.unwrap();
    let de = f.link("eu-central-1").await.unwrap();
    let fr = f.link("eu-west-3").await.unwrap();
    assert_eq!(de.countries, ["DE", "FR"]);
    assert_eq!(fr.countries, ["DE", "FR"]);
    assert_eq!(de.region, "eu-central-1");
    assert_eq!(
        fr.keys.active_version(),
        IndexKeys::from_secret(&keys).unwrap().active_version()
    );
    assert!(!format!("{fr:?}").contains(&keys["k1"]), "a link's Debug shows no key");

    // The index role works the entries, and nothing else; the Region's own roles do not
    // reach the index.
    let mut index = PgConnection::connect(fr.url())
        .await
        .expect("the index role connects to Frankfurt");
    sqlx::query(
        "INSERT INTO mpi.entries (hash, key_version, home_country, home_region, client_id)
         VALUES (decode(repeat('ab', 32), 'hex'), 'k1', 'FR', 'eu-west-3', gen_random_uuid())",
    )
    .execute(&mut index)
    .await
    .unwrap();
    for denied in [
        "SELECT count(*) FROM patients",
        "SELECT count(*) FROM vault.patients",
        "SELECT count(*) FROM audit",
        "SELECT count(*) FROM fhir_resources",
    ] {
        let e = sqlx::query(sqlx::AssertSqlSafe(denied))
            .execute(&mut index)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{denied}: {e}");
    }
    let e = sqlx::query("CREATE TABLE mpi.more (x int)")
        .execute(&mut index)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
    for role in ["meridian_eu_central_1_workload", "meridian_eu_central_1_vault"] {
        let reaches: bool = sqlx::query_scalar("SELECT has_table_privilege($1, 'mpi.entries', 'SELECT')")
            .bind(role)
            .fetch_one(&mut frankfurt)
            .await
            .unwrap();
        assert!(!reaches, "{role} reads the index");
    }

    // Again: nothing changes, no statement that alters a schema or a role.
    let before = f.ctx.metrics.writes().ddl;
    let again = f.apply(&mut global, &all).await;
    assert_eq!(f.ctx.metrics.writes().ddl, before);
    assert_eq!(again, status);
    // The Region's own reconcile leaves the index's grants alone.
    region::apply(&f.frankfurt.1, &f.ctx).await;
    sqlx::query("SELECT count(*) FROM mpi.entries")
        .execute(&mut index)
        .await
        .unwrap();

    // A rotation someone made (k2 active) is reported and handed over; k1 is kept.
    let rotate = |data: &mut BTreeMap<String, String>| meridian_records::mpi::rotate(data).is_ok();
    f.secrets
        .update("eu-central-1", "patient-index-keys", &rotate)
        .await
        .unwrap();
    let rotated = f.apply(&mut global, &all).await;
    assert_eq!(rotated.active_key_version.as_deref(), Some("k2"));
    assert_eq!(rotated.key_versions, ["k1", "k2"]);
    assert_eq!(f.link("eu-west-3").await.unwrap().keys.active_version(), "k2");

    // FR stops sharing: Paris keeps an empty link; XX never had one.
    let mut f = f;
    f.countries[1] = country("FR", "eu-west-3", false);
    let narrowed = f.apply(&mut global, &all).await;
    assert_eq!(narrowed.linked_countries, ["DE"]);
    assert!(f.link("eu-west-3").await.is_none());
    assert_eq!(narrowed.linked_regions, ["eu-central-1"]);

    // The Region that holds the index is not deleted from under it.
    let blocked = region::cleanup(&f.frankfurt.1, &[], &[global.clone()], &f.ctx)
        .await
        .unwrap_err();
    assert_eq!(blocked.reason, "PatientIndexStillHere");
}

#[tokio::test]
async fn one_index_serves_and_deletion_follows_the_policy() {
    let f = Fixture::new().await;
    let mut first = index("global", "eu-central-1", "Retain");
    first.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().unwrap(),
    ));
    let mut second = index("backup", "eu-west-3", "Delete");
    second.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-02-01T00:00:00Z".parse().unwrap(),
    ));
    let all = [first.clone(), second.clone()];
    assert!(conditions::is_true(
        &f.apply(&mut first, &all).await.conditions,
        "Ready"
    ));
    let refused = f.apply(&mut second, &all).await;
    assert_eq!(condition(&refused, "Ready"), "AnotherIndexServes");
    assert!(refused.database_role.is_none(), "a refused index owns nothing");
    let mut paris = f.superuser(&f.paris.0).await;
    assert!(
        !exists(
            &mut paris,
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'meridian_backup_mpi')"
        )
        .await
    );
    // Deleting the refused one touches nothing.
    f.cleanup(&second).await;
    assert!(f.link("eu-central-1").await.is_some());

    // Retain: the links are emptied, schema, entries and role stay.
    let mut frankfurt = f.superuser(&f.frankfurt.0).await;
    sqlx::query(
        "INSERT INTO mpi.entries (hash, key_version, home_country, home_region, client_id)
         VALUES (decode(repeat('cd', 32), 'hex'), 'k1', 'DE', 'eu-central-1', gen_random_uuid())",
    )
    .execute(&mut frankfurt)
    .await
    .unwrap();
    f.cleanup(&first).await;
    assert!(f.link("eu-central-1").await.is_none() && f.link("eu-west-3").await.is_none());
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM mpi.entries")
        .fetch_one(&mut frankfurt)
        .await
        .unwrap();
    assert_eq!(kept, 1);

    // Made again with Delete: it adopts the schema it found, and its deletion keeps it (with
    // the entries) and drops only its role.
    let mut again = index("global", "eu-central-1", "Delete");
    let status = f.apply_alone(&mut again).await;
    assert_eq!(status.schema, Some(ResourceOrigin::Adopted), "{status:#?}");
    f.cleanup(&again).await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM mpi.entries")
        .fetch_one(&mut frankfurt)
        .await
        .unwrap();
    assert_eq!(kept, 1, "an adopted store is never dropped");
    assert!(
        !exists(
            &mut frankfurt,
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'meridian_global_mpi')"
        )
        .await
    );

    // One that created the store drops it with its deletion.
    sqlx::query("DROP SCHEMA mpi CASCADE")
        .execute(&mut frankfurt)
        .await
        .unwrap();
    let mut fresh = index("global", "eu-central-1", "Delete");
    let status = f.apply_alone(&mut fresh).await;
    assert_eq!(status.schema, Some(ResourceOrigin::Created));
    f.cleanup(&fresh).await;
    assert!(
        !exists(
            &mut frankfurt,
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'mpi')"
        )
        .await
    );
    assert!(
        !exists(
            &mut frankfurt,
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'meridian_global_mpi')"
        )
        .await
    );
}

#[tokio::test]
async fn an_index_waits_for_its_region_and_names_a_broken_key_secret() {
    let f = Fixture::new().await;
    let mut lost = index("global", "ap-south-1", "Retain");
    let status = f.apply_alone(&mut lost).await;
    assert_eq!(condition(&status, "Ready"), "RegionNotFound");

    let broken = |data: &mut BTreeMap<String, String>| {
        data.insert("active".into(), "k7".into());
        true
    };
    f.secrets
        .update("eu-central-1", "patient-index-keys", &broken)
        .await
        .unwrap();
    let mut global = index("global", "eu-central-1", "Retain");
    let status = f.apply_alone(&mut global).await;
    assert_eq!(condition(&status, "KeysReady"), "InvalidKeySecret");
    assert_eq!(condition(&status, "DatabaseReady"), "IndexStoreReady");
    let message = &conditions::find(&status.conditions, "KeysReady").unwrap().message;
    assert!(
        message.contains("patient-index-keys") && message.contains("k7"),
        "{message}"
    );
    assert!(f.link("eu-west-3").await.is_none(), "no keys handed over");
}
