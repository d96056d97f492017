//! Logs and traces of every `meridian` command, set up once in `main`.
//!
//! - Logs go to stderr, as text or (`--log-format json`) one JSON object per line with the
//!   timestamp, level, target, the event's fields (its message among them) and the fields of
//!   the current span. `RUST_LOG` filters them as usual.
//! - Traces are exported with OTLP over HTTP when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the
//!   default, or `http/json`; `OTEL_SERVICE_NAME` overrides `meridian-<command>`): the spans
//!   `RUST_LOG` lets through, with the log events inside them as span events. Without an
//!   endpoint nothing is exported and no OpenTelemetry work happens: the `tracing` spans
//!   remain, for the logs.
//! - W3C Trace Context (`traceparent`, `tracestate`): [`http_server_span`] continues the
//!   caller's trace, [`inject`] hands the current one on to an outgoing request.
//!
//! What spans and log lines carry is reviewed for personal data: routes are templates
//! (`/{cc}/v1/fhir/{resource_type}/{id}`), never the paths or queries requests came with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Whether spans are exported: only then are trace contexts read from and written to headers.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The log filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,kube_runtime=warn,hyper=warn";

/// The header carrying a request's correlation ID.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// How long one export of spans may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where traces go, from the standard OpenTelemetry environment variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceSettings {
    /// `service.name` of the spans.
    pub service_name: String,
    /// OTLP/HTTP with JSON bodies instead of protobuf.
    pub json: bool,
}

impl TraceSettings {
    /// The settings `env` (a variable's value by name) asks for, or `None` when traces are
    /// off: no OTLP endpoint set, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env(env: impl Fn(&str) -> Option<String>, default_service: &str) -> Option<Self> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            return None;
        }
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
        {
            return None;
        }
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        Some(Self {
            service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_string()),
            json: protocol.is_some_and(|p| p.trim().eq_ignore_ascii_case("http/json")),
        })
    }
}

/// The installed logging and tracing; [`Telemetry::shutdown`] flushes the spans not yet
/// exported.
#[must_use = "spans are flushed by Telemetry::shutdown"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: logs in `format` to stderr, and spans exported as
    /// [`TraceSettings::from_env`] says, with `service.name` `default_service` unless
    /// `OTEL_SERVICE_NAME` names another. The exporter's HTTP calls run on `runtime`.
    /// A second call (tests) leaves the first subscriber in place.
    pub fn init(format: LogFormat, default_service: &str, runtime: tokio::runtime::Handle) -> Self {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
        // `RUST_LOG` filters logs and spans alike, for every layer: per-layer filters lost the
        // request spans of `meridian dev` (its reconcile spans got through).
        let logs = match format {
            LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed(),
        };
        let mut layers: Vec<Box<dyn Layer<Filtered> + Send + Sync>> = vec![logs];
        let mut failure = None;
        let mut provider = None;
        if let Some(settings) = TraceSettings::from_env(|name| std::env::var(name).ok(), default_service) {
            match tracer_provider(&settings, runtime) {
                Ok(built) => {
                    let tracer = built.tracer("meridian");
                    layers.push(tracing_opentelemetry::layer().with_tracer(tracer).boxed());
                    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
                    provider = Some(built);
                }
                Err(e) => failure = Some(e),
            }
        }
        if tracing_subscriber::registry()
            .with(filter)
            .with(layers)
            .try_init()
            .is_ok()
        {
            EXPORTING.store(provider.is_some(), Ordering::Relaxed);
        }
        if let Some(e) = failure {
            tracing::warn!(error = %e, "traces are not exported: the OTLP exporter cannot be built");
        }
        Self { provider }
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter. Blocks: call it outside the
    /// runtime, while the runtime still runs (the export's HTTP call runs on it).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
                eprintln!("traces: the last spans could not be exported: {e}");
            }
        }
    }
}

/// The subscriber the layers sit on: the registry behind `RUST_LOG`'s filter.
type Filtered = tracing_subscriber::layer::Layered<EnvFilter, Registry>;

fn tracer_provider(settings: &TraceSettings, runtime: tokio::runtime::Handle) -> Result<SdkTracerProvider, String> {
    let protocol = if settings.json {
        Protocol::HttpJson
    } else {
        Protocol::HttpBinary
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient::new(runtime)?)
        .with_protocol(protocol)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client: hyper (http or https, the system's roots), its calls spawned
/// on the program's runtime. The SDK's batch processor exports from a thread of its own with
/// no runtime, where hyper's connections could not be driven; awaiting a spawned task works
/// from any thread.
#[derive(Clone)]
struct ExportClient {
    client: crate::tls::HttpsClient<Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportClient")
    }
}

impl ExportClient {
    fn new(runtime: tokio::runtime::Handle) -> Result<Self, String> {
        Ok(Self {
            client: crate::tls::https_client()?,
            runtime,
        })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let call = async move {
            let response = tokio::time::timeout(EXPORT_TIMEOUT, client.request(request.map(Full::new)))
                .await
                .map_err(|_| "no answer in time".to_string())?
                .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            if !parts.status.is_success() {
                return Err(format!("the collector answered {}", parts.status));
            }
            Ok(http::Response::from_parts(parts, body))
        };
        match self.runtime.spawn(call).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.to_string().into()),
        }
    }
}

/// The request's correlation ID (see [`crate::serve::correlation_id`]); a request without a
/// usable one is given a new one in its headers, so that the span and the handlers agree.
pub fn ensure_correlation_id(headers: &mut http::HeaderMap) -> uuid::Uuid {
    let given = headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Some(id) = given {
        return id;
    }
    let id = uuid::Uuid::new_v4();
    let mut text = uuid::Uuid::encode_buffer();
    if let Ok(value) = HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)) {
        headers.insert(CORRELATION_HEADER, value);
    }
    id
}

/// Middleware of the workloads' routers: one server span per request, named after the
/// method and route template, with `http.request.method`, `http.route`,
/// `http.response.status_code` and `meridian.correlation_id`; a child of the caller's trace
/// when the request carries a W3C `traceparent`.
pub async fn http_server_span(mut request: Request, next: Next) -> Response {
    let correlation_id = ensure_correlation_id(request.headers_mut());
    let span = tracing::info_span!(
        "request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = request.method().as_str(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        meridian.correlation_id = %correlation_id,
    );
    if let Some(route) = request.extensions().get::<MatchedPath>() {
        span.record("http.route", route.as_str());
        if EXPORTING.load(Ordering::Relaxed) {
            span.record("otel.name", format!("{} {}", request.method(), route.as_str()));
        }
    } else if EXPORTING.load(Ordering::Relaxed) {
        span.record("otel.name", request.method().as_str());
    }
    if EXPORTING.load(Ordering::Relaxed) {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
        });
        // Fails only when the span is not recorded (filtered out): nothing to continue then.
        let _ = span.set_parent(parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into `headers` of
/// an outgoing request, when spans are exported.
pub fn inject(headers: &mut http::HeaderMap) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn traces_are_off_without_an_endpoint() {
        assert_eq!(TraceSettings::from_env(env(&[]), "meridian-records"), None);
        assert_eq!(
            TraceSettings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), "meridian-records"),
            None
        );
        assert_eq!(
            TraceSettings::from_env(
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                    ("OTEL_SDK_DISABLED", "true")
                ]),
                "meridian-records"
            ),
            None
        );
        assert_eq!(
            TraceSettings::from_env(
                env(&[
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces"),
                    ("OTEL_TRACES_EXPORTER", "none")
                ]),
                "meridian-records"
            ),
            None
        );
    }

    #[test]
    fn an_endpoint_turns_traces_on_with_the_command_as_service() {
        assert_eq!(
            TraceSettings::from_env(
                env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")]),
                "meridian-booking"
            ),
            Some(TraceSettings {
                service_name: "meridian-booking".into(),
                json: false
            })
        );
        assert_eq!(
            TraceSettings::from_env(
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                    ("OTEL_SERVICE_NAME", "records-de"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ]),
                "meridian-records"
            ),
            Some(TraceSettings {
                service_name: "records-de".into(),
                json: true
            })
        );
    }

    #[test]
    fn a_request_without_a_usable_correlation_id_gets_one() {
        let mut headers = http::HeaderMap::new();
        headers.insert(CORRELATION_HEADER, HeaderValue::from_static("not-a-uuid"));
        let id = ensure_correlation_id(&mut headers);
        assert_eq!(crate::serve::correlation_id(&headers), id);
        let given = uuid::Uuid::new_v4();
        headers.insert(CORRELATION_HEADER, HeaderValue::from_str(&given.to_string()).unwrap());
        assert_eq!(ensure_correlation_id(&mut headers), given);
    }
}
