//! Prometheus metrics of the workloads, one registry per process ([`workload`]): the HTTP
//! services' requests (booking, records), the bookings and FHIR interactions they commit,
//! and the event backbone (the relay, every consumer). Exposed as OpenMetrics text at
//! `GET /metrics` of each workload's listener, or of the event workers' ops listener.
//!
//! Label values are route templates, codes and names chosen here, never a raw path, an ID
//! or anything a patient wrote: `/{cc}/v1/fhir/{resource_type}/{id}`, not the Patient's
//! URL. Counters are atomics; a hot path pays a hash lookup, not a `String`.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The media type of the exposition: prometheus-client writes OpenMetrics text (`_total`
/// counters, `# EOF` at the end), which Prometheus reads when it is announced as such.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A route template as axum matched it, shared with the router (no copy per request); a
/// request no route matched is `unmatched`.
#[derive(Clone, Debug)]
pub struct Route(Option<MatchedPath>);

impl Route {
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// A country code (ISO 3166-1 alpha-2) as a label value, without an allocation; anything
/// that is not two ASCII letters is `??`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Country([u8; 2]);

impl Country {
    pub fn new(code: &str) -> Self {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => Self(*b"??"),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl EncodeLabelValue for Country {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: &'static str,
    route: Route,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    service: &'static str,
    route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BookingLabels {
    country: Country,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FhirLabels {
    country: Country,
    resource: &'static str,
    interaction: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    group: Arc<str>,
    topic: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerErrorLabels {
    group: Arc<str>,
    topic: Arc<str>,
    kind: &'static str,
}

/// What became of a booking, for `meridian_bookings_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookingOutcome {
    /// An appointment committed (a booking, or the new one of a reschedule).
    Booked,
    /// Refused by the no-double-booking constraint: the slot was taken.
    Conflict,
    /// An appointment cancelled.
    Cancelled,
}

impl BookingOutcome {
    fn label(self) -> &'static str {
        match self {
            BookingOutcome::Booked => "booked",
            BookingOutcome::Conflict => "conflict",
            BookingOutcome::Cancelled => "cancelled",
        }
    }
}

/// Why a consumer did not apply an event at once, for `meridian_consumer_errors_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerError {
    /// The event failed and is tried again.
    Retry,
    /// The handler rejected the event: it can never apply.
    Rejected,
    /// A store (the database, the search engine) was out of reach.
    Unavailable,
    /// Given up on: sent to the dead letters.
    Dlq,
}

impl ConsumerError {
    pub const ALL: [ConsumerError; 4] = [
        ConsumerError::Retry,
        ConsumerError::Rejected,
        ConsumerError::Unavailable,
        ConsumerError::Dlq,
    ];

    fn label(self) -> &'static str {
        match self {
            ConsumerError::Retry => "retry",
            ConsumerError::Rejected => "rejected",
            ConsumerError::Unavailable => "unavailable",
            ConsumerError::Dlq => "dlq",
        }
    }
}

/// The counters of one consumer group on one topic, looked up once when the consumer
/// starts so that each event only increments atomics.
#[derive(Clone, Debug)]
pub struct ConsumerCounters {
    processed: Counter,
    dlq: Counter,
    errors: [Counter; 4],
}

impl ConsumerCounters {
    /// An event applied (or found already applied, or passed over as dead-lettered before).
    pub fn processed(&self) {
        self.processed.inc();
    }

    /// An event sent to the dead letters (also counted as an error of kind `dlq`).
    pub fn dead_lettered(&self) {
        self.dlq.inc();
        self.error(ConsumerError::Dlq);
    }

    pub fn error(&self, kind: ConsumerError) {
        let index = ConsumerError::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors[index].inc();
    }
}

/// Every metric a workload process exports.
pub struct WorkloadMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    bookings: Family<BookingLabels, Counter>,
    fhir: Family<FhirLabels, Counter>,
    relay_published: Family<TopicLabel, Counter>,
    relay_lag: Gauge<f64, AtomicU64>,
    relay_backlog: Gauge,
    consumer_processed: Family<ConsumerLabels, Counter>,
    consumer_errors: Family<ConsumerErrorLabels, Counter>,
    consumer_dlq: Family<ConsumerLabels, Counter>,
}

impl Default for WorkloadMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meridian");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by service, route template, method and status",
            requests.clone(),
        );
        // 0.5 ms to about 16 s.
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to its headers: a stream is not waited for)",
            request_duration.clone(),
        );
        let bookings = Family::<BookingLabels, Counter>::default();
        registry.register(
            "bookings",
            "Appointments booked, refused as a double booking (conflict), and cancelled",
            bookings.clone(),
        );
        let fhir = Family::<FhirLabels, Counter>::default();
        registry.register(
            "fhir_operations",
            "FHIR interactions of the records service, by resource type and outcome (ok, client_error, server_error)",
            fhir.clone(),
        );
        let relay_published = Family::<TopicLabel, Counter>::default();
        registry.register(
            "relay_published",
            "Outbox events the broker acknowledged",
            relay_published.clone(),
        );
        let relay_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "relay_lag_seconds",
            "Age of the oldest outbox event not yet published (0 when none waits), as of the relay's last poll",
            relay_lag.clone(),
        );
        let relay_backlog = Gauge::default();
        registry.register(
            "relay_backlog",
            "Outbox events not yet published, as of the relay's last poll",
            relay_backlog.clone(),
        );
        let consumer_processed = Family::<ConsumerLabels, Counter>::default();
        registry.register(
            "consumer_processed",
            "Events a consumer group is done with (applied, or duplicates)",
            consumer_processed.clone(),
        );
        let consumer_errors = Family::<ConsumerErrorLabels, Counter>::default();
        registry.register(
            "consumer_errors",
            "Events a consumer could not apply at once: retry, rejected, unavailable (a store), dlq",
            consumer_errors.clone(),
        );
        let consumer_dlq = Family::<ConsumerLabels, Counter>::default();
        registry.register(
            "consumer_dlq",
            "Events a consumer group gave up on (sent to <topic>.dlq)",
            consumer_dlq.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            bookings,
            fhir,
            relay_published,
            relay_lag,
            relay_backlog,
            consumer_processed,
            consumer_errors,
            consumer_dlq,
        }
    }
}

/// This process's workload metrics.
pub fn workload() -> &'static WorkloadMetrics {
    static METRICS: OnceLock<WorkloadMetrics> = OnceLock::new();
    METRICS.get_or_init(WorkloadMetrics::default)
}

impl WorkloadMetrics {
    /// Counts one answered request.
    fn request(&self, service: &'static str, route: Route, method: &'static str, status: u16, seconds: f64) {
        self.request_duration
            .get_or_create(&RouteLabels {
                service,
                route: route.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                service,
                route,
                method,
                status,
            })
            .inc();
    }

    /// Counts a booking's outcome in `country`.
    pub fn booking(&self, country: &str, outcome: BookingOutcome) {
        self.bookings
            .get_or_create(&BookingLabels {
                country: Country::new(country),
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts one FHIR interaction (`read`, `create`, `search-type`, ... as the FHIR
    /// specification names them) on `resource` in `country`, by the status it was answered
    /// with.
    pub fn fhir(&self, country: &str, resource: &'static str, interaction: &'static str, status: u16) {
        let outcome = match status {
            ..400 => "ok",
            400..500 => "client_error",
            _ => "server_error",
        };
        self.fhir
            .get_or_create(&FhirLabels {
                country: Country::new(country),
                resource,
                interaction,
                outcome,
            })
            .inc();
    }

    /// Counts `n` events of `topic` the broker acknowledged.
    pub fn relay_published(&self, topic: &'static str, n: u64) {
        self.relay_published.get_or_create(&TopicLabel { topic }).inc_by(n);
    }

    /// The relay's view of the outbox after a poll: how old its oldest unpublished event is
    /// and how many wait.
    pub fn relay_backlog(&self, oldest_seconds: f64, events: i64) {
        self.relay_lag.set(oldest_seconds.max(0.0));
        self.relay_backlog.set(events);
    }

    /// The relay's lag as last set.
    pub fn relay_lag_seconds(&self) -> f64 {
        self.relay_lag.get()
    }

    /// The counters of consumer group `group` on `topic`.
    pub fn consumer(&self, group: &str, topic: &str) -> ConsumerCounters {
        let (group, topic): (Arc<str>, Arc<str>) = (group.into(), topic.into());
        let labels = ConsumerLabels {
            group: group.clone(),
            topic: topic.clone(),
        };
        let errors = ConsumerError::ALL.map(|kind| {
            self.consumer_errors.get_or_create_owned(&ConsumerErrorLabels {
                group: group.clone(),
                topic: topic.clone(),
                kind: kind.label(),
            })
        });
        ConsumerCounters {
            processed: self.consumer_processed.get_or_create_owned(&labels),
            dlq: self.consumer_dlq.get_or_create_owned(&labels),
            errors,
        }
    }

    /// Appends the families of this registry (no `# EOF`), for a process that exposes them
    /// beside others (`meridian dev`).
    pub fn encode_into(&self, out: &mut String) {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
            .expect("writing to a String cannot fail");
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        prometheus_client::encoding::text::encode_eof(&mut out).expect("writing to a String cannot fail");
        out
    }
}

/// The answer to `GET /metrics`: `text` (an exposition) with its media type.
pub fn response(text: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// `GET /metrics` of a workload's listener: this process's workload metrics.
pub async fn serve_metrics() -> Response {
    response(workload().render())
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `router` with every request counted and timed by its route template, as `service`'s.
/// The layer goes on with `Router::layer`, so it runs after routing, where axum has put
/// the [`MatchedPath`] in the request; routes added to the result later are not counted.
pub fn tracked<S: Clone + Send + Sync + 'static>(router: axum::Router<S>, service: &'static str) -> axum::Router<S> {
    router.layer(axum::middleware::from_fn_with_state(service, track))
}

async fn track(
    axum::extract::State(service): axum::extract::State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = Route(request.extensions().get::<MatchedPath>().cloned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    workload().request(
        service,
        route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_two_letters_or_nothing_said() {
        assert_eq!(Country::new("de").as_str(), "DE");
        assert_eq!(Country::new("Deutschland").as_str(), "??");
        assert_eq!(Country::new("é").as_str(), "??");
    }

    #[test]
    fn consumer_counters_land_in_their_families() {
        let metrics = WorkloadMetrics::default();
        let counters = metrics.consumer("billing", "appointment-events");
        counters.processed();
        counters.error(ConsumerError::Retry);
        counters.dead_lettered();
        let text = metrics.render();
        for line in [
            "meridian_consumer_processed_total{group=\"billing\",topic=\"appointment-events\"} 1",
            "meridian_consumer_errors_total{group=\"billing\",topic=\"appointment-events\",kind=\"retry\"} 1",
            "meridian_consumer_errors_total{group=\"billing\",topic=\"appointment-events\",kind=\"dlq\"} 1",
            "meridian_consumer_errors_total{group=\"billing\",topic=\"appointment-events\",kind=\"rejected\"} 0",
            "meridian_consumer_dlq_total{group=\"billing\",topic=\"appointment-events\"} 1",
        ] {
            assert!(text.contains(line), "no {line} in {text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn fhir_outcomes_follow_the_status() {
        let metrics = WorkloadMetrics::default();
        metrics.fhir("FR", "Patient", "read", 200);
        metrics.fhir("FR", "Patient", "read", 404);
        metrics.fhir("FR", "Patient", "read", 503);
        let text = metrics.render();
        for outcome in ["ok", "client_error", "server_error"] {
            let line = format!(
                "meridian_fhir_operations_total{{country=\"FR\",resource=\"Patient\",interaction=\"read\",outcome=\"{outcome}\"}} 1"
            );
            assert!(text.contains(&line), "no {line} in {text}");
        }
    }
    #[tokio::test]
    async fn requests_are_counted_by_route_template_never_by_raw_path() {
        use axum::routing::get;
        use tower::ServiceExt;
        let router = axum::Router::new().route("/{cc}/v1/things/{id}", get(|| async { "thing" }));
        let app = tracked(router, "metrics-test");
        for path in ["/DE/v1/things/4f1c", "/FR/v1/things/99", "/nowhere"] {
            let request = Request::builder().uri(path).body(axum::body::Body::empty()).unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        let text = workload().render();
        assert!(
            text.contains("meridian_http_requests_total{service=\"metrics-test\",route=\"/{cc}/v1/things/{id}\",method=\"GET\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("meridian_http_request_duration_seconds_count{service=\"metrics-test\",route=\"/{cc}/v1/things/{id}\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("meridian_http_requests_total{service=\"metrics-test\",route=\"unmatched\",method=\"GET\",status=\"404\"} 1"),
            "{text}"
        );
        assert!(!text.contains("4f1c") && !text.contains("/DE/"), "{text}");
    }
}
