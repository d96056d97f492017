//! The reconcilers, written once. Each takes an object and what it refers to, plans its
//! changes, applies them and returns the new status; the drivers (the Kubernetes operator
//! in [`crate::k8s`] and the embedded stack in [`crate::dev`]) fetch the inputs, write the
//! status back, and publish events.

pub mod country;
pub mod patient_index;
pub mod region;

use std::time::Duration;

use crate::backends::gateway::Gateway;
use crate::backends::postgres::Databases;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::conditions::Report;
use crate::metrics::Metrics;
use crate::providers::Providers;

/// The span of one reconcile of object `name` of `kind` (a trace of its own when traces are
/// exported), for both drivers.
pub fn reconcile_span(kind: &'static str, name: &str) -> tracing::Span {
    tracing::info_span!(
        "reconcile",
        otel.name = format!("reconcile {kind}"),
        otel.kind = "internal",
        meridian.kind = kind,
        meridian.name = name,
    )
}

/// What every reconcile needs, shared across reconciles.
pub struct Context {
    pub databases: Databases,
    pub providers: Providers,
    pub metrics: Metrics,
    /// Where Countries' routes are published.
    pub gateway: Gateway,
    /// Held while a Region's vault keys Secret is read, changed and written: Countries of one
    /// Region are reconciled at once, and a lost update would replace a country's data key.
    pub vault_keys: tokio::sync::Mutex<()>,
}

impl Context {
    pub fn new(providers: Providers) -> Self {
        let metrics = Metrics::default();
        Self {
            databases: Databases::counting(metrics.write_counter(crate::metrics::WriteKind::Ddl)),
            providers,
            metrics,
            gateway: Gateway::Embedded,
            vault_keys: tokio::sync::Mutex::new(()),
        }
    }

    /// Publishes routes through `gateway` (a cluster's Gateway API).
    pub fn with_gateway(mut self, gateway: Gateway) -> Self {
        self.gateway = gateway;
        self
    }
}

/// When to look at the object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Only when it (or something it refers to) changes: the spec is invalid, or all is done.
    AwaitChange,
    /// After this long: waiting for something else, or checking that all is still well.
    Requeue(Duration),
}

/// How often a Ready object is checked again.
pub const RESYNC: Duration = Duration::from_secs(60);
/// How soon a waiting or failed object is tried again.
pub const RETRY: Duration = Duration::from_secs(5);

/// The result of one reconcile.
#[derive(Clone, Debug)]
pub struct Outcome<S> {
    pub status: S,
    pub next: Next,
    /// The reason of the failure, when it failed (for metrics and backoff).
    pub failure: Option<&'static str>,
}

/// Reasons that mean "waiting for something else to become ready", not "failed": the
/// object is looked at again at a steady pace ([`RETRY`]), without backoff, and the wait is
/// not counted as a failure.
const WAITING: &[&str] = &[
    "RegionNotFound",
    "RegionNotReady",
    "SchemaPending",
    "DatabaseCreating",
    "DatabaseStarting",
    "DatabaseRestarting",
    "SearchStarting",
    "NamespaceMissing",
    "ConnectionSecretMissing",
    "RolesNotCreated",
];

/// Whether `reason` is a wait rather than a failure.
pub fn is_waiting(reason: &str) -> bool {
    WAITING.contains(&reason)
}

/// A step that could not go ahead: the conditions that say why, and when to retry.
#[derive(Clone, Debug)]
pub struct Blocked {
    pub reports: Vec<Report>,
    pub next: Next,
    pub reason: &'static str,
}

impl Blocked {
    fn new(reports: Vec<Report>, next: Next) -> Self {
        let reason = reports.iter().find(|r| !r.is_true()).map_or("Unknown", |r| r.reason);
        Self { reports, next, reason }
    }

    /// The failure to count and back off on; `None` while merely waiting.
    pub fn failure(&self) -> Option<&'static str> {
        (!is_waiting(self.reason)).then_some(self.reason)
    }

    /// `previous` conditions updated with this step's reports.
    pub fn conditions(&self, previous: &[Condition], generation: Option<i64>) -> Vec<Condition> {
        crate::conditions::merge(previous, &self.reports, generation)
    }

    /// One-line summary for CLI output.
    pub fn message(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        for r in self.reports.iter().filter(|r| !r.is_true()) {
            let line = format!("{}: {}", r.reason, r.message);
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        lines.join("; ")
    }
}

/// Whether the object carries the annotation that lets its deletion skip the stores.
pub fn abandoned(meta: &kube::api::ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(meridian_crds::ABANDON_ANNOTATION))
        .is_some_and(|v| v == "true")
}
