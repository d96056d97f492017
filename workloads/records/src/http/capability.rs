//! `GET /{cc}/v1/fhir/metadata`: the CapabilityStatement, built from the same tables the
//! service works from (resource types, search parameters, includes, sorts), so it lists
//! exactly what is implemented. Served without a token, as FHIR clients expect.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::Service;
use super::response::fhir;
use crate::fhir::{FHIR_VERSION, Issue, ResourceType};
use crate::search;

/// The CapabilityStatement of the records service for country `cc`.
pub fn statement(cc: &str) -> Value {
    let resources: Vec<Value> = ResourceType::ALL
        .iter()
        .map(|&t| {
            let mut interactions = [
                "create",
                "read",
                "vread",
                "update",
                "delete",
                "history-instance",
                "search-type",
            ];
            interactions.sort_unstable();
            let mut params: Vec<Value> = vec![json!({"name": "_id", "type": "token"})];
            params.extend(
                search::params(t)
                    .iter()
                    .map(|p| json!({"name": p.name, "type": p.kind, "documentation": p.documentation})),
            );
            let mut resource = json!({
                "type": t.as_str(),
                "interaction": interactions.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": false,
                "conditionalCreate": true,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchParam": params,
            });
            let includes = search::includes(t);
            if !includes.is_empty() {
                resource["searchInclude"] = json!(includes);
            }
            if t == ResourceType::Patient {
                resource["operation"] = json!([{
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }]);
            }
            resource
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "publisher": "Meridian",
        "kind": "instance",
        "software": {"name": "Meridian records", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": format!("Meridian records for country {}", cc.to_ascii_uppercase())},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": false,
                "description": "OIDC bearer tokens: Practitioner reads and writes the country's records; \
                                Patient reads their own; other roles see none. A Patient search or \
                                $everything by another country's national ID reaches that country's \
                                records through the PatientIndex, with the patient's Consent. \
                                $disclose answers other Regions' records services (their service \
                                account token) on behalf of their clinicians.",
            },
            "resource": resources,
            "interaction": [{"code": "transaction"}],
            "operation": [{
                "name": "disclose",
                "definition": "https://meridian.dev/fhir/OperationDefinition/disclose",
            }],
        }],
    })
}

/// The statement of a country served here; 404 for any other, which nothing here serves.
pub async fn metadata(State(service): State<Arc<Service>>, Path(cc): Path<String>) -> Result<Response, Issue> {
    if service.countries.get(&cc).is_none() {
        return Err(Issue::not_found(format!("no country {cc:?} is served here")));
    }
    Ok(fhir(StatusCode::OK, &statement(&cc)))
}
