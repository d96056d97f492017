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

use super::aws_search::{self, AwsSearch, SearchProgress};
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

/// The `aws` provider as the reconcilers use it. Two Secrets in the operator's namespace
/// hold what the stack's users need: `meridian-region-<name>-db` (the database's master
/// password, then its connection URL) and `meridian-region-<name>-search` (the domain's
/// master password, then its URL with credentials). Each password is written before the
/// resource that uses it is created, so a crash in between never loses it.
pub struct AwsStacks {
    client: kube::Client,
    namespace: String,
    /// Overrides AWS's endpoints (tests against moto).
    endpoint: Option<String>,
    /// Fixed credentials instead of the default chain (tests against moto).
    credentials: Option<Credentials>,
    /// `host:port` to connect to instead of the cluster's endpoint.
    database_address: Option<String>,
    /// Base URL to use instead of the domain's endpoint.
    search_address: Option<String>,
}

/// The keys of one of the stack's Secrets.
type Stored = std::collections::BTreeMap<String, String>;

/// The key of the search Secret saying the domain has the stored master password.
const PASSWORD_SET: &str = "passwordSet";

impl AwsStacks {
    pub fn new(client: kube::Client, namespace: String, endpoint: Option<String>) -> Self {
        Self {
            client,
            namespace,
            endpoint,
            credentials: None,
            database_address: None,
            search_address: None,
        }
    }

    /// Connects to `address` (`host:port`) instead of the cluster's endpoint: for tests
    /// against moto, which creates clusters but runs no database behind their endpoints.
    pub fn with_database_address(mut self, address: String) -> Self {
        self.database_address = Some(address);
        self
    }

    /// Sends search requests to `base_url` (`http://127.0.0.1:port`) instead of the domain's
    /// endpoint: moto creates domains but runs no OpenSearch behind them.
    pub fn with_search_address(mut self, base_url: String) -> Self {
        self.search_address = Some(base_url);
        self
    }

    /// Signs with `credentials` instead of the default chain.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The Secret holding the database's (`db`) or the domain's (`search`) credentials.
    pub fn secret_name(region: &str, store: &str) -> String {
        format!("meridian-region-{region}-{store}")
    }

    async fn secret(&self, name: &str) -> Result<Stored, ProviderError> {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.client.clone(), &self.namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|e| failed("ClusterUnreachable", format!("cannot read Secret {name}: {e}")))?;
        Ok(secret
            .and_then(|s| s.data)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
            .collect())
    }

    /// Applies every key of the Secret at once (server-side apply owns the whole set).
    async fn write(&self, region: &str, name: &str, values: &Stored) -> Result<(), ProviderError> {
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
            name,
            &kube::api::PatchParams::apply(crate::k8s::FIELD_MANAGER).force(),
            &kube::api::Patch::Apply(&secret),
        )
        .await
        .map_err(|e| failed("ClusterUnreachable", format!("cannot write Secret {name}: {e}")))?;
        Ok(())
    }

    /// The Secret `store` of `region`, with a master password generated and written first if
    /// it has none yet.
    async fn with_password(&self, region: &str, store: &str, username: &str) -> Result<Stored, ProviderError> {
        let name = Self::secret_name(region, store);
        let mut stored = self.secret(&name).await?;
        if !stored.contains_key("password") {
            stored = Stored::from([
                ("username".to_string(), username.to_string()),
                ("password".to_string(), master_password()),
            ]);
            self.write(region, &name, &stored).await?;
        }
        Ok(stored)
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

    /// Brings the domain along; once available, its URL (credentials included).
    async fn ensure_search(&self, region: &Region) -> Result<SearchProgress, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let secret = Self::secret_name(&name, "search");
        let mut stored = self.with_password(&name, "search", aws_search::MASTER_USER).await?;
        let password = stored["password"].clone();
        let search = self.search(region).await;
        let aws = |e: AwsError| failed("AwsError", e.to_string());
        let progress = search.ensure(region, &password).await.map_err(aws)?;
        if let SearchProgress::Created(why) = progress {
            stored.insert(PASSWORD_SET.into(), "true".into());
            self.write(&name, &secret, &stored).await?;
            return Ok(SearchProgress::Waiting(why));
        }
        // An adopted domain, or one created just before a crash kept us from recording it.
        if !stored.contains_key(PASSWORD_SET) {
            search.set_master_user(region, &password).await.map_err(aws)?;
            stored.insert(PASSWORD_SET.into(), "true".into());
            self.write(&name, &secret, &stored).await?;
            return Ok(SearchProgress::Waiting(format!(
                "setting the master user of OpenSearch domain {}",
                aws_search::domain_name(&name)
            )));
        }
        let base = match progress {
            SearchProgress::Available(base) => self.search_address.clone().unwrap_or(base),
            waiting => return Ok(waiting),
        };
        let url = match base.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{}:{password}@{host}", aws_search::MASTER_USER),
            None => base,
        };
        if stored.get("url") != Some(&url) {
            stored.insert("url".into(), url.clone());
            self.write(&name, &secret, &stored).await?;
        }
        Ok(SearchProgress::Available(url))
    }

    /// Creates or adopts the Region's Aurora cluster and OpenSearch domain; answers with
    /// the database once both are available.
    pub async fn ensure(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let secret = Self::secret_name(&name, "db");
        let mut stored = self.with_password(&name, "db", MASTER_USER).await?;
        let password = stored["password"].clone();
        let database = self
            .databases(region)
            .await
            .ensure(region, &password)
            .await
            .map_err(|e| failed("AwsError", e.to_string()))?;
        let search = self.ensure_search(region).await?;
        let (host, port) = match (database, search) {
            (Progress::Available { host, port }, SearchProgress::Available(_)) => (host, port),
            (Progress::Waiting(database), SearchProgress::Waiting(search)) => {
                return Err(failed("DatabaseCreating", format!("{database}; {search}")));
            }
            (Progress::Waiting(why), _) | (_, SearchProgress::Waiting(why) | SearchProgress::Created(why)) => {
                return Err(failed("DatabaseCreating", why));
            }
        };
        let address = self.database_address.clone().unwrap_or(format!("{host}:{port}"));
        let url = format!("postgres://{MASTER_USER}:{password}@{address}/{MASTER_USER}");
        if stored.get("url") != Some(&url) {
            stored.insert("url".into(), url.clone());
            self.write(&name, &secret, &stored).await?;
        }
        Ok(Endpoint {
            secret: Some(format!("{}/{secret}", self.namespace)),
            ..Endpoint::from_url(url)
        })
    }

    /// The published URL in Secret `store` (`db` or `search`), and the Secret's name.
    async fn published(&self, region: &Region, store: &str) -> Result<(String, String), ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let secret = Self::secret_name(&name, store);
        let url = self.secret(&secret).await?.remove("url").ok_or_else(|| {
            let what = if store == "db" { "database" } else { "OpenSearch domain" };
            failed(
                if store == "db" {
                    "DatabaseNotCreated"
                } else {
                    "SearchNotCreated"
                },
                format!("the {what} of Region {name} is not available yet"),
            )
        })?;
        Ok((url, format!("{}/{secret}", self.namespace)))
    }

    /// The database's connection URL, once published.
    pub async fn locate(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        let (url, secret) = self.published(region, "db").await?;
        Ok(Endpoint {
            secret: Some(secret),
            ..Endpoint::from_url(url)
        })
    }

    /// The domain's URL with the master user's credentials, once published.
    pub async fn search_url(&self, region: &Region) -> Result<String, ProviderError> {
        Ok(self.published(region, "search").await?.0)
    }

    /// `Delete`: the domain, the writer, then the cluster after a final snapshot;
    /// `Retain`: nothing. The Secrets stay either way: with `Retain` they are the way back
    /// into the kept stack, and with `Delete` the final snapshot still needs the password.
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

/// A master password that both RDS and OpenSearch Service accept: 32 characters with
/// upper- and lower-case letters, digits and a special character, none of which needs
/// escaping in a URL.
fn master_password() -> String {
    use rand::Rng;
    use rand::seq::IndexedRandom;
    let mut rng = rand::rng();
    let mut password: Vec<char> = (&mut rng)
        .sample_iter(&rand::distr::Alphanumeric)
        .take(28)
        .map(char::from)
        .collect();
    for class in [
        "ABCDEFGHJKLMNPQRSTUVWXYZ",
        "abcdefghijkmnopqrstuvwxyz",
        "23456789",
        "-._~",
    ] {
        let chars: Vec<char> = class.chars().collect();
        let at = rng.random_range(0..=password.len());
        password.insert(at, *chars.choose(&mut rng).expect("a class has characters"));
    }
    password.into_iter().collect()
}

fn failed(reason: &'static str, message: String) -> ProviderError {
    ProviderError { reason, message }
}
