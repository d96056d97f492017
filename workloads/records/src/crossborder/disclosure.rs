//! `GET /{cc}/v1/fhir/$disclose?patient=<id>&scope=patient|everything`: another Region's
//! records service asks, on behalf of one of its clinicians, for a patient of this country.
//!
//! Answered only when every one of these holds, else refused with an OperationOutcome:
//! - the caller is another Region's records service: a token for [`super::peers::AUDIENCE`] whose
//!   subject is `system:serviceaccount:meridian-region-<region>:records`;
//! - it carries the clinician's own token ([`CLINICIAN_HEADER`]): a Practitioner
//!   of the country they ask from ([`FROM_HEADER`]), for a purpose of use among
//!   [`PURPOSES`];
//! - both countries are linked to the PatientIndex, and this Country's
//!   `regulatory.consent.recordSharing` is true;
//! - the patient's latest active `Consent` of scope `patient-privacy` permits it: type
//!   `permit`, within its period, for the purpose asked (when it names purposes).
//!
//! Every answer, given or refused, leaves an audit record in this country's chain naming the
//! clinician, the asking country, the purpose, the calling service and the correlation ID
//! (`patient.disclose`, `patient.disclose-refused`, and `patient.disclose-failed` after a
//! permitted disclosure whose records could not be read).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use meridian_shared::auth::{Principal, Role};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::peers::{CLINICIAN_HEADER, FROM_HEADER, PURPOSE_HEADER, PURPOSES};
use crate::fhir::{Issue, IssueType, ResourceType};
use crate::http::response::{bundle, fhir, full_url, store_failure};
use crate::http::{CountryEntry, Service, admit_country};
use crate::store::{self, Scope};

/// Consent scope of a patient's privacy choices (HL7 `consentscope`).
pub const PRIVACY_SCOPE: &str = "patient-privacy";

/// A verified request from another Region's records service.
pub struct Peer {
    /// The calling service's subject.
    pub service: String,
    pub clinician: Principal,
    /// The country the clinician asks from.
    pub from: String,
    pub purpose: String,
    pub country: Arc<CountryEntry>,
    pub correlation_id: Uuid,
    pub base: String,
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Whether `subject` is a Region's records service (its ServiceAccount in its namespace).
fn is_records_service(subject: &str) -> bool {
    subject
        .strip_prefix("system:serviceaccount:meridian-region-")
        .and_then(|rest| rest.strip_suffix(":records"))
        .is_some_and(|region| !region.is_empty() && !region.contains(':'))
}

impl FromRequestParts<Arc<Service>> for Peer {
    type Rejection = Issue;

    async fn from_request_parts(parts: &mut Parts, service: &Arc<Service>) -> Result<Self, Issue> {
        let Path(cc): Path<String> = Path::from_request_parts(parts, service)
            .await
            .map_err(|e| Issue::not_found(e.body_text()))?;
        let correlation_id = meridian_shared::serve::correlation_id(&parts.headers);
        let unauthorized = |why: String| Issue::new(StatusCode::UNAUTHORIZED, IssueType::Login, why);
        let authorization = meridian_shared::serve::authorization(&parts.headers);
        if authorization.is_none() {
            return Err(unauthorized(
                "the calling service's token is missing: send Authorization: Bearer <token>".into(),
            ));
        }
        let Some(accept) = &service.crossborder.accept else {
            return Err(Issue::forbidden(
                "this records service takes no requests from other Regions",
            ));
        };
        let caller = accept
            .subject(authorization)
            .await
            .map_err(|e| unauthorized(format!("the calling service's token: {e}")))?;
        if !is_records_service(&caller) {
            return Err(Issue::forbidden(format!("{caller} is not a Region's records service")));
        }
        let country = admit_country(service, &cc, correlation_id)?;
        let code = country.rules.code.clone();
        let token = header(parts, CLINICIAN_HEADER)
            .ok_or_else(|| unauthorized(format!("the clinician's token is missing ({CLINICIAN_HEADER})")))?;
        let clinician = meridian_shared::jwks::verify_following_rotation(
            &service.verifier,
            service.jwks.as_deref(),
            Some(&format!("Bearer {token}")),
        )
        .await
        .map_err(|e| unauthorized(format!("the clinician's token: {e}")))?;
        let from = header(parts, FROM_HEADER).unwrap_or_default().to_ascii_uppercase();
        if !meridian_shared::schema::is_country_code(&from) || from == code {
            return Err(Issue::bad_request(format!(
                "{FROM_HEADER} names the country the clinician asks from (not {code})"
            )));
        }
        if !clinician.has_role(Role::Practitioner) || !clinician.may_act_in(&from) {
            return Err(Issue::forbidden(format!(
                "only a clinician (Practitioner) of {from} may ask for records on behalf of {from}"
            )));
        }
        let purpose = header(parts, PURPOSE_HEADER).unwrap_or_default().to_ascii_uppercase();
        if !PURPOSES.contains(&purpose.as_str()) {
            return Err(Issue::bad_request(format!(
                "{PURPOSE_HEADER} is the purpose of use: one of {}",
                PURPOSES.join(", ")
            )));
        }
        Ok(Peer {
            service: caller,
            clinician,
            from,
            purpose,
            base: crate::http::caller_base_url(parts, &cc),
            country,
            correlation_id,
        })
    }
}

/// What is asked for.
#[derive(Deserialize)]
pub struct Disclose {
    patient: String,
    #[serde(default)]
    scope: Option<String>,
}

/// The disclosure itself: see the module's documentation.
pub async fn disclose(
    State(service): State<Arc<Service>>,
    peer: Peer,
    Query(ask): Query<Disclose>,
) -> Result<Response, Issue> {
    let code = &peer.country.rules.code;
    let Ok(id) = ask.patient.parse::<Uuid>() else {
        return Err(Issue::bad_request("patient names a Patient id of this country").at("patient"));
    };
    let everything = match ask.scope.as_deref().unwrap_or("patient") {
        "patient" => false,
        "everything" => true,
        other => {
            return Err(Issue::bad_request(format!("scope {other:?} is patient or everything")).at("scope"));
        }
    };
    let keys = peer.country.keys.as_ref().expect("admitted with its keys");
    let scope = Scope {
        rules: &peer.country.rules,
        ring: keys,
        actor: &peer.clinician.subject,
        correlation_id: peer.correlation_id,
        reads: &service.reads,
    };
    let fail = |e| store_failure(e, peer.correlation_id);
    let record = |outcome: &str| {
        format!(
            "Patient/{id} to {} for {} via {}: {outcome}",
            peer.from, peer.purpose, peer.service
        )
    };
    // The country's rules first: a refusal names the rule, and is audited like a disclosure.
    let refusal = match service.crossborder.link.get() {
        _ if !peer.country.rules.record_sharing => Some(format!(
            "{code} does not share patient records across borders (its regulatory.consent.recordSharing is false)"
        )),
        None => Some(format!("{code} is not linked to a PatientIndex")),
        Some(linked) if !linked.link.links(code) || !linked.link.links(&peer.from) => Some(format!(
            "records of {code} are not shared with {}: both must be linked to the PatientIndex",
            peer.from
        )),
        Some(_) => None,
    };
    if let Some(why) = refusal {
        store::audit_read(&scope, "patient.disclose-refused", &record(&why))
            .await
            .map_err(fail)?;
        return Err(Issue::forbidden(why));
    }
    // The patient's consent first; once it permits, the disclosure's record is written while
    // the records are read, and the answer waits for both.
    let mut conn = crate::http::connection(&service.vault, peer.correlation_id).await?;
    if let Err(why) = consent(&mut conn, code, id, &peer.purpose)
        .await
        .map_err(|e| fail(e.into()))?
    {
        drop(conn);
        store::audit_read(&scope, "patient.disclose-refused", &record(&why))
            .await
            .map_err(fail)?;
        return Err(Issue::forbidden(why));
    }
    let shown = if everything { "everything" } else { "the Patient" };
    let disclosed = record(&format!("{shown} disclosed"));
    let audited = store::audit_read(&scope, "patient.disclose", &disclosed);
    let read = async {
        let patient = store::fetch(&mut conn, &scope, ResourceType::Patient, id).await?;
        let records = if everything {
            crate::search::everything(&mut conn, &scope, id).await?
        } else {
            Vec::new()
        };
        Ok::<_, store::StoreError>((patient, records))
    };
    let (audited, read) = tokio::join!(audited, read);
    audited.map_err(fail)?;
    let (patient, records) = match read {
        Ok(read) => read,
        // The record above said what was to go; this one says it did not (a patient deleted
        // since their consent, the store out of reach), so the chain tells what happened.
        Err(e) => {
            let issue = fail(e);
            let failed = record(&format!("nothing disclosed: {}", issue.diagnostics));
            store::audit_read(&scope, "patient.disclose-failed", &failed)
                .await
                .map_err(fail)?;
            return Err(issue);
        }
    };
    let entries: Vec<Value> = std::iter::once(&patient)
        .chain(&records)
        .map(|s| json!({"fullUrl": full_url(&peer.base, s), "resource": s.body, "search": {"mode": "match"}}))
        .collect();
    let total = entries.len();
    let mut answer = bundle(
        "searchset",
        vec![("self", format!("{}/$disclose?patient={id}", peer.base))],
        entries,
    );
    answer["total"] = json!(total);
    Ok(fhir(StatusCode::OK, &answer))
}

/// Whether patient `id` of `country` lets their records go abroad for `purpose`: their
/// latest active `patient-privacy` Consent must permit it (see the module's documentation).
/// `Err` says why not.
async fn consent(
    conn: &mut PgConnection,
    country: &str,
    id: Uuid,
    purpose: &str,
) -> Result<Result<(), String>, sqlx::Error> {
    let latest =
        crate::consent::latest_active(conn, country, id, crate::consent::Matching::Scope(PRIVACY_SCOPE)).await?;
    let Some(consent) = latest else {
        return Ok(Err(format!(
            "Patient/{id} has no active Consent (scope {PRIVACY_SCOPE}) to share their records across borders"
        )));
    };
    let consent_id = consent["id"].as_str().unwrap_or_default();
    let provision = &consent["provision"];
    if provision["type"].as_str() != Some("permit") {
        return Ok(Err(format!(
            "Patient/{id}'s Consent/{consent_id} does not permit sharing their records"
        )));
    }
    if !crate::consent::in_force(provision, chrono::Utc::now()) {
        return Ok(Err(format!(
            "Patient/{id}'s Consent/{consent_id} is not in force now (provision.period)"
        )));
    }
    let purposes: Vec<&str> = provision["purpose"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["code"].as_str())
        .collect();
    if !purposes.is_empty() && !purposes.contains(&purpose) {
        return Ok(Err(format!(
            "Patient/{id}'s Consent/{consent_id} permits sharing for {} only, not {purpose}",
            purposes.join(", ")
        )));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::is_records_service;

    #[test]
    fn only_a_regions_records_service_may_ask() {
        assert!(is_records_service(
            "system:serviceaccount:meridian-region-eu-west-3:records"
        ));
        for other in [
            "system:serviceaccount:meridian-region-eu-west-3:booking",
            "system:serviceaccount:default:records",
            "system:serviceaccount:meridian-region-:records",
            "system:serviceaccount:meridian-region-a:b:records",
            "dr-house",
        ] {
            assert!(!is_records_service(other), "{other}");
        }
    }
}
