use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use super::objects::Objects;
use super::{ProviderError, in_cluster};
use crate::FIELD_MANAGER;

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

/// The keys of a Secret a Region publishes.
pub type SecretData = BTreeMap<String, String>;

/// A change to a Secret's keys: answers whether it changed anything.
pub type SecretChange<'a> = &'a (dyn Fn(&mut SecretData) -> bool + Send + Sync);

/// Where a Region publishes the Secrets it creates (one per database role): in a cluster,
/// the Region's namespace `meridian-region-<name>`; in `meridian dev`, files beside the
/// Region's cluster.
pub trait RegionSecrets: Send + Sync {
    /// Makes the Region's home exist. Answers the namespace when the Region owns it (created
    /// now, or earlier by the operator: it carries the operator's label); `None` for a
    /// namespace someone else made, or where there are no namespaces.
    fn prepare<'a>(&'a self, region: &'a str) -> BoxFuture<'a, Result<Option<String>, ProviderError>>;
    /// Secret `name` of `region`, empty when it does not exist.
    fn read<'a>(&'a self, region: &'a str, name: &'a str) -> BoxFuture<'a, Result<SecretData, ProviderError>>;
    /// Writes Secret `name` of `region` whole.
    fn write<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
        values: &'a SecretData,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Changes Secret `name` of `region` with `change` (which answers whether it changed
    /// anything) and answers what it holds then. When someone else writes the Secret
    /// between this read and this write, it reads and changes it again: one writer never
    /// undoes another's change (a data key lost that way would leave rows no one can open).
    fn update<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
        change: SecretChange<'a>,
    ) -> BoxFuture<'a, Result<SecretData, ProviderError>>;
    /// How status names the Secret: `namespace/name`, or the file's path.
    fn location(&self, region: &str, name: &str) -> String;
    /// Removes namespace `ns` (one [`RegionSecrets::prepare`] answered) with its Secrets.
    fn remove<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// Region Secrets as files, `root/regions/<region>/secrets/<name>.json`, readable by this
/// account only: `meridian dev`'s.
pub struct FileSecrets {
    root: PathBuf,
}

impl FileSecrets {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, region: &str, name: &str) -> PathBuf {
        self.root
            .join("regions")
            .join(region)
            .join("secrets")
            .join(format!("{name}.json"))
    }
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new("SecretUnwritable", format!("{}: {e}", path.display()))
}

impl RegionSecrets for FileSecrets {
    fn prepare<'a>(&'a self, _region: &'a str) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async { Ok(None) })
    }

    fn read<'a>(&'a self, region: &'a str, name: &'a str) -> BoxFuture<'a, Result<SecretData, ProviderError>> {
        let path = self.path(region, name);
        Box::pin(async move {
            match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| ProviderError::new("SecretUnreadable", format!("{}: {e}", path.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SecretData::new()),
                Err(e) => Err(ProviderError::new(
                    "SecretUnreadable",
                    format!("{}: {e}", path.display()),
                )),
            }
        })
    }

    fn write<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
        values: &'a SecretData,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let path = self.path(region, name);
        Box::pin(async move {
            use std::io::Write;
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            let dir = path.parent().expect("a Secret's file has a directory");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| file_error(dir, e))?;
            // Whole or not at all: a reader never sees half a Secret.
            let temp = path.with_extension("json.tmp");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)
                .map_err(|e| file_error(&temp, e))?;
            let text = serde_json::to_vec_pretty(values).expect("strings serialize");
            file.write_all(&text)
                .and_then(|()| file.sync_all())
                .map_err(|e| file_error(&temp, e))?;
            std::fs::rename(&temp, &path).map_err(|e| file_error(&path, e))
        })
    }

    fn update<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
        change: SecretChange<'a>,
    ) -> BoxFuture<'a, Result<SecretData, ProviderError>> {
        // One process writes a dev Region's files: `meridian dev`, or a command that holds
        // the stopped Region's lock.
        Box::pin(async move {
            let mut data = self.read(region, name).await?;
            if change(&mut data) {
                self.write(region, name, &data).await?;
            }
            Ok(data)
        })
    }

    fn location(&self, region: &str, name: &str) -> String {
        self.path(region, name).display().to_string()
    }

    fn remove<'a>(&'a self, _ns: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        // Files answer no namespace to prepare; the Region's directory goes with its cluster.
        Box::pin(async { Ok(()) })
    }
}

/// How often [`RegionSecrets::update`] reads and changes a Secret that others keep writing.
const UPDATE_ATTEMPTS: usize = 8;

/// Region Secrets in the cluster, in the Region's namespace `meridian-region-<name>`
/// (created here, labelled as the stacks' namespaces are).
pub struct KubeRegionSecrets {
    objects: Objects,
}

impl KubeRegionSecrets {
    pub fn new(client: kube::Client) -> Self {
        Self {
            objects: Objects::new(client),
        }
    }

    pub(super) fn from_objects(objects: Objects) -> Self {
        Self { objects }
    }
}

impl RegionSecrets for KubeRegionSecrets {
    fn prepare<'a>(&'a self, region: &'a str) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            let ns = in_cluster::namespace(region);
            match self.objects.namespace_labels(&ns).await? {
                // Someone else's namespace: used as it is, never claimed.
                Some(labels)
                    if labels.get("app.kubernetes.io/managed-by").map(String::as_str) != Some(FIELD_MANAGER) =>
                {
                    Ok(None)
                }
                _ => {
                    self.objects.apply(&[in_cluster::namespace_object(region)]).await?;
                    Ok(Some(ns))
                }
            }
        })
    }

    fn read<'a>(&'a self, region: &'a str, name: &'a str) -> BoxFuture<'a, Result<SecretData, ProviderError>> {
        Box::pin(async move { self.objects.secret(&in_cluster::namespace(region), name).await })
    }

    fn write<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
        values: &'a SecretData,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let secret = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": in_cluster::metadata(name, region, "postgres"),
                "type": "Opaque",
                "stringData": values,
            });
            self.objects.apply(&[secret]).await
        })
    }

    fn update<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
        change: SecretChange<'a>,
    ) -> BoxFuture<'a, Result<SecretData, ProviderError>> {
        Box::pin(async move {
            let ns = in_cluster::namespace(region);
            for _ in 0..UPDATE_ATTEMPTS {
                let (mut data, version) = match self.objects.secret_versioned(&ns, name).await? {
                    Some((data, version)) => (data, Some(version)),
                    None => (SecretData::new(), None),
                };
                if !change(&mut data) {
                    return Ok(data);
                }
                // `data` whole (not `stringData`, which is merged into what is there): the
                // Secret becomes exactly what was read plus the change.
                let mut secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": in_cluster::metadata(name, region, "postgres"),
                    "type": "Opaque",
                }))
                .expect("a Secret");
                secret.data = Some(
                    data.iter()
                        .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone().into_bytes())))
                        .collect(),
                );
                if self
                    .objects
                    .put_secret_if_unchanged(&ns, name, version.as_deref(), secret)
                    .await?
                {
                    return Ok(data);
                }
            }
            Err(ProviderError::new(
                "SecretContended",
                format!("Secret {ns}/{name} kept changing while it was being updated; try again"),
            ))
        })
    }

    fn location(&self, region: &str, name: &str) -> String {
        format!("{}/{name}", in_cluster::namespace(region))
    }

    fn remove<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move { self.objects.delete_namespace(ns).await })
    }
}
