use std::collections::BTreeMap;

use futures::future::BoxFuture;

/// Reads one key of a Secret: from the API server in a cluster, from manifests in `meridian dev`.
pub trait SecretSource: Send + Sync {
    /// `Ok(None)` when the Secret or key does not exist.
    fn get<'a>(
        &'a self,
        namespace: Option<&'a str>,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>>;
}

/// Secrets known up front: the `kind: Secret` manifests in `meridian dev`'s folder.
#[derive(Default, Clone)]
pub struct StaticSecrets {
    /// `(namespace, name)` to key/value pairs; namespace `None` matches any.
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl StaticSecrets {
    pub fn insert(&mut self, namespace: &str, name: &str, data: BTreeMap<String, String>) {
        self.secrets.insert((namespace.to_string(), name.to_string()), data);
    }
}

impl SecretSource for StaticSecrets {
    fn get<'a>(
        &'a self,
        namespace: Option<&'a str>,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        let found = self
            .secrets
            .iter()
            .find(|((ns, n), _)| n == name && namespace.is_none_or(|want| want == ns))
            .and_then(|(_, data)| data.get(key).cloned());
        Box::pin(async move { Ok(found) })
    }
}
