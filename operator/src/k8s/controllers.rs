//! The Country, Region and PatientIndex controllers: kube-runtime around the shared reconcilers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use meridian_crds::condition_types::READY;
use meridian_crds::{Country, FINALIZER, PatientIndex, Region};
use serde_json::json;
use tracing::Instrument;

use crate::FIELD_MANAGER;
use crate::conditions::{self, Transition};
use crate::controller::{Blocked, Context, Next, Outcome, country, patient_index, region};

/// Failures that end a reconcile early; the error policy requeues them with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{kind} {name}: cleanup blocked: {message}")]
    CleanupBlocked {
        kind: &'static str,
        name: String,
        message: String,
    },
}

impl Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.reason()
                }
                _ => "Finalizer",
            },
            Error::CleanupBlocked { .. } => "CleanupBlocked",
        }
    }
}

/// What the controllers share: the client, the reconcilers' context, the event recorder,
/// and failure counts for backoff.
pub struct KubeContext {
    pub client: Client,
    pub core: Context,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
}

impl KubeContext {
    pub fn new(client: Client, core: Context, identity: &str) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.to_string()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            core,
            failures: Mutex::default(),
        }
    }

    /// Exponential backoff per object: 5s, 10s, 20s ... capped at 5 minutes.
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = (*n + 1).min(6);
        (Duration::from_secs(5) * 2u32.pow(*n - 1)).min(Duration::from_secs(300))
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }

    fn action(&self, key: &str, next: Next, failed: bool) -> Action {
        if !failed {
            self.succeeded(key);
        }
        match next {
            Next::AwaitChange => Action::await_change(),
            Next::Requeue(_) if failed => Action::requeue(self.backoff(key)),
            Next::Requeue(after) => Action::requeue(after),
        }
    }

    async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, transitions: &[Transition]) {
        for t in transitions {
            let event = Event {
                type_: if t.is_warning() {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: t.reason.clone(),
                note: Some(
                    format!("{}={}: {}", t.type_, t.status, t.message)
                        .chars()
                        .take(1000)
                        .collect(),
                ),
                action: format!("Reconcile{}", t.type_),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
                tracing::warn!(error = %e, "failed to publish event");
            }
        }
    }
}

/// Runs the three controllers until their watches end.
/// Every reconcile runs under `fence`: none is polled once leadership has ended.
pub async fn run(ctx: Arc<KubeContext>, fence: super::Fence) {
    let countries: Api<Country> = Api::all(ctx.client.clone());
    let regions: Api<Region> = Api::all(ctx.client.clone());

    let country_controller = Controller::new(countries.clone(), watcher::Config::default());
    let store = country_controller.store();
    let same_code = store.clone();
    let country_controller = country_controller
        // A Region's change (Ready, isolation) re-evaluates the Countries bound to it.
        .watches(regions.clone(), watcher::Config::default(), move |region: Region| {
            let name = region.name_any();
            store
                .state()
                .into_iter()
                .filter(|c| c.spec.region == name)
                .map(|c| ObjectRef::from_obj(&*c))
                .collect::<Vec<_>>()
        })
        // A Country's change (above all its deletion) re-evaluates the others with its code
        // (one refused with CodeConflict may now hold it) and on its dedicated Region.
        .watches(
            countries.clone(),
            watcher::Config::default(),
            move |changed: Country| {
                same_code
                    .state()
                    .into_iter()
                    .filter(|c| {
                        c.metadata.name != changed.metadata.name
                            && (c.spec.code == changed.spec.code || c.spec.region == changed.spec.region)
                    })
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .run(
            {
                let fence = fence.clone();
                move |country, ctx| fence.guard(reconcile::<Country>(country, ctx))
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move { log_result("Country", result) });

    let indexes: Api<PatientIndex> = Api::all(ctx.client.clone());
    let region_controller = Controller::new(regions.clone(), watcher::Config::default())
        // A Country going away may unblock its Region's deletion.
        .watches(countries.clone(), watcher::Config::default(), |country: Country| {
            Some(ObjectRef::new(&country.spec.region))
        })
        // So may a PatientIndex.
        .watches(indexes.clone(), watcher::Config::default(), |index: PatientIndex| {
            Some(ObjectRef::new(&index.spec.region))
        })
        .run(
            {
                let fence = fence.clone();
                move |region, ctx| fence.guard(reconcile::<Region>(region, ctx))
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move { log_result("Region", result) });

    let index_controller = Controller::new(indexes.clone(), watcher::Config::default());
    let every_index = index_controller.store();
    let on_region = every_index.clone();
    let on_index = every_index.clone();
    let all = |store: &kube::runtime::reflector::Store<PatientIndex>| {
        store
            .state()
            .iter()
            .map(|i| ObjectRef::from_obj(&**i))
            .collect::<Vec<_>>()
    };
    let index_controller = index_controller
        // Which countries an index links, and where they live, follow the Countries and
        // Regions; another index's deletion may let this one serve.
        .watches(countries, watcher::Config::default(), move |_: Country| {
            all(&every_index)
        })
        .watches(regions, watcher::Config::default(), move |_: Region| all(&on_region))
        .watches(indexes, watcher::Config::default(), move |_: PatientIndex| {
            all(&on_index)
        })
        .run(
            move |index, ctx| fence.guard(reconcile::<PatientIndex>(index, ctx)),
            error_policy,
            ctx,
        )
        .for_each(|result| async move { log_result("PatientIndex", result) });

    futures::join!(country_controller, region_controller, index_controller);
}

fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(kind: &str, result: Result<T, E>) {
    match result {
        Ok(object) => tracing::debug!(kind, ?object, "reconciled"),
        Err(e) => tracing::warn!(kind, error = %e, "reconcile failed"),
    }
}

fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, error: &Error, ctx: Arc<KubeContext>) -> Action {
    let key = format!("{}/{}", K::kind(&()), obj.meta().name.as_deref().unwrap_or_default());
    tracing::warn!(object = key, error = %error, "reconcile failed");
    Action::requeue(ctx.backoff(&key))
}

/// A kind the operator reconciles: its apply and cleanup steps.
pub trait Reconciled:
    Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The metrics label.
    const KIND: &'static str;
    type Status: serde::Serialize + PartialEq + Send + Sync;
    fn status(&self) -> Option<&Self::Status>;
    fn conditions(status: &Self::Status) -> &[Condition];
    fn apply(&self, ctx: &KubeContext) -> impl Future<Output = Result<Action, Error>> + Send;
    fn cleanup(&self, ctx: &KubeContext) -> impl Future<Output = Result<Action, Error>> + Send;
}

impl Reconciled for Country {
    const KIND: &'static str = "Country";
    type Status = meridian_crds::CountryStatus;
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn conditions(status: &Self::Status) -> &[Condition] {
        &status.conditions
    }
    fn apply(&self, ctx: &KubeContext) -> impl Future<Output = Result<Action, Error>> + Send {
        apply_country(self, ctx)
    }
    fn cleanup(&self, ctx: &KubeContext) -> impl Future<Output = Result<Action, Error>> + Send {
        cleanup_country(self, ctx)
    }
}

impl Reconciled for Region {
    const KIND: &'static str = "Region";
    type Status = meridian_crds::RegionStatus;
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn conditions(status: &Self::Status) -> &[Condition] {
        &status.conditions
    }
    fn apply(&self, ctx: &KubeContext) -> impl Future<Output = Result<Action, Error>> + Send {
        apply_region(self, ctx)
    }
    fn cleanup(&self, ctx: &KubeContext) -> impl Future<Output = Result<Action, Error>> + Send {
        cleanup_region(self, ctx)
    }
}

impl Reconciled for PatientIndex {
    const KIND: &'static str = "PatientIndex";
    type Status = meridian_crds::PatientIndexStatus;
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn conditions(status: &Self::Status) -> &[Condition] {
        &status.conditions
    }
    fn apply(&self, ctx: &KubeContext) -> impl Future<Output = Result<Action, Error>> + Send {
        apply_index(self, ctx)
    }
    fn cleanup(&self, ctx: &KubeContext) -> impl Future<Output = Result<Action, Error>> + Send {
        cleanup_index(self, ctx)
    }
}

/// Reconciles one object: the finalizer first, then apply or cleanup.
pub async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<KubeContext>) -> Result<Action, Error> {
    let api: Api<K> = Api::all(ctx.client.clone());
    let started = Instant::now();
    let span = crate::controller::reconcile_span(K::KIND, &obj.name_any());
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => obj.apply(&ctx).await,
            Finalizer::Cleanup(obj) => {
                let cleaned = obj.cleanup(&ctx).await;
                if cleaned.is_ok() {
                    // Gone: its `meridian_ready` series goes with it.
                    ctx.core.metrics.forget(K::KIND, &obj.name_any());
                }
                cleaned
            }
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if let Err(e) = &result {
        ctx.core.metrics.observe(K::KIND, started.elapsed(), Some(e.reason()));
    }
    result
}

async fn apply_country(c: &Country, ctx: &KubeContext) -> Result<Action, Error> {
    let started = Instant::now();
    let (region, countries) = world_of(c, ctx).await?;
    let outcome = country::apply(
        c,
        country::World {
            region: region.as_ref(),
            countries: &countries,
        },
        &ctx.core,
    )
    .await;
    write_outcome(c, outcome, started, ctx).await
}

/// What a Country's reconcile reads: its Region, and every Country (read from the API
/// server, not a cache, so that who holds a code is decided on current data).
async fn world_of(c: &Country, ctx: &KubeContext) -> Result<(Option<Region>, Vec<Country>), Error> {
    let region = Api::<Region>::all(ctx.client.clone()).get_opt(&c.spec.region).await?;
    let countries = Api::<Country>::all(ctx.client.clone())
        .list(&Default::default())
        .await?
        .items;
    Ok((region, countries))
}

async fn cleanup_country(c: &Country, ctx: &KubeContext) -> Result<Action, Error> {
    let (region, countries) = world_of(c, ctx).await?;
    let world = country::World {
        region: region.as_ref(),
        countries: &countries,
    };
    match country::cleanup(c, world, &ctx.core).await {
        Ok(changes) => {
            let note = if changes.is_empty() {
                format!("deleted ({:?}); stores left untouched", c.spec.deletion_policy)
            } else {
                format!(
                    "deleted ({:?}): {}",
                    c.spec.deletion_policy,
                    changes.iter().map(|ch| ch.sql()).collect::<Vec<_>>().join(" ")
                )
            };
            let done = Transition {
                type_: "Deleted".into(),
                status: "True".into(),
                reason: "CleanedUp".into(),
                message: note,
            };
            ctx.publish(c, &[done]).await;
            Ok(Action::await_change())
        }
        Err(blocked) => Err(write_blocked(c, &blocked, ctx).await),
    }
}

async fn apply_region(r: &Region, ctx: &KubeContext) -> Result<Action, Error> {
    let started = Instant::now();
    let outcome = region::apply(r, &ctx.core).await;
    write_outcome(r, outcome, started, ctx).await
}

async fn cleanup_region(r: &Region, ctx: &KubeContext) -> Result<Action, Error> {
    let countries = Api::<Country>::all(ctx.client.clone())
        .list(&Default::default())
        .await?
        .items;
    let indexes = Api::<PatientIndex>::all(ctx.client.clone())
        .list(&Default::default())
        .await?
        .items;
    match region::cleanup(r, &countries, &indexes, &ctx.core).await {
        Ok(()) => Ok(Action::await_change()),
        Err(blocked) => Err(write_blocked(r, &blocked, ctx).await),
    }
}

/// What a PatientIndex's reconcile reads: every Region, Country and PatientIndex, from the
/// API server.
async fn index_world(ctx: &KubeContext) -> Result<(Vec<Region>, Vec<Country>, Vec<PatientIndex>), Error> {
    let all = Default::default();
    let regions = Api::<Region>::all(ctx.client.clone()).list(&all).await?.items;
    let countries = Api::<Country>::all(ctx.client.clone()).list(&all).await?.items;
    let indexes = Api::<PatientIndex>::all(ctx.client.clone()).list(&all).await?.items;
    Ok((regions, countries, indexes))
}

async fn apply_index(index: &PatientIndex, ctx: &KubeContext) -> Result<Action, Error> {
    let started = Instant::now();
    let (regions, countries, indexes) = index_world(ctx).await?;
    let world = patient_index::World {
        regions: &regions,
        countries: &countries,
        indexes: &indexes,
    };
    let outcome = patient_index::apply(index, world, &ctx.core).await;
    write_outcome(index, outcome, started, ctx).await
}

async fn cleanup_index(index: &PatientIndex, ctx: &KubeContext) -> Result<Action, Error> {
    let (regions, countries, indexes) = index_world(ctx).await?;
    let world = patient_index::World {
        regions: &regions,
        countries: &countries,
        indexes: &indexes,
    };
    match patient_index::cleanup(index, world, &ctx.core).await {
        Ok(()) => Ok(Action::await_change()),
        Err(blocked) => Err(write_blocked(index, &blocked, ctx).await),
    }
}

/// Records a reconcile's outcome: metrics, an Event per condition transition, the status
/// (only when it changed), and when to come back.
async fn write_outcome<K: Reconciled>(
    obj: &K,
    outcome: Outcome<K::Status>,
    started: Instant,
    ctx: &KubeContext,
) -> Result<Action, Error> {
    ctx.core.metrics.observe(K::KIND, started.elapsed(), outcome.failure);
    let ready = conditions::is_true(K::conditions(&outcome.status), READY);
    ctx.core.metrics.set_ready(K::KIND, &obj.name_any(), ready);
    let old = obj.status().map(K::conditions).unwrap_or_default();
    ctx.publish(obj, &conditions::transitions(old, K::conditions(&outcome.status)))
        .await;
    if obj.status() != Some(&outcome.status) {
        let status = serde_json::to_value(&outcome.status).expect("status serializes");
        patch_status::<K>(&ctx.client, &obj.name_any(), status).await?;
    }
    let key = format!("{}/{}", K::KIND, obj.name_any());
    Ok(ctx.action(&key, outcome.next, outcome.failure.is_some()))
}

/// Writes the conditions that say why a deletion cannot finish (announced once), and
/// returns the error that keeps the finalizer in place.
async fn write_blocked<K: Reconciled>(obj: &K, blocked: &Blocked, ctx: &KubeContext) -> Error {
    let old = obj.status().map(K::conditions).unwrap_or_default();
    let new = blocked.conditions(old, obj.meta().generation);
    ctx.core
        .metrics
        .set_ready(K::KIND, &obj.name_any(), conditions::is_true(&new, READY));
    let transitions = conditions::transitions(old, &new);
    if !transitions.is_empty() {
        ctx.publish(obj, &transitions).await;
        // Server-side apply drops fields this manager set before and leaves out now, so the
        // whole previous status goes back with the new conditions, not the conditions alone.
        let mut status = obj
            .status()
            .map_or(json!({}), |s| serde_json::to_value(s).expect("status serializes"));
        status["conditions"] = serde_json::to_value(&new).expect("conditions serialize");
        if let Err(e) = patch_status::<K>(&ctx.client, &obj.name_any(), status).await {
            return e;
        }
    }
    Error::CleanupBlocked {
        kind: K::KIND,
        name: obj.name_any(),
        message: blocked.message(),
    }
}

/// Server-side apply of `status` through the status subresource.
async fn patch_status<K>(client: &Client, name: &str, status: serde_json::Value) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}
