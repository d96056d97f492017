//! Gateway routes: each Country answers under its own prefix, `/{cc}/v1`. In a cluster that
//! is one Gateway API `HTTPRoute` per country, in the namespace of its Region's workloads,
//! attached to the Gateway named in the operator's configuration and backed by the
//! Region's records Service for `/{cc}/v1/fhir` and its booking Service for the rest; in `meridian dev` the entry point's route table is the
//! reconciled state itself, so there is nothing to write.

use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use meridian_crds::Country;
use serde_json::json;

use crate::FIELD_MANAGER;

/// The Gateway routes attach to, and the workload Services they send traffic to in each
/// Region's namespace: `/{cc}/v1/fhir` to the records service, the rest of `/{cc}/v1` to
/// booking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    pub name: String,
    pub namespace: String,
    /// The booking Service.
    pub service: String,
    /// The records Service (FHIR).
    pub records_service: String,
    pub port: u16,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            name: "meridian".into(),
            namespace: "meridian-system".into(),
            service: "booking".into(),
            records_service: "records".into(),
            port: 8080,
        }
    }
}

/// Label every route carries: the country it serves.
const COUNTRY_LABEL: &str = "platform.meridian.dev/country";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("country {0} has no uid yet (it was never stored): cannot own an HTTPRoute")]
    NotStored(String),
    #[error(
        "the Gateway API is not installed in this cluster (no httproutes.gateway.networking.k8s.io); install it: \
         kubectl apply -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml"
    )]
    NotInstalled,
    #[error("failed to {action} HTTPRoute {namespace}/{name}: {error}")]
    Api {
        action: &'static str,
        namespace: String,
        name: String,
        error: Box<kube::Error>,
    },
}

impl GatewayError {
    /// The route's namespace (the Region's) does not exist yet.
    pub fn is_missing_namespace(&self) -> bool {
        matches!(self, GatewayError::Api { error, .. }
            if matches!(error.as_ref(), kube::Error::Api(s) if s.code == 404 && s.message.contains("namespaces")))
    }
}

/// The namespace a Region's workloads run in.
pub fn route_namespace(region: &str) -> String {
    format!("meridian-region-{region}")
}

/// The path prefix of a country's API.
pub fn prefix(country: &Country) -> String {
    format!("/{}/v1", country.spec.code.to_ascii_lowercase())
}

/// The path prefix of a country's FHIR API, served by the records service.
pub fn fhir_prefix(country: &Country) -> String {
    format!("{}/fhir", prefix(country))
}

fn route_name(country: &Country) -> String {
    format!("country-{}", country.spec.code.to_ascii_lowercase())
}

fn http_routes() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// The country's HTTPRoute. It names no hostnames, so it matches every hostname the
/// Gateway's listeners accept: hostnames belong to the Gateway, which the platform team
/// owns. The Country owns the route, so deleting the Country garbage-collects it even if
/// the operator is not running.
pub fn http_route(country: &Country, config: &GatewayConfig) -> Result<DynamicObject, GatewayError> {
    let name = country.name_any();
    let uid = country.uid().ok_or_else(|| GatewayError::NotStored(name.clone()))?;
    let cc = country.spec.code.to_ascii_lowercase();
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": route_name(country),
            "namespace": route_namespace(&country.spec.region),
            "labels": {
                "app.kubernetes.io/name": "meridian-booking",
                "app.kubernetes.io/instance": name,
                "app.kubernetes.io/managed-by": FIELD_MANAGER,
                COUNTRY_LABEL: cc,
            },
            "ownerReferences": [{
                "apiVersion": "platform.meridian.dev/v1alpha1",
                "kind": "Country",
                "name": name,
                "uid": uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "parentRefs": [{
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": config.name,
                "namespace": config.namespace,
            }],
            // The longest matching prefix wins (path segment by segment): FHIR to records,
            // everything else of the country to booking.
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": fhir_prefix(country)}}],
                    "backendRefs": [{"name": config.records_service, "port": config.port}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": prefix(country)}}],
                    "backendRefs": [{"name": config.service, "port": config.port}],
                },
            ],
        },
    });
    Ok(serde_json::from_value(route).expect("an HTTPRoute is a valid object"))
}

/// Where routes are published.
#[derive(Clone)]
pub enum Gateway {
    /// `meridian dev`: its entry point routes from the reconciled state.
    Embedded,
    Cluster {
        client: Client,
        config: GatewayConfig,
    },
}

impl Gateway {
    /// Publishes the country's routes; returns their prefixes.
    pub async fn publish(&self, country: &Country) -> Result<Vec<String>, GatewayError> {
        let Gateway::Cluster { client, config } = self else {
            return Ok(vec![prefix(country)]);
        };
        let route = http_route(country, config)?;
        let namespace = route.namespace().unwrap_or_default();
        let name = route.name_any();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &http_routes());
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&route))
            .await
            .map_err(|error| failed("apply", &namespace, &name, error))?;
        remove_leftovers(client, country, Some((&namespace, &name))).await?;
        Ok(vec![prefix(country)])
    }

    /// Removes the routes this Country owns; routes already gone are fine, and routes of
    /// another Country with the same code are not touched.
    pub async fn withdraw(&self, country: &Country) -> Result<(), GatewayError> {
        match self {
            Gateway::Embedded => Ok(()),
            Gateway::Cluster { client, .. } => remove_leftovers(client, country, None).await,
        }
    }
}

/// Deletes the routes labelled for `country` and owned by it (by uid), other than `keep`.
async fn remove_leftovers(client: &Client, country: &Country, keep: Option<(&str, &str)>) -> Result<(), GatewayError> {
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &http_routes());
    let selector = format!(
        "{COUNTRY_LABEL}={},app.kubernetes.io/managed-by={FIELD_MANAGER}",
        country.spec.code.to_ascii_lowercase()
    );
    let found = all
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| failed("list", "*", &route_name(country), error))?;
    for route in found.items {
        let (namespace, name) = (route.namespace().unwrap_or_default(), route.name_any());
        if keep == Some((namespace.as_str(), name.as_str())) || !owned_by(&route, country) {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &http_routes());
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(failed("delete", &namespace, &name, error)),
        }
    }
    Ok(())
}

/// Whether `route` names `country` (by uid) among its owners.
fn owned_by(route: &DynamicObject, country: &Country) -> bool {
    let Some(uid) = country.uid() else {
        return false;
    };
    route.owner_references().iter().any(|o| o.uid == uid)
}

fn failed(action: &'static str, namespace: &str, name: &str, error: kube::Error) -> GatewayError {
    // The API server's answer for a resource type it does not serve (a missing namespace
    // is also a 404, but names the namespace).
    if let kube::Error::Api(status) = &error
        && status.code == 404
        && status.message.contains("could not find the requested resource")
    {
        return GatewayError::NotInstalled;
    }
    GatewayError::Api {
        action,
        namespace: namespace.to_string(),
        name: name.to_string(),
        error: Box::new(error),
    }
}
