//! A clinician of this country (Y) looks a patient up by another country's (X's) national
//! ID: the ID is checked against X's rules and hashed, the PatientIndex says where the
//! patient lives, and X's records service is asked for them (see [`super::disclosure`]) as
//! this service, on the clinician's behalf. What comes back is merged in memory with Y's
//! own answer and labelled with the country it came from; nothing of it is written here.
//! Y keeps one audit record per lookup, hit or miss, naming the system but never the ID.

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{Value, json};

use super::peers::{Answer, Ask};
use crate::fhir::{Issue, IssueType};
use crate::http::{Access, Caller, Service};
use crate::mpi::{self, NationalId};
use crate::validate::Rules;

/// Tag system that labels every entry of a merged answer with the country holding it.
pub const SOURCE_COUNTRY: &str = "https://meridian.dev/fhir/CodeSystem/source-country";
/// The purpose of use a clinician's request gives (`TREAT` when it gives none).
pub const PURPOSE_HEADER: &str = super::peers::PURPOSE_HEADER;

/// What the other country gave.
#[derive(Debug)]
pub enum Abroad {
    /// Its entries, labelled and with their URLs as seen through this entry point.
    Found(Vec<Value>),
    /// No patient has that ID in the index.
    NoMatch,
    /// It could not be asked, or did not answer in time: the OperationOutcome entry that says
    /// so (this answer is partial).
    Unreachable(Value),
}

/// A national ID of another country, as a request names it.
pub struct ForeignId {
    /// The rules of the country whose ID it is (found by the system).
    pub rules: std::sync::Arc<Rules>,
    pub system: String,
    pub value: String,
}

/// The national ID of another country named by `identifier=<system>|<value>`, if any.
pub fn foreign_id(service: &Service, caller: &Caller, params: &[(String, String)]) -> Option<ForeignId> {
    params.iter().filter(|(k, _)| k == "identifier").find_map(|(_, v)| {
        let (system, value) = v.split_once('|')?;
        let rules = service.crossborder.directory.country_of(system)?;
        (rules.code != caller.country.rules.code).then(|| ForeignId {
            rules,
            system: system.to_string(),
            value: value.to_string(),
        })
    })
}

/// Looks `id` up in the index and asks its home for `scope` (`patient` or `everything`):
/// see the module's documentation. Refusals (not linked, not shared, over the rate limit, an
/// ID that is not one, the home's consent rules) are errors.
pub async fn find(
    service: &Service,
    caller: &Caller,
    id: &ForeignId,
    scope: &str,
    purpose: &str,
) -> Result<Abroad, Issue> {
    let (x, system, value) = (&*id.rules, id.system.as_str(), id.value.as_str());
    let y = &caller.country.rules.code;
    if caller.access != Access::Clinician {
        return Err(Issue::forbidden(
            "patients of other countries are looked up by clinicians only",
        ));
    }
    let Some(linked) = service.crossborder.link.get().filter(|l| l.link.links(y)) else {
        return Err(Issue::forbidden(format!(
            "{y} is not linked to a PatientIndex: patients of other countries cannot be looked up here"
        )));
    };
    if !x.record_sharing || !linked.link.links(&x.code) {
        return Err(Issue::forbidden(format!(
            "{} does not share patient records across borders (its regulatory.consent.recordSharing is false, or it is not linked to the PatientIndex)",
            x.code
        )));
    }
    if let Err(wait) = service.crossborder.limiter.take(&caller.principal.subject) {
        return Err(Issue::new(
            StatusCode::TOO_MANY_REQUESTS,
            IssueType::Throttled,
            format!(
                "at most {} lookups abroad per clinician per minute; try again in {} s",
                service.crossborder.limiter.per_window(),
                wait.as_secs().max(1)
            ),
        ));
    }
    let id = NationalId::checked(x, system, value)
        .map_err(|why| Issue::new(StatusCode::BAD_REQUEST, IssueType::Value, why).at("identifier"))?;
    let found = mpi::lookup(&linked.index, &linked.link.keys, &id).await;
    let audit = |outcome: &str| {
        let scope = caller.scope();
        let resource = format!("Patient?identifier={system}|* in {}: {outcome}", x.code);
        async move { crate::store::audit_read(&scope, "patient.lookup-abroad", &resource).await }
    };
    let entry = match found {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!(error = %e, correlation_id = %caller.correlation_id, "the PatientIndex is out of reach");
            audit("index unreachable")
                .await
                .map_err(|e| crate::http::response::store_failure(e, caller.correlation_id))?;
            return Ok(Abroad::Unreachable(unreachable(
                &x.code,
                "the PatientIndex is out of reach",
            )));
        }
    };
    let recorded = |result: Result<(), crate::store::StoreError>| {
        result.map_err(|e| crate::http::response::store_failure(e, caller.correlation_id))
    };
    let Some(entry) = entry else {
        recorded(audit("miss").await)?;
        return Ok(Abroad::NoMatch);
    };
    let Some(peers) = &service.crossborder.peers else {
        recorded(audit("hit").await)?;
        return Ok(Abroad::Unreachable(unreachable(
            &entry.home_country,
            "this records service has no way to reach other Regions",
        )));
    };
    // The lookup's record is written while the home is asked; the answer waits for both.
    let ask = Ask {
        region: &entry.home_region,
        country: &entry.home_country,
        patient: entry.client_id,
        scope,
        clinician_token: &caller.token,
        from: y,
        purpose,
        correlation_id: caller.correlation_id,
    };
    let (audited, answer) = tokio::join!(audit("hit"), peers.disclose(&ask));
    recorded(audited)?;
    match answer {
        Answer::Disclosed(bundle) => {
            let base = base_of(&caller.base, &entry.home_country);
            let entries = bundle["entry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|mut e| {
                    if let Some(url) = e["resource"]["resourceType"]
                        .as_str()
                        .zip(e["resource"]["id"].as_str())
                        .map(|(t, id)| format!("{base}/{t}/{id}"))
                    {
                        e["fullUrl"] = json!(url);
                    }
                    label(&mut e["resource"], &entry.home_country);
                    e
                })
                .collect();
            Ok(Abroad::Found(entries))
        }
        Answer::Refused(status, why) => Err(Issue::new(
            if status == StatusCode::FORBIDDEN {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_GATEWAY
            },
            IssueType::Forbidden,
            format!(
                "{} refused to disclose the patient's records: {why}",
                entry.home_country
            ),
        )),
        Answer::Unreachable(why) => {
            tracing::warn!(country = %entry.home_country, region = %entry.home_region, %why, correlation_id = %caller.correlation_id, "a Region's records service is out of reach");
            Ok(Abroad::Unreachable(unreachable(&entry.home_country, &why)))
        }
    }
}

/// `http://host/fr/v1/fhir` as `http://host/de/v1/fhir`: the other country through the same
/// entry point.
fn base_of(base: &str, country: &str) -> String {
    match base.rsplit_once("/v1/fhir").and_then(|(head, _)| head.rsplit_once('/')) {
        Some((host, _)) => format!("{host}/{}/v1/fhir", country.to_ascii_lowercase()),
        None => base.to_string(),
    }
}

/// The OperationOutcome entry of an answer left partial because `country` was not reached.
fn unreachable(country: &str, why: &str) -> Value {
    let mut outcome = Issue::new(
        StatusCode::OK,
        IssueType::Incomplete,
        format!("the records held in {country} could not be fetched ({why}); this answer is partial"),
    )
    .outcome();
    outcome["issue"][0]["severity"] = json!("warning");
    json!({"resource": outcome, "search": {"mode": "outcome"}})
}

/// Tags `resource` with the country holding it.
pub fn label(resource: &mut Value, country: &str) {
    if !resource.is_object() {
        return;
    }
    let tag = json!({"system": SOURCE_COUNTRY, "code": country, "display": format!("held in {country}")});
    let meta = resource
        .as_object_mut()
        .expect("checked")
        .entry("meta")
        .or_insert_with(|| json!({}));
    match meta.get_mut("tag").and_then(Value::as_array_mut) {
        Some(tags) => {
            if !tags.iter().any(|t| t["system"] == SOURCE_COUNTRY) {
                tags.push(tag);
            }
        }
        None => meta["tag"] = json!([tag]),
    }
}

/// When a resource happened, for the timeline: an encounter's start, an observation's
/// effective time (or issue), a prescription's authoring, a consent's date.
fn happened(resource: &Value) -> Option<DateTime<Utc>> {
    let candidates = [
        "/period/start",
        "/effectiveDateTime",
        "/effectivePeriod/start",
        "/effectiveInstant",
        "/issued",
        "/authoredOn",
        "/dateTime",
    ];
    candidates
        .iter()
        .find_map(|p| resource.pointer(p).and_then(Value::as_str))
        .and_then(crate::dates::range)
        .map(|(start, _)| start)
}

/// Sorts entries into one timeline: Patients first, then by when each thing happened
/// (undated last), OperationOutcomes at the end.
pub fn timeline(entries: &mut [Value]) {
    entries.sort_by_key(|e| {
        let kind = e["resource"]["resourceType"].as_str().unwrap_or_default();
        let rank = match kind {
            "Patient" => 0,
            "OperationOutcome" => 3,
            _ => 1,
        };
        let when = happened(&e["resource"]);
        (rank, when.is_none(), when)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_countries_are_reached_through_the_same_entry_point() {
        assert_eq!(base_of("http://gw:8080/fr/v1/fhir", "DE"), "http://gw:8080/de/v1/fhir");
    }

    #[test]
    fn a_timeline_puts_the_patients_first_then_what_happened_in_order() {
        let mut entries = vec![
            json!({"resource": {"resourceType": "OperationOutcome"}}),
            json!({"resource": {"resourceType": "Observation", "effectiveDateTime": "2026-03-01T10:00:00Z"}}),
            json!({"resource": {"resourceType": "Encounter", "period": {"start": "2025-01-01"}}}),
            json!({"resource": {"resourceType": "MedicationRequest"}}),
            json!({"resource": {"resourceType": "Patient"}}),
        ];
        timeline(&mut entries);
        let kinds: Vec<&str> = entries
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Patient",
                "Encounter",
                "Observation",
                "MedicationRequest",
                "OperationOutcome"
            ]
        );
    }

    #[test]
    fn labels_name_the_country_once() {
        let mut r = json!({"resourceType": "Observation", "meta": {"versionId": "1"}});
        label(&mut r, "DE");
        label(&mut r, "DE");
        assert_eq!(r["meta"]["tag"].as_array().unwrap().len(), 1);
        assert_eq!(r["meta"]["tag"][0]["code"], "DE");
        assert_eq!(r["meta"]["versionId"], "1");
    }
}
