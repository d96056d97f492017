//! The reconcilers against real PostgreSQL clusters started by the tests: migrations,
//! partitions in the right Region only, residency refusal, Retain, Delete, abandon.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_crds::{Country, Region};
use meridian_localpg::TempCluster;
use meridian_operator::conditions;
use meridian_operator::controller::{Context, Next, country, region};
use meridian_operator::providers::{Providers, StaticSecrets};
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
        let providers =
            Providers::new(None, Arc::new(secrets)).with_search(meridian_search::Backend::Embedded(search.clone()));
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

/// `(partition, attached)` for every table whose name ends in `_<code>`, sorted.
async fn partitions(pg: &TempCluster) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT relname::text, relispartition FROM pg_class
          WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relname ~ '_[a-z]{2}$'
          ORDER BY relname",
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
    assert_eq!(status.connection_secret.as_deref(), Some("eu-west-1-db"));
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
            "appointments_es",
            "appointments_it",
            "audit_es",
            "audit_heads_es",
            "audit_heads_it",
            "audit_it",
            "availability_es",
            "availability_it",
            "outbox_es",
            "outbox_it",
            "practitioners_es",
            "practitioners_it"
        ]
    );
    assert!(shared.iter().all(|(_, attached)| *attached));
    let dedicated = partitions(&f.dedicated.0).await;
    assert_eq!(
        names(&dedicated),
        [
            "appointments_de",
            "audit_de",
            "audit_heads_de",
            "availability_de",
            "outbox_de",
            "practitioners_de"
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
    let ctx = Context::new(Providers::new(None, Arc::new(secrets)));
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
    let blocked = region::cleanup(&f.shared.1, &[es], &f.ctx).await.unwrap_err();
    assert_eq!(blocked.reason, "CountriesStillBound");
    assert!(region::cleanup(&f.shared.1, &[], &f.ctx).await.is_ok());
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
    let report = residency::report(&regions, &[de, es], &f.ctx, None).await;
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
    let ctx = Context::new(Providers::new(None, Arc::new(secrets)));
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
