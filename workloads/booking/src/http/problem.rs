//! Errors as RFC 9457 problem documents (`application/problem+json`): a status, a short
//! title, a detail for this occurrence, and the invalid fields. Internal errors are logged
//! and answered without their details; a database out of reach is a `503`, also without.

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::appointments::{BookingError, Clash};
use crate::practitioners::{FieldError, PractitionerError};
use meridian_shared::auth::AuthError;

/// One invalid field.
#[derive(Clone, Debug, Serialize)]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<InvalidField>,
    pub extra: Option<serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            extra: None,
        }
    }

    pub fn invalid(errors: Vec<InvalidField>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request", detail)
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", detail)
    }

    /// 503, naming the request's correlation ID (the log has the details under it).
    pub fn unavailable(detail: impl Into<String>, correlation_id: uuid::Uuid) -> Self {
        Self {
            extra: Some(json!({ "correlationId": correlation_id })),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", detail)
        }
    }

    /// The country's database cannot be reached now (down, restarting, connections lost).
    /// Says nothing of the error itself; the client may try again shortly.
    pub fn database_unavailable(error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%error, "database unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            "the country's database cannot be reached at the moment; try again shortly",
        )
    }

    /// A database error: `503` when the database is out of reach, `500` otherwise.
    pub fn database(error: &sqlx::Error) -> Self {
        if unavailable(error) {
            Self::database_unavailable(error)
        } else {
            Self::internal(error)
        }
    }

    fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "the request could not be completed; try again",
        )
    }
}

/// Whether `error` means the database is out of reach rather than that the request failed:
/// no connection within the pool's acquire timeout (the server is down or restarting), a
/// connection lost mid-request, or the server refusing connections for now (SQLSTATE class
/// 08 connection exception, 57P01-57P03 shutting down or starting up, 53300 too many
/// connections).
pub fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")),
        _ => false,
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("https://meridian.dev/problems/{}", slug(self.title)),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        if let Some(serde_json::Value::Object(extra)) = self.extra {
            body.as_object_mut().expect("object").extend(extra);
        }
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            Json(body),
        )
            .into_response()
    }
}

fn slug(title: &str) -> String {
    title.to_ascii_lowercase().replace(' ', "-")
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        let mut problem = Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string());
        if matches!(e, AuthError::BadKeySet(_)) {
            problem = Problem::internal(&e);
        }
        problem
    }
}

impl From<PractitionerError> for Problem {
    fn from(e: PractitionerError) -> Self {
        match e {
            PractitionerError::Invalid(errors) => Problem::invalid(errors.into_iter().map(field).collect()),
            PractitionerError::NotFound(_) => Problem::not_found(e.to_string()),
            PractitionerError::VersionMismatch { .. } => {
                Problem::new(StatusCode::PRECONDITION_FAILED, "Version mismatch", e.to_string())
            }
            PractitionerError::DuplicateExternalId(_) => Problem::new(StatusCode::CONFLICT, "Conflict", e.to_string()),
            PractitionerError::Database(ref db) => Problem::database(db),
        }
    }
}

impl From<BookingError> for Problem {
    fn from(e: BookingError) -> Self {
        match e {
            BookingError::Conflict(clash) => {
                let detail = match clash {
                    Clash::PractitionerBusy => "the practitioner is already booked at that time",
                    Clash::PatientBusy => "the patient already has an appointment at that time",
                };
                Problem {
                    extra: Some(json!({ "conflict": clash })),
                    ..Problem::new(StatusCode::CONFLICT, "Conflict", detail)
                }
            }
            BookingError::NotBookable(_) => Problem::invalid(vec![InvalidField {
                field: "practitionerId".into(),
                message: "no such practitioner takes appointments in this country".into(),
            }]),
            BookingError::UnknownPatient(_) => Problem::invalid(vec![InvalidField {
                field: "patientId".into(),
                message: "no patient with this client ID is registered in this country".into(),
            }]),
            BookingError::NotFound(_) => Problem::not_found(e.to_string()),
            BookingError::NotBooked(_) => Problem::new(StatusCode::CONFLICT, "Conflict", e.to_string()),
            BookingError::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency key reused",
                e.to_string(),
            ),
            BookingError::Database(ref db) => Problem::database(db),
        }
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        Problem::database(&e)
    }
}

fn field(e: FieldError) -> InvalidField {
    InvalidField {
        field: e.field.into(),
        message: e.message,
    }
}

/// `Json<T>` whose rejections (malformed JSON, wrong types, missing content type,
/// oversize body) are problem documents.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => {
                let status = rejection.status();
                let title = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => "Request too large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
                    _ => "Malformed request",
                };
                let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
                    StatusCode::BAD_REQUEST
                } else {
                    status
                };
                Err(Problem::new(status, title, rejection.body_text()))
            }
        }
    }
}

/// The `{id}` of the path. An ID that does not parse names nothing: 404, as a problem.
pub struct PathId(pub uuid::Uuid);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Problem> {
        let axum::extract::Path(params): axum::extract::Path<Vec<(String, String)>> =
            axum::extract::Path::from_request_parts(parts, state)
                .await
                .map_err(|e| Problem::not_found(e.body_text()))?;
        let raw = params
            .into_iter()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v)
            .unwrap_or_default();
        raw.parse()
            .map(PathId)
            .map_err(|_| Problem::not_found(format!("{raw:?} is not an ID of this API")))
    }
}

/// `Query<T>` whose rejections (unknown or malformed parameters) are problem documents.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(e) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "Malformed request",
                e.body_text(),
            )),
        }
    }
}
