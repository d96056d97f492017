//! Country: residency first, then one list partition per partitioned table in the
//! database of the Country's Region, then its search index (an alias over a version built
//! with the country's analyzer and synonyms).

use meridian_crds::condition_types::{DATABASE_READY, READY, RESIDENCY_COMPLIANT, ROUTES_READY, SEARCH_INDEX_READY};
use meridian_crds::{Country, CountryStatus, DeletionPolicy, Isolation, Region, Residency, SearchAnalyzer};
use meridian_search::{self as search, Language};

use super::{Blocked, Context, Next, Outcome, RESYNC, RETRY, abandoned};
use crate::conditions::{self, Report};
use crate::plan::{self, Change, PartitionGoal};
use crate::providers::Endpoint;
use crate::validate;

/// What a Country's reconcile reads about other objects.
#[derive(Clone, Copy)]
pub struct World<'a> {
    /// The Region named in `spec.region`, if it exists.
    pub region: Option<&'a Region>,
    /// Every Country, to find who holds a dedicated Region.
    pub countries: &'a [Country],
}

/// The Region's endpoint and the changes its database needs for this Country.
pub struct Planned {
    pub region: String,
    pub endpoint: Option<Endpoint>,
    pub changes: Vec<Change>,
    /// The Region's schema is not current yet: `changes` assume it will be.
    pub schema_pending: bool,
}

/// Checks the binding of `country` to `region`. Pure.
pub fn check_residency(country: &Country, region: &Region, countries: &[Country]) -> Result<Report, Report> {
    let spec = &country.spec;
    let region_name = region.metadata.name.as_deref().unwrap_or_default();
    let cloud = &region.spec.cloud_region;
    let violation = |reason, message: String| Err(Report::failed(RESIDENCY_COMPLIANT, reason, message));
    if spec.residency == Residency::Strict && region.spec.isolation != Isolation::Dedicated {
        return violation(
            "RegionNotDedicated",
            format!(
                "spec.residency is strict but Region {region_name} is shared; bind the country to a dedicated Region"
            ),
        );
    }
    if !spec.allowed_cloud_regions.is_empty() && !spec.allowed_cloud_regions.contains(cloud) {
        return violation(
            "CloudRegionNotAllowed",
            format!(
                "Region {region_name} is in {cloud}, which is not in spec.allowedCloudRegions [{}]",
                spec.allowed_cloud_regions.join(", ")
            ),
        );
    }
    if region.spec.isolation == Isolation::Dedicated
        && let Some(holder) = dedicated_holder(region_name, countries)
        && holder.metadata.name != country.metadata.name
    {
        return violation(
            "RegionAlreadyDedicated",
            format!(
                "Region {region_name} is dedicated to country {}; a dedicated Region serves exactly one country",
                holder.metadata.name.as_deref().unwrap_or_default()
            ),
        );
    }
    Ok(Report::ok(
        RESIDENCY_COMPLIANT,
        "Compliant",
        format!(
            "{} residency satisfied by Region {region_name} in {cloud}",
            format!("{:?}", spec.residency).to_lowercase()
        ),
    ))
}

/// The Country a dedicated Region serves: the oldest one bound to it (then by name).
fn dedicated_holder<'a>(region: &str, countries: &'a [Country]) -> Option<&'a Country> {
    countries
        .iter()
        .filter(|c| c.spec.region == region && c.metadata.deletion_timestamp.is_none())
        .min_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name).cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        })
}

/// Validation, Region lookup and residency: everything that must hold before any store
/// is touched. Returns the Region and the residency condition.
fn admit<'a>(country: &Country, world: World<'a>) -> Result<(&'a Region, Report), Blocked> {
    let errors = validate::country(country);
    if !errors.is_empty() {
        let message = validate::describe(&errors);
        return Err(Blocked::new(
            vec![Report::failed(READY, "InvalidSpec", message)],
            Next::AwaitChange,
        ));
    }
    let Some(region) = world.region else {
        let message = format!("spec.region: Region {} does not exist", country.spec.region);
        return Err(Blocked::new(
            vec![
                Report::failed(DATABASE_READY, "RegionNotFound", &message),
                Report::failed(READY, "RegionNotFound", message),
            ],
            Next::Requeue(RETRY),
        ));
    };
    match check_residency(country, region, world.countries) {
        Ok(compliant) => Ok((region, compliant)),
        Err(violation) => {
            let ready = Report::failed(READY, violation.reason, violation.message.clone());
            Err(Blocked::new(vec![violation, ready], Next::AwaitChange))
        }
    }
}

/// Plans the Country's partitions without changing anything.
pub async fn plan(country: &Country, world: World<'_>, ctx: &Context) -> Result<(Planned, Report), Blocked> {
    let (region, compliant) = admit(country, world)?;
    let region_name = region.metadata.name.clone().unwrap_or_default();
    let waiting = |reason: &'static str, message: String| {
        Blocked::new(
            vec![
                compliant.clone(),
                Report::failed(DATABASE_READY, reason, &message),
                Report::failed(READY, reason, message),
            ],
            Next::Requeue(RETRY),
        )
    };
    let endpoint = ctx
        .providers
        .locate(region)
        .await
        .map_err(|e| waiting("RegionNotReady", format!("Region {region_name}: {e}")))?;
    let db = ctx
        .databases
        .get(&endpoint.url)
        .map_err(|e| waiting("RegionNotReady", format!("Region {region_name}: {e}")))?;
    let unreachable =
        |e: crate::backends::postgres::DbError| waiting("DatabaseUnreachable", format!("Region {region_name}: {e}"));
    let schema_pending = !plan::migrations(&db.applied_migrations().await.map_err(unreachable)?).is_empty();
    let observed = if schema_pending {
        Default::default()
    } else {
        db.observe(&country.spec.code).await.map_err(unreachable)?
    };
    let changes = plan::partitions(&country.spec.code, PartitionGoal::Present, &observed);
    Ok((
        Planned {
            region: region_name,
            endpoint: Some(endpoint),
            changes,
            schema_pending,
        },
        compliant,
    ))
}

/// Plans against a Region whose database does not exist yet: every partition is new.
pub fn plan_fresh(country: &Country, world: World<'_>) -> Result<(Planned, Report), Blocked> {
    let (region, compliant) = admit(country, world)?;
    let changes = plan::partitions(&country.spec.code, PartitionGoal::Present, &Default::default());
    let region = region.metadata.name.clone().unwrap_or_default();
    Ok((
        Planned {
            region,
            endpoint: None,
            changes,
            schema_pending: true,
        },
        compliant,
    ))
}

/// Reconciles a Country: residency, partitions, status.
pub async fn apply(country: &Country, world: World<'_>, ctx: &Context) -> Outcome<CountryStatus> {
    let previous = country.status.clone().unwrap_or_default();
    let generation = country.metadata.generation;
    let finish = |reports: &[Report], update: CountryStatus| CountryStatus {
        conditions: conditions::merge(&previous.conditions, reports, generation),
        ..update
    };
    if country.spec.suspend {
        let reports = [Report::failed(
            READY,
            "Suspended",
            "spec.suspend is true: the country is not reconciled or served",
        )];
        return Outcome {
            status: finish(&reports, previous.clone()),
            next: Next::AwaitChange,
            failure: None,
        };
    }
    // A Region that is not Ready yet (still starting, migrating) makes the Country wait.
    if let Some(region) = world.region
        && !region
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_true(&s.conditions, READY))
        && validate::country(country).is_empty()
    {
        let why = region
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, READY))
            .map_or("not reconciled yet".to_string(), |c| {
                format!("{}: {}", c.reason, c.message)
            });
        let message = format!("waiting for Region {}: {why}", country.spec.region);
        let mut reports = vec![
            Report::failed(DATABASE_READY, "RegionNotReady", &message),
            Report::failed(READY, "RegionNotReady", message),
        ];
        if let Ok(compliant) = check_residency(country, region, world.countries) {
            reports.insert(0, compliant);
        }
        return Outcome {
            status: finish(&reports, previous.clone()),
            next: Next::Requeue(RETRY),
            failure: Some("RegionNotReady"),
        };
    }
    let (planned, compliant) = match plan(country, world, ctx).await {
        Ok(planned) => planned,
        Err(blocked) => {
            return Outcome {
                status: finish(&blocked.reports, previous.clone()),
                next: blocked.next,
                failure: Some(blocked.reason),
            };
        }
    };
    let endpoint = planned
        .endpoint
        .as_ref()
        .expect("planning against a live database yields its endpoint");
    if planned.schema_pending {
        let message = format!("Region {} has pending schema migrations", planned.region);
        let reports = [
            compliant,
            Report::failed(DATABASE_READY, "RegionNotReady", &message),
            Report::failed(READY, "RegionNotReady", message),
        ];
        return Outcome {
            status: finish(&reports, previous.clone()),
            next: Next::Requeue(RETRY),
            failure: Some("RegionNotReady"),
        };
    }
    let db = ctx.databases.get(&endpoint.url).expect("URL parsed during planning");
    if let Err(e) = db.apply(&planned.changes).await {
        let message = format!("Region {}: {e}", planned.region);
        let reports = [
            compliant,
            Report::failed(DATABASE_READY, "PartitionFailed", &message),
            Report::failed(READY, "PartitionFailed", message),
        ];
        return Outcome {
            status: finish(&reports, previous.clone()),
            next: Next::Requeue(RETRY),
            failure: Some("PartitionFailed"),
        };
    }
    let partitions = plan::partition_names(&country.spec.code);
    let database = Report::ok(
        DATABASE_READY,
        "PartitionsReady",
        format!("{} partitions in Region {}", partitions.len(), planned.region),
    );
    let index = match search_index(country, world.region, db.pool(), ctx).await {
        Ok(index) => index,
        Err(message) => {
            let reports = [
                compliant,
                database,
                Report::failed(SEARCH_INDEX_READY, "SearchIndexFailed", &message),
                Report::failed(READY, "SearchIndexFailed", message),
            ];
            return Outcome {
                status: finish(&reports, previous.clone()),
                next: Next::Requeue(RETRY),
                failure: Some("SearchIndexFailed"),
            };
        }
    };
    let routes = match ctx.gateway.publish(country).await {
        Ok(routes) => routes,
        Err(e) => {
            let message = e.to_string();
            let reports = [
                compliant,
                database,
                index_ready(country, &index),
                Report::failed(ROUTES_READY, "RoutesFailed", &message),
                Report::failed(READY, "RoutesFailed", message),
            ];
            return Outcome {
                status: finish(&reports, previous.clone()),
                next: Next::Requeue(RETRY),
                failure: Some("RoutesFailed"),
            };
        }
    };
    let reports = [
        compliant,
        database,
        index_ready(country, &index),
        Report::ok(
            ROUTES_READY,
            "RoutesPublished",
            format!("served under {}", routes.join(", ")),
        ),
        Report::ok(
            READY,
            "Reconciled",
            format!("country {} is served from Region {}", country.spec.code, planned.region),
        ),
    ];
    let status = finish(
        &reports,
        CountryStatus {
            observed_generation: generation,
            region: Some(planned.region),
            partitions,
            index_alias: Some(search::alias(&country.spec.code)),
            index: Some(index.index),
            routes,
            ..previous.clone()
        },
    );
    Outcome {
        status,
        next: Next::Requeue(RESYNC),
        failure: None,
    }
}

fn index_ready(country: &Country, index: &search::versions::Ensured) -> Report {
    let alias = search::alias(&country.spec.code);
    if index.built {
        Report::ok(
            SEARCH_INDEX_READY,
            "IndexBuilt",
            format!(
                "{alias} points at {}, built from {} practitioners",
                index.index, index.documents
            ),
        )
    } else {
        Report::ok(
            SEARCH_INDEX_READY,
            "IndexCurrent",
            format!("{alias} points at {}", index.index),
        )
    }
}

/// What the country's search index is built with: its `spec.search`, or the language of
/// its locale without synonyms.
pub fn index_settings(country: &Country) -> search::IndexSettings {
    let language = |analyzer: SearchAnalyzer| match analyzer {
        SearchAnalyzer::Standard => Language::Standard,
        SearchAnalyzer::English => Language::English,
        SearchAnalyzer::German => Language::German,
        SearchAnalyzer::French => Language::French,
        SearchAnalyzer::Spanish => Language::Spanish,
        SearchAnalyzer::Italian => Language::Italian,
        SearchAnalyzer::Dutch => Language::Dutch,
        SearchAnalyzer::Portuguese => Language::Portuguese,
        SearchAnalyzer::Swedish => Language::Swedish,
        SearchAnalyzer::Danish => Language::Danish,
        SearchAnalyzer::Norwegian => Language::Norwegian,
        SearchAnalyzer::Finnish => Language::Finnish,
    };
    match &country.spec.search {
        Some(settings) => search::IndexSettings {
            language: language(settings.analyzer),
            synonyms: settings.synonyms.clone(),
        },
        None => {
            let primary = country
                .spec
                .locale
                .split('-')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let language = match primary.as_str() {
                "en" => Language::English,
                "de" => Language::German,
                "fr" => Language::French,
                "es" => Language::Spanish,
                "it" => Language::Italian,
                "nl" => Language::Dutch,
                "pt" => Language::Portuguese,
                "sv" => Language::Swedish,
                "da" => Language::Danish,
                "nb" | "nn" | "no" => Language::Norwegian,
                "fi" => Language::Finnish,
                _ => Language::Standard,
            };
            search::IndexSettings {
                language,
                synonyms: Vec::new(),
            }
        }
    }
}

/// Makes the country's alias point at an index built with its current settings.
async fn search_index(
    country: &Country,
    region: Option<&Region>,
    pool: &sqlx::PgPool,
    ctx: &Context,
) -> Result<search::versions::Ensured, String> {
    let region = region.ok_or_else(|| format!("Region {} does not exist", country.spec.region))?;
    let backend = ctx.providers.search(region).await.map_err(|e| e.message)?;
    search::versions::ensure(&backend, pool, &country.spec.code, &index_settings(country))
        .await
        .map_err(|e| e.to_string())
}

/// Cleans up a deleted Country: `Retain` detaches its partitions and keeps them, `Delete`
/// drops them. With the abandon annotation the stores are left alone. Returns what was done.
pub async fn cleanup(country: &Country, region: Option<&Region>, ctx: &Context) -> Result<Vec<Change>, Blocked> {
    // Traffic stops first, whatever happens to the data.
    ctx.gateway.withdraw(country).await.map_err(|e| {
        Blocked::new(
            vec![Report::failed(READY, "RoutesFailed", e.to_string())],
            Next::Requeue(RETRY),
        )
    })?;
    if abandoned(&country.metadata) {
        return Ok(Vec::new());
    }
    let blocked = |reason: &'static str, message: String| {
        let message = format!(
            "cannot clean up: {message}; fix the Region, or annotate {}=true to finish without touching its stores",
            meridian_crds::ABANDON_ANNOTATION
        );
        Blocked::new(vec![Report::failed(READY, reason, message)], Next::Requeue(RETRY))
    };
    let Some(region) = region else {
        return Err(blocked(
            "RegionNotFound",
            format!("Region {} does not exist", country.spec.region),
        ));
    };
    let endpoint = ctx
        .providers
        .locate(region)
        .await
        .map_err(|e| blocked("DatabaseUnreachable", e.message))?;
    let db = ctx
        .databases
        .get(&endpoint.url)
        .map_err(|e| blocked("DatabaseUnreachable", e.to_string()))?;
    let observed = db
        .observe(&country.spec.code)
        .await
        .map_err(|e| blocked("DatabaseUnreachable", e.to_string()))?;
    let goal = match country.spec.deletion_policy {
        DeletionPolicy::Retain => PartitionGoal::Detached,
        DeletionPolicy::Delete => PartitionGoal::Dropped,
    };
    let changes = plan::partitions(&country.spec.code, goal, &observed);
    db.apply(&changes)
        .await
        .map_err(|e| blocked("CleanupFailed", e.to_string()))?;
    // `Retain` keeps the index as it keeps the partitions: a returning country finds both.
    if country.spec.deletion_policy == DeletionPolicy::Delete {
        let backend = ctx
            .providers
            .search(region)
            .await
            .map_err(|e| blocked("SearchUnreachable", e.message))?;
        search::versions::remove(&backend, &country.spec.code)
            .await
            .map_err(|e| blocked("CleanupFailed", format!("cannot delete the search index: {e}")))?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn country(yaml: &str) -> Country {
        serde_yaml_ng::from_str(yaml).expect("test manifest parses")
    }

    fn region(name: &str, cloud: &str, isolation: &str) -> Region {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: platform.meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: {name}}}\n\
             spec: {{provider: local, cloudRegion: {cloud}, isolation: {isolation}}}"
        ))
        .expect("test region parses")
    }

    const DE: &str = "apiVersion: platform.meridian.dev/v1alpha1
kind: Country
metadata: {name: de}
spec:
  code: DE
  displayName: Germany
  timezone: Europe/Berlin
  locale: de-DE
  languages: [de]
  currency: EUR
  region: eu-central-1
  residency: strict
  allowedCloudRegions: [eu-central-1]
  regulatory: {retentionYears: 10, minimumAge: 16}
";

    #[test]
    fn strict_country_on_its_dedicated_region_is_compliant() {
        let de = country(DE);
        let report = check_residency(
            &de,
            &region("eu-central-1", "eu-central-1", "dedicated"),
            std::slice::from_ref(&de),
        )
        .unwrap();
        assert_eq!(report.reason, "Compliant");
    }

    #[test]
    fn strict_country_on_a_shared_region_is_refused() {
        let de = country(DE);
        let err = check_residency(&de, &region("eu-central-1", "eu-central-1", "shared"), &[]).unwrap_err();
        assert_eq!(err.reason, "RegionNotDedicated");
        assert!(err.message.contains("spec.residency"), "{}", err.message);
    }

    #[test]
    fn region_outside_the_allowed_cloud_regions_is_refused() {
        let de = country(DE);
        let err = check_residency(&de, &region("eu-central-1", "eu-west-1", "dedicated"), &[]).unwrap_err();
        assert_eq!(err.reason, "CloudRegionNotAllowed");
        assert!(err.message.contains("spec.allowedCloudRegions"), "{}", err.message);
    }

    #[test]
    fn a_dedicated_region_serves_only_its_first_country() {
        let de = country(DE);
        let at = country(&DE.replace("name: de", "name: at").replace("code: DE", "code: AT"));
        let dedicated = region("eu-central-1", "eu-central-1", "dedicated");
        let world = [at.clone(), de.clone()];
        assert!(
            check_residency(&at, &dedicated, &world).is_ok(),
            "at sorts first by name"
        );
        assert_eq!(
            check_residency(&de, &dedicated, &world).unwrap_err().reason,
            "RegionAlreadyDedicated"
        );
    }

    #[test]
    fn invalid_spec_and_missing_region_block_before_any_store_is_touched() {
        let bad = country(&DE.replace("Europe/Berlin", "Mars/Olympus"));
        let blocked = admit(
            &bad,
            World {
                region: None,
                countries: &[],
            },
        )
        .unwrap_err();
        assert_eq!(blocked.reason, "InvalidSpec");
        assert_eq!(blocked.next, Next::AwaitChange);
        assert!(blocked.message().contains("spec.timezone"), "{}", blocked.message());

        let orphan = country(DE);
        let blocked = admit(
            &orphan,
            World {
                region: None,
                countries: &[],
            },
        )
        .unwrap_err();
        assert_eq!(blocked.reason, "RegionNotFound");
        assert!(blocked.message().contains("spec.region"), "{}", blocked.message());
    }
}
