use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::providers::SecretSource;

/// Secrets read from the API server; a reference without a namespace means the operator's.
pub struct KubeSecrets {
    client: Client,
    default_namespace: String,
}

impl KubeSecrets {
    pub fn new(client: Client, default_namespace: String) -> Self {
        Self {
            client,
            default_namespace,
        }
    }
}

impl SecretSource for KubeSecrets {
    fn get<'a>(
        &'a self,
        namespace: Option<&'a str>,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace.unwrap_or(&self.default_namespace));
            let secret = api.get_opt(name).await.map_err(|e| e.to_string())?;
            let value = secret.and_then(|s| {
                let from_data = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned());
                from_data.or_else(|| s.string_data.as_ref().and_then(|d| d.get(key)).cloned())
            });
            Ok(value)
        })
    }
}
