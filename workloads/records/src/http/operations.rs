//! `meridian_fhir_operations_total{country,resource,interaction,outcome}`: each request the
//! FHIR routes answer, named as the FHIR specification names its interactions. The labels
//! come from the route template axum matched and a fixed list of resource types, never
//! from an ID or a search parameter.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::fhir::ResourceType;

/// What an interaction is counted as: `(resource, interaction)`.
pub fn classify(method: &Method, template: &str, path: &str) -> Option<(&'static str, &'static str)> {
    // /{cc}/v1/fhir/<rest>: the segments after `fhir`.
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').skip(3).collect();
    let resource = || {
        segments
            .first()
            .and_then(|name| ResourceType::parse(name))
            .map_or("unknown", ResourceType::as_str)
    };
    let counted = match (template, method.as_str()) {
        ("/{cc}/v1/fhir/metadata", "GET") => ("CapabilityStatement", "capabilities"),
        ("/{cc}/v1/fhir", "POST") => ("Bundle", "transaction"),
        ("/{cc}/v1/fhir/$disclose", "GET") => ("Patient", "operation"),
        ("/{cc}/v1/fhir/{resource_type}", "GET") => (resource(), "search-type"),
        ("/{cc}/v1/fhir/{resource_type}", "POST") => (resource(), "create"),
        ("/{cc}/v1/fhir/{resource_type}/_search", "POST") => (resource(), "search-type"),
        ("/{cc}/v1/fhir/{resource_type}/{id}", "GET") => match segments.get(1) {
            Some(&"$everything") => (resource(), "operation"),
            _ => (resource(), "read"),
        },
        ("/{cc}/v1/fhir/{resource_type}/{id}", "PUT") => (resource(), "update"),
        ("/{cc}/v1/fhir/{resource_type}/{id}", "DELETE") => (resource(), "delete"),
        ("/{cc}/v1/fhir/{resource_type}/{id}/{operation}", "GET") => match segments.get(2) {
            Some(&"_history") => (resource(), "history-instance"),
            _ => (resource(), "operation"),
        },
        ("/{cc}/v1/fhir/{resource_type}/{id}/_history/{version}", "GET") => (resource(), "vread"),
        _ => return None,
    };
    Some(counted)
}

/// Counts the request once it is answered (see [`classify`]).
pub async fn count(request: Request, next: Next) -> Response {
    let counted = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|template| classify(request.method(), template.as_str(), request.uri().path()));
    // The country code is the first segment; the label keeps two letters of it at most.
    let country = meridian_shared::metrics::Country::new(request.uri().path().split('/').nth(1).unwrap_or_default());
    let response = next.run(request).await;
    if let Some((resource, interaction)) = counted {
        meridian_shared::metrics::workload().fhir(country.as_str(), resource, interaction, response.status().as_u16());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactions_are_named_from_the_template_and_never_carry_an_id() {
        let cases = [
            (
                Method::GET,
                "/{cc}/v1/fhir/{resource_type}/{id}",
                "/DE/v1/fhir/Patient/123",
                ("Patient", "read"),
            ),
            (
                Method::GET,
                "/{cc}/v1/fhir/{resource_type}/{id}",
                "/DE/v1/fhir/Patient/$everything",
                ("Patient", "operation"),
            ),
            (
                Method::PUT,
                "/{cc}/v1/fhir/{resource_type}/{id}",
                "/DE/v1/fhir/Observation/9",
                ("Observation", "update"),
            ),
            (
                Method::POST,
                "/{cc}/v1/fhir/{resource_type}",
                "/DE/v1/fhir/Encounter",
                ("Encounter", "create"),
            ),
            (
                Method::GET,
                "/{cc}/v1/fhir/{resource_type}",
                "/DE/v1/fhir/Nonsense",
                ("unknown", "search-type"),
            ),
            (
                Method::GET,
                "/{cc}/v1/fhir/{resource_type}/{id}/{operation}",
                "/DE/v1/fhir/Patient/1/_history",
                ("Patient", "history-instance"),
            ),
            (
                Method::GET,
                "/{cc}/v1/fhir/{resource_type}/{id}/_history/{version}",
                "/DE/v1/fhir/Patient/1/_history/2",
                ("Patient", "vread"),
            ),
            (Method::POST, "/{cc}/v1/fhir", "/DE/v1/fhir", ("Bundle", "transaction")),
            (
                Method::GET,
                "/{cc}/v1/fhir/metadata",
                "/DE/v1/fhir/metadata",
                ("CapabilityStatement", "capabilities"),
            ),
        ];
        for (method, template, path, expected) in cases {
            assert_eq!(classify(&method, template, path), Some(expected), "{method} {path}");
        }
        assert_eq!(
            classify(
                &Method::PATCH,
                "/{cc}/v1/fhir/{resource_type}/{id}",
                "/DE/v1/fhir/Patient/1"
            ),
            None
        );
    }
}
