//! The `aws` provider's database: an Aurora PostgreSQL cluster and its instances (a writer
//! and readers, `spec.database.instances` in all) in the Region's `spec.cloudRegion`,
//! through `aws-sdk-rds`. Storage is encrypted; deletion protection is on unless the Region
//! says `deletionPolicy: Delete`; all carry tags naming the Region and the operator. Create adopts what exists with the expected identifiers and
//! tags, and never touches a resource tagged for another Region. Creating resources are
//! reported, not waited for: the reconciler requeues. A changed instance class or count is
//! applied as a modification. Deleting with `Delete` takes a final snapshot first.

use aws_sdk_rds::config::Credentials;
use aws_sdk_rds::error::DisplayErrorContext;
use aws_sdk_rds::types::{DbCluster, DbInstance, Filter, Tag};
use meridian_crds::{CloudResource, DeletionPolicy, Region, RegionResources, ResourceOrigin};

use super::aws_search::{self, AwsSearch, SearchProgress};
use super::in_cluster::{self, StackConfig};
use super::objects::Objects;
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
    /// The cluster was just created, with the password given; look again later.
    Created(String),
    /// Something is being created or modified; look again later.
    Waiting(String),
    /// The writer endpoint.
    Available { host: String, port: i32 },
}

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{0}")]
    Api(String),
    /// A resource with the Region's identifier that is not tagged for it (no tag, or another
    /// Region's): never adopted, its password never reset, never deleted.
    #[error(
        "{kind} {id} exists but {}, not for Region {region}: refusing to adopt it (its password is left alone and Delete never removes it)",
        match owner { Some(other) => format!("is tagged for Region {other}"), None => format!("has no {REGION_TAG} tag") }
    )]
    NotOurs {
        kind: &'static str,
        id: String,
        owner: Option<String>,
        region: String,
    },
}

impl From<AwsError> for ProviderError {
    fn from(e: AwsError) -> Self {
        let reason = match e {
            AwsError::NotOurs { .. } => "AdoptionRefused",
            AwsError::Api(_) => "AwsError",
        };
        ProviderError::new(reason, e.to_string())
    }
}

fn api<E: std::error::Error + 'static>(what: &str, error: E) -> AwsError {
    AwsError::Api(format!("{what}: {}", DisplayErrorContext(error)))
}

/// The cluster's identifier for Region `name`.
pub fn cluster_id(name: &str) -> String {
    format!("meridian-{name}")
}

/// Instance `n` (from 1) of Region `name`'s cluster. Numbers, not roles: Aurora may fail
/// over to any instance, so which one writes is read from the cluster, never from a name.
fn instance_id(name: &str, n: usize) -> String {
    format!("meridian-{name}-{n}")
}

/// The number of one of Region `name`'s instances, from its identifier.
fn instance_number(name: &str, id: &str) -> Option<usize> {
    id.strip_prefix(&format!("meridian-{name}-"))?
        .parse()
        .ok()
        .filter(|n| *n >= 1)
}

fn tags(name: &str) -> [Tag; 2] {
    [
        Tag::builder().key(REGION_TAG).value(name).build(),
        Tag::builder().key(MANAGER_TAG).value(crate::FIELD_MANAGER).build(),
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

    /// Creates, adopts or updates the Region's cluster and its instances; `password` is
    /// the master password used when the cluster is created.
    pub async fn ensure(&self, region: &Region, password: &str) -> Result<Progress, AwsError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let protect = region.spec.deletion_policy != DeletionPolicy::Delete;
        let cluster = cluster_id(&name);
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
            return Ok(Progress::Created(format!("creating DB cluster {cluster}")));
        };
        let tagged = owner(existing.tag_list());
        if tagged.as_deref() != Some(name.as_str()) {
            return Err(AwsError::NotOurs {
                kind: "DB cluster",
                id: cluster,
                owner: tagged,
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
        let sizing = region.spec.database.clone().unwrap_or_default();
        let class = sizing.instance_class.unwrap_or_else(|| DEFAULT_CLASS.into());
        let wanted = sizing.instances.unwrap_or(1).max(1) as usize;
        if let Some(waiting) = self.ensure_instances(&name, &existing, &class, wanted).await? {
            return Ok(Progress::Waiting(waiting));
        }
        if existing.status() != Some("available") {
            return Ok(Progress::Waiting(format!(
                "DB cluster {cluster} is {}",
                existing.status().unwrap_or("unknown")
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

    /// Gives the Region's cluster the master password `password`: for a cluster adopted, or
    /// created just before a crash kept the operator from recording that it has it.
    pub async fn set_master_password(&self, region: &Region, password: &str) -> Result<(), AwsError> {
        let cluster = cluster_id(&region.metadata.name.clone().unwrap_or_default());
        self.rds
            .modify_db_cluster()
            .db_cluster_identifier(&cluster)
            .master_user_password(password)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| api(&format!("set the master password of DB cluster {cluster}"), e))?;
        Ok(())
    }

    /// The instances of `cluster` that are Region `name`'s, by number.
    async fn instances(&self, name: &str, cluster: &str) -> Result<Vec<(usize, DbInstance)>, AwsError> {
        let filter = Filter::builder().name("db-cluster-id").values(cluster).build();
        let out = self
            .rds
            .describe_db_instances()
            .filters(filter)
            .send()
            .await
            .map_err(|e| api(&format!("describe DB instances of {cluster}"), e))?;
        let mut ours: Vec<(usize, DbInstance)> = out
            .db_instances()
            .iter()
            .filter_map(|i| Some((instance_number(name, i.db_instance_identifier()?)?, i.clone())))
            .collect();
        ours.sort_by_key(|(n, _)| *n);
        Ok(ours)
    }

    /// Deletes `instances`, except those already being deleted (or gone meanwhile).
    async fn delete_instances(&self, instances: &[(usize, DbInstance)]) -> Result<(), AwsError> {
        for (_, instance) in instances {
            let id = instance.db_instance_identifier().unwrap_or_default();
            if instance.db_instance_status() == Some("deleting") {
                continue;
            }
            match self.rds.delete_db_instance().db_instance_identifier(id).send().await {
                Err(e) if !e.as_service_error().is_some_and(|s| s.is_db_instance_not_found_fault()) => {
                    return Err(api(&format!("delete DB instance {id}"), e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Brings the cluster to `wanted` instances of `class`: creates the missing ones (the
    /// first becomes the writer, the others readers), changes the class of those it keeps,
    /// and removes those beyond `wanted` (instances hold no data of their own: it lives in the
    /// cluster's storage), failing over first if one of them is the writer. Answers what it
    /// is waiting for, or `None` once every instance is available as asked. Instances
    /// someone else added to the cluster are left alone.
    async fn ensure_instances(
        &self,
        name: &str,
        cluster: &DbCluster,
        class: &str,
        wanted: usize,
    ) -> Result<Option<String>, AwsError> {
        let cluster_id = cluster.db_cluster_identifier().unwrap_or_default().to_string();
        let ours = self.instances(name, &cluster_id).await?;
        let missing: Vec<String> = (1..=wanted)
            .filter(|n| !ours.iter().any(|(m, _)| m == n))
            .map(|n| instance_id(name, n))
            .collect();
        for instance in &missing {
            let mut create = self
                .rds
                .create_db_instance()
                .db_instance_identifier(instance)
                .db_cluster_identifier(&cluster_id)
                .db_instance_class(class)
                .engine("aurora-postgresql");
            for tag in tags(name) {
                create = create.tags(tag);
            }
            create
                .send()
                .await
                .map_err(|e| api(&format!("create DB instance {instance}"), e))?;
        }
        if !missing.is_empty() {
            return Ok(Some(format!("creating DB instance {}", missing.join(", "))));
        }
        let writer = cluster
            .db_cluster_members()
            .iter()
            .find(|m| m.is_cluster_writer() == Some(true))
            .and_then(|m| m.db_instance_identifier());
        let (mut kept, extra): (Vec<_>, Vec<_>) = ours.into_iter().partition(|(n, _)| *n <= wanted);
        let status = |i: &DbInstance| i.db_instance_status().unwrap_or("unknown").to_string();
        let id = |i: &DbInstance| i.db_instance_identifier().unwrap_or_default().to_string();
        if let Some((_, leaving)) = extra.iter().find(|(_, i)| i.db_instance_identifier() == writer) {
            let Some((_, target)) = kept.iter().find(|(_, i)| status(i) == "available") else {
                return Ok(Some(format!(
                    "DB instance {} writes; waiting for another to take over",
                    id(leaving)
                )));
            };
            self.rds
                .failover_db_cluster()
                .db_cluster_identifier(&cluster_id)
                .target_db_instance_identifier(id(target))
                .send()
                .await
                .map_err(|e| api(&format!("fail over DB cluster {cluster_id}"), e))?;
            return Ok(Some(format!(
                "failing over from DB instance {} to {} before removing it",
                id(leaving),
                id(target)
            )));
        }
        self.delete_instances(&extra).await?;
        if !extra.is_empty() {
            let ids: Vec<String> = extra.iter().map(|(_, i)| id(i)).collect();
            return Ok(Some(format!("removing DB instance {}", ids.join(", "))));
        }
        // One at a time, the writer last, so that most of the cluster keeps serving.
        kept.sort_by_key(|(n, i)| (i.db_instance_identifier() == writer, *n));
        for (_, instance) in &kept {
            if instance.db_instance_class() != Some(class) {
                let pending = instance.pending_modified_values().and_then(|p| p.db_instance_class());
                if pending != Some(class) {
                    self.rds
                        .modify_db_instance()
                        .db_instance_identifier(id(instance))
                        .db_instance_class(class)
                        .apply_immediately(true)
                        .send()
                        .await
                        .map_err(|e| api(&format!("modify DB instance {}", id(instance)), e))?;
                }
                return Ok(Some(format!("changing DB instance {} to {class}", id(instance))));
            }
            if status(instance) != "available" {
                return Ok(Some(format!("DB instance {} is {}", id(instance), status(instance))));
            }
        }
        Ok(None)
    }

    /// Lets go of the Region's database: `Retain` leaves it; `Delete` removes its instances
    /// and the cluster after a final snapshot (`snapshot_id`).
    pub async fn release(&self, region: &Region, snapshot_id: &str) -> Result<(), AwsError> {
        if region.spec.deletion_policy != DeletionPolicy::Delete {
            return Ok(());
        }
        let name = region.metadata.name.clone().unwrap_or_default();
        let cluster = cluster_id(&name);
        // Only a cluster tagged for this Region: another's, or an untagged one that merely
        // has the identifier, stays with everything in it.
        let found = match self
            .rds
            .describe_db_clusters()
            .db_cluster_identifier(&cluster)
            .send()
            .await
        {
            Ok(out) => out.db_clusters().first().cloned(),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_cluster_not_found_fault()) => None,
            Err(e) => return Err(api(&format!("describe DB cluster {cluster}"), e)),
        };
        let Some(found) = found else {
            return Ok(());
        };
        let tagged = owner(found.tag_list());
        if tagged.as_deref() != Some(name.as_str()) {
            tracing::warn!(
                cluster,
                ?tagged,
                "not deleting a DB cluster that is not tagged for this Region"
            );
            return Ok(());
        }
        self.delete_instances(&self.instances(&name, &cluster).await?).await?;
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

/// The `aws` provider as the reconcilers use it. The Region's namespace in this cluster,
/// `meridian-region-<name>`, holds two Secrets, `postgres` (the database's master password,
/// then its connection URL) and `search` (the domain's master password, then its URL with
/// credentials), and, once both stores are available, the Region's booking workload that
/// reads them, as in an `inCluster` stack. Each password is written before the resource
/// that uses it is created, so a crash in between never loses it.
pub struct AwsStacks {
    objects: Objects,
    config: StackConfig,
    /// Overrides AWS's endpoints (tests against moto).
    endpoint: Option<String>,
    /// Fixed credentials instead of the default chain (tests against moto).
    credentials: Option<Credentials>,
    /// `host:port` to connect to instead of the cluster's endpoint.
    database_address: Option<String>,
    /// Base URL to use instead of the domain's endpoint.
    search_address: Option<String>,
    /// SDK configurations by cloud region.
    configs: tokio::sync::Mutex<std::collections::HashMap<String, aws_config::SdkConfig>>,
}

/// The keys of one of the stack's Secrets.
type Stored = std::collections::BTreeMap<String, String>;

/// The key of a Secret saying its store (cluster or domain) has the stored master password.
const PASSWORD_SET: &str = "passwordSet";
/// The key of a Secret saying whether the Region created its store or adopted it.
const ORIGIN: &str = "origin";

impl AwsStacks {
    pub fn new(client: kube::Client, config: StackConfig, endpoint: Option<String>) -> Self {
        Self {
            objects: Objects::new(client),
            config,
            endpoint,
            credentials: None,
            database_address: None,
            search_address: None,
            configs: Default::default(),
        }
    }

    pub(super) fn objects(&self) -> &Objects {
        &self.objects
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

    /// Applies every key of Secret `store` (`postgres` or `search`) of the Region's
    /// namespace at once (server-side apply owns the whole set).
    async fn write(&self, region: &str, store: &str, values: &Stored) -> Result<(), ProviderError> {
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": in_cluster::metadata(store, region, store),
            "type": "Opaque",
            "stringData": values,
        });
        self.objects.apply(&[secret]).await
    }

    /// Records in Secret `store` that its store has the stored master password, and whether
    /// the Region created the store or adopted it (the record a `Delete` goes by).
    async fn mark_password_set(
        &self,
        region: &str,
        store: &str,
        stored: &mut Stored,
        origin: ResourceOrigin,
    ) -> Result<(), ProviderError> {
        stored.insert(PASSWORD_SET.into(), "true".into());
        stored.entry(ORIGIN.into()).or_insert(format!("{origin:?}"));
        self.write(region, store, stored).await
    }

    /// The cluster and domain as the Secrets record them: created, adopted, or (not yet
    /// recorded, or recorded before origins were) not listed at all.
    pub async fn recorded(&self, region: &Region) -> Result<Vec<CloudResource>, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let mut found = Vec::new();
        for (store, kind, id) in [
            ("postgres", "DBCluster", cluster_id(&name)),
            ("search", "OpenSearchDomain", aws_search::domain_name(&name)),
        ] {
            let stored = self.objects.secret(&in_cluster::namespace(&name), store).await?;
            let origin = match stored.get(ORIGIN).map(String::as_str) {
                Some("Created") => ResourceOrigin::Created,
                Some(_) => ResourceOrigin::Adopted,
                None => continue,
            };
            found.push(CloudResource {
                kind: kind.into(),
                id,
                origin,
            });
        }
        Ok(found)
    }

    /// Secret `store` of `region`, with a master password generated and written first if
    /// it has none yet (the Region's namespace is created first).
    async fn with_password(&self, region: &str, store: &str, username: &str) -> Result<Stored, ProviderError> {
        let mut stored = self.objects.secret(&in_cluster::namespace(region), store).await?;
        if !stored.contains_key("password") {
            self.objects.apply(&[in_cluster::namespace_object(region)]).await?;
            stored = Stored::from([
                ("username".to_string(), username.to_string()),
                ("password".to_string(), super::generate_password()),
            ]);
            self.write(region, store, &stored).await?;
        }
        Ok(stored)
    }

    /// The AWS SDK's configuration for `cloud_region`, loaded once: loading resolves the
    /// default credential chain (under IRSA a call to STS), and the clients built from it
    /// share its cached credentials from one reconcile to the next.
    async fn config(&self, cloud_region: &str) -> aws_config::SdkConfig {
        let mut configs = self.configs.lock().await;
        if let Some(config) = configs.get(cloud_region) {
            return config.clone();
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(cloud_region.to_string()));
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = &self.credentials {
            loader = loader.credentials_provider(credentials.clone());
        }
        let config = loader.load().await;
        configs.insert(cloud_region.to_string(), config.clone());
        config
    }

    async fn search(&self, region: &Region) -> AwsSearch {
        AwsSearch::new(aws_sdk_opensearch::Client::new(
            &self.config(&region.spec.cloud_region).await,
        ))
    }

    async fn databases(&self, region: &Region) -> AwsDatabases {
        AwsDatabases::new(aws_sdk_rds::Client::new(&self.config(&region.spec.cloud_region).await))
    }

    /// Brings the domain along; once available, its URL (credentials included).
    async fn ensure_search(&self, region: &Region) -> Result<SearchProgress, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let mut stored = self.with_password(&name, "search", aws_search::MASTER_USER).await?;
        let password = stored["password"].clone();
        let search = self.search(region).await;
        let progress = search.ensure(region, &password).await?;
        if let SearchProgress::Created(why) = progress {
            self.mark_password_set(&name, "search", &mut stored, ResourceOrigin::Created)
                .await?;
            return Ok(SearchProgress::Waiting(why));
        }
        // An adopted domain, or one created just before a crash kept us from recording it.
        if !stored.contains_key(PASSWORD_SET) {
            search.set_master_user(region, &password).await?;
            self.mark_password_set(&name, "search", &mut stored, ResourceOrigin::Adopted)
                .await?;
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
            self.write(&name, "search", &stored).await?;
        }
        Ok(SearchProgress::Available(url))
    }

    /// The Region's CA bundle (`spec.tls.caBundleSecretRef`, in the operator's namespace
    /// unless it names another). Required, before anything is created: Aurora's
    /// certificates are signed by the Amazon RDS CAs, which no system trusts; only a
    /// database reached on loopback (tests against moto) needs none.
    async fn ca_bundle(&self, region: &Region) -> Result<Option<String>, ProviderError> {
        let Some(r) = region.spec.tls.as_ref().map(|t| &t.ca_bundle_secret_ref) else {
            // An AWS emulated on this machine (moto) runs no database with Amazon's
            // certificates. Connections are verified all the same: without the bundle, a
            // real Aurora endpoint would fail its handshake, never connect unverified.
            let loopback = |address: &str| {
                url::Url::parse(address)
                    .ok()
                    .and_then(|u| u.host_str().map(String::from))
                    .or_else(|| address.rsplit_once(':').map(|(host, _)| host.to_string()))
                    .is_some_and(|host| meridian_shared::tls::is_loopback(&host))
            };
            let local = self.database_address.as_deref().is_some_and(loopback)
                || self.endpoint.as_deref().is_some_and(loopback);
            if local {
                return Ok(None);
            }
            return Err(ProviderError::new(
                "CaBundleRequired",
                "spec.tls.caBundleSecretRef is required for aws Regions: put the Amazon RDS CA bundle \
                 (global-bundle.pem from AWS's trust store) in a Secret and name its key there",
            ));
        };
        let ns = r.namespace.as_deref().unwrap_or(&self.config.operator_namespace);
        let shown = format!("{ns}/{} key {}", r.name, r.key);
        let pem = self.objects.secret(ns, &r.name).await?.remove(&r.key).ok_or_else(|| {
            ProviderError::new(
                "CaBundleMissing",
                format!("spec.tls.caBundleSecretRef: Secret {shown} does not exist or lacks the key"),
            )
        })?;
        super::check_ca_bundle(pem, &shown).map(Some)
    }

    /// The CA bundle published in the Region's namespace (Secret `ca`), for the workload
    /// and for whoever reads the stores.
    pub async fn ca(&self, region: &Region) -> Result<Option<String>, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        Ok(self
            .objects
            .secret(&in_cluster::namespace(&name), "ca")
            .await?
            .remove(super::certificates::CA_CERT))
    }

    /// Creates or adopts the Region's Aurora cluster and OpenSearch domain; once both are
    /// available, publishes their URLs and the CA bundle, runs the Region's workload, and
    /// answers with the database.
    pub async fn ensure(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let ca = self.ca_bundle(region).await?;
        let mut stored = self.with_password(&name, "postgres", MASTER_USER).await?;
        let password = stored["password"].clone();
        let databases = self.databases(region).await;
        let database = match databases.ensure(region, &password).await? {
            Progress::Created(why) => {
                self.mark_password_set(&name, "postgres", &mut stored, ResourceOrigin::Created)
                    .await?;
                Progress::Waiting(why)
            }
            // An adopted cluster, or one created just before a crash kept us from recording it.
            Progress::Available { .. } if !stored.contains_key(PASSWORD_SET) => {
                databases.set_master_password(region, &password).await?;
                self.mark_password_set(&name, "postgres", &mut stored, ResourceOrigin::Adopted)
                    .await?;
                Progress::Waiting(format!(
                    "setting the master password of DB cluster {}",
                    cluster_id(&name)
                ))
            }
            progress => progress,
        };
        let search = self.ensure_search(region).await?;
        let (host, port) = match (database, search) {
            (Progress::Available { host, port }, SearchProgress::Available(_)) => (host, port),
            (Progress::Waiting(database), SearchProgress::Waiting(search)) => {
                return Err(ProviderError::new("DatabaseCreating", format!("{database}; {search}")));
            }
            (Progress::Waiting(why) | Progress::Created(why), _)
            | (_, SearchProgress::Waiting(why) | SearchProgress::Created(why)) => {
                return Err(ProviderError::new("DatabaseCreating", why));
            }
        };
        let address = self.database_address.clone().unwrap_or(format!("{host}:{port}"));
        let url = format!("postgres://{MASTER_USER}:{password}@{address}/{MASTER_USER}");
        if stored.get("url") != Some(&url) {
            stored.insert("url".into(), url.clone());
            self.write(&name, "postgres", &stored).await?;
        }
        if let Some(ca) = &ca {
            self.objects
                .apply(&[serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": in_cluster::metadata("ca", &name, "meridian-region"),
                    "type": "Opaque",
                    "stringData": {(super::certificates::CA_CERT): ca},
                })])
                .await?;
        }
        // Objects of the workload it no longer has (the event workers of a Region whose
        // spec.events was removed) go.
        let workload = in_cluster::workload(region, &self.config);
        self.objects.apply(&workload).await?;
        self.objects
            .remove_orphans(&name, &in_cluster::namespace(&name), &workload)
            .await?;
        Ok(Endpoint {
            secret: Some(format!("{}/postgres", in_cluster::namespace(&name))),
            ..Endpoint::from_url(url)
        }
        .with_ca(ca))
    }

    /// The published URL in Secret `store` (`postgres` or `search`).
    async fn published(&self, region: &Region, store: &str) -> Result<String, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let mut stored = self.objects.secret(&in_cluster::namespace(&name), store).await?;
        stored.remove("url").ok_or_else(|| {
            let (reason, what) = match store {
                "postgres" => ("DatabaseNotCreated", "database"),
                _ => ("SearchNotCreated", "OpenSearch domain"),
            };
            ProviderError::new(reason, format!("the {what} of Region {name} is not available yet"))
        })
    }

    /// The database's connection URL, once published.
    pub async fn locate(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        let url = self.published(region, "postgres").await?;
        let name = region.metadata.name.clone().unwrap_or_default();
        Ok(Endpoint {
            secret: Some(format!("{}/postgres", in_cluster::namespace(&name))),
            ..Endpoint::from_url(url)
        }
        .with_ca(self.ca(region).await?))
    }

    /// The domain's URL with the master user's credentials, once published.
    pub async fn search_url(&self, region: &Region) -> Result<String, ProviderError> {
        self.published(region, "search").await
    }

    /// Stops the Region's workload. `Delete` then removes what `recorded` says the Region
    /// created: the domain, the instances and the cluster after a final snapshot, and last
    /// the namespace with its Secrets (kept if any AWS call fails, so the next attempt still
    /// has them). Adopted resources, and a namespace the operator did not make, stay; so
    /// does everything with `Retain`.
    pub async fn release(&self, region: &Region, recorded: &RegionResources) -> Result<(), ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let workload: Vec<_> = in_cluster::workload(region, &self.config).into_iter().rev().collect();
        self.objects.delete(&workload).await?;
        if region.spec.deletion_policy != DeletionPolicy::Delete {
            return Ok(());
        }
        let created = |kind: &str| {
            recorded
                .cloud
                .iter()
                .any(|r| r.kind == kind && r.origin == ResourceOrigin::Created)
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if created("OpenSearchDomain") {
            self.search(region).await.release(region).await?;
        }
        if created("DBCluster") {
            self.databases(region)
                .await
                .release(region, &format!("meridian-{name}-final-{stamp}"))
                .await?;
        }
        // Adopted stores keep their Secrets (their passwords), hence the namespace.
        let adopted = recorded.cloud.iter().any(|r| r.origin == ResourceOrigin::Adopted);
        match &recorded.namespace {
            Some(ns) if !adopted => self.objects.delete_namespace(ns).await,
            _ => Ok(()),
        }
    }
}
