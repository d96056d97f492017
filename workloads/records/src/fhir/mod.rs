//! FHIR R4 (4.0.1) as this service speaks it: the resource types it serves, reading a
//! resource from JSON with the element that is wrong named as a FHIRPath expression, and
//! the `OperationOutcome` every refusal is.

pub mod datatypes;
pub mod outcome;
pub mod resources;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use outcome::{Issue, IssueType};

/// The FHIR version served.
pub const FHIR_VERSION: &str = "4.0.1";
/// The media type of FHIR JSON.
pub const FHIR_JSON: &str = "application/fhir+json";

/// The resource types the service stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Patient,
    Encounter,
    Observation,
    MedicationRequest,
    Consent,
}

impl ResourceType {
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Patient,
        ResourceType::Encounter,
        ResourceType::Observation,
        ResourceType::MedicationRequest,
        ResourceType::Consent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Patient => "Patient",
            ResourceType::Encounter => "Encounter",
            ResourceType::Observation => "Observation",
            ResourceType::MedicationRequest => "MedicationRequest",
            ResourceType::Consent => "Consent",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Clinical resources live in the clinical tables; the Patient in the vault.
    pub fn is_clinical(self) -> bool {
        self != ResourceType::Patient
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `resourceType` of a JSON body, checked against what the URL says (`expected`) when
/// it says one.
pub fn resource_type_of(body: &Value, expected: Option<ResourceType>) -> Result<ResourceType, Issue> {
    let Some(object) = body.as_object() else {
        return Err(Issue::invalid(
            IssueType::Structure,
            "the body is not a JSON object",
            None,
        ));
    };
    // What the body is cannot be read: 400, as for an unknown type (not 422, which is
    // for a resource read but not accepted).
    let Some(name) = object.get("resourceType").and_then(Value::as_str) else {
        return Err(Issue::new(
            http::StatusCode::BAD_REQUEST,
            IssueType::Required,
            "the resource has no resourceType",
        )
        .at("resourceType"));
    };
    let Some(found) = ResourceType::parse(name) else {
        return Err(Issue::invalid(
            IssueType::NotSupported,
            format!("resourceType {name:?} is not served here (Patient, Encounter, Observation, MedicationRequest)"),
            Some("resourceType".into()),
        ));
    };
    match expected {
        Some(expected) if expected != found => Err(Issue::new(
            http::StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            format!("the body is a {found} but the URL names {expected}"),
        )
        .at("resourceType")),
        _ => Ok(found),
    }
}

/// Reads `body` as resource type `T`, refusing unknown elements, wrong cardinality and wrong
/// JSON types with the element named (`Observation.code.coding[0].system`).
pub fn read<T: DeserializeOwned>(resource_type: ResourceType, body: Value) -> Result<T, Issue> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let base = if path == "." || path.is_empty() {
            resource_type.as_str().to_string()
        } else {
            format!("{resource_type}.{path}")
        };
        // serde names a missing element in its message, at its parent's path.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(|field| format!("{base}.{field}"));
        let (expression, code) = if let Some(expression) = missing {
            (expression, IssueType::Required)
        } else {
            (base, IssueType::Structure)
        };
        let message = message
            .split(", expected one of")
            .next()
            .unwrap_or_default()
            .to_string();
        Issue::invalid(code, message, Some(expression))
    })
}

#[cfg(test)]
mod tests {
    use super::resources::Observation;
    use super::*;
    use serde_json::json;

    #[test]
    fn a_wrong_element_is_named_as_an_expression() {
        let missing = read::<Observation>(
            ResourceType::Observation,
            json!({"resourceType": "Observation", "status": "final"}),
        )
        .unwrap_err();
        assert_eq!(missing.expression.as_deref(), Some("Observation.code"));
        let unknown = read::<Observation>(
            ResourceType::Observation,
            json!({"resourceType": "Observation", "status": "final", "code": {"coding": [{"sytem": "x"}]}}),
        )
        .unwrap_err();
        assert_eq!(unknown.expression.as_deref(), Some("Observation.code.coding[0].sytem"));
        let many = read::<Observation>(
            ResourceType::Observation,
            json!({"resourceType": "Observation", "status": "final", "code": {}, "subject": [{"reference": "Patient/1"}]}),
        )
        .unwrap_err();
        assert!(many.expression.unwrap().starts_with("Observation.subject"));
    }

    #[test]
    fn the_body_must_say_what_the_url_says() {
        let body = json!({"resourceType": "Patient"});
        assert_eq!(resource_type_of(&body, None).unwrap(), ResourceType::Patient);
        let e = resource_type_of(&body, Some(ResourceType::Observation)).unwrap_err();
        assert!(e.diagnostics.contains("URL names Observation"), "{}", e.diagnostics);
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        let e = resource_type_of(&json!({"resourceType": "Claim"}), None).unwrap_err();
        assert_eq!(e.code, IssueType::NotSupported);
    }
}
