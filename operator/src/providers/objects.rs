//! The Kubernetes side of a Region's stack: plain objects applied with server-side apply,
//! the ones a stack no longer has removed, readiness read back. Shared by the providers
//! that put something of the Region into this cluster (`inCluster`: everything; `aws`: the
//! workload and the Secrets it reads).

use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use super::ProviderError;
use crate::FIELD_MANAGER;

/// The kinds stacks are made of, as the API serves them; `namespaced` false for the
/// cluster-scoped ones.
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    ("v1", "Secret", "secrets", true),
    ("v1", "Service", "services", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    ("apps/v1", "Deployment", "deployments", true),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", true),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
];

fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// Applies and removes a stack's objects.
#[derive(Clone)]
pub struct Objects {
    client: Client,
}

impl Objects {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api(&self, api_version: &str, kind: &str, namespace: &str) -> Result<Api<DynamicObject>, ProviderError> {
        let (_, _, plural, namespaced) = KINDS
            .iter()
            .find(|(v, k, _, _)| *v == api_version && *k == kind)
            .ok_or_else(|| {
                ProviderError::new("StackApplyFailed", format!("{api_version} {kind} is not a stack kind"))
            })?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        Ok(if *namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        })
    }

    fn identity(object: &Value) -> (&str, &str, &str, &str) {
        fn text(v: &Value) -> &str {
            v.as_str().unwrap_or_default()
        }
        (
            text(&object["apiVersion"]),
            text(&object["kind"]),
            text(&object["metadata"]["namespace"]),
            text(&object["metadata"]["name"]),
        )
    }

    /// Server-side applies each object, in order.
    pub async fn apply(&self, objects: &[Value]) -> Result<(), ProviderError> {
        for object in objects {
            let (api_version, kind, ns, name) = Self::identity(object);
            self.api(api_version, kind, ns)?
                .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
                .await
                .map_err(|e| {
                    ProviderError::new("StackApplyFailed", format!("failed to apply {kind} {ns}/{name}: {e}"))
                })?;
        }
        Ok(())
    }

    /// Deletes each object; one already gone is fine.
    pub async fn delete(&self, objects: &[Value]) -> Result<(), ProviderError> {
        for object in objects {
            let (api_version, kind, ns, name) = Self::identity(object);
            match self
                .api(api_version, kind, ns)?
                .delete(name, &DeleteParams::background())
                .await
            {
                Err(e) if !gone(&e) => {
                    return Err(ProviderError::new(
                        "ReleaseFailed",
                        format!("cannot delete {kind} {ns}/{name}: {e}"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Deletes the objects in namespace `ns` labelled as Region `region`'s that `wanted`
    /// does not name. Secrets are never orphans: they hold the passwords the stores and the
    /// database roles were given, and other steps publish some of them.
    pub async fn remove_orphans(&self, region: &str, ns: &str, wanted: &[Value]) -> Result<(), ProviderError> {
        let selector = format!("app.kubernetes.io/instance={region},app.kubernetes.io/managed-by={FIELD_MANAGER}");
        for (api_version, kind, _, namespaced) in KINDS {
            if !namespaced || *kind == "Secret" {
                continue;
            }
            let api = self.api(api_version, kind, ns)?;
            let found = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| ProviderError::new("ClusterUnreachable", format!("cannot list {kind}s in {ns}: {e}")))?;
            for object in found.items {
                let name = object.name_any();
                let kept = wanted
                    .iter()
                    .any(|w| w["kind"] == *kind && w["metadata"]["name"] == name.as_str());
                if !kept {
                    api.delete(&name, &DeleteParams::background()).await.map_err(|e| {
                        ProviderError::new("StackApplyFailed", format!("cannot delete {kind} {ns}/{name}: {e}"))
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Fails with `reason` until StatefulSet `ns/name` has a ready replica.
    pub async fn await_ready(&self, ns: &str, name: &str, reason: &'static str) -> Result<(), ProviderError> {
        let ready = self
            .api("apps/v1", "StatefulSet", ns)?
            .get_opt(name)
            .await
            .map_err(|e| ProviderError::new("ClusterUnreachable", e.to_string()))?
            .and_then(|s| s.data["status"]["readyReplicas"].as_i64())
            .unwrap_or(0);
        if ready < 1 {
            return Err(ProviderError::new(
                reason,
                format!("waiting for StatefulSet {ns}/{name} to have a ready replica"),
            ));
        }
        Ok(())
    }

    /// The labels of namespace `ns`, `None` when it does not exist.
    pub async fn namespace_labels(
        &self,
        ns: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, ProviderError> {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let found = namespaces
            .get_opt(ns)
            .await
            .map_err(|e| ProviderError::new("ClusterUnreachable", format!("cannot read namespace {ns}: {e}")))?;
        Ok(found.map(|n| n.metadata.labels.unwrap_or_default()))
    }

    /// Deletes namespace `ns` and everything in it.
    pub async fn delete_namespace(&self, ns: &str) -> Result<(), ProviderError> {
        match self
            .api("v1", "Namespace", "")?
            .delete(ns, &DeleteParams::background())
            .await
        {
            Err(e) if !gone(&e) => Err(ProviderError::new(
                "ReleaseFailed",
                format!("cannot delete namespace {ns}: {e}"),
            )),
            _ => Ok(()),
        }
    }

    /// The string values of Secret `ns/name`, empty when it does not exist.
    /// Secret `ns/name`'s data and resourceVersion, None when it does not exist.
    pub async fn secret_versioned(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<(std::collections::BTreeMap<String, String>, String)>, ProviderError> {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|e| ProviderError::new("ClusterUnreachable", format!("cannot read Secret {ns}/{name}: {e}")))?;
        Ok(secret.map(|s| {
            let version = s.metadata.resource_version.clone().unwrap_or_default();
            let data = s
                .data
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
                .collect();
            (data, version)
        }))
    }

    /// Writes `secret` (a whole Secret) if Secret `ns/name` is still at `version` (None: if it
    /// does not exist yet). Answers false when someone else wrote it in between.
    pub async fn put_secret_if_unchanged(
        &self,
        ns: &str,
        name: &str,
        version: Option<&str>,
        mut secret: k8s_openapi::api::core::v1::Secret,
    ) -> Result<bool, ProviderError> {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), ns);
        let params = kube::api::PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let written = match version {
            Some(version) => {
                secret.metadata.resource_version = Some(version.to_string());
                secrets.replace(name, &params, &secret).await.map(|_| ())
            }
            None => secrets.create(&params, &secret).await.map(|_| ()),
        };
        match written {
            Ok(()) => Ok(true),
            // 409: changed since it was read (or created meanwhile).
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(ProviderError::new(
                "SecretUnwritable",
                format!("cannot write Secret {ns}/{name}: {e}"),
            )),
        }
    }

    pub async fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ProviderError> {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|e| ProviderError::new("ClusterUnreachable", format!("cannot read Secret {ns}/{name}: {e}")))?;
        Ok(secret
            .and_then(|s| s.data)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
            .collect())
    }
}
