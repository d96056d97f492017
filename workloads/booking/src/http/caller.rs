//! Who is calling, for which country: the bearer token checked, the country known and
//! serving, the token allowed to act in it.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use meridian_shared::auth::{Principal, Role};
use meridian_shared::patients;
use uuid::Uuid;

use super::{CountryEntry, Problem, Service, Serving};

/// A verified caller acting in one country.
pub struct Caller {
    pub principal: Principal,
    pub country: CountryEntry,
    /// From `X-Correlation-ID`, or new; ties the audit records to the request.
    pub correlation_id: Uuid,
}

impl Caller {
    /// Refuses callers that hold none of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), Problem> {
        if roles.iter().any(|r| self.principal.has_role(*r)) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(Problem::forbidden(format!(
            "this needs one of the roles {}",
            names.join(", ")
        )))
    }

    /// The client ID of the patient this caller signs in as: appointments name patients by
    /// it, never by the token subject (see [`meridian_shared::patients`]).
    pub async fn client_id(&self, pool: &sqlx::PgPool) -> Result<Uuid, Problem> {
        let mut conn = pool.acquire().await?;
        Ok(patients::client_id_for_subject(&mut conn, &self.country.code, &self.principal.subject).await?)
    }

    pub fn actor(&self) -> crate::Actor<'_> {
        crate::Actor {
            subject: &self.principal.subject,
            correlation_id: self.correlation_id,
        }
    }

    /// Whose appointments this caller may see: staff see the country's, a practitioner
    /// (whose token subject is their practitioner ID) theirs, a patient their own, by the
    /// client ID their token subject maps to (registered on first use).
    pub async fn scope(&self, pool: &sqlx::PgPool) -> Result<crate::appointments::Scope, Problem> {
        use crate::appointments::Scope;
        let p = &self.principal;
        if [Role::SystemAdmin, Role::ClinicAdmin, Role::PracticeManager]
            .iter()
            .any(|r| p.has_role(*r))
        {
            Ok(Scope::Country)
        } else if p.has_role(Role::Practitioner) {
            p.subject
                .parse()
                .map(Scope::Practitioner)
                .map_err(|_| Problem::forbidden("a practitioner's token must name the practitioner ID as its subject"))
        } else if p.has_role(Role::Patient) {
            Ok(Scope::Patient(self.client_id(pool).await?))
        } else {
            Err(Problem::forbidden("the token holds no role that sees appointments"))
        }
    }
}

impl FromRequestParts<Arc<Service>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, service: &Arc<Service>) -> Result<Self, Problem> {
        let Path(params): Path<Vec<(String, String)>> = Path::from_request_parts(parts, service)
            .await
            .map_err(|e| Problem::not_found(e.body_text()))?;
        let cc = params
            .iter()
            .find(|(k, _)| k == "cc")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        // The token first: a caller who cannot say who they are learns nothing of the
        // countries here, not even whether one exists or why it does not serve.
        let header = meridian_shared::serve::authorization(&parts.headers);
        let principal =
            meridian_shared::jwks::verify_following_rotation(&service.verifier, service.jwks.as_deref(), header)
                .await?;
        let correlation_id = meridian_shared::serve::correlation_id(&parts.headers);
        let country = match service.countries.get(cc) {
            None => return Err(Problem::not_found(format!("no country {cc:?} is served here"))),
            Some(CountryEntry {
                serving: Serving::NotReady(why),
                code,
                ..
            }) => {
                // Why is for operators (it may quote a database error): to the log, under
                // the correlation ID the caller is given.
                tracing::warn!(country = %code, %correlation_id, reason = %why, "refused a request: the country is not Ready");
                return Err(Problem::unavailable(
                    format!("country {code} is not ready to serve; try again later"),
                    correlation_id,
                ));
            }
            Some(CountryEntry {
                serving: Serving::Unavailable,
                code,
                ..
            }) => {
                tracing::warn!(country = %code, %correlation_id, "refused a request: the country's database is out of reach");
                return Err(Problem::unavailable(
                    format!(
                        "country {code} cannot be served at the moment: its database is out of reach; try again shortly"
                    ),
                    correlation_id,
                ));
            }
            Some(CountryEntry {
                serving: Serving::Suspended,
                ..
            }) => {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Suspended",
                    format!("country {cc:?} is suspended"),
                ));
            }
            Some(entry) => entry,
        };
        if !principal.may_act_in(&country.code) {
            return Err(Problem::forbidden(format!(
                "the token may not act in country {}",
                country.code
            )));
        }
        Ok(Caller {
            principal,
            country,
            correlation_id,
        })
    }
}
