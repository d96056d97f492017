//! Prometheus metrics for reconciles, shared by the operator and `meridian dev`: reconciles,
//! failures by reason, durations and writes; whether each object is Ready
//! (`meridian_ready{kind,name}`) and whether this replica leads (`meridian_leader`). The
//! workloads' own metrics are [`meridian_shared::metrics`]; `meridian dev`, which runs
//! them in the same process, exposes both ([`Metrics::render_with_workloads`]).

use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    kind: &'static str,
    name: String,
}

/// The media type of [`Metrics::render`]: prometheus-client writes the OpenMetrics text
/// format (`# EOF` at the end, `_total` counters), which Prometheus reads when it is
/// announced as such. The workloads announce theirs the same way.
pub const CONTENT_TYPE: &str = meridian_shared::metrics::CONTENT_TYPE;

/// What a write changed, for `meridian_writes_total{kind}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteKind {
    /// A statement that changes a database's schema, roles or privileges (DDL, GRANT,
    /// REVOKE, CREATE/ALTER ROLE, a migration).
    Ddl,
    /// An object's status written with a change.
    Status,
    /// A change to a search index: created, filled, written, deleted, or an alias moved.
    Index,
}

impl WriteKind {
    pub const ALL: [WriteKind; 3] = [WriteKind::Ddl, WriteKind::Status, WriteKind::Index];

    fn label(self) -> &'static str {
        match self {
            WriteKind::Ddl => "ddl",
            WriteKind::Status => "status",
            WriteKind::Index => "index",
        }
    }
}

/// Writes of each kind, as counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Writes {
    pub ddl: u64,
    pub status: u64,
    pub index: u64,
}

impl Writes {
    pub fn total(&self) -> u64 {
        self.ddl + self.status + self.index
    }

    /// What was written since `earlier`.
    pub fn since(&self, earlier: &Writes) -> Writes {
        Writes {
            ddl: self.ddl.saturating_sub(earlier.ddl),
            status: self.status.saturating_sub(earlier.status),
            index: self.index.saturating_sub(earlier.index),
        }
    }
}

/// Reconcile counters and the duration histogram, by kind (`Country`, `Region`), and the
/// writes the reconcilers make, by [`WriteKind`]: a resync with nothing changed adds none.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabel, Histogram>,
    writes: Family<KindLabel, Counter>,
    ready: Family<ObjectLabels, Gauge>,
    leader: Gauge,
    /// Index writes already added to `writes` from the search crate's own count.
    index_seen: std::sync::Mutex<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meridian");
        let reconciles = Family::<KindLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        let writes = Family::<KindLabel, Counter>::default();
        registry.register(
            "writes",
            "Writes: schema, role and privilege statements (ddl), status changes (status), search index changes (index)",
            writes.clone(),
        );
        for kind in WriteKind::ALL {
            drop(writes.get_or_create(&KindLabel { kind: kind.label() }));
        }
        let ready = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "ready",
            "1 when the object's Ready condition is True, else 0: every Country, Region and PatientIndex reconciled",
            ready.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 in the replica that holds the leader Lease (and in `meridian dev`), 0 in a standby",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            writes,
            ready,
            leader,
            index_seen: std::sync::Mutex::new(meridian_search::index_writes()),
        }
    }
}

impl Metrics {
    /// Records one reconcile of `kind` and, when it failed, its reason.
    pub fn observe(&self, kind: &'static str, elapsed: Duration, failure: Option<&str>) {
        self.reconciles.get_or_create(&KindLabel { kind }).inc();
        self.duration
            .get_or_create(&KindLabel { kind })
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = failure {
            self.failures
                .get_or_create(&FailureLabels {
                    kind,
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    /// Sets `meridian_ready{kind,name}` from the object's Ready condition.
    pub fn set_ready(&self, kind: &'static str, name: &str, ready: bool) {
        self.ready
            .get_or_create(&ObjectLabels {
                kind,
                name: name.to_string(),
            })
            .set(i64::from(ready));
    }

    /// Drops the object's `meridian_ready` series: it is deleted.
    pub fn forget(&self, kind: &'static str, name: &str) {
        self.ready.remove(&ObjectLabels {
            kind,
            name: name.to_string(),
        });
    }

    /// `meridian_leader`, for the leader election to set.
    pub fn leader(&self) -> Gauge {
        self.leader.clone()
    }

    /// The counter of `kind`'s writes; [`crate::backends::postgres::Databases`] counts DDL
    /// through it.
    pub fn write_counter(&self, kind: WriteKind) -> Counter {
        self.writes.get_or_create(&KindLabel { kind: kind.label() }).clone()
    }

    /// Counts `n` writes of `kind`.
    pub fn wrote(&self, kind: WriteKind, n: u64) {
        if n > 0 {
            self.write_counter(kind).inc_by(n);
        }
    }

    /// The writes counted since this process started (index writes: since these metrics
    /// were made).
    pub fn writes(&self) -> Writes {
        // The search crate counts index changes whichever engine makes them.
        {
            let mut seen = self.index_seen.lock().expect("index count lock");
            let now = meridian_search::index_writes();
            self.wrote(WriteKind::Index, now.saturating_sub(*seen));
            *seen = now.max(*seen);
        }
        let get = |kind| self.write_counter(kind).get();
        Writes {
            ddl: get(WriteKind::Ddl),
            status: get(WriteKind::Status),
            index: get(WriteKind::Index),
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        self.writes();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The exposition followed by the workload metrics of this process (`meridian dev`
    /// runs the workloads beside the reconcilers), one `# EOF` at the end.
    pub fn render_with_workloads(&self) -> String {
        self.writes();
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        meridian_shared::metrics::workload().encode_into(&mut out);
        prometheus_client::encoding::text::encode_eof(&mut out).expect("writing to a String cannot fail");
        out
    }

    /// The answer to `GET /metrics`: the exposition, with its media type.
    pub fn response(&self) -> Response {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], self.render()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind_and_reason() {
        let metrics = Metrics::default();
        metrics.observe("Country", Duration::from_millis(3), None);
        metrics.observe("Country", Duration::from_millis(5), Some("DatabaseUnreachable"));
        let text = metrics.render();
        assert!(text.contains("meridian_reconciles_total{kind=\"Country\"} 2"), "{text}");
        assert!(
            text.contains("meridian_reconcile_failures_total{kind=\"Country\",reason=\"DatabaseUnreachable\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meridian_reconcile_duration_seconds_count{kind=\"Country\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn writes_are_counted_by_kind_and_from_zero() {
        let metrics = Metrics::default();
        let start = metrics.writes();
        assert_eq!((start.ddl, start.status), (0, 0));
        let text = metrics.render();
        assert!(text.contains("meridian_writes_total{kind=\"ddl\"} 0"), "{text}");
        let before = metrics.writes();
        metrics.write_counter(WriteKind::Ddl).inc_by(6);
        metrics.wrote(WriteKind::Status, 2);
        let since = metrics.writes().since(&before);
        assert_eq!((since.ddl, since.status, since.total()), (6, 2, 8));
        assert!(metrics.render().contains("meridian_writes_total{kind=\"status\"} 2"));
    }

    #[test]
    fn ready_follows_the_condition_and_goes_with_the_object() {
        let metrics = Metrics::default();
        metrics.set_ready("Country", "de", false);
        assert!(
            metrics
                .render()
                .contains("meridian_ready{kind=\"Country\",name=\"de\"} 0")
        );
        metrics.set_ready("Country", "de", true);
        metrics.set_ready("Region", "eu-central-1", true);
        let text = metrics.render();
        assert!(
            text.contains("meridian_ready{kind=\"Country\",name=\"de\"} 1"),
            "{text}"
        );
        metrics.forget("Country", "de");
        let text = metrics.render();
        assert!(!text.contains("name=\"de\""), "{text}");
        assert!(
            text.contains("meridian_ready{kind=\"Region\",name=\"eu-central-1\"} 1"),
            "{text}"
        );
        assert!(text.contains("meridian_leader 0"), "{text}");
        metrics.leader().set(1);
        assert!(metrics.render().contains("meridian_leader 1"));
    }

    #[test]
    fn dev_exposes_the_workloads_too_with_one_end_marker() {
        let text = Metrics::default().render_with_workloads();
        // (Families without a series yet are left out of the exposition.)
        assert!(text.contains("# TYPE meridian_writes counter"), "{text}");
        assert!(text.contains("# TYPE meridian_relay_lag_seconds gauge"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn the_exposition_is_served_as_openmetrics_text() {
        let metrics = Metrics::default();
        metrics.observe("Region", Duration::from_millis(1), None);
        let response = metrics.response();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        // What makes it OpenMetrics rather than the 0.0.4 text format: the closing marker.
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE meridian_reconciles counter"), "{text}");
    }
}
