//! The `aws` provider's database: an Aurora PostgreSQL cluster and its writer instance in
//! the Region's `spec.cloudRegion`, through `aws-sdk-rds`. Storage is encrypted; deletion
//! protection is on unless the Region says `deletionPolicy: Delete`; both carry tags naming
//! the Region and the operator. Create adopts what exists with the expected identifiers and
//! tags, and never touches a resource tagged for another Region. Creating resources are
//! reported, not waited for: the reconciler requeues. A changed instance class is applied
//! as a modification. Deleting with `Delete` takes a final snapshot first.

use aws_sdk_rds::config::Credentials;
use aws_sdk_rds::error::DisplayErrorContext;
use aws_sdk_rds::types::Tag;
use meridian_crds::{DeletionPolicy, Region};

use super::aws_search::{AwsSearch, SearchProgress};
use super::{Endpoint, ProviderError};

/// The master user of every cluster.
pub const MASTER_USER: &str = "meridian";
/// Instance class when the Region does not size it.
const DEFAULT_CLASS: &str = "db.r6g.large";
const REGION_TAG: &str = "meridian.dev/region";
const MANAGER_TAG: &str = "meridian.dev/managed-by";

/// Where the database stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Something is being created or modified; look again later.
    Waiting(String),
    /// The writer endpoint.
    Available { host: String, port: i32 },
}

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{0}")]
    Api(String),
    #[error("{kind} {id} exists but is tagged for {owner}, not for Region {region}: refusing to adopt it")]
    NotOurs {
        kind: &'static str,
        id: String,
        owner: String,
        region: String,
    },
}

fn api<E: std::error::Error + 'static>(what: &str, error: E) -> AwsError {
    AwsError::Api(format!("{what}: {}", DisplayErrorContext(error)))
}

/// The cluster's identifier for Region `name`.
pub fn cluster_id(name: &str) -> String {
    format!("meridian-{name}")
}

fn instance_id(name: &str) -> String {
    format!("meridian-{name}-writer")
}

fn tags(name: &str) -> [Tag; 2] {
    [
        Tag::builder().key(REGION_TAG).value(name).build(),
        Tag::builder().key(MANAGER_TAG).value(crate::k8s::FIELD_MANAGER).build(),
    ]
}

/// Whose a resource is, from its tags.
fn owner(tags: &[Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(REGION_TAG))
        .and_then(|t| t.value().map(String::from))
}

/// Aurora PostgreSQL for Regions of provider `aws`.
pub struct AwsDatabases {
    rds: aws_sdk_rds::Client,
}

impl AwsDatabases {
    pub fn new(rds: aws_sdk_rds::Client) -> Self {
        Self { rds }
    }

    /// An RDS client for `cloud_region` from the default credential chain (IRSA in EKS),
    /// with `endpoint` overriding AWS's (tests, moto).
    pub async fn client(
        cloud_region: &str,
        endpoint: Option<&str>,
        credentials: Option<Credentials>,
    ) -> aws_sdk_rds::Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(cloud_region.to_string()));
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        aws_sdk_rds::Client::new(&loader.load().await)
    }

    /// Creates, adopts or updates the Region's cluster and writer instance; `password` is
    /// the master password used when the cluster is created.
    pub async fn ensure(&self, region: &Region, password: &str) -> Result<Progress, AwsError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let protect = region.spec.deletion_policy != DeletionPolicy::Delete;
        let (cluster, instance) = (cluster_id(&name), instance_id(&name));
        let found = self
            .rds
            .describe_db_clusters()
            .db_cluster_identifier(&cluster)
            .send()
            .await;
        let existing = match found {
            Ok(out) => out.db_clusters().first().cloned(),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_cluster_not_found_fault()) => None,
            Err(e) => return Err(api(&format!("describe DB cluster {cluster}"), e)),
        };
        let Some(existing) = existing else {
            let mut create = self
                .rds
                .create_db_cluster()
                .db_cluster_identifier(&cluster)
                .engine("aurora-postgresql")
                .database_name(MASTER_USER)
                .master_username(MASTER_USER)
                .master_user_password(password)
                .storage_encrypted(true)
                .deletion_protection(protect);
            for tag in tags(&name) {
                create = create.tags(tag);
            }
            create
                .send()
                .await
                .map_err(|e| api(&format!("create DB cluster {cluster}"), e))?;
            return Ok(Progress::Waiting(format!("creating DB cluster {cluster}")));
        };
        if let Some(other) = owner(existing.tag_list()).filter(|o| o != &name) {
            return Err(AwsError::NotOurs {
                kind: "DB cluster",
                id: cluster,
                owner: other,
                region: name,
            });
        }
        if existing.deletion_protection() != Some(protect) {
            self.rds
                .modify_db_cluster()
                .db_cluster_identifier(&cluster)
                .deletion_protection(protect)
                .apply_immediately(true)
                .send()
                .await
                .map_err(|e| api(&format!("modify DB cluster {cluster}"), e))?;
        }
        let class = region
            .spec
            .database
            .as_ref()
            .and_then(|d| d.instance_class.clone())
            .unwrap_or_else(|| DEFAULT_CLASS.into());
        let writer = match self
            .rds
            .describe_db_instances()
            .db_instance_identifier(&instance)
            .send()
            .await
        {
            Ok(out) => out.db_instances().first().cloned(),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_instance_not_found_fault()) => None,
            Err(e) => return Err(api(&format!("describe DB instance {instance}"), e)),
        };
        let Some(writer) = writer else {
            let mut create = self
                .rds
                .create_db_instance()
                .db_instance_identifier(&instance)
                .db_cluster_identifier(&cluster)
                .db_instance_class(&class)
                .engine("aurora-postgresql");
            for tag in tags(&name) {
                create = create.tags(tag);
            }
            create
                .send()
                .await
                .map_err(|e| api(&format!("create DB instance {instance}"), e))?;
            return Ok(Progress::Waiting(format!("creating DB instance {instance}")));
        };
        if writer.db_instance_class() != Some(class.as_str()) {
            self.rds
                .modify_db_instance()
                .db_instance_identifier(&instance)
                .db_instance_class(&class)
                .apply_immediately(true)
                .send()
                .await
                .map_err(|e| api(&format!("modify DB instance {instance}"), e))?;
            return Ok(Progress::Waiting(format!("changing DB instance {instance} to {class}")));
        }
        let status = |s: Option<&str>| s.unwrap_or("unknown").to_string();
        if existing.status() != Some("available") {
            return Ok(Progress::Waiting(format!(
                "DB cluster {cluster} is {}",
                status(existing.status())
            )));
        }
        if writer.db_instance_status() != Some("available") {
            return Ok(Progress::Waiting(format!(
                "DB instance {instance} is {}",
                status(writer.db_instance_status())
            )));
        }
        let host = existing
            .endpoint()
            .ok_or_else(|| AwsError::Api(format!("DB cluster {cluster} has no endpoint yet")))?;
        Ok(Progress::Available {
            host: host.to_string(),
            port: existing.port().unwrap_or(5432),
        })
    }

    /// Lets go of the Region's database: `Retain` leaves it; `Delete` removes the writer
    /// and the cluster after a final snapshot (`snapshot_id`).
    pub async fn release(&self, region: &Region, snapshot_id: &str) -> Result<(), AwsError> {
        if region.spec.deletion_policy != DeletionPolicy::Delete {
            return Ok(());
        }
        let name = region.metadata.name.clone().unwrap_or_default();
        let (cluster, instance) = (cluster_id(&name), instance_id(&name));
        match self
            .rds
            .delete_db_instance()
            .db_instance_identifier(&instance)
            .skip_final_snapshot(true)
            .send()
            .await
        {
            Err(e) if !e.as_service_error().is_some_and(|s| s.is_db_instance_not_found_fault()) => {
                return Err(api(&format!("delete DB instance {instance}"), e));
            }
            _ => {}
        }
        // Deletion protection may still be on from before the policy changed.
        let off = self
            .rds
            .modify_db_cluster()
            .db_cluster_identifier(&cluster)
            .deletion_protection(false)
            .apply_immediately(true)
            .send()
            .await;
        if let Err(e) = off {
            if e.as_service_error().is_some_and(|s| s.is_db_cluster_not_found_fault()) {
                return Ok(());
            }
            return Err(api(&format!("modify DB cluster {cluster}"), e));
        }
        match self
            .rds
            .delete_db_cluster()
            .db_cluster_identifier(&cluster)
            .skip_final_snapshot(false)
            .final_db_snapshot_identifier(snapshot_id)
            .send()
            .await
        {
            Err(e) if !e.as_service_error().is_some_and(|s| s.is_db_cluster_not_found_fault()) => {
                Err(api(&format!("delete DB cluster {cluster}"), e))
            }
            _ => Ok(()),
        }
    }
}

/// The `aws` provider as the reconcilers use it: the master password and, once the
/// database is available, its connection URL live in the Secret
/// `meridian-region-<name>-db` of the operator's namespace (written before the cluster is
/// created, so a crash in between never loses the password).
pub struct AwsStacks {
    client: kube::Client,
    namespace: String,
    /// Overrides AWS's endpoints (tests against moto).
    endpoint: Option<String>,
    /// Fixed credentials instead of the default chain (tests against moto).
    credentials: Option<Credentials>,
    /// `host:port` to connect to instead of the cluster's endpoint.
    database_address: Option<String>,
}

impl AwsStacks {
    pub fn new(client: kube::Client, namespace: String, endpoint: Option<String>) -> Self {
        Self {
            client,
            namespace,
            endpoint,
            credentials: None,
            database_address: None,
        }
    }

    /// Connects to `address` (`host:port`) instead of the cluster's endpoint: for tests
    /// against moto, which creates clusters but runs no database behind their endpoints.
    pub fn with_database_address(mut self, address: String) -> Self {
        self.database_address = Some(address);
        self
    }

    /// Signs with `credentials` instead of the default chain.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    fn secret_name(region: &str) -> String {
        format!("meridian-region-{region}-db")
    }

    async fn secret(&self, region: &str) -> Result<std::collections::BTreeMap<String, String>, ProviderError> {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.client.clone(), &self.namespace);
        let secret = api.get_opt(&Self::secret_name(region)).await.map_err(|e| {
            failed(
                "ClusterUnreachable",
                format!("cannot read Secret {}: {e}", Self::secret_name(region)),
            )
        })?;
        Ok(secret
            .and_then(|s| s.data)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
            .collect())
    }

    async fn write(&self, region: &str, values: serde_json::Value) -> Result<(), ProviderError> {
        let name = Self::secret_name(region);
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": self.namespace, "labels": {
                "app.kubernetes.io/instance": region, "app.kubernetes.io/managed-by": crate::k8s::FIELD_MANAGER}},
            "type": "Opaque",
            "stringData": values,
        });
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(
            &name,
            &kube::api::PatchParams::apply(crate::k8s::FIELD_MANAGER).force(),
            &kube::api::Patch::Apply(&secret),
        )
        .await
        .map_err(|e| failed("ClusterUnreachable", format!("cannot write Secret {name}: {e}")))?;
        Ok(())
    }

    async fn search(&self, region: &Region) -> AwsSearch {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.spec.cloud_region.clone()));
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = &self.credentials {
            loader = loader.credentials_provider(credentials.clone());
        }
        AwsSearch::new(aws_sdk_opensearch::Client::new(&loader.load().await))
    }

    async fn databases(&self, region: &Region) -> AwsDatabases {
        AwsDatabases::new(
            AwsDatabases::client(
                &region.spec.cloud_region,
                self.endpoint.as_deref(),
                self.credentials.clone(),
            )
            .await,
        )
    }

    /// Creates or adopts the Region's Aurora cluster and OpenSearch domain; answers with
    /// the database once both are available.
    pub async fn ensure(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let mut stored = self.secret(&name).await?;
        let password = match stored.remove("password") {
            Some(password) => password,
            None => {
                use rand::Rng;
                let password: String = rand::rng()
                    .sample_iter(&rand::distr::Alphanumeric)
                    .take(32)
                    .map(char::from)
                    .collect();
                self.write(
                    &name,
                    serde_json::json!({"username": MASTER_USER, "password": password}),
                )
                .await?;
                password
            }
        };
        let progress = self
            .databases(region)
            .await
            .ensure(region, &password)
            .await
            .map_err(|e| failed("AwsError", e.to_string()))?;
        let search = self
            .search(region)
            .await
            .ensure(region)
            .await
            .map_err(|e| failed("AwsError", e.to_string()))?;
        match (progress, search) {
            (Progress::Waiting(database), SearchProgress::Waiting(search)) => {
                Err(failed("DatabaseCreating", format!("{database}; {search}")))
            }
            (Progress::Waiting(why), _) | (_, SearchProgress::Waiting(why)) => Err(failed("DatabaseCreating", why)),
            (Progress::Available { host, port }, SearchProgress::Available(_)) => {
                let address = self.database_address.clone().unwrap_or(format!("{host}:{port}"));
                let url = format!("postgres://{MASTER_USER}:{password}@{address}/{MASTER_USER}");
                if stored.get("url") != Some(&url) {
                    self.write(
                        &name,
                        serde_json::json!({"username": MASTER_USER, "password": password, "url": url}),
                    )
                    .await?;
                }
                Ok(Endpoint {
                    secret: Some(format!("{}/{}", self.namespace, Self::secret_name(&name))),
                    ..Endpoint::from_url(url)
                })
            }
        }
    }

    /// The database's connection URL, once published.
    pub async fn locate(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let url = self.secret(&name).await?.remove("url").ok_or_else(|| {
            failed(
                "DatabaseNotCreated",
                format!("the database of Region {name} is not available yet"),
            )
        })?;
        Ok(Endpoint {
            secret: Some(format!("{}/{}", self.namespace, Self::secret_name(&name))),
            ..Endpoint::from_url(url)
        })
    }

    /// `Delete`: the domain, the writer, then the cluster after a final snapshot;
    /// `Retain`: nothing.
    pub async fn release(&self, region: &Region) -> Result<(), ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.search(region)
            .await
            .release(region)
            .await
            .map_err(|e| failed("AwsError", e.to_string()))?;
        self.databases(region)
            .await
            .release(region, &format!("meridian-{name}-final-{stamp}"))
            .await
            .map_err(|e| failed("AwsError", e.to_string()))
    }
}

fn failed(reason: &'static str, message: String) -> ProviderError {
    ProviderError { reason, message }
}
