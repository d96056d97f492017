//! Country: admission (a valid spec, a code no older Country holds, an existing Region),
//! then a list of steps, each owning its condition: residency, one list partition per
//! partitioned table in the Region's database, the search index (an alias over a version
//! built with the country's analyzer and synonyms), the gateway route. The status records
//! what the Country created; its cleanup touches nothing else.

use meridian_crds::condition_types::{DATABASE_READY, READY, RESIDENCY_COMPLIANT, ROUTES_READY, SEARCH_INDEX_READY};
use meridian_crds::{
    Country, CountryStatus, DeletionPolicy, Isolation, Region, Residency, SearchAnalyzer, code_holder,
};
use meridian_records::keys::{self, VAULT_KEYS_SECRET};
use meridian_search::{self as search, Language};

use super::{Blocked, Context, Next, Outcome, RESYNC, RETRY, abandoned};
use crate::backends::postgres::{DbError, RegionDb};
use crate::conditions::{self, Report};
use crate::plan::{self, Change, PartitionGoal};
use crate::providers::{Endpoint, ProviderError};
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

/// Validation, the code's uniqueness and the Region's existence: everything that must hold
/// before any store is touched. A Country refused here owns nothing.
fn admit<'a>(country: &Country, world: World<'a>) -> Result<&'a Region, Blocked> {
    let errors = validate::country(country);
    if !errors.is_empty() {
        let message = validate::describe(&errors);
        return Err(Blocked::new(
            vec![Report::failed(READY, "InvalidSpec", message)],
            Next::AwaitChange,
        ));
    }
    let holder = code_holder(country, world.countries);
    if holder.metadata.name != country.metadata.name {
        let message = format!(
            "spec.code: {} is already held by Country {}, created earlier; this Country is refused and owns nothing \
             (delete it, or give it another code)",
            country.spec.code,
            holder.metadata.name.as_deref().unwrap_or_default()
        );
        // Looked at again when the holder goes away (the drivers wake Countries of a code).
        return Err(Blocked::new(
            vec![Report::failed(READY, "CodeConflict", message)],
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
    Ok(region)
}

/// Admission and residency, for planning.
fn admit_and_check<'a>(country: &Country, world: World<'a>) -> Result<(&'a Region, Report), Blocked> {
    let region = admit(country, world)?;
    match check_residency(country, region, world.countries) {
        Ok(compliant) => Ok((region, compliant)),
        Err(violation) => {
            let ready = Report::failed(READY, violation.reason, violation.message.clone());
            Err(Blocked::new(vec![violation, ready], Next::AwaitChange))
        }
    }
}

/// The changes the Region's database needs for the Country's partitions, and the database.
async fn plan_partitions(country: &Country, region: &Region, ctx: &Context) -> Result<(Planned, RegionDb), Stop> {
    let region_name = region.metadata.name.clone().unwrap_or_default();
    let endpoint = ctx
        .providers
        .locate(region)
        .await
        .map_err(|e| Stop::retry("RegionNotReady", format!("Region {region_name}: {e}")))?;
    let db = ctx
        .databases
        .get(&endpoint.url)
        .map_err(|e| Stop::retry("RegionNotReady", format!("Region {region_name}: {e}")))?;
    let unreachable = |e: DbError| Stop::retry("DatabaseUnreachable", format!("Region {region_name}: {e}"));
    if !plan::migrations(&db.applied_migrations().await.map_err(unreachable)?).is_empty() {
        return Err(Stop::retry(
            "SchemaPending",
            format!("Region {region_name} has pending schema migrations"),
        ));
    }
    let observed = db.observe(&country.spec.code).await.map_err(unreachable)?;
    let changes = plan::partitions(&country.spec.code, PartitionGoal::Present, &observed);
    let planned = Planned {
        region: region_name,
        endpoint: Some(endpoint),
        changes,
        schema_pending: false,
    };
    Ok((planned, db))
}

/// Plans the Country's partitions without changing anything.
pub async fn plan(country: &Country, world: World<'_>, ctx: &Context) -> Result<(Planned, Report), Blocked> {
    let (region, compliant) = admit_and_check(country, world)?;
    match plan_partitions(country, region, ctx).await {
        Ok((planned, _)) => Ok((planned, compliant)),
        Err(stop) => Err(Blocked::new(
            vec![
                compliant,
                Report::failed(DATABASE_READY, stop.reason, &stop.message),
                Report::failed(READY, stop.reason, stop.message),
            ],
            stop.next,
        )),
    }
}

/// Plans against a Region whose database does not exist yet: every partition is new.
pub fn plan_fresh(country: &Country, world: World<'_>) -> Result<(Planned, Report), Blocked> {
    let (region, compliant) = admit_and_check(country, world)?;
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

/// The steps of a Country's reconcile, in order. Each owns one condition; a step that
/// cannot finish stops the ones after it, whose conditions become `Unknown` (they were not
/// checked this time). Validation, the code's uniqueness and the Region's existence are
/// checked before any step: a Country that fails them owns nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The Region is one the country's residency rules allow.
    Residency,
    /// One list partition per partitioned table in the Region's database.
    Partitions,
    /// The search index `practitioners_{cc}`, an alias over a versioned index.
    SearchIndex,
    /// The gateway route `/{cc}/v1` to the Region's workloads.
    Routes,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Residency, Step::Partitions, Step::SearchIndex, Step::Routes];

    /// The condition this step owns.
    pub fn condition(self) -> &'static str {
        match self {
            Step::Residency => RESIDENCY_COMPLIANT,
            Step::Partitions => DATABASE_READY,
            Step::SearchIndex => SEARCH_INDEX_READY,
            Step::Routes => ROUTES_READY,
        }
    }
}

/// Why a step stopped the reconcile.
struct Stop {
    reason: &'static str,
    message: String,
    next: Next,
}

impl Stop {
    fn retry(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            next: Next::Requeue(RETRY),
        }
    }
}

/// One reconcile in progress: what the steps share, and the status they build up. Each
/// step records in `status` what it created as soon as it exists, so that a later failure
/// still leaves the record that the cleanup relies on.
struct Run<'a> {
    country: &'a Country,
    world: World<'a>,
    ctx: &'a Context,
    region: &'a Region,
    status: CountryStatus,
    db: Option<RegionDb>,
    /// Set when the Region has no search store: the Country is served without search.
    search_missing: Option<String>,
}

impl Run<'_> {
    async fn step(&mut self, step: Step) -> Result<Report, Stop> {
        match step {
            Step::Residency => self.residency(),
            Step::Partitions => self.partitions().await,
            Step::SearchIndex => self.search_index().await,
            Step::Routes => self.routes().await,
        }
    }

    fn residency(&mut self) -> Result<Report, Stop> {
        check_residency(self.country, self.region, self.world.countries).map_err(|violation| Stop {
            reason: violation.reason,
            message: violation.message,
            next: Next::AwaitChange,
        })
    }

    async fn partitions(&mut self) -> Result<Report, Stop> {
        let region_name = self.region.metadata.name.clone().unwrap_or_default();
        // A Region that is not Ready yet (still starting, migrating) makes the Country wait;
        // a change of the Region wakes it.
        let region_ready = self
            .region
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_true(&s.conditions, READY));
        if !region_ready {
            let why = self
                .region
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, READY))
                .map_or("not reconciled yet".to_string(), |c| {
                    format!("{}: {}", c.reason, c.message)
                });
            return Err(Stop::retry(
                "RegionNotReady",
                format!("waiting for Region {region_name}: {why}"),
            ));
        }
        let (planned, db) = plan_partitions(self.country, self.region, self.ctx).await?;
        db.apply(&planned.changes)
            .await
            .map_err(|e| Stop::retry("PartitionFailed", format!("Region {region_name}: {e}")))?;
        let partitions = plan::partition_names(&self.country.spec.code);
        self.status.region = Some(region_name.clone());
        self.status.partitions = partitions.clone();
        self.db = Some(db);
        let created = ensure_data_key(self.ctx, self.region, &self.country.spec.code)
            .await
            .map_err(|e| Stop::retry("DataKeysFailed", format!("Region {region_name}: {e}")))?;
        for id in created {
            if !self.status.data_keys.contains(&id) {
                self.status.data_keys.push(id);
            }
        }
        Ok(Report::ok(
            DATABASE_READY,
            "PartitionsReady",
            format!(
                "{} partitions and the vault's data key in Region {region_name}",
                partitions.len()
            ),
        ))
    }

    async fn search_index(&mut self) -> Result<Report, Stop> {
        let code = &self.country.spec.code;
        let backend = match self.ctx.providers.search(self.region).await {
            Ok(backend) => backend,
            // Search is optional for a Region: its countries are served without it.
            Err(e) if e.reason == "SearchNotConfigured" => {
                let message = format!("Region {} has no search store: {}", self.country.spec.region, e.message);
                self.search_missing = Some(message.clone());
                return Ok(Report::failed(SEARCH_INDEX_READY, "NotConfigured", message));
            }
            Err(e) => return Err(Stop::retry("SearchIndexFailed", e.message)),
        };
        let db = self.db.as_ref().expect("the partitions step ran first");
        let index = search::versions::ensure(&backend, db.pool(), code, &index_settings(self.country))
            .await
            .map_err(|e| Stop::retry("SearchIndexFailed", e.to_string()))?;
        // The version built earlier and still current: its condition stays as it was, so
        // that a resync with nothing changed writes no status.
        let kept = conditions::find(&self.status.conditions, SEARCH_INDEX_READY).filter(|c| {
            !index.built
                && c.status == "True"
                && c.reason == "IndexBuilt"
                && self.status.index.as_deref() == Some(index.index.as_str())
        });
        let report = match kept {
            Some(built) => Report::ok(SEARCH_INDEX_READY, "IndexBuilt", built.message.clone()),
            None => index_ready(self.country, &index),
        };
        self.status.index_alias = Some(search::alias(code));
        self.status.index = Some(index.index.clone());
        Ok(report)
    }

    async fn routes(&mut self) -> Result<Report, Stop> {
        let routes = self.ctx.gateway.publish(self.country).await.map_err(|e| {
            // The Region's namespace is made by the Region's reconcile: wait for it.
            let reason = if e.is_missing_namespace() {
                "NamespaceMissing"
            } else {
                "RoutesFailed"
            };
            Stop::retry(reason, e.to_string())
        })?;
        self.status.routes = routes.clone();
        Ok(Report::ok(
            ROUTES_READY,
            "RoutesPublished",
            format!("served under {}", routes.join(", ")),
        ))
    }
}

/// Reconciles a Country: admission, then each [`Step`] in turn, then `Ready`.
pub async fn apply(country: &Country, world: World<'_>, ctx: &Context) -> Outcome<CountryStatus> {
    let previous = country.status.clone().unwrap_or_default();
    let generation = country.metadata.generation;
    let finish = |reports: &[Report], status: CountryStatus, next: Next, failure: Option<&'static str>| Outcome {
        status: CountryStatus {
            conditions: conditions::merge(&previous.conditions, reports, generation),
            observed_generation: generation,
            ..status
        },
        next,
        failure,
    };
    let region = match admit(country, world) {
        Ok(region) => region,
        Err(refused) => {
            let mut status = previous.clone();
            if refused.reason == "CodeConflict" {
                // Another Country holds the code: whatever this one's status says, the
                // partitions, index and route of that code are not its own.
                status = CountryStatus {
                    conditions: status.conditions,
                    ..Default::default()
                };
            }
            return finish(&refused.reports, status, refused.next, refused.failure());
        }
    };
    if country.spec.suspend {
        return suspend(country, ctx, previous.clone(), finish).await;
    }
    let mut run = Run {
        country,
        world,
        ctx,
        region,
        status: previous.clone(),
        db: None,
        search_missing: None,
    };
    let mut reports = Vec::new();
    for (i, step) in Step::ALL.iter().enumerate() {
        match run.step(*step).await {
            Ok(report) => reports.push(report),
            Err(stop) => {
                reports.push(Report::failed(step.condition(), stop.reason, &stop.message));
                for later in &Step::ALL[i + 1..] {
                    reports.push(Report::unknown(
                        later.condition(),
                        "Blocked",
                        format!("not checked: {} is {}", step.condition(), stop.reason),
                    ));
                }
                reports.push(Report::failed(READY, stop.reason, stop.message));
                let blocked = Blocked::new(reports, stop.next);
                return finish(&blocked.reports, run.status, blocked.next, blocked.failure());
            }
        }
    }
    let served = format!(
        "country {} is served from Region {}",
        country.spec.code, country.spec.region
    );
    let message = match &run.search_missing {
        Some(why) => format!("{served}, without practitioner search ({why})"),
        None => served,
    };
    reports.push(Report::ok(READY, "Reconciled", message));
    finish(&reports, run.status, Next::Requeue(RESYNC), None)
}

/// A suspended Country keeps its data and its index but is not served: its routes are
/// withdrawn, and nothing else is reconciled until it is resumed.
async fn suspend(
    country: &Country,
    ctx: &Context,
    previous: CountryStatus,
    finish: impl Fn(&[Report], CountryStatus, Next, Option<&'static str>) -> Outcome<CountryStatus>,
) -> Outcome<CountryStatus> {
    if let Err(e) = ctx.gateway.withdraw(country).await {
        let message = format!("spec.suspend is true but the routes could not be withdrawn: {e}");
        let reports = [
            Report::failed(ROUTES_READY, "RoutesFailed", &message),
            Report::failed(READY, "RoutesFailed", message),
        ];
        return finish(&reports, previous, Next::Requeue(RETRY), Some("RoutesFailed"));
    }
    let message = "spec.suspend is true: the country is not served and not reconciled; its data is kept";
    let reports = [
        Report::unknown(DATABASE_READY, "Suspended", message),
        Report::unknown(SEARCH_INDEX_READY, "Suspended", message),
        Report::failed(ROUTES_READY, "Suspended", "routes withdrawn while spec.suspend is true"),
        Report::failed(READY, "Suspended", message),
    ];
    let status = CountryStatus {
        routes: Vec::new(),
        ..previous
    };
    finish(&reports, status, Next::AwaitChange, None)
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
    match &country.spec.search {
        Some(settings) => search::IndexSettings {
            language: language(settings.analyzer),
            synonyms: settings.synonyms.clone(),
        },
        None => search::IndexSettings {
            language: Language::for_locale(&country.spec.locale),
            synonyms: Vec::new(),
        },
    }
}

/// The search crate's analyzer of the same name (both enums spell their variants as
/// OpenSearch names its analyzers).
fn language(analyzer: SearchAnalyzer) -> Language {
    serde_json::to_value(analyzer)
        .ok()
        .and_then(|name| Language::from_name(name.as_str()?))
        .unwrap_or(Language::Standard)
}

/// Gives country `code` its first vault data key in the Region's `vault-keys` Secret unless
/// it has keys already (an existing key is never replaced: the rows sealed under it could not
/// be opened again). Answers the ids of the keys it added, none when they were there.
async fn ensure_data_key(ctx: &Context, region: &Region, code: &str) -> Result<Vec<String>, ProviderError> {
    let name = region.metadata.name.clone().unwrap_or_default();
    let store = ctx.providers.region_secrets(region)?;
    let _one_at_a_time = ctx.vault_keys.lock().await;
    // What the Secret held when the change was made (the last read, if it was read again).
    let before = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let change = |data: &mut std::collections::BTreeMap<String, String>| {
        *before.lock().expect("not poisoned") = data.clone();
        keys::ensure_country(data, code)
    };
    let data = store.update(&name, VAULT_KEYS_SECRET, &change).await?;
    let before = before.into_inner().expect("not poisoned");
    let prefix = format!("{}.", code.to_ascii_uppercase());
    Ok(data
        .keys()
        .filter(|k| !before.contains_key(*k))
        .filter_map(|k| k.strip_prefix(&prefix))
        .filter(|id| *id != "active")
        .map(String::from)
        .collect())
}

/// Removes country `code`'s entries (every key, and which one is active) from the Region's
/// `vault-keys` Secret; answers whether there were any.
async fn remove_data_keys(ctx: &Context, region: &Region, code: &str) -> Result<bool, ProviderError> {
    let name = region.metadata.name.clone().unwrap_or_default();
    let store = ctx.providers.region_secrets(region)?;
    let _one_at_a_time = ctx.vault_keys.lock().await;
    let prefix = format!("{}.", code.to_ascii_uppercase());
    let removed = std::sync::atomic::AtomicBool::new(false);
    let change = |data: &mut std::collections::BTreeMap<String, String>| {
        let before = data.len();
        data.retain(|k, _| !k.starts_with(&prefix));
        removed.store(data.len() != before, std::sync::atomic::Ordering::Relaxed);
        data.len() != before
    };
    store.update(&name, VAULT_KEYS_SECRET, &change).await?;
    Ok(removed.into_inner())
}

/// What a Country created and therefore may clean up: what its status records, and only
/// while it holds its code (a refused duplicate owns nothing, whatever its status says).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owned {
    /// The Region its partitions were created in.
    pub region: Option<String>,
    pub partitions: Vec<String>,
    /// The versioned search index behind its alias.
    pub index: Option<String>,
    /// Ids of the vault data keys it added to its Region's `vault-keys` Secret.
    pub data_keys: Vec<String>,
}

impl Owned {
    pub fn of(country: &Country, countries: &[Country]) -> Self {
        if code_holder(country, countries).metadata.name != country.metadata.name {
            return Self::default();
        }
        let status = country.status.clone().unwrap_or_default();
        let code = &country.spec.code;
        // Only names of its own code: a status edited by hand cannot point at another country.
        let names = plan::partition_names(code);
        Self {
            region: status.region,
            partitions: status.partitions.into_iter().filter(|p| names.contains(p)).collect(),
            index: status.index.filter(|i| search::model::version_of(code, i).is_some()),
            data_keys: status.data_keys,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty() && self.index.is_none() && self.data_keys.is_empty()
    }
}

/// Cleans up a deleted Country: its routes are withdrawn; of the partitions and index it
/// created, `Retain` detaches the partitions and keeps both, `Delete` drops both. Nothing it
/// did not create is touched, so a refused Country, or one whose Region never existed, is
/// let go at once. With the abandon annotation the stores are left alone. Returns what was done.
pub async fn cleanup(country: &Country, world: World<'_>, ctx: &Context) -> Result<Vec<Change>, Blocked> {
    // Traffic stops first, whatever happens to the data (only routes this Country owns).
    ctx.gateway.withdraw(country).await.map_err(|e| {
        Blocked::new(
            vec![Report::failed(READY, "RoutesFailed", e.to_string())],
            Next::Requeue(RETRY),
        )
    })?;
    let owned = Owned::of(country, world.countries);
    if abandoned(&country.metadata) || owned.is_empty() {
        return Ok(Vec::new());
    }
    let blocked = |reason: &'static str, message: String| {
        let message = format!(
            "cannot clean up: {message}; fix the Region, or annotate {}=true to finish without touching its stores",
            meridian_crds::ABANDON_ANNOTATION
        );
        Blocked::new(vec![Report::failed(READY, reason, message)], Next::Requeue(RETRY))
    };
    let region_name = owned.region.as_deref().unwrap_or(&country.spec.region);
    let Some(region) = world.region.filter(|r| r.metadata.name.as_deref() == Some(region_name)) else {
        return Err(blocked(
            "RegionNotFound",
            format!("Region {region_name}, which holds its partitions, does not exist"),
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
    let mut observed = db
        .observe(&country.spec.code)
        .await
        .map_err(|e| blocked("DatabaseUnreachable", e.to_string()))?;
    observed.keep_only(&owned.partitions);
    let goal = match country.spec.deletion_policy {
        DeletionPolicy::Retain => PartitionGoal::Detached,
        DeletionPolicy::Delete => PartitionGoal::Dropped,
    };
    let changes = plan::partitions(&country.spec.code, goal, &observed);
    db.apply(&changes)
        .await
        .map_err(|e| blocked("CleanupFailed", e.to_string()))?;
    // `Delete` takes the country's data keys once no partition of its code is left to hold a
    // row sealed under them (a partition it did not create keeps them); `Retain` keeps them
    // with the partitions, so that a returning country reads its rows again.
    if country.spec.deletion_policy == DeletionPolicy::Delete && !owned.data_keys.is_empty() {
        let left = db
            .observe(&country.spec.code)
            .await
            .map_err(|e| blocked("DatabaseUnreachable", e.to_string()))?;
        if left.partitions.is_empty() {
            remove_data_keys(ctx, region, &country.spec.code)
                .await
                .map_err(|e| blocked("CleanupFailed", format!("cannot remove the vault's data keys: {e}")))?;
        }
    }
    // `Retain` keeps the index as it keeps the partitions: a returning country finds both.
    if country.spec.deletion_policy == DeletionPolicy::Delete
        && let Some(index) = &owned.index
    {
        let backend = ctx
            .providers
            .search(region)
            .await
            .map_err(|e| blocked("SearchUnreachable", e.message))?;
        search::versions::remove_version(&backend, &country.spec.code, index)
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
    fn every_analyzer_of_the_crd_is_the_search_language_of_the_same_name() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(Country::crd()).unwrap();
        let names: Vec<String> = serde_json::from_value(
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["search"]
                ["properties"]["analyzer"]["enum"]
                .clone(),
        )
        .unwrap();
        let mut known: Vec<&str> = Language::all().map(Language::name).collect();
        let mut offered: Vec<&str> = names.iter().map(String::as_str).collect();
        known.sort();
        offered.sort();
        assert_eq!(offered, known);
        for name in names {
            let analyzer: SearchAnalyzer = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(language(analyzer).name(), name);
        }
    }

    #[test]
    fn without_search_the_locale_chooses_the_analyzer() {
        for (locale, language) in [
            ("de-DE", Language::German),
            ("ar-EG", Language::Arabic),
            ("ja-JP", Language::Cjk),
            ("th-TH", Language::Thai),
            ("pt-BR", Language::Brazilian),
            ("sw-KE", Language::Standard),
        ] {
            let settings = index_settings(&country(&DE.replace("de-DE", locale)));
            assert_eq!(settings.language, language, "{locale}");
            assert!(settings.synonyms.is_empty());
        }
        let chosen = country(&format!(
            "{DE}  search: {{analyzer: arabic, synonyms: [\"طبيب, دكتور\"]}}\n"
        ));
        let settings = index_settings(&chosen);
        assert_eq!(settings.language, Language::Arabic);
        assert_eq!(settings.synonyms, ["طبيب, دكتور"]);
    }

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
        assert_eq!(blocked.failure(), None, "waiting for a Region is not a failure");
    }

    fn created(mut c: Country, at: &str) -> Country {
        c.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            at.parse().expect("timestamp"),
        ));
        c
    }

    #[test]
    fn the_older_country_holds_a_code_and_a_newer_duplicate_is_refused() {
        let de = created(country(DE), "2026-01-01T00:00:00Z");
        // Sorts before `de` by name, but was created later: age decides, not the name.
        let dupe = created(
            country(&DE.replace("name: de", "name: a-de-test")),
            "2026-02-01T00:00:00Z",
        );
        let all = [dupe.clone(), de.clone()];
        assert_eq!(code_holder(&dupe, &all).metadata.name.as_deref(), Some("de"));
        assert_eq!(code_holder(&de, &all).metadata.name.as_deref(), Some("de"));
        let world = World {
            region: None,
            countries: &all,
        };
        let refused = admit(&dupe, world).unwrap_err();
        assert_eq!(refused.reason, "CodeConflict");
        assert_eq!(refused.next, Next::AwaitChange);
        assert!(
            refused
                .message()
                .contains("spec.code: DE is already held by Country de"),
            "{}",
            refused.message()
        );
        // The holder is not refused for its code (here: for its missing Region).
        assert_eq!(admit(&de, world).unwrap_err().reason, "RegionNotFound");
    }

    #[test]
    fn a_refused_duplicate_owns_nothing_whatever_its_status_says() {
        let status = CountryStatus {
            region: Some("eu-central-1".into()),
            partitions: crate::plan::partition_names("DE"),
            index: Some("practitioners_de_v1".into()),
            ..Default::default()
        };
        let mut de = created(country(DE), "2026-01-01T00:00:00Z");
        de.status = Some(status.clone());
        let mut dupe = created(
            country(&DE.replace("name: de", "name: de-test")),
            "2026-02-01T00:00:00Z",
        );
        dupe.status = Some(status);
        let all = [de.clone(), dupe.clone()];
        assert!(Owned::of(&dupe, &all).is_empty());
        let owned = Owned::of(&de, &all);
        assert_eq!(owned.partitions, crate::plan::partition_names("DE"));
        assert_eq!(owned.index.as_deref(), Some("practitioners_de_v1"));
        // A status naming another country's partitions or index owns none of them.
        let mut odd = country(DE);
        odd.status = Some(CountryStatus {
            partitions: vec!["appointments_fr".into()],
            index: Some("practitioners_fr_v1".into()),
            ..Default::default()
        });
        assert!(Owned::of(&odd, &[]).is_empty());
    }
}
