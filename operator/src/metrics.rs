//! Prometheus metrics for reconciles, shared by the operator and `meridian dev`.

use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// The media type of [`Metrics::render`]: prometheus-client writes the OpenMetrics text
/// format (`# EOF` at the end, `_total` counters), which Prometheus reads when it is
/// announced as such.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reconcile counters and the duration histogram, by kind (`Country`, `Region`).
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabel, Histogram>,
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
        Self {
            registry,
            reconciles,
            failures,
            duration,
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

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
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
