//! Who is calling, for which country, with which access to records: deny by default.
//! A Practitioner (clinician) reads and writes the records of the countries their token
//! names; a Patient reads their own and nothing else; other roles see no clinical data.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use meridian_crds::serving::Serving;
use meridian_shared::auth::{Principal, Role};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{CountryEntry, Service};
use crate::fhir::{Issue, IssueType};
use crate::keys::Keyring;
use crate::store::Scope;

/// What the caller may do with records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads and writes every record of the country.
    Clinician,
    /// Reads the records of the patient whose account the token's subject holds.
    Patient,
}

/// A verified caller acting in one country.
pub struct Caller {
    pub principal: Principal,
    pub country: Arc<CountryEntry>,
    pub access: Access,
    pub correlation_id: Uuid,
    /// `http://host/{cc}/v1/fhir`, for links and `fullUrl`s.
    pub base: String,
    /// Where the audit records of this caller's reads go.
    pub reads: meridian_shared::audit::ReadLog,
    /// The caller's bearer token, handed on (with this service's own) when their request
    /// needs another Region's records.
    pub token: String,
}

impl Caller {
    pub fn keys(&self) -> &Keyring {
        self.country
            .keys
            .as_ref()
            .expect("checked when the caller was admitted")
    }

    pub fn scope(&self) -> Scope<'_> {
        Scope {
            rules: &self.country.rules,
            ring: self.keys(),
            actor: &self.principal.subject,
            correlation_id: self.correlation_id,
            reads: &self.reads,
        }
    }

    /// Refuses writes to anyone but a clinician.
    pub fn require_clinician(&self) -> Result<(), Issue> {
        match self.access {
            Access::Clinician => Ok(()),
            Access::Patient => Err(Issue::forbidden(
                "a patient reads their own records; only clinicians write them",
            )),
        }
    }

    /// The client ID whose records a Patient may read (None: the patient has no record
    /// here, so nothing is theirs). Clinicians are not limited: `Ok(None)` for them too, so
    /// callers check `access` first.
    pub async fn own_client_id(&self, conn: &mut PgConnection) -> Result<Option<Uuid>, sqlx::Error> {
        sqlx::query_scalar("SELECT client_id FROM patients WHERE country_code = $1 AND subject = $2")
            .bind(&self.country.rules.code)
            .bind(&self.principal.subject)
            .fetch_optional(conn)
            .await
    }
}

/// Country `cc` of this service, if it serves now and its data keys can be read: 404 for a
/// country not held here, 503 while it is suspended, not Ready or without keys.
pub fn admit_country(service: &Service, cc: &str, correlation_id: Uuid) -> Result<Arc<CountryEntry>, Issue> {
    let Some(country) = service.countries.get(cc) else {
        return Err(Issue::not_found(format!("no country {cc:?} is served here")));
    };
    let code = &country.rules.code;
    match &country.serving {
        Serving::Ready => {}
        Serving::Suspended => {
            return Err(Issue::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                format!("country {code} is suspended"),
            ));
        }
        Serving::NotReady(why) => {
            tracing::warn!(country = %code, %correlation_id, reason = %why, "refused a request: the country is not Ready");
            return Err(Issue::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                format!("country {code} is not ready to serve; try again later"),
            ));
        }
        Serving::Unavailable => return Err(Issue::unavailable(correlation_id)),
    }
    if let Err(why) = &country.keys {
        tracing::error!(country = %code, %correlation_id, reason = %why, "the vault keys cannot be read");
        return Err(Issue::unavailable(correlation_id));
    }
    Ok(country)
}

/// The base URL of this request's country.
pub fn base_url(parts: &Parts, cc: &str) -> String {
    let host = parts
        .headers
        .get("x-forwarded-host")
        .or_else(|| parts.headers.get(axum::http::header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    format!("{scheme}://{host}/{cc}/v1/fhir")
}

impl FromRequestParts<Arc<Service>> for Caller {
    type Rejection = Issue;

    async fn from_request_parts(parts: &mut Parts, service: &Arc<Service>) -> Result<Self, Issue> {
        let Path(params): Path<Vec<(String, String)>> = Path::from_request_parts(parts, service)
            .await
            .map_err(|e| Issue::not_found(e.body_text()))?;
        let cc = params
            .iter()
            .find(|(k, _)| k == "cc")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        // The token first: a caller who cannot say who they are learns nothing of the
        // countries here.
        let header = meridian_shared::serve::authorization(&parts.headers);
        let principal =
            meridian_shared::jwks::verify_following_rotation(&service.verifier, service.jwks.as_deref(), header)
                .await
                .map_err(|e| Issue::new(StatusCode::UNAUTHORIZED, IssueType::Login, e.to_string()))?;
        let correlation_id = meridian_shared::serve::correlation_id(&parts.headers);
        let country = admit_country(service, &cc, correlation_id)?;
        let code = &country.rules.code;
        if !principal.may_act_in(code) {
            return Err(Issue::forbidden(format!("the token may not act in country {code}")));
        }
        let access = if principal.has_role(Role::Practitioner) {
            Access::Clinician
        } else if principal.has_role(Role::Patient) {
            Access::Patient
        } else {
            return Err(Issue::forbidden(
                "records are for clinicians (Practitioner) and for patients reading their own",
            ));
        };
        let base = base_url(parts, &cc);
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(Caller {
            token,
            principal,
            country,
            access,
            correlation_id,
            base,
            reads: service.reads.clone(),
        })
    }
}
