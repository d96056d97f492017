//! The reconcilers against real PostgreSQL clusters started by the tests: migrations,
//! partitions in the right Region only, residency refusal, Retain, Delete, abandon.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_crds::{Country, Region};
use meridian_localpg::TempCluster;
use meridian_operator::conditions;
use meridian_operator::controller::{Context, Next, country, region};
use meridian_operator::providers::{FileSecrets, Providers, RegionSecrets, StaticSecrets};
use sqlx::{Connection, PgConnection};

/// Partitioned tables, hence partitions per country.
const TABLES: usize = meridian_shared::schema::PARTITIONED_TABLES.len();

/// A Region of provider `external` whose URL sits in a Secret named after it.
fn region(name: &str, isolation: &str) -> Region {
    let mut r: Region = serde_yaml_ng::from_str(&format!(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: Region
metadata: {{name: {name}, generation: 1}}
spec:
  provider: external
  cloudRegion: {name}
  isolation: {isolation}
  external:
    databaseUrlSecretRef: {{name: {name}-db, key: url}}"
    ))
    .unwrap();
    r.metadata.generation = Some(1);
    r
}

fn country(name: &str, code: &str, region: &str, residency: &str) -> Country {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: Country
metadata: {{name: {name}, generation: 1}}
spec:
  code: {code}
  displayName: {name}
  timezone: Europe/Berlin
  locale: de-DE
  languages: [de]
  currency: EUR
  region: {region}
  residency: {residency}
  allowedCloudRegions: [{region}]
  regulatory: {{retentionYears: 10, minimumAge: 16, nationalIdPattern: '^[A-Z][0-9]{{9}}$'}}"
    ))
    .unwrap()
}

/// Two clusters: `eu-west-1` (shared) and `eu-central-1` (dedicated), migrated and Ready.
struct Fixture {
    ctx: Context,
    /// The embedded search engine every Region's countries are indexed in, and its directory.
    search: Arc<meridian_search::embedded::Engine>,
    _search_dir: tempfile::TempDir,
    /// Where the Regions publish their roles' Secrets (files, as in `meridian dev`).
    secrets_dir: tempfile::TempDir,
    shared: (TempCluster, Region),
    dedicated: (TempCluster, Region),
}

impl Fixture {
    async fn new() -> Self {
        let (a, b) = tokio::join!(TempCluster::start(), TempCluster::start());
        let (a, b) = (a.expect("start PostgreSQL"), b.expect("start PostgreSQL"));
        let search_dir = tempfile::tempdir().unwrap();
        let mut secrets = StaticSecrets::default();
        secrets.insert("default", "eu-west-1-db", BTreeMap::from([("url".into(), a.url())]));
        secrets.insert("default", "eu-central-1-db", BTreeMap::from([("url".into(), b.url())]));
        let search =
            Arc::new(meridian_search::embedded::Engine::open(search_dir.path()).expect("open the search engine"));
        let secrets_dir = tempfile::tempdir().unwrap();
        let providers = Providers::new(None, Arc::new(secrets))
            .with_search(meridian_search::Backend::Embedded(search.clone()))
            .with_region_secrets(Arc::new(FileSecrets::new(secrets_dir.path().to_path_buf())));
        let ctx = Context::new(providers);
        let mut shared = region("eu-west-1", "shared");
        let mut dedicated = region("eu-central-1", "dedicated");
        for r in [&mut shared, &mut dedicated] {
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
            search,
            _search_dir: search_dir,
            secrets_dir,
            shared: (a, shared),
            dedicated: (b, dedicated),
        }
    }

    async fn apply(
        &self,
        c: &Country,
        r: &Region,
        all: &[Country],
    ) -> meridian_operator::controller::Outcome<meridian_crds::CountryStatus> {
        country::apply(
            c,
            country::World {
                region: Some(r),
                countries: all,
            },
            &self.ctx,
        )
        .await
    }

    /// `c` as its reconcile left it: with the status that records what it created.
    async fn reconciled(&self, c: &Country, r: &Region, all: &[Country]) -> Country {
        let outcome = self.apply(c, r, all).await;
        let mut c = c.clone();
        c.status = Some(outcome.status);
        c
    }

    async fn cleanup(
        &self,
        c: &Country,
        r: &Region,
        all: &[Country],
    ) -> Result<Vec<meridian_operator::plan::Change>, meridian_operator::controller::Blocked> {
        let world = country::World {
            region: Some(r),
            countries: all,
        };
        country::cleanup(c, world, &self.ctx).await
    }
}

async fn connect(pg: &TempCluster) -> PgConnection {
    PgConnection::connect(&pg.url()).await.unwrap()
}

/// `(partition, attached)` for every table whose name ends in `_<code>`, sorted; those of
/// the vault named `vault.<name>`.
async fn partitions(pg: &TempCluster) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT name, attached FROM (
           SELECT CASE WHEN n.nspname = 'public' THEN c.relname::text ELSE n.nspname || '.' || c.relname END,
                  c.relispartition
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('public', 'vault') AND c.relkind = 'r' AND c.relname ~ '_[a-z]{2}$'
         ) AS p(name, attached)
         ORDER BY name COLLATE \"C\"",
    )
    .fetch_all(&mut connect(pg).await)
    .await
    .unwrap()
}

fn names(parts: &[(String, bool)]) -> Vec<&str> {
    parts.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn region_reconcile_migrates_and_is_idempotent() {
    let f = Fixture::new().await;
    let (_, r) = &f.shared;
    let status = r.status.clone().unwrap();
    assert_eq!(
        status.schema_version,
        meridian_shared::schema::MIGRATIONS.last().map(|m| m.version)
    );
    assert_eq!(status.observed_generation, Some(1));
    let workload_secret = f
        .secrets_dir
        .path()
        .join("regions/eu-west-1/secrets/postgres-workload.json");
    assert_eq!(
        status.connection_secret.as_deref(),
        Some(workload_secret.to_str().unwrap()),
        "workloads connect with the workload role's Secret"
    );
    let db = conditions::find(&status.conditions, "DatabaseReady").unwrap();
    assert_eq!(db.reason, "SchemaCurrent");
    assert!(
        !db.message.contains("meridian@"),
        "no credentials in status: {}",
        db.message
    );
    let again = region::apply(r, &f.ctx).await;
    assert_eq!(again.status, status, "a repeat changes nothing");
    assert_eq!(again.next, Next::Requeue(meridian_operator::controller::RESYNC));
}

#[tokio::test]
async fn partitions_land_only_in_the_countrys_region_and_repeat_as_no_ops() {
    let f = Fixture::new().await;
    let es = country("es", "ES", "eu-west-1", "shared");
    let it = country("it", "IT", "eu-west-1", "shared");
    let de = country("de", "DE", "eu-central-1", "strict");
    let all = [es.clone(), it.clone(), de.clone()];
    for (c, r) in [(&es, &f.shared.1), (&it, &f.shared.1), (&de, &f.dedicated.1)] {
        let outcome = f.apply(c, r, &all).await;
        assert!(
            conditions::is_true(&outcome.status.conditions, "Ready"),
            "{:?}",
            outcome.status.conditions
        );
        assert_eq!(outcome.status.partitions.len(), TABLES);
        assert_eq!(outcome.status.observed_generation, Some(1));
    }
    let shared = partitions(&f.shared.0).await;
    assert_eq!(
        names(&shared),
        [
            "appointment_minutes_es",
            "appointment_minutes_it",
            "appointments_es",
            "appointments_it",
            "audit_es",
            "audit_heads_es",
            "audit_heads_it",
            "audit_it",
            "availability_es",
            "availability_it",
            "fhir_history_es",
            "fhir_history_it",
            "fhir_resources_es",
            "fhir_resources_it",
            "invoices_es",
            "invoices_it",
            "notifications_es",
            "notifications_it",
            "outbox_es",
            "outbox_it",
            "patients_es",
            "patients_it",
            "practitioners_es",
            "practitioners_it",
            "vault.patient_history_es",
            "vault.patient_history_it",
            "vault.patients_es",
            "vault.patients_it"
        ]
    );
    assert!(shared.iter().all(|(_, attached)| *attached));
    let dedicated = partitions(&f.dedicated.0).await;
    assert_eq!(
        names(&dedicated),
        [
            "appointment_minutes_de",
            "appointments_de",
            "audit_de",
            "audit_heads_de",
            "availability_de",
            "fhir_history_de",
            "fhir_resources_de",
            "invoices_de",
            "notifications_de",
            "outbox_de",
            "patients_de",
            "practitioners_de",
            "vault.patient_history_de",
            "vault.patients_de"
        ]
    );

    let (planned, _) = country::plan(
        &de,
        country::World {
            region: Some(&f.dedicated.1),
            countries: &all,
        },
        &f.ctx,
    )
    .await
    .unwrap();
    assert!(planned.changes.is_empty(), "nothing left to do: {:?}", planned.changes);
    let again = f.apply(&de, &f.dedicated.1, &all).await;
    assert!(conditions::is_true(&again.status.conditions, "Ready"));
    assert_eq!(partitions(&f.dedicated.0).await, dedicated);
}

#[tokio::test]
async fn the_database_refuses_a_double_booking_in_every_country_partition() {
    let f = Fixture::new().await;
    let es = country("es", "ES", "eu-west-1", "shared");
    f.apply(&es, &f.shared.1, std::slice::from_ref(&es)).await;
    let mut conn = connect(&f.shared.0).await;
    let book = |patient: &'static str, from: &'static str, to: &'static str| {
        sqlx::query(
            "INSERT INTO appointments (country_code, id, practitioner_id, patient_id, starts_at, ends_at, status)
             VALUES ('ES', gen_random_uuid(), '00000000-0000-0000-0000-000000000001', $1, $2::timestamptz, $3::timestamptz, 'booked')",
        )
        .bind(patient)
        .bind(from)
        .bind(to)
    };
    book("p1", "2026-12-01 09:00Z", "2026-12-01 09:30Z")
        .execute(&mut conn)
        .await
        .unwrap();
    let clash = book("p2", "2026-12-01 09:15Z", "2026-12-01 09:45Z")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(
        clash.to_string().contains("appointments_es_no_double_booking"),
        "{clash}"
    );
    let overlap = sqlx::query(
        "INSERT INTO appointments (country_code, id, practitioner_id, patient_id, starts_at, ends_at, status)
         VALUES ('ES', gen_random_uuid(), gen_random_uuid(), 'p1', '2026-12-01 09:20Z', '2026-12-01 09:40Z', 'booked')",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(
        overlap.to_string().contains("appointments_es_no_patient_overlap"),
        "{overlap}"
    );
    // Back to back is fine: ranges are half-open.
    book("p3", "2026-12-01 09:30Z", "2026-12-01 10:00Z")
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn residency_violations_leave_the_database_untouched() {
    let f = Fixture::new().await;
    let de_on_shared = country("de", "DE", "eu-west-1", "strict");
    let outcome = f
        .apply(&de_on_shared, &f.shared.1, std::slice::from_ref(&de_on_shared))
        .await;
    let residency = conditions::find(&outcome.status.conditions, "ResidencyCompliant").unwrap();
    assert_eq!(
        (residency.status.as_str(), residency.reason.as_str()),
        ("False", "RegionNotDedicated")
    );
    assert_eq!(residency.observed_generation, Some(1));
    assert_eq!(outcome.next, Next::AwaitChange);
    assert!(partitions(&f.shared.0).await.is_empty());

    // A second country on a dedicated Region is refused as well. Neither has a creation
    // timestamp here, so the holder is the first by name: `de` before `zz-at`.
    let de = country("de", "DE", "eu-central-1", "strict");
    let at = country("zz-at", "AT", "eu-central-1", "shared");
    let both = [de.clone(), at.clone()];
    let outcome = f.apply(&de, &f.dedicated.1, &both).await;
    assert!(
        conditions::is_true(&outcome.status.conditions, "Ready"),
        "{:?}",
        outcome.status.conditions
    );
    let refused = f.apply(&at, &f.dedicated.1, &both).await;
    assert_eq!(
        conditions::find(&refused.status.conditions, "ResidencyCompliant")
            .unwrap()
            .reason,
        "RegionAlreadyDedicated"
    );
    assert!(
        names(&partitions(&f.dedicated.0).await)
            .iter()
            .all(|n| n.ends_with("_de"))
    );
}

#[tokio::test]
async fn invalid_specs_change_nothing_and_name_the_field() {
    let f = Fixture::new().await;
    let mut bad = country("es", "ES", "eu-west-1", "shared");
    bad.spec.timezone = "Europe/Atlantis".into();
    bad.spec.regulatory.national_id_pattern = Some("([0-9".into());
    let outcome = f.apply(&bad, &f.shared.1, &[bad.clone()]).await;
    let ready = conditions::find(&outcome.status.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("spec.timezone") && ready.message.contains("spec.regulatory.nationalIdPattern"),
        "{}",
        ready.message
    );
    assert_eq!(outcome.next, Next::AwaitChange);
    assert_eq!(
        outcome.status.observed_generation,
        Some(1),
        "the refusal describes this generation"
    );
    assert!(partitions(&f.shared.0).await.is_empty());
}

#[tokio::test]
async fn a_country_waits_for_its_region_to_be_ready() {
    let f = Fixture::new().await;
    let es = country("es", "ES", "eu-west-1", "shared");
    let mut not_ready = f.shared.1.clone();
    not_ready.status = None;
    let outcome = f.apply(&es, &not_ready, std::slice::from_ref(&es)).await;
    assert_eq!(
        conditions::find(&outcome.status.conditions, "Ready").unwrap().reason,
        "RegionNotReady"
    );
    assert!(matches!(outcome.next, Next::Requeue(_)));
    assert!(partitions(&f.shared.0).await.is_empty());
}

#[tokio::test]
async fn retain_detaches_and_keeps_rows_and_a_returning_country_gets_them_back() {
    let f = Fixture::new().await;
    let es = country("es", "ES", "eu-west-1", "shared");
    let es = f.reconciled(&es, &f.shared.1, &[]).await;
    let mut conn = connect(&f.shared.0).await;
    sqlx::query(
        "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
         VALUES ('ES', gen_random_uuid(), 'Lucía', 'García', 'cardiología', 'Madrid')",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let done = f.cleanup(&es, &f.shared.1, &[]).await.unwrap();
    assert_eq!(done.len(), TABLES);
    let parts = partitions(&f.shared.0).await;
    assert_eq!(parts.len(), TABLES, "Retain keeps every partition");
    assert!(
        parts.iter().all(|(_, attached)| !attached),
        "and detaches them: {parts:?}"
    );
    let through_parent: i64 = sqlx::query_scalar("SELECT count(*) FROM practitioners")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM practitioners_es")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!((through_parent, kept), (0, 1));
    assert!(
        f.cleanup(&es, &f.shared.1, &[]).await.unwrap().is_empty(),
        "a repeat is a no-op"
    );

    let back = f.apply(&es, &f.shared.1, std::slice::from_ref(&es)).await;
    assert!(conditions::is_true(&back.status.conditions, "Ready"));
    let through_parent: i64 = sqlx::query_scalar("SELECT count(*) FROM practitioners WHERE country_code = 'ES'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(through_parent, 1, "re-attached with its rows");
}

#[tokio::test]
async fn delete_drops_the_partitions() {
    let f = Fixture::new().await;
    let mut it = country("it", "IT", "eu-west-1", "shared");
    it.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    let es = country("es", "ES", "eu-west-1", "shared");
    let it = f.reconciled(&it, &f.shared.1, &[it.clone(), es.clone()]).await;
    f.apply(&es, &f.shared.1, &[it.clone(), es.clone()]).await;
    let done = f.cleanup(&it, &f.shared.1, &[]).await.unwrap();
    assert_eq!(done.len(), TABLES);
    assert!(
        names(&partitions(&f.shared.0).await).iter().all(|n| n.ends_with("_es")),
        "only IT's partitions went"
    );
}

#[tokio::test]
async fn the_index_is_built_from_the_database_rebuilt_when_the_analyzer_changes_and_deleted_only_with_delete() {
    use meridian_search::{Query, alias};
    let f = Fixture::new().await;
    let mut de = country("de", "DE", "eu-central-1", "strict");
    let first = f.apply(&de, &f.dedicated.1, std::slice::from_ref(&de)).await;
    assert!(
        conditions::is_true(&first.status.conditions, "SearchIndexReady"),
        "{:?}",
        first.status
    );
    assert_eq!(first.status.index.as_deref(), Some("practitioners_de_v1"));
    assert_eq!(first.status.index_alias.as_deref(), Some("practitioners_de"));
    let mut conn = connect(&f.dedicated.0).await;
    sqlx::query(
        "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
         VALUES ('DE', gen_random_uuid(), 'Anna', 'Schmidt', 'Kardiologie', 'Berlin')",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // Unchanged settings: the same version, nothing rebuilt.
    let again = f.apply(&de, &f.dedicated.1, std::slice::from_ref(&de)).await;
    assert_eq!(again.status.index.as_deref(), Some("practitioners_de_v1"));
    // A new analyzer: the next version, built from the database, behind the alias.
    de.spec.search = Some(meridian_crds::SearchSettings {
        analyzer: meridian_crds::SearchAnalyzer::Standard,
        synonyms: vec!["Herz => Kardiologie".into()],
    });
    let rebuilt = f.apply(&de, &f.dedicated.1, std::slice::from_ref(&de)).await;
    assert_eq!(rebuilt.status.index.as_deref(), Some("practitioners_de_v2"));
    let ready = conditions::find(&rebuilt.status.conditions, "SearchIndexReady").unwrap();
    assert_eq!(ready.reason, "IndexBuilt");
    assert!(
        ready.message.contains("built from 1 practitioners"),
        "{}",
        ready.message
    );
    let query = Query {
        text: Some("Herz".into()),
        limit: 10,
        ..Default::default()
    };
    let found = f.search.search(&alias("DE"), &query).await.unwrap();
    assert_eq!(found.hits[0].document.family_name, "Schmidt");
    assert_eq!(
        f.search.versions(&alias("DE")).await.unwrap(),
        ["practitioners_de_v2"],
        "v1 dropped"
    );

    // Retain keeps the index; Delete removes it.
    de.status = Some(rebuilt.status);
    f.cleanup(&de, &f.dedicated.1, &[]).await.unwrap();
    assert!(f.search.resolve(&alias("DE")).await.unwrap().is_some());
    de.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    f.cleanup(&de, &f.dedicated.1, &[]).await.unwrap();
    assert!(f.search.versions(&alias("DE")).await.unwrap().is_empty());
}

#[tokio::test]
async fn cleanup_against_an_unreachable_database_blocks_until_abandoned() {
    let f = Fixture::new().await;
    let es = country("es", "ES", "eu-west-1", "shared");
    let es = f.reconciled(&es, &f.shared.1, &[]).await;

    // The same Region, pointed at a port where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut secrets = StaticSecrets::default();
    secrets.insert(
        "default",
        "eu-west-1-db",
        BTreeMap::from([("url".into(), format!("postgres://meridian@127.0.0.1:{port}/meridian"))]),
    );
    // The owner role's Secret, which the Country's cleanup connects with, says the same.
    let dead = tempfile::tempdir().unwrap();
    let store = FileSecrets::new(dead.path().to_path_buf());
    let owner = BTreeMap::from([
        (
            "url".to_string(),
            format!("postgres://meridian_eu_west_1_owner:x@127.0.0.1:{port}/meridian"),
        ),
        ("passwordSet".to_string(), "true".to_string()),
    ]);
    store.write("eu-west-1", "postgres-owner", &owner).await.unwrap();
    let ctx = Context::new(Providers::new(None, Arc::new(secrets)).with_region_secrets(Arc::new(store)));
    let world = country::World {
        region: Some(&f.shared.1),
        countries: &[],
    };
    let blocked = country::cleanup(&es, world, &ctx).await.unwrap_err();
    assert_eq!(blocked.reason, "DatabaseUnreachable");
    assert!(
        blocked.message().contains("platform.meridian.dev/abandon"),
        "{}",
        blocked.message()
    );

    let mut abandoned = es.clone();
    abandoned.metadata.annotations = Some(BTreeMap::from([(
        "platform.meridian.dev/abandon".into(),
        "true".into(),
    )]));
    assert!(country::cleanup(&abandoned, world, &ctx).await.unwrap().is_empty());
    assert!(
        partitions(&f.shared.0).await.iter().all(|(_, attached)| *attached),
        "abandon touches nothing"
    );
}

#[tokio::test]
async fn a_region_cannot_go_while_countries_are_bound_to_it() {
    let f = Fixture::new().await;
    let es = country("es", "ES", "eu-west-1", "shared");
    let blocked = region::cleanup(&f.shared.1, &[es], &[], &f.ctx).await.unwrap_err();
    assert_eq!(blocked.reason, "CountriesStillBound");
    assert!(region::cleanup(&f.shared.1, &[], &[], &f.ctx).await.is_ok());
}

#[tokio::test]
async fn the_residency_report_places_each_country_in_its_regions_database_and_index() {
    use meridian_operator::residency;
    let f = Fixture::new().await;
    let de = country("de", "DE", "eu-central-1", "strict");
    let es = country("es", "ES", "eu-west-1", "shared");
    f.apply(&de, &f.dedicated.1, std::slice::from_ref(&de)).await;
    f.apply(&es, &f.shared.1, std::slice::from_ref(&es)).await;
    let regions = [f.shared.1.clone(), f.dedicated.1.clone()];
    let countries = [de, es];
    let report = residency::report(&regions, &countries, &f.ctx, None).await;
    assert!(report.violations.is_empty(), "{report:#?}");
    assert!(report.unreachable.is_empty(), "{report:#?}");
    let placed: Vec<(&str, &str, usize, Option<&str>)> = report
        .countries
        .iter()
        .map(|c| {
            (
                c.code.as_str(),
                c.region.as_str(),
                c.partitions.len(),
                c.index.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            ("DE", "eu-central-1", TABLES, Some("practitioners_de_v1")),
            ("ES", "eu-west-1", TABLES, Some("practitioners_es_v1")),
        ]
    );
    let database = report
        .stores
        .iter()
        .find(|s| s.region == "eu-west-1" && s.kind == "database")
        .unwrap();
    let claims: Vec<(&str, bool)> = database.checks.iter().map(|c| (c.claim.as_str(), c.holds)).collect();
    assert_eq!(
        claims,
        [
            (
                "the workload role meridian_eu_west_1_workload holds no privilege on schema vault",
                true
            ),
            (
                "the workload role meridian_eu_west_1_workload holds no privilege on a table of schema vault",
                true
            ),
            ("no sealed value of vault.patients reads as plaintext JSON", true),
            ("no sealed value of vault.patient_history reads as plaintext JSON", true),
        ]
    );

    // Rows in the records tables and the vault are counted per country: a sealed one (random
    // bytes, one that is not UTF-8, one that starts like JSON) passes.
    sqlx::raw_sql(
        "INSERT INTO patients (country_code, client_id) VALUES ('ES', gen_random_uuid()), ('ES', gen_random_uuid());
         INSERT INTO vault.patients (country_code, client_id, version, last_updated, key_id, sealed) VALUES
           ('ES', gen_random_uuid(), 1, now(), 'k1', decode(md5(random()::text) || md5(random()::text), 'hex')),
           ('ES', gen_random_uuid(), 1, now(), 'k1', '\\xff00fe7b'),
           ('ES', gen_random_uuid(), 1, now(), 'k1', '\\x7b2200ff7d');
         INSERT INTO vault.patient_history (country_code, client_id, version, last_updated, method)
           VALUES ('ES', gen_random_uuid(), 1, now(), 'DELETE');",
    )
    .execute(&mut connect(&f.shared.0).await)
    .await
    .unwrap();
    let report = residency::report(&regions, &countries, &f.ctx, None).await;
    assert!(report.violations.is_empty(), "{report:#?}");
    let es = report.countries.iter().find(|c| c.code == "ES").unwrap();
    assert_eq!(
        es.records,
        BTreeMap::from([
            ("fhir_history".to_string(), 0),
            ("fhir_resources".to_string(), 0),
            ("patients".to_string(), 2),
            ("vault.patient_history".to_string(), 1),
            ("vault.patients".to_string(), 3),
        ])
    );
    let text = report.text();
    assert!(text.contains("vault.patients"), "{text}");

    // A name stored in the clear, and the clinical role given the vault: both are violations.
    sqlx::raw_sql(
        "INSERT INTO vault.patients (country_code, client_id, version, last_updated, key_id, sealed) VALUES
           ('ES', gen_random_uuid(), 1, now(), 'k1', convert_to('{\"name\": [{\"family\": \"García\"}]}', 'UTF8'));
         GRANT USAGE ON SCHEMA vault TO meridian_eu_west_1_workload;",
    )
    .execute(&mut connect(&f.shared.0).await)
    .await
    .unwrap();
    let report = residency::report(&regions, &countries, &f.ctx, None).await;
    assert_eq!(report.violations.len(), 2, "{:#?}", report.violations);
    assert!(
        report.violations[0].contains("holds no privilege on schema vault does not hold"),
        "{:#?}",
        report.violations
    );
    assert!(
        report.violations[1]
            .contains("vault.patients reads as plaintext JSON does not hold: rows reading as plaintext JSON: ES=1"),
        "{:#?}",
        report.violations
    );
    assert_eq!(report.exit_code(), 1);
}

fn created_at(mut c: Country, at: &str) -> Country {
    c.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        at.parse().unwrap(),
    ));
    c
}

async fn count(pg: &TempCluster, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&mut connect(pg).await).await.unwrap()
}

/// The incident this guards against: a second Country `de-test` with Germany's code was
/// refused, yet deleting it with `Delete` dropped Germany's partitions and index.
#[tokio::test]
async fn a_second_country_with_a_held_code_is_refused_owns_nothing_and_its_deletion_touches_nothing() {
    use meridian_search::alias;
    let f = Fixture::new().await;
    let de = created_at(country("de", "DE", "eu-central-1", "strict"), "2026-01-01T00:00:00Z");
    let mut dupe = created_at(
        country("de-test", "DE", "eu-central-1", "strict"),
        "2026-06-01T00:00:00Z",
    );
    dupe.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    let all = [de.clone(), dupe.clone()];
    let de = f.reconciled(&de, &f.dedicated.1, &all).await;
    assert!(conditions::is_true(&de.status.as_ref().unwrap().conditions, "Ready"));
    sqlx::query(
        "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
         VALUES ('DE', gen_random_uuid(), 'Anna', 'Schmidt', 'Kardiologie', 'Berlin')",
    )
    .execute(&mut connect(&f.dedicated.0).await)
    .await
    .unwrap();

    let refused = f.apply(&dupe, &f.dedicated.1, &all).await;
    let ready = conditions::find(&refused.status.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "CodeConflict")
    );
    assert!(
        ready.message.contains("spec.code: DE is already held by Country de"),
        "{}",
        ready.message
    );
    assert_eq!(refused.next, Next::AwaitChange);
    assert!(
        refused.status.partitions.is_empty() && refused.status.index.is_none() && refused.status.region.is_none(),
        "a refused Country records nothing as its own: {:?}",
        refused.status
    );

    // Its deletion, even with a status that claims Germany's stores (as one written before
    // this fix would), touches nothing: with Delete, and with Retain.
    let mut dupe = dupe.clone();
    dupe.status = de.status.clone();
    let before = partitions(&f.dedicated.0).await;
    assert_eq!(f.cleanup(&dupe, &f.dedicated.1, &all).await.unwrap(), []);
    dupe.spec.deletion_policy = meridian_crds::DeletionPolicy::Retain;
    assert_eq!(f.cleanup(&dupe, &f.dedicated.1, &all).await.unwrap(), []);
    assert_eq!(
        partitions(&f.dedicated.0).await,
        before,
        "Germany's partitions are untouched"
    );
    assert!(before.iter().all(|(_, attached)| *attached));
    assert_eq!(
        count(
            &f.dedicated.0,
            "SELECT count(*) FROM practitioners WHERE country_code = 'DE'"
        )
        .await,
        1
    );
    assert_eq!(
        f.search.versions(&alias("DE")).await.unwrap(),
        ["practitioners_de_v1"],
        "Germany's index is untouched"
    );
    let again = f.apply(&de, &f.dedicated.1, &all).await;
    assert!(conditions::is_true(&again.status.conditions, "Ready"));

    // On a shared Region a duplicate is refused just the same (it used to become Ready).
    let es = created_at(country("es", "ES", "eu-west-1", "shared"), "2026-01-01T00:00:00Z");
    let es_too = created_at(country("spain", "ES", "eu-west-1", "shared"), "2026-06-01T00:00:00Z");
    let both = [es.clone(), es_too.clone()];
    assert!(conditions::is_true(
        &f.apply(&es, &f.shared.1, &both).await.status.conditions,
        "Ready"
    ));
    let refused = f.apply(&es_too, &f.shared.1, &both).await;
    assert_eq!(
        conditions::find(&refused.status.conditions, "Ready").unwrap().reason,
        "CodeConflict"
    );

    // Once the holder is gone, the other one holds the code.
    let alone = [es_too.clone()];
    assert!(conditions::is_true(
        &f.apply(&es_too, &f.shared.1, &alone).await.status.conditions,
        "Ready"
    ));
}

#[tokio::test]
async fn a_country_whose_region_never_existed_is_deleted_at_once() {
    let f = Fixture::new().await;
    let lost = country("xx", "XX", "eu-nowhere-1", "shared");
    let world = country::World {
        region: None,
        countries: &[],
    };
    let outcome = country::apply(&lost, world, &f.ctx).await;
    assert_eq!(
        conditions::find(&outcome.status.conditions, "Ready").unwrap().reason,
        "RegionNotFound"
    );
    assert_eq!(outcome.failure, None, "waiting for a Region is not a failure");
    let mut lost = lost;
    lost.status = Some(outcome.status);
    assert_eq!(country::cleanup(&lost, world, &f.ctx).await.unwrap(), []);

    // One that did create partitions in a Region that has since gone still needs the
    // Region (or the abandon annotation): its data is somewhere.
    let es = f
        .reconciled(&country("es", "ES", "eu-west-1", "shared"), &f.shared.1, &[])
        .await;
    let blocked = country::cleanup(&es, world, &f.ctx).await.unwrap_err();
    assert_eq!(blocked.reason, "RegionNotFound");
}

#[tokio::test]
async fn a_stopped_step_leaves_the_later_conditions_unknown_and_waiting_is_not_failing() {
    let f = Fixture::new().await;
    let es = f
        .reconciled(&country("es", "ES", "eu-west-1", "shared"), &f.shared.1, &[])
        .await;
    for condition in [
        "ResidencyCompliant",
        "DatabaseReady",
        "SearchIndexReady",
        "RoutesReady",
        "Ready",
    ] {
        assert!(
            conditions::is_true(&es.status.as_ref().unwrap().conditions, condition),
            "{condition}"
        );
    }
    let mut not_ready = f.shared.1.clone();
    not_ready.status = None;
    let outcome = f.apply(&es, &not_ready, &[]).await;
    let status = |t: &str| {
        let c = conditions::find(&outcome.status.conditions, t).unwrap();
        (c.status.clone(), c.reason.clone())
    };
    assert_eq!(status("ResidencyCompliant"), ("True".into(), "Compliant".into()));
    assert_eq!(status("DatabaseReady"), ("False".into(), "RegionNotReady".into()));
    assert_eq!(status("SearchIndexReady"), ("Unknown".into(), "Blocked".into()));
    assert_eq!(status("RoutesReady"), ("Unknown".into(), "Blocked".into()));
    assert_eq!(status("Ready"), ("False".into(), "RegionNotReady".into()));
    assert_eq!(outcome.failure, None);
    assert_eq!(outcome.next, Next::Requeue(meridian_operator::controller::RETRY));
    assert_eq!(
        outcome.status.partitions.len(),
        TABLES,
        "what it created stays recorded while it waits"
    );
}

#[tokio::test]
async fn without_a_search_store_a_country_is_ready_and_says_so() {
    let f = Fixture::new().await;
    // The fixture's Regions, reached without the shared search engine: `external` Regions
    // with no spec.external.searchUrlSecretRef have no search.
    let mut secrets = StaticSecrets::default();
    secrets.insert(
        "default",
        "eu-west-1-db",
        BTreeMap::from([("url".into(), f.shared.0.url())]),
    );
    // The roles' Secrets the fixture's Region reconcile published.
    let roles = FileSecrets::new(f.secrets_dir.path().to_path_buf());
    let ctx = Context::new(Providers::new(None, Arc::new(secrets)).with_region_secrets(Arc::new(roles)));
    let es = country("es", "ES", "eu-west-1", "shared");
    let world = country::World {
        region: Some(&f.shared.1),
        countries: &[],
    };
    let outcome = country::apply(&es, world, &ctx).await;
    let search = conditions::find(&outcome.status.conditions, "SearchIndexReady").unwrap();
    assert_eq!(
        (search.status.as_str(), search.reason.as_str()),
        ("False", "NotConfigured")
    );
    let ready = conditions::find(&outcome.status.conditions, "Ready").unwrap();
    assert_eq!(ready.status, "True", "{ready:?}");
    assert!(
        ready.message.contains("without practitioner search"),
        "{}",
        ready.message
    );
    assert!(conditions::is_true(&outcome.status.conditions, "RoutesReady"));
    assert_eq!(outcome.status.index, None);
}

#[tokio::test]
async fn a_suspended_country_withdraws_its_routes_and_keeps_its_data() {
    let f = Fixture::new().await;
    let mut es = f
        .reconciled(&country("es", "ES", "eu-west-1", "shared"), &f.shared.1, &[])
        .await;
    assert_eq!(es.status.as_ref().unwrap().routes, ["/es/v1"]);
    es.spec.suspend = true;
    let outcome = f.apply(&es, &f.shared.1, &[]).await;
    let routes = conditions::find(&outcome.status.conditions, "RoutesReady").unwrap();
    assert_eq!((routes.status.as_str(), routes.reason.as_str()), ("False", "Suspended"));
    assert!(outcome.status.routes.is_empty());
    assert_eq!(
        conditions::find(&outcome.status.conditions, "Ready").unwrap().reason,
        "Suspended"
    );
    assert_eq!(outcome.status.partitions.len(), TABLES, "its data stays its own");
    assert!(partitions(&f.shared.0).await.iter().all(|(_, attached)| *attached));
}

// ---- The Region's database roles ----

/// A role's Secret as the Region published it.
async fn role_secret(f: &Fixture, region: &str, role: &str) -> BTreeMap<String, String> {
    FileSecrets::new(f.secrets_dir.path().to_path_buf())
        .read(region, &format!("postgres-{role}"))
        .await
        .unwrap()
}

/// The vault's data keys of Region eu-west-1, as its Countries left them.
async fn vault_keys(f: &Fixture) -> BTreeMap<String, String> {
    FileSecrets::new(f.secrets_dir.path().to_path_buf())
        .read("eu-west-1", "vault-keys")
        .await
        .unwrap()
}

/// What a statement did: `Ok`, refused for want of a privilege (SQLSTATE 42501), or
/// another error (which the tests treat as a failure of their own).
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ok,
    Refused,
    Other(String),
}

/// Runs `sql` as the role behind `url` in a transaction that is rolled back.
async fn attempt(url: &str, sql: &str) -> Verdict {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *tx)
        .await;
    let _ = tx.rollback().await;
    match result {
        Ok(_) => Verdict::Ok,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => Verdict::Refused,
        Err(e) => Verdict::Other(e.to_string()),
    }
}

/// What the roles are, own and may do in a database, and the Regions' Secrets: a repeat
/// reconcile must leave all of it as it was (a password set again would show as a new
/// SCRAM salt in `rolpassword`).
async fn grants_and_roles(pg: &TempCluster, secrets: &Fixture) -> Vec<String> {
    let mut conn = connect(pg).await;
    let mut lines: Vec<String> = sqlx::query_scalar(
        "SELECT format('role %s %s login=%s super=%s inherit=%s createrole=%s createdb=%s member_of=%s',
                       rolname, rolpassword, rolcanlogin, rolsuper, rolinherit, rolcreaterole, rolcreatedb,
                       ARRAY(SELECT roleid::regrole::text FROM pg_auth_members WHERE member = a.oid))
           FROM pg_authid a WHERE rolname LIKE 'meridian\\_%'
         UNION ALL
         SELECT format('relation %s.%s owner=%s acl=%s', relnamespace::regnamespace, relname, relowner::regrole, relacl)
           FROM pg_class
          WHERE relnamespace IN ('public'::regnamespace, 'vault'::regnamespace) AND relkind IN ('r', 'p', 'S', 'v')
         UNION ALL
         SELECT format('database %s acl=%s', datname, datacl) FROM pg_database WHERE datname = 'meridian'
         UNION ALL
         SELECT format('schema %s owner=%s acl=%s', nspname, nspowner::regrole, nspacl)
           FROM pg_namespace WHERE nspname IN ('public', 'vault')
         UNION ALL
         SELECT format('default acl %s', defaclacl) FROM pg_default_acl",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for region in ["eu-west-1", "eu-central-1"] {
        for role in ["owner", "workload", "vault"] {
            lines.push(format!(
                "{region} {role} {:?}",
                role_secret(secrets, region, role).await
            ));
        }
    }
    lines.sort();
    lines
}

#[tokio::test]
async fn each_role_may_do_exactly_what_it_is_for() {
    let f = Fixture::new().await;
    let es = country("es", "ES", "eu-west-1", "shared");
    let outcome = f.apply(&es, &f.shared.1, std::slice::from_ref(&es)).await;
    assert!(conditions::is_true(&outcome.status.conditions, "Ready"), "{outcome:?}");
    let status = f.shared.1.status.clone().unwrap();
    let roles: Vec<(&str, &str)> = status
        .database_roles
        .iter()
        .map(|r| (r.name.as_str(), r.purpose.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("meridian_eu_west_1_owner", "owner"),
            ("meridian_eu_west_1_workload", "workload"),
            ("meridian_eu_west_1_vault", "vault")
        ]
    );
    let workload = role_secret(&f, "eu-west-1", "workload").await["url"].clone();
    let owner = role_secret(&f, "eu-west-1", "owner").await["url"].clone();
    let vault = role_secret(&f, "eu-west-1", "vault").await["url"].clone();
    assert!(vault.starts_with("postgres://meridian_eu_west_1_vault:"), "{vault}");
    assert!(
        workload.starts_with("postgres://meridian_eu_west_1_workload:"),
        "{workload}"
    );
    // A practitioner and an audit record to work on.
    let seed = "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
                VALUES ('ES', '00000000-0000-0000-0000-000000000001', 'Ana', 'Ruiz', 'gp', 'Madrid');
                INSERT INTO audit (country_code, actor, action, resource, correlation_id, hash)
                VALUES ('ES', 'seed', 'read', 'Practitioner/1', gen_random_uuid(), '\\x00');";
    sqlx::raw_sql(seed)
        .execute(&mut connect(&f.shared.0).await)
        .await
        .unwrap();
    // Each statement runs alone, as its role, in a transaction that is rolled back.
    use Verdict::{Ok as Allowed, Refused};
    let table: &[(&str, &str, Verdict)] = &[
        // The workload: rows of the domain tables, through the partitioned tables.
        ("workload", "SELECT count(*) FROM practitioners", Allowed),
        (
            "workload",
            "INSERT INTO practitioners (country_code, id, given_name, family_name, specialty, city)
             VALUES ('ES', gen_random_uuid(), 'Luis', 'Gil', 'gp', 'Madrid')",
            Allowed,
        ),
        ("workload", "UPDATE practitioners SET city = 'Toledo'", Allowed),
        ("workload", "DELETE FROM practitioners", Allowed),
        (
            "workload",
            "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload)
             VALUES ('ES', 't', 'e', gen_random_uuid(), '{}')",
            Allowed,
        ),
        ("workload", "UPDATE audit_heads SET hash = '\\x01'", Allowed),
        (
            "workload",
            "INSERT INTO outbox_consumers (consumer, position) VALUES ('c', 1)",
            Allowed,
        ),
        // The audit trail: appended to and read, nothing else, on the table or a partition.
        (
            "workload",
            "INSERT INTO audit (country_code, actor, action, resource, correlation_id, hash)
             VALUES ('ES', 'w', 'read', 'Practitioner/1', gen_random_uuid(), '\\x00')",
            Allowed,
        ),
        ("workload", "SELECT count(*) FROM audit", Allowed),
        ("workload", "UPDATE audit SET actor = 'someone else'", Refused),
        ("workload", "DELETE FROM audit", Refused),
        ("workload", "TRUNCATE audit", Refused),
        ("workload", "UPDATE audit_es SET actor = 'someone else'", Refused),
        ("workload", "DELETE FROM audit_es", Refused),
        ("workload", "TRUNCATE audit_es", Refused),
        ("workload", "SELECT count(*) FROM audit_es", Refused),
        ("workload", "TRUNCATE practitioners_es", Refused),
        (
            "workload",
            "ALTER TABLE audit DISABLE TRIGGER audit_append_only",
            Refused,
        ),
        // No DDL anywhere, nothing of its own, no way into the owner.
        ("workload", "CREATE TABLE mine (i int)", Refused),
        ("workload", "CREATE TEMPORARY TABLE mine (i int)", Refused),
        ("workload", "CREATE SCHEMA mine", Refused),
        ("workload", "ALTER TABLE practitioners ADD COLUMN note text", Refused),
        ("workload", "CREATE INDEX ON appointments (reason)", Refused),
        ("workload", "DROP TABLE outbox_consumers", Refused),
        ("workload", "TRUNCATE practitioners", Refused),
        ("workload", "SET ROLE meridian_eu_west_1_owner", Refused),
        ("workload", "SELECT count(*) FROM meridian_schema_migrations", Refused),
        (
            "workload",
            "CREATE TABLE practitioners_xx PARTITION OF practitioners FOR VALUES IN ('XX')",
            Refused,
        ),
        // The PII vault is out of the workload role's reach, through the parents or not.
        ("workload", "SELECT * FROM vault.patients", Refused),
        ("workload", "SELECT * FROM vault.patient_history", Refused),
        ("workload", "SELECT * FROM vault.patients_es", Refused),
        (
            "workload",
            "INSERT INTO vault.patients (country_code, client_id, version, last_updated, key_id, sealed)
             VALUES ('ES', gen_random_uuid(), 1, now(), 'k1', '\\x00')",
            Refused,
        ),
        ("workload", "CREATE TABLE vault.mine (i int)", Refused),
        // The vault role: the vault and the records tables, nothing of booking.
        ("vault", "SELECT count(*) FROM vault.patients", Allowed),
        ("vault", "SELECT count(*) FROM vault.patient_history", Allowed),
        (
            "vault",
            "INSERT INTO vault.patients (country_code, client_id, version, last_updated, key_id, sealed)
             VALUES ('ES', gen_random_uuid(), 1, now(), 'k1', '\\x00')",
            Allowed,
        ),
        ("vault", "UPDATE vault.patients SET version = version + 1", Allowed),
        ("vault", "DELETE FROM vault.patient_history", Allowed),
        (
            "vault",
            "INSERT INTO patients (country_code, client_id) VALUES ('ES', gen_random_uuid())",
            Allowed,
        ),
        ("vault", "SELECT count(*) FROM fhir_resources", Allowed),
        ("vault", "SELECT count(*) FROM fhir_history", Allowed),
        (
            "vault",
            "INSERT INTO outbox (country_code, topic, event_type, aggregate_id, payload)
             VALUES ('ES', 't', 'e', gen_random_uuid(), '{}')",
            Allowed,
        ),
        ("vault", "SELECT count(*) FROM appointments", Refused),
        ("vault", "SELECT count(*) FROM practitioners", Refused),
        ("vault", "SELECT count(*) FROM availability", Refused),
        ("vault", "SELECT count(*) FROM meridian_schema_migrations", Refused),
        ("vault", "SELECT count(*) FROM vault.patients_es", Refused),
        ("vault", "TRUNCATE vault.patients", Refused),
        ("vault", "CREATE TABLE vault.mine (i int)", Refused),
        ("vault", "CREATE TABLE mine (i int)", Refused),
        ("vault", "ALTER TABLE vault.patients ADD COLUMN note text", Refused),
        (
            "vault",
            "INSERT INTO audit (country_code, actor, action, resource, correlation_id, hash)
             VALUES ('ES', 'v', 'read', 'Patient/1', gen_random_uuid(), '\\x00')",
            Allowed,
        ),
        ("vault", "SELECT count(*) FROM audit", Allowed),
        ("vault", "UPDATE audit SET actor = 'someone else'", Refused),
        ("vault", "DELETE FROM audit", Refused),
        ("vault", "TRUNCATE audit", Refused),
        ("vault", "DELETE FROM audit_es", Refused),
        ("vault", "TRUNCATE audit_es", Refused),
        ("vault", "SET ROLE meridian_eu_west_1_owner", Refused),
        // The owner: the schema is its own.
        ("owner", "CREATE TABLE scratch (i int); DROP TABLE scratch", Allowed),
        ("owner", "ALTER TABLE practitioners ADD COLUMN note text", Allowed),
        (
            "owner",
            "CREATE TABLE practitioners_xx PARTITION OF practitioners FOR VALUES IN ('XX')",
            Allowed,
        ),
        ("owner", "ALTER TABLE audit DETACH PARTITION audit_es", Allowed),
    ];
    let mut wrong = Vec::new();
    for (role, sql, expected) in table {
        let url = match *role {
            "owner" => &owner,
            "vault" => &vault,
            _ => &workload,
        };
        let got = attempt(url, sql).await;
        if &got != expected {
            wrong.push(format!("{role}: {sql}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The owner owns everything in the schema, partitions included; the workload nothing.
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT relowner::regrole::text FROM pg_class
          WHERE relnamespace IN ('public'::regnamespace, 'vault'::regnamespace) AND relkind IN ('r', 'p', 'S')
         UNION
         SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'vault'",
    )
    .fetch_all(&mut connect(&f.shared.0).await)
    .await
    .unwrap();
    assert_eq!(owners, ["meridian_eu_west_1_owner"]);
}

#[tokio::test]
async fn a_repeat_reconcile_changes_no_role_grant_or_secret() {
    let f = Fixture::new().await;
    let es = country("es", "ES", "eu-west-1", "shared");
    f.apply(&es, &f.shared.1, std::slice::from_ref(&es)).await;
    let before = grants_and_roles(&f.shared.0, &f).await;
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("relation public.audit_es owner=meridian_eu_west_1_owner acl=")),
        "{before:#?}"
    );
    assert!(
        before.iter().any(|l| l
            == "schema vault owner=meridian_eu_west_1_owner acl={meridian_eu_west_1_owner=UC/meridian_eu_west_1_owner,\
                meridian_eu_west_1_vault=U/meridian_eu_west_1_owner}"),
        "only the owner and the vault role on schema vault: {before:#?}"
    );
    let ddl = f.ctx.metrics.writes().ddl;
    let again = region::apply(&f.shared.1, &f.ctx).await;
    assert_eq!(Some(&again.status), f.shared.1.status.as_ref());
    f.apply(&es, &f.shared.1, std::slice::from_ref(&es)).await;
    assert_eq!(grants_and_roles(&f.shared.0, &f).await, before);
    assert_eq!(
        f.ctx.metrics.writes().ddl,
        ddl,
        "no statement changed a schema, role or privilege"
    );
    assert_eq!(
        vault_keys(&f).await.len(),
        2,
        "Spain's first key and which is active, once"
    );
}

#[tokio::test]
async fn extra_privileges_on_the_vault_are_taken_back_and_missing_ones_given() {
    let f = Fixture::new().await;
    let es = country("es", "ES", "eu-west-1", "shared");
    f.apply(&es, &f.shared.1, std::slice::from_ref(&es)).await;
    let before = grants_and_roles(&f.shared.0, &f).await;
    // Someone gives the clinical role the vault, and takes a privilege from the vault role.
    sqlx::raw_sql(
        "GRANT USAGE ON SCHEMA vault TO meridian_eu_west_1_workload;
         GRANT SELECT ON vault.patients TO meridian_eu_west_1_workload;
         GRANT USAGE ON SCHEMA vault TO PUBLIC;
         GRANT SELECT ON appointments TO meridian_eu_west_1_vault;
         REVOKE INSERT ON vault.patient_history FROM meridian_eu_west_1_vault;",
    )
    .execute(&mut connect(&f.shared.0).await)
    .await
    .unwrap();
    let workload = role_secret(&f, "eu-west-1", "workload").await["url"].clone();
    assert_eq!(attempt(&workload, "SELECT * FROM vault.patients").await, Verdict::Ok);
    let again = region::apply(&f.shared.1, &f.ctx).await;
    assert!(conditions::is_true(&again.status.conditions, "Ready"), "{again:?}");
    assert_eq!(grants_and_roles(&f.shared.0, &f).await, before);
    assert_eq!(
        attempt(&workload, "SELECT * FROM vault.patients").await,
        Verdict::Refused
    );
}

#[tokio::test]
async fn a_country_gets_one_data_key_that_retain_keeps_and_delete_removes() {
    let f = Fixture::new().await;
    let keys = || vault_keys(&f);
    let es = country("es", "ES", "eu-west-1", "shared");
    let mut it = country("it", "IT", "eu-west-1", "shared");
    it.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    let all = [es.clone(), it.clone()];
    let es = f.reconciled(&es, &f.shared.1, &all).await;
    let it = f.reconciled(&it, &f.shared.1, &all).await;
    let status = es.status.clone().unwrap();
    assert_eq!(status.data_keys, ["k1"], "{status:?}");
    let first = keys().await;
    assert_eq!(
        first.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ES.active", "ES.k1", "IT.active", "IT.k1"]
    );
    let ring = meridian_records::keys::Keyring::from_secret(&first, "ES").unwrap();
    assert_eq!(ring.active().id, "k1");
    let shown = serde_json::to_string(&status).unwrap();
    assert!(!shown.contains(&first["ES.k1"]), "no key material in status: {shown}");

    // A repeat, and a changed spec, keep the key as it is.
    let mut changed = es.clone();
    changed.spec.display_name = "España".into();
    let again = f.apply(&changed, &f.shared.1, &all).await;
    assert_eq!(again.status.data_keys, ["k1"]);
    assert_eq!(keys().await, first);

    // A rotation's key is kept by the reconcile, and the key it replaced too.
    let mut rotated = first.clone();
    assert_eq!(meridian_records::keys::rotate(&mut rotated, "ES").unwrap(), "k2");
    FileSecrets::new(f.secrets_dir.path().to_path_buf())
        .write("eu-west-1", "vault-keys", &rotated)
        .await
        .unwrap();
    f.apply(&es, &f.shared.1, &all).await;
    assert_eq!(keys().await, rotated);

    // Retain keeps the keys with the partitions; the country comes back to the same keys.
    f.cleanup(&es, &f.shared.1, std::slice::from_ref(&it)).await.unwrap();
    assert_eq!(keys().await, rotated);
    let back = f.apply(&es, &f.shared.1, &all).await;
    assert!(conditions::is_true(&back.status.conditions, "Ready"));
    assert_eq!(keys().await, rotated);

    // Delete drops Italy's partitions and then its keys, and nothing of Spain's.
    f.cleanup(&it, &f.shared.1, std::slice::from_ref(&es)).await.unwrap();
    let left = keys().await;
    assert!(!left.keys().any(|k| k.starts_with("IT.")), "{left:?}");
    assert_eq!(
        left,
        rotated
            .into_iter()
            .filter(|(k, _)| k.starts_with("ES."))
            .collect::<BTreeMap<_, _>>()
    );

    // A refused duplicate of Spain owns no key, and its Delete removes none.
    let mut dupe = country("spain", "ES", "eu-west-1", "shared");
    dupe.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    dupe.status = es.status.clone();
    let both = [es.clone(), dupe.clone()];
    let refused = f.apply(&dupe, &f.shared.1, &both).await;
    assert!(refused.status.data_keys.is_empty(), "{:?}", refused.status);
    assert_eq!(f.cleanup(&dupe, &f.shared.1, &both).await.unwrap(), []);
    assert_eq!(keys().await, left);
}

#[tokio::test]
async fn a_lost_secret_gets_a_new_password_that_the_role_then_has() {
    let f = Fixture::new().await;
    // Passwords, not trust, for everyone but the superuser the tests use.
    let hba = f.shared.0.cluster().root().join("pgdata/pg_hba.conf");
    std::fs::write(
        &hba,
        "host all meridian 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut connect(&f.shared.0).await)
        .await
        .unwrap();
    let old = role_secret(&f, "eu-west-1", "workload").await;
    assert_eq!(attempt(&old["url"], "SELECT 1").await, Verdict::Ok);
    let wrong = old["url"].replace(&old["password"], "not-the-password");
    assert!(PgConnection::connect(&wrong).await.is_err(), "passwords are checked");

    let path = f
        .secrets_dir
        .path()
        .join("regions/eu-west-1/secrets/postgres-workload.json");
    std::fs::remove_file(&path).unwrap();
    let outcome = region::apply(&f.shared.1, &f.ctx).await;
    assert!(conditions::is_true(&outcome.status.conditions, "Ready"), "{outcome:?}");
    let new = role_secret(&f, "eu-west-1", "workload").await;
    assert_ne!(new["password"], old["password"]);
    assert_eq!(attempt(&new["url"], "SELECT 1").await, Verdict::Ok);
    assert!(
        PgConnection::connect(&old["url"]).await.is_err(),
        "the lost password no longer opens the database"
    );
    // The owner's Secret was not lost: its password stays.
    let owner = role_secret(&f, "eu-west-1", "owner").await;
    assert_eq!(attempt(&owner["url"], "SELECT 1").await, Verdict::Ok);
}

// ---- SearchReady ----

/// An OpenSearch stand-in on 127.0.0.1 that answers the cluster health, as OpenSearch 2.x does.
async fn answering_search() -> String {
    let app = axum::Router::new().route(
        "/_cluster/health",
        axum::routing::get(|| async {
            axum::Json(
                serde_json::json!({"cluster_name": "meridian-eu-west-1", "status": "green", "number_of_nodes": 1}),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn search_ready_means_the_search_endpoint_answered() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let answering = answering_search().await;
    let mut secrets = StaticSecrets::default();
    secrets.insert("default", "eu-west-1-db", BTreeMap::from([("url".into(), pg.url())]));
    secrets.insert(
        "default",
        "refusing",
        BTreeMap::from([("url".into(), format!("http://{closed}"))]),
    );
    secrets.insert(
        "default",
        "answering",
        BTreeMap::from([("url".into(), answering.clone())]),
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new(
        Providers::new(None, Arc::new(secrets))
            .with_region_secrets(Arc::new(FileSecrets::new(dir.path().to_path_buf()))),
    );
    let with_search = |secret: &str| {
        let mut r = region("eu-west-1", "shared");
        r.spec.external.as_mut().unwrap().search_url_secret_ref = Some(meridian_crds::SecretKeyRef {
            name: secret.into(),
            namespace: None,
            key: "url".into(),
        });
        r
    };
    let mut seen = Vec::new();
    let mut last = None;
    for r in [
        with_search("refusing"),
        region("eu-west-1", "shared"),
        with_search("answering"),
    ] {
        let status = region::apply(&r, &ctx).await.status;
        last = Some((r, status.clone()));
        assert!(
            conditions::is_true(&status.conditions, "Ready"),
            "search never blocks Ready: {status:?}"
        );
        let search = conditions::find(&status.conditions, "SearchReady").unwrap();
        seen.push((search.status.clone(), search.reason.clone(), search.message.clone()));
    }
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str()),
        ("False", "SearchUnreachable"),
        "{seen:?}"
    );
    assert!(seen[0].2.contains(&closed.to_string()), "{seen:?}");
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        ("False", "NotConfigured"),
        "{seen:?}"
    );
    assert_eq!(
        (seen[2].0.as_str(), seen[2].1.as_str()),
        ("True", "SearchReachable"),
        "{seen:?}"
    );
    assert!(seen[2].2.contains("meridian-eu-west-1 (green)"), "{seen:?}");

    // The database's Secret goes away: the reconcile stops before it looks at search, and the
    // True it reported last time is not repeated as if checked.
    let (mut r, status) = last.unwrap();
    r.status = Some(status);
    r.spec.external.as_mut().unwrap().database_url_secret_ref.name = "gone".into();
    let status = region::apply(&r, &ctx).await.status;
    let database = conditions::find(&status.conditions, "DatabaseReady").unwrap();
    assert_eq!(database.status, "False", "{status:?}");
    let search = conditions::find(&status.conditions, "SearchReady").unwrap();
    assert_eq!(
        (search.status.as_str(), search.reason.as_str()),
        ("Unknown", "Blocked"),
        "{status:?}"
    );
    assert!(search.message.contains(&database.reason), "{status:?}");
}

// ---- External Regions in a cluster ----

mod kept;

#[tokio::test]
async fn an_external_region_gets_its_namespace_with_its_roles_secrets_and_only_a_delete_removes_it() {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut secrets = StaticSecrets::default();
    secrets.insert(
        "meridian-system",
        "eu-west-1-db",
        BTreeMap::from([("url".into(), pg.url())]),
    );
    let kube = kept::client();
    let ctx = Context::new(Providers::new(None, Arc::new(secrets)).with_region_secrets(Arc::new(
        meridian_operator::providers::KubeRegionSecrets::new(kube.clone()),
    )));
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(kube.clone());
    let ns = "meridian-region-eu-west-1";
    let mut r = region("eu-west-1", "shared");
    let status = region::apply(&r, &ctx).await.status;
    assert!(conditions::is_true(&status.conditions, "Ready"), "{status:?}");
    let labels = namespaces.get(ns).await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "meridian-operator");
    assert_eq!(labels["app.kubernetes.io/part-of"], "meridian");
    assert_eq!(
        (status.connection_secret.as_deref(), status.owner_secret.as_deref()),
        (
            Some("meridian-region-eu-west-1/postgres-workload"),
            Some("meridian-region-eu-west-1/postgres-owner")
        )
    );
    for role in ["owner", "workload"] {
        let secret = kept::secret(&kube, ns, &format!("postgres-{role}")).await;
        assert_eq!(secret["username"], format!("meridian_eu_west_1_{role}"));
        assert_eq!(attempt(&secret["url"], "SELECT 1").await, Verdict::Ok, "{role}");
    }
    assert_eq!(
        status.resources,
        Some(meridian_crds::RegionResources {
            namespace: Some(ns.into()),
            cloud: Vec::new(),
            topics: Vec::new(),
        })
    );
    r.status = Some(status);
    // Retain keeps the namespace (the roles still own the data); Delete removes it.
    region::cleanup(&r, &[], &[], &ctx).await.unwrap();
    assert!(namespaces.get_opt(ns).await.unwrap().is_some());
    r.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    region::cleanup(&r, &[], &[], &ctx).await.unwrap();
    assert!(namespaces.get_opt(ns).await.unwrap().is_none());
    // The external database is not the Region's to remove: its tables stay.
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'audit'")
        .fetch_one(&mut connect(&pg).await)
        .await
        .unwrap();
    assert_eq!(tables, 1);

    // Someone else's namespace of that name is used, never claimed, and a Delete leaves it.
    let theirs = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"team": "dba"}},
    });
    namespaces
        .patch(
            ns,
            &kube::api::PatchParams::apply("dba"),
            &kube::api::Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    r.spec.deletion_policy = meridian_crds::DeletionPolicy::Retain;
    let status = region::apply(&r, &ctx).await.status;
    assert!(conditions::is_true(&status.conditions, "Ready"), "{status:?}");
    assert_eq!(status.resources, None, "nothing of its own: {status:?}");
    assert_eq!(
        namespaces.get(ns).await.unwrap().metadata.labels.unwrap(),
        BTreeMap::from([("team".to_string(), "dba".to_string())])
    );
    r.status = Some(status);
    r.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    region::cleanup(&r, &[], &[], &ctx).await.unwrap();
    assert!(namespaces.get_opt(ns).await.unwrap().is_some());
}

#[tokio::test]
async fn a_database_built_before_the_roles_is_handed_to_the_owner_partitions_included() {
    // As earlier releases left it: migrated, with Spain's partitions, all the superuser's.
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    meridian_shared::schema::prepare(&mut connect(&pg).await, &["ES"])
        .await
        .unwrap();
    let mut secrets = StaticSecrets::default();
    secrets.insert("default", "eu-west-1-db", BTreeMap::from([("url".into(), pg.url())]));
    let dir = tempfile::tempdir().unwrap();
    let store = FileSecrets::new(dir.path().to_path_buf());
    let ctx = Context::new(
        Providers::new(None, Arc::new(secrets))
            .with_region_secrets(Arc::new(FileSecrets::new(dir.path().to_path_buf()))),
    );
    let status = region::apply(&region("eu-west-1", "shared"), &ctx).await.status;
    assert!(conditions::is_true(&status.conditions, "Ready"), "{status:?}");
    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT relnamespace::regnamespace || '.' || relname, relowner::regrole::text FROM pg_class
          WHERE relnamespace IN ('public'::regnamespace, 'vault'::regnamespace) AND relkind IN ('r', 'p', 'S')
         UNION ALL
         SELECT 'schema ' || nspname, nspowner::regrole::text FROM pg_namespace WHERE nspname = 'vault'
         UNION ALL
         SELECT proname::text, proowner::regrole::text FROM pg_proc
          WHERE pronamespace = 'public'::regnamespace AND proname = 'audit_is_append_only'
         ORDER BY 1",
    )
    .fetch_all(&mut connect(&pg).await)
    .await
    .unwrap();
    let not_owned: Vec<&(String, String)> = owners
        .iter()
        .filter(|(_, owner)| owner != "meridian_eu_west_1_owner")
        .collect();
    assert!(not_owned.is_empty(), "{not_owned:?}");
    for name in [
        "public.audit_es",
        "vault.patients_es",
        "vault.patient_history",
        "schema vault",
    ] {
        assert!(owners.iter().any(|(n, _)| n == name), "{name}: {owners:?}");
    }
    let workload = store.read("eu-west-1", "postgres-workload").await.unwrap()["url"].clone();
    for (sql, expected) in [
        (
            "INSERT INTO audit (country_code, actor, action, resource, correlation_id, hash)
          VALUES ('ES', 'w', 'read', 'Practitioner/1', gen_random_uuid(), '\\x00')",
            Verdict::Ok,
        ),
        ("TRUNCATE audit_es", Verdict::Refused),
        ("DELETE FROM audit_es", Verdict::Refused),
        ("SELECT * FROM vault.patients", Verdict::Refused),
    ] {
        assert_eq!(attempt(&workload, sql).await, expected, "{sql}");
    }
    let vault = store.read("eu-west-1", "postgres-vault").await.unwrap()["url"].clone();
    for (sql, expected) in [
        ("SELECT count(*) FROM vault.patients", Verdict::Ok),
        ("SELECT count(*) FROM appointments", Verdict::Refused),
        ("TRUNCATE audit_es", Verdict::Refused),
    ] {
        assert_eq!(attempt(&vault, sql).await, expected, "{sql}");
    }
}
