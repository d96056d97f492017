//! Calls to other Regions' records services: as this service (a Kubernetes ServiceAccount
//! token with audience [`AUDIENCE`] in a cluster, one from the dev issuer in `meridian
//! dev`), carrying the clinician's own token, their country and purpose of use, and the
//! correlation ID; never waiting beyond the stated timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

/// Audience of the tokens records services call each other with.
pub const AUDIENCE: &str = "meridian-records";
/// The clinician's token (as they sent it to the asking service, without `Bearer `).
pub const CLINICIAN_HEADER: &str = "x-meridian-clinician";
/// Purpose of use, an HL7 v3 ActReason code: see [`PURPOSES`].
pub const PURPOSE_HEADER: &str = "x-meridian-purpose-of-use";
/// The country the clinician asks from.
pub const FROM_HEADER: &str = "x-meridian-requesting-country";
/// Purposes a disclosure may be asked for: treatment, emergency treatment.
pub const PURPOSES: &[&str] = &["TREAT", "ETREAT"];
/// How long a call to another Region may take, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A token made by [`TokenSource::Issued`]'s function, and when it was made.
type Minted = Arc<std::sync::Mutex<Option<(String, std::time::Instant)>>>;

/// The ServiceAccount Region `region`'s records service calls other Regions as.
pub fn service_subject(region: &str) -> String {
    format!("system:serviceaccount:meridian-region-{region}:records")
}

/// Where this service's own token comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// Made by a function (`meridian dev`'s issuer) that gives tokens valid for the
    /// `Duration`; each is used for half of that.
    Issued(Arc<dyn Fn() -> String + Send + Sync>, Duration, Minted),
    /// A projected ServiceAccount token file, read at every call (the kubelet renews it).
    File(PathBuf),
}

impl TokenSource {
    /// Tokens from `mint`, each valid for `lifetime`.
    pub fn issued(mint: impl Fn() -> String + Send + Sync + 'static, lifetime: Duration) -> Self {
        TokenSource::Issued(Arc::new(mint), lifetime, Minted::default())
    }

    fn token(&self) -> Result<String, String> {
        match self {
            TokenSource::Issued(mint, lifetime, minted) => {
                let mut minted = minted.lock().expect("token lock");
                match minted.as_ref() {
                    Some((token, at)) if at.elapsed() < *lifetime / 2 => Ok(token.clone()),
                    _ => {
                        let token = mint();
                        *minted = Some((token.clone(), std::time::Instant::now()));
                        Ok(token)
                    }
                }
            }
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("the service's token {}: {e}", path.display())),
        }
    }
}

/// How another Region's records service answered.
#[derive(Debug)]
pub enum Answer {
    /// The Bundle it disclosed.
    Disclosed(Value),
    /// It refused (consent, a rule): its status and its OperationOutcome's diagnostics.
    Refused(StatusCode, String),
    /// It could not be asked, or did not answer in time: why.
    Unreachable(String),
}

/// What one disclosure asks for.
pub struct Ask<'a> {
    pub region: &'a str,
    pub country: &'a str,
    pub patient: Uuid,
    /// `patient` (the Patient) or `everything` (the Patient and their records).
    pub scope: &'a str,
    pub clinician_token: &'a str,
    pub from: &'a str,
    pub purpose: &'a str,
    pub correlation_id: Uuid,
}

/// Other Regions' records services.
pub struct Peers {
    /// Base URL of a Region's records service, `{region}` standing for its name (e.g.
    /// `http://records.meridian-region-{region}.svc:8080`).
    url: String,
    token: TokenSource,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Peers {
    pub fn new(url: &str, token: TokenSource, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            url: url.trim_end_matches('/').to_string(),
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks Region `ask.region` for `ask.patient` of `ask.country`.
    pub async fn disclose(&self, ask: &Ask<'_>) -> Answer {
        let token = match self.token.token() {
            Ok(token) => token,
            Err(e) => return Answer::Unreachable(e),
        };
        let uri = format!(
            "{}/{}/v1/fhir/$disclose?patient={}&scope={}",
            self.url.replace("{region}", ask.region),
            ask.country.to_ascii_lowercase(),
            ask.patient,
            ask.scope
        );
        let request = Request::get(&uri)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::ACCEPT, crate::fhir::FHIR_JSON)
            .header(CLINICIAN_HEADER, ask.clinician_token)
            .header(PURPOSE_HEADER, ask.purpose)
            .header(FROM_HEADER, ask.from)
            .header("x-correlation-id", ask.correlation_id.to_string())
            .body(Full::new(Bytes::new()));
        let mut request = match request {
            Ok(request) => request,
            Err(e) => return Answer::Unreachable(format!("cannot ask {uri}: {e}")),
        };
        // The client span of the call; the other Region's server span continues its trace
        // (`traceparent`). No patient ID here: the route template says what was asked.
        let span = tracing::info_span!(
            "disclose",
            otel.name = "GET /{cc}/v1/fhir/$disclose",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "GET",
            http.response.status_code = tracing::field::Empty,
            meridian.region = ask.region,
            meridian.correlation_id = %ask.correlation_id,
        );
        span.in_scope(|| meridian_shared::telemetry::inject(request.headers_mut()));
        let call = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let answer = tokio::time::timeout(self.timeout, call).instrument(span.clone()).await;
        let (status, body) = match answer {
            Err(_) => {
                span.record("otel.status_code", "error");
                return Answer::Unreachable(format!("no answer within {} ms", self.timeout.as_millis()));
            }
            Ok(Err(e)) => {
                span.record("otel.status_code", "error");
                return Answer::Unreachable(e);
            }
            Ok(Ok(answer)) => answer,
        };
        span.record("http.response.status_code", status.as_u16());
        let body: Value = match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(_) => return Answer::Unreachable(format!("answered {status} without FHIR JSON")),
        };
        if status == StatusCode::OK && body["resourceType"] == "Bundle" {
            return Answer::Disclosed(body);
        }
        let diagnostics = body
            .pointer("/issue/0/diagnostics")
            .and_then(Value::as_str)
            .unwrap_or("no reason given")
            .to_string();
        if status.is_client_error() {
            Answer::Refused(status, diagnostics)
        } else {
            Answer::Unreachable(format!("answered {status}: {diagnostics}"))
        }
    }
}
