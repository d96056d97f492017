//! FHIR answers: resources with their version headers, Bundles, OperationOutcomes, and the
//! request body read as FHIR JSON.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fhir::{FHIR_JSON, Issue, IssueType};
use crate::store::{StoreError, Stored};

/// A FHIR JSON answer.
pub fn fhir(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, serde_json::to_vec(body).expect("serializes")).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    response
}

impl IntoResponse for Issue {
    fn into_response(self) -> Response {
        let mut response = fhir(self.status, &self.outcome());
        if self.code == IssueType::Login {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A store failure as an answer: the database's errors logged under the correlation ID.
pub fn store_failure(e: StoreError, correlation_id: uuid::Uuid) -> Issue {
    match e {
        StoreError::Refused(issue) => issue,
        StoreError::Database(e) => {
            tracing::warn!(error = %e, %correlation_id, "records store failed");
            Issue::unavailable(correlation_id)
        }
    }
}

/// A stored version with `ETag`, `Last-Modified` and (when created) `Location`.
pub fn resource(stored: &Stored, status: StatusCode, base: &str, minimal: bool) -> Response {
    let mut response = if minimal {
        let mut r = status.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json; charset=utf-8"),
        );
        r
    } else {
        fhir(status, stored.body.as_ref().unwrap_or(&Value::Null))
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&stored.etag()) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&stored.last_updated.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&format!("{base}/{}", stored.location()))
    {
        headers.insert(header::LOCATION, v);
    }
    response
}

/// A Bundle entry's `fullUrl`.
pub fn full_url(base: &str, stored: &Stored) -> String {
    format!("{base}/{}/{}", stored.resource_type, stored.id)
}

/// The request body as JSON, refusing other media types, oversize bodies and bad JSON with
/// the line and column where it went wrong.
pub fn read_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, Issue> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Issue::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueType::TooCostly,
                format!("the body is larger than {} bytes", super::MAX_BODY_BYTES),
            )
        } else {
            Issue::bad_request(format!("the body could not be read: {}", e.body_text()))
        }
    })?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    match media.as_deref() {
        Some(FHIR_JSON) | Some("application/json") => {}
        other => {
            return Err(Issue::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                IssueType::NotSupported,
                format!(
                    "send the resource as {FHIR_JSON} (got {})",
                    other.unwrap_or("no Content-Type")
                ),
            ));
        }
    }
    serde_json::from_slice(&body).map_err(|e| {
        Issue::new(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Whether the caller asked for `Prefer: return=minimal`.
pub fn wants_minimal(headers: &HeaderMap) -> bool {
    prefer(headers).any(|p| p == "return=minimal")
}

/// Whether the caller asked for `Prefer: handling=lenient`.
pub fn lenient(headers: &HeaderMap) -> bool {
    prefer(headers).any(|p| p == "handling=lenient")
}

fn prefer(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .map(|p| p.trim().replace(' ', "").to_ascii_lowercase())
}

/// A Bundle of `kind` (`searchset`, `history`, ...) with its links and entries.
pub fn bundle(kind: &str, links: Vec<(&str, String)>, entries: Vec<Value>) -> Value {
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": kind,
        "timestamp": crate::dates::instant(chrono::Utc::now()),
    });
    if !links.is_empty() {
        bundle["link"] = links
            .into_iter()
            .map(|(relation, url)| json!({"relation": relation, "url": url}))
            .collect();
    }
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}

/// A route that is not FHIR's.
pub async fn unknown_route(uri: axum::http::Uri) -> Issue {
    Issue::not_found(format!(
        "{} is not an interaction this server supports (see metadata)",
        uri.path()
    ))
}
