//! Where a Region's stores come from. Each provider turns a Region into a database
//! connection URL and a search backend: `local` starts a PostgreSQL cluster and an embedded
//! engine (only in `meridian dev`), `external` reads URLs from Secrets, `inCluster` builds a
//! stack in the Region's namespace, `aws` an Aurora cluster and an OpenSearch domain.

pub mod aws;
pub mod aws_search;
pub mod certificates;
pub mod event_backbone;
pub mod in_cluster;
mod local;
mod objects;
#[cfg(test)]
mod rendered;
mod secrets;

use std::sync::Arc;

use meridian_crds::{DeletionPolicy, Region, RegionProvider, RegionResources, SecretKeyRef};
use meridian_search::Backend;
use meridian_search::opensearch::OpenSearch;

pub use aws::AwsStacks;
pub use in_cluster::{InClusterStacks, StackConfig};
pub use local::{DATABASE_RESTARTING, LocalClusters};
pub use secrets::{FileSecrets, KubeRegionSecrets, RegionSecrets, SecretData, SecretSource, StaticSecrets};

/// A database connection URL with the CA certificates (PEM) its server's certificate is
/// verified against, besides the system's roots: the two go together, so that nothing
/// connects with the URL and forgets the CA. Credentials included: never written to
/// status or logs (its `Debug` shows neither).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionUrl {
    url: String,
    ca: Option<String>,
}

impl ConnectionUrl {
    pub fn new(url: String, ca: Option<String>) -> Self {
        Self { url, ca }
    }

    /// The URL itself.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The CA certificates the Region names, if any.
    pub fn ca(&self) -> Option<&str> {
        self.ca.as_deref()
    }
}

impl std::fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionUrl")
            .field("url", &shown(&self.url))
            .field("ca", &self.ca.as_ref().map(|_| "PEM"))
            .finish()
    }
}

/// How to reach a Region's database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Connection URL, credentials included, and the CA that its server is verified against.
    pub url: ConnectionUrl,
    /// `host:port/database`, safe to show.
    pub display: String,
    /// `namespace/name` of the Secret the URL came from, when it came from one.
    pub secret: Option<String>,
}

impl Endpoint {
    pub fn from_url(url: String) -> Self {
        Self {
            display: shown(&url),
            url: ConnectionUrl::new(url, None),
            secret: None,
        }
    }

    /// The same endpoint, its server verified against `ca` (PEM) too.
    pub fn with_ca(mut self, ca: Option<String>) -> Self {
        self.url.ca = ca;
        self
    }
}

/// `host:port/path` of `url`, never its user information or query. What a URL parser
/// makes of it (the user information ends at the authority's last `@`); a URL it cannot
/// parse, or whose path holds an `@` (a password with an unescaped `/` ends the authority
/// early), is not shown at all: any piece of it could be a piece of a password.
fn shown(url: &str) -> String {
    const UNSHOWN: &str = "(a connection URL that does not parse; not shown)";
    let Ok(parsed) = url::Url::parse(url) else {
        return UNSHOWN.into();
    };
    let host = parsed.host_str().unwrap_or_default();
    if host.is_empty() || parsed.path().contains('@') {
        return UNSHOWN.into();
    }
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = match parsed.path() {
        "/" => "",
        path => path,
    };
    format!("{host}{port}{path}")
}

/// Why a provider could not produce an endpoint; `reason` becomes the condition reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub reason: &'static str,
    pub message: String,
}

impl ProviderError {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// All providers available to this driver.
#[derive(Clone)]
pub struct Providers {
    local: Option<Arc<LocalClusters>>,
    secrets: Arc<dyn SecretSource>,
    /// One search backend for every Region, whatever its spec says.
    search: Option<Backend>,
    /// `inCluster` stacks, when running against a cluster.
    in_cluster: Option<Arc<InClusterStacks>>,
    /// `aws` stacks, when running against a cluster.
    aws: Option<Arc<AwsStacks>>,
    /// Where Regions publish their database roles' Secrets, when not the default (the
    /// cluster when running against one, files beside the local clusters in `meridian dev`).
    region_secrets: Option<Arc<dyn RegionSecrets>>,
}

/// The condition reasons for a Secret a spec names that is missing, or cannot be read.
#[derive(Clone, Copy)]
struct SecretReasons {
    missing: &'static str,
    unreadable: &'static str,
}

impl SecretReasons {
    const CONNECTION: Self = Self {
        missing: "ConnectionSecretMissing",
        unreadable: "ConnectionSecretUnreadable",
    };
    const SEARCH: Self = Self {
        missing: "SearchSecretMissing",
        unreadable: "SearchSecretUnreadable",
    };
    const CA_BUNDLE: Self = Self {
        missing: "CaBundleMissing",
        unreadable: "CaBundleUnreadable",
    };
    const EVENTS: Self = Self {
        missing: "EventsSecretMissing",
        unreadable: "EventsSecretUnreadable",
    };
    const NOTIFICATIONS: Self = Self {
        missing: "NotificationsSecretMissing",
        unreadable: "NotificationsSecretUnreadable",
    };
}

/// A Secret reference as a message shows it: `namespace/name key k`.
fn shown_ref(r: &SecretKeyRef) -> String {
    format!(
        "{}/{} key {}",
        r.namespace.as_deref().unwrap_or("(operator namespace)"),
        r.name,
        r.key
    )
}

/// The Secret of a Region's owner role (in the Region's namespace).
pub const OWNER_SECRET: &str = "postgres-owner";
/// The Secret of a Region's workload role: what its workloads connect with.
pub const WORKLOAD_SECRET: &str = "postgres-workload";
/// The Secret of a Region's vault role: what the records service reaches the PII vault with.
pub const VAULT_SECRET: &str = "postgres-vault";
/// The key of a role's Secret saying the role has the Secret's password.
pub const PASSWORD_SET: &str = "passwordSet";

impl Providers {
    pub fn new(local: Option<Arc<LocalClusters>>, secrets: Arc<dyn SecretSource>) -> Self {
        Self {
            local,
            secrets,
            search: None,
            in_cluster: None,
            aws: None,
            region_secrets: None,
        }
    }

    /// Publishes Regions' role Secrets in `store`.
    pub fn with_region_secrets(mut self, store: Arc<dyn RegionSecrets>) -> Self {
        self.region_secrets = Some(store);
        self
    }

    /// Where `region` publishes its role Secrets: as set, else the cluster's namespaces when
    /// the operator runs against a cluster, else files beside `meridian dev`'s clusters.
    pub fn region_secrets(&self, region: &Region) -> Result<Arc<dyn RegionSecrets>, ProviderError> {
        if let Some(store) = &self.region_secrets {
            return Ok(store.clone());
        }
        if let Some(objects) = self.kube_objects() {
            return Ok(Arc::new(KubeRegionSecrets::from_objects(objects.clone())));
        }
        if let Some(local) = &self.local {
            return Ok(Arc::new(FileSecrets::new(local.root().to_path_buf())));
        }
        Err(ProviderError::new(
            "ProviderUnavailable",
            format!(
                "nowhere to publish the database roles' Secrets of Region {}",
                region_name(region)
            ),
        ))
    }

    /// The owner role's endpoint (the operator's, for migrations and partitions), once the
    /// Region reconcile has published it.
    pub async fn locate(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        self.role_endpoint(region, OWNER_SECRET).await
    }

    /// The workload role's endpoint: what the Region's workloads connect with.
    pub async fn workload(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        self.role_endpoint(region, WORKLOAD_SECRET).await
    }

    /// The vault role's endpoint: what the Region's records service reaches the PII vault with.
    pub async fn vault(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        self.role_endpoint(region, VAULT_SECRET).await
    }

    async fn role_endpoint(&self, region: &Region, secret: &str) -> Result<Endpoint, ProviderError> {
        let name = region_name(region);
        let store = self.region_secrets(region)?;
        let mut stored = store.read(&name, secret).await?;
        match stored.remove("url") {
            Some(url) if stored.contains_key(PASSWORD_SET) => Ok(Endpoint {
                secret: Some(store.location(&name, secret)),
                ..Endpoint::from_url(url)
            }
            // The roles reach the same server as the administrator: verified against its CA.
            .with_ca(self.database_ca(region).await?)),
            _ => Err(ProviderError::new(
                "RolesNotCreated",
                format!("the database roles of Region {name} have not been created yet"),
            )),
        }
    }

    /// Lets every Region's records service reach the database of `region`, where PatientIndex
    /// `index` lives: a NetworkPolicy for an `inCluster` stack; nothing to do for the others
    /// (their databases are reached as the Region's own workloads reach them).
    pub async fn admit_index_clients(&self, region: &Region, index: &str) -> Result<(), ProviderError> {
        match region.spec.provider {
            RegionProvider::InCluster => {
                self.in_cluster(region)?
                    .admit_index_clients(&region_name(region), index)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Undoes [`Providers::admit_index_clients`].
    pub async fn remove_index_clients(&self, region: &Region, index: &str) -> Result<(), ProviderError> {
        match region.spec.provider {
            RegionProvider::InCluster => {
                self.in_cluster(region)?
                    .remove_index_clients(&region_name(region), index)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Builds `inCluster` Regions' stacks in the cluster.
    pub fn with_in_cluster(mut self, stacks: InClusterStacks) -> Self {
        self.in_cluster = Some(Arc::new(stacks));
        self
    }

    /// Builds `aws` Regions' databases through the AWS APIs.
    pub fn with_aws(mut self, stacks: AwsStacks) -> Self {
        self.aws = Some(Arc::new(stacks));
        self
    }

    fn aws(&self, region: &Region) -> Result<&AwsStacks, ProviderError> {
        against_a_cluster(self.aws.as_deref(), "aws", region)
    }

    fn in_cluster(&self, region: &Region) -> Result<&InClusterStacks, ProviderError> {
        against_a_cluster(self.in_cluster.as_deref(), "inCluster", region)
    }

    /// Sends every Region's search to `backend` (tests that run the reconcilers against
    /// databases only, with an embedded engine beside them).
    pub fn with_search(mut self, backend: Backend) -> Self {
        self.search = Some(backend);
        self
    }

    /// How the Region's database server was last brought back after it died, where this
    /// process supervises it (`local`); for the Region's status.
    pub fn last_restart(&self, region: &Region) -> Option<String> {
        match region.spec.provider {
            RegionProvider::Local => self.local.as_deref()?.last_restart(&region_name(region)),
            _ => None,
        }
    }

    /// Provisions the Region's stack if this provider creates one, and returns its endpoint.
    pub async fn ensure(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        match region.spec.provider {
            RegionProvider::Local => self.local(region)?.ensure(&region_name(region)).await,
            RegionProvider::InCluster => self.in_cluster(region)?.ensure(region).await,
            RegionProvider::Aws => self.aws(region)?.ensure(region).await,
            RegionProvider::External => self.admin(region).await,
        }
    }

    /// The endpoint of an existing stack as its administrator (a superuser, the master user
    /// or an `external` Region's admin URL), without creating anything: for creating roles.
    pub async fn admin(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        match region.spec.provider {
            RegionProvider::Local => self.local(region)?.locate(&region_name(region)),
            RegionProvider::External => {
                let Some(external) = &region.spec.external else {
                    return Err(ProviderError::new(
                        "InvalidSpec",
                        "spec.external is required when spec.provider is external",
                    ));
                };
                let r = &external.database_url_secret_ref;
                let url = self
                    .read_secret_ref(r, "spec.external.databaseUrlSecretRef", SecretReasons::CONNECTION)
                    .await?;
                Ok(Endpoint {
                    secret: Some(
                        r.namespace
                            .as_ref()
                            .map_or(r.name.clone(), |ns| format!("{ns}/{}", r.name)),
                    ),
                    ..Endpoint::from_url(url)
                }
                .with_ca(self.ca_bundle(region).await?))
            }
            RegionProvider::InCluster => self.in_cluster(region)?.locate(region).await,
            RegionProvider::Aws => self.aws(region)?.locate(region).await,
        }
    }

    /// The search backend holding the indexes of `region`'s countries: the embedded engine
    /// for `local`, OpenSearch at the URL of `spec.external.searchUrlSecretRef` for
    /// `external` (credentials, if any, as the URL's user information), the stack's
    /// OpenSearch for `inCluster`, the Region's domain (as its master user) for `aws`.
    pub async fn search(&self, region: &Region) -> Result<Backend, ProviderError> {
        Ok(self.search_store(region).await?.0)
    }

    /// [`Providers::search`], and where it is, for status (never credentials).
    pub async fn search_store(&self, region: &Region) -> Result<(Backend, String), ProviderError> {
        if let Some(backend) = &self.search {
            return Ok((backend.clone(), "embedded engine (shared by every Region)".into()));
        }
        match region.spec.provider {
            RegionProvider::Local => {
                let name = region_name(region);
                let engine = self.local(region)?.search(&name)?;
                Ok((Backend::Embedded(engine), format!("embedded engine of Region {name}")))
            }
            RegionProvider::External => {
                let Some(r) = region
                    .spec
                    .external
                    .as_ref()
                    .and_then(|e| e.search_url_secret_ref.as_ref())
                else {
                    return Err(ProviderError::new(
                        "SearchNotConfigured",
                        "spec.external.searchUrlSecretRef is not set: the Region has no search endpoint",
                    ));
                };
                let url = self
                    .read_secret_ref(r, "spec.external.searchUrlSecretRef", SecretReasons::SEARCH)
                    .await?;
                opensearch_backend(&url, self.ca_bundle(region).await?.as_deref())
            }
            RegionProvider::InCluster => {
                let stacks = self.in_cluster(region)?;
                let url = stacks.search_url(region).await?;
                opensearch_backend(&url, stacks.ca(region).await?.as_deref())
            }
            RegionProvider::Aws => {
                let stacks = self.aws(region)?;
                let url = stacks.search_url(region).await?;
                opensearch_backend(&url, stacks.ca(region).await?.as_deref())
            }
        }
    }

    /// How the Region's Kafka is reached and the settings of the topics made there; `None`
    /// without `spec.events`.
    pub async fn events(
        &self,
        region: &Region,
    ) -> Result<
        Option<(
            meridian_events::kafka::Connection,
            meridian_events::topics::TopicSettings,
        )>,
        ProviderError,
    > {
        use meridian_crds::EventsBroker;
        use meridian_events::kafka::{Ca, Connection, Sasl};
        let Some(events) = &region.spec.events else {
            return Ok(None);
        };
        let mut settings = meridian_events::topics::TopicSettings {
            partitions: events.partitions,
            replication_factor: events.replication_factor.unwrap_or(3),
            retention: std::time::Duration::from_secs(events.retention_hours.max(1) as u64 * 3600),
        };
        if events.broker == EventsBroker::InCluster {
            // One node: one copy of each partition is all there can be.
            settings.replication_factor = 1;
            let connection = Connection {
                bootstrap: event_backbone::kafka_bootstrap(&region_name(region)),
                ..Connection::default()
            };
            return Ok(Some((connection, settings)));
        }
        let Some(bootstrap_ref) = &events.bootstrap_servers_secret_ref else {
            return Err(ProviderError::new(
                SecretReasons::EVENTS.missing,
                "spec.events.bootstrapServersSecretRef is required unless spec.events.broker is inCluster",
            ));
        };
        let bootstrap = self
            .read_secret_ref(
                bootstrap_ref,
                "spec.events.bootstrapServersSecretRef",
                SecretReasons::EVENTS,
            )
            .await?;
        let ca = match &events.ca_secret_ref {
            Some(r) => Some(Ca::Pem(
                self.read_secret_ref(r, "spec.events.caSecretRef", SecretReasons::EVENTS)
                    .await?,
            )),
            None => None,
        };
        let sasl = match &events.sasl {
            Some(sasl) => Some(Sasl {
                mechanism: sasl.mechanism.as_str(),
                username: self
                    .read_secret_ref(
                        &sasl.username_secret_ref,
                        "spec.events.sasl.usernameSecretRef",
                        SecretReasons::EVENTS,
                    )
                    .await?,
                password: self
                    .read_secret_ref(
                        &sasl.password_secret_ref,
                        "spec.events.sasl.passwordSecretRef",
                        SecretReasons::EVENTS,
                    )
                    .await?,
            }),
            None => None,
        };
        let connection = Connection {
            bootstrap: bootstrap.trim().to_string(),
            // MSK's listeners that take credentials all speak TLS.
            tls: events.tls || events.broker == EventsBroker::Aws,
            ca,
            sasl,
        };
        Ok(Some((connection, settings)))
    }

    /// Lets go of the Region's stack when the Region is deleted: with `Delete`, what
    /// `recorded` (the Region's status) says it created goes too, its data with it.
    pub async fn release(&self, region: &Region, recorded: &RegionResources) -> Result<(), ProviderError> {
        let delete = region.spec.deletion_policy == DeletionPolicy::Delete;
        match region.spec.provider {
            RegionProvider::Local => self.local(region)?.release(&region_name(region), delete).await,
            RegionProvider::InCluster => self.in_cluster(region)?.release(region, delete, recorded).await,
            RegionProvider::Aws => self.aws(region)?.release(region, recorded).await,
            // External databases are not ours (the Country cleanups already handled their
            // partitions, and the roles own what is left): only the namespace the Region made
            // for its roles' Secrets goes, with Delete.
            RegionProvider::External => match (&recorded.namespace, delete) {
                (Some(ns), true) => self.region_secrets(region)?.remove(ns).await,
                _ => Ok(()),
            },
        }
    }

    /// What the Region made or took over, from the providers' own records (the namespace
    /// is `prepare`'s answer).
    pub async fn recorded(&self, region: &Region, namespace: Option<String>) -> Result<RegionResources, ProviderError> {
        let cloud = match region.spec.provider {
            RegionProvider::Aws => self.aws(region)?.recorded(region).await?,
            _ => Vec::new(),
        };
        Ok(RegionResources {
            namespace,
            cloud,
            ..RegionResources::default()
        })
    }

    fn kube_objects(&self) -> Option<&objects::Objects> {
        self.in_cluster
            .as_deref()
            .map(InClusterStacks::objects)
            .or(self.aws.as_deref().map(AwsStacks::objects))
    }

    /// The CA certificates a Region's database is verified against, besides the system's
    /// roots: the stack's own CA for `inCluster`, the Region's bundle for `aws` and `external`.
    async fn database_ca(&self, region: &Region) -> Result<Option<String>, ProviderError> {
        match region.spec.provider {
            RegionProvider::Local => Ok(None),
            RegionProvider::InCluster => self.in_cluster(region)?.ca(region).await,
            RegionProvider::Aws | RegionProvider::External => self.ca_bundle(region).await,
        }
    }

    /// The CA certificates `spec.tls.caBundleSecretRef` names, if the Region names any.
    async fn ca_bundle(&self, region: &Region) -> Result<Option<String>, ProviderError> {
        let Some(r) = region.spec.tls.as_ref().map(|t| &t.ca_bundle_secret_ref) else {
            return Ok(None);
        };
        let pem = self
            .read_secret_ref(r, "spec.tls.caBundleSecretRef", SecretReasons::CA_BUNDLE)
            .await?;
        check_ca_bundle(pem, &shown_ref(r)).map(Some)
    }

    /// The value a spec's `field` (a [`SecretKeyRef`]) names; a missing Secret or key, or
    /// one that cannot be read, is an error that names the field.
    /// The credentials of a Region's notification channels, read from the Secrets its
    /// `spec.notifications` names, as Secret `notifications` holds them for the notifications
    /// consumer (`smtp-username`, `smtp-password`, `sms-token`); empty without any.
    pub async fn notification_credentials(&self, region: &Region) -> Result<SecretData, ProviderError> {
        let mut data = SecretData::new();
        let Some(notifications) = &region.spec.notifications else {
            return Ok(data);
        };
        if let Some(smtp) = &notifications.smtp
            && let (Some(user), Some(password)) = (&smtp.username_secret_ref, &smtp.password_secret_ref)
        {
            let field = "spec.notifications.smtp.usernameSecretRef";
            data.insert(
                "smtp-username".into(),
                self.read_secret_ref(user, field, SecretReasons::NOTIFICATIONS).await?,
            );
            let field = "spec.notifications.smtp.passwordSecretRef";
            data.insert(
                "smtp-password".into(),
                self.read_secret_ref(password, field, SecretReasons::NOTIFICATIONS)
                    .await?,
            );
        }
        if let Some(sms) = &notifications.sms {
            let field = "spec.notifications.sms.tokenSecretRef";
            data.insert(
                "sms-token".into(),
                self.read_secret_ref(&sms.token_secret_ref, field, SecretReasons::NOTIFICATIONS)
                    .await?,
            );
        }
        Ok(data)
    }

    async fn read_secret_ref(
        &self,
        r: &SecretKeyRef,
        field: &str,
        reasons: SecretReasons,
    ) -> Result<String, ProviderError> {
        match self.secrets.get(r.namespace.as_deref(), &r.name, &r.key).await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(ProviderError::new(
                reasons.missing,
                format!("{field}: Secret {} does not exist or lacks the key", shown_ref(r)),
            )),
            Err(e) => Err(ProviderError::new(
                reasons.unreadable,
                format!("{field}: cannot read Secret {}: {e}", shown_ref(r)),
            )),
        }
    }

    fn local(&self, region: &Region) -> Result<&LocalClusters, ProviderError> {
        self.local.as_deref().ok_or_else(|| {
            ProviderError::new(
                "ProviderUnavailable",
                format!(
                    "spec.provider local runs only in `meridian dev`; Region {} needs external here",
                    region_name(region)
                ),
            )
        })
    }
}

/// The stacks of `provider`, which exist only when the operator runs against a cluster.
fn against_a_cluster<'a, T>(stacks: Option<&'a T>, provider: &str, region: &Region) -> Result<&'a T, ProviderError> {
    stacks.ok_or_else(|| {
        ProviderError::new(
            "ProviderUnavailable",
            format!(
                "spec.provider {provider} needs the operator running against a cluster; Region {} cannot be built here",
                region_name(region)
            ),
        )
    })
}

/// `pem` if it holds CA certificates (PEM, at least one, each readable); `shown` names
/// where it came from.
pub(crate) fn check_ca_bundle(pem: String, shown: &str) -> Result<String, ProviderError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let invalid = |why: String| ProviderError::new("InvalidCaBundle", format!("Secret {shown}: {why}"));
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("the CA bundle does not parse as PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("the CA bundle holds no PEM certificate".into()));
    }
    Ok(pem)
}

/// An OpenSearch backend at `url`, its certificate verified against the system's roots
/// and `ca`, and where it is, for status. Plain `http://` off this machine is refused.
fn opensearch_backend(url: &str, ca: Option<&str>) -> Result<(Backend, String), ProviderError> {
    let shown = Endpoint::from_url(url.to_string()).display;
    if let Ok(parsed) = url::Url::parse(url)
        && parsed.scheme() == "http"
        && !meridian_shared::tls::is_loopback(parsed.host_str().unwrap_or_default())
    {
        return Err(ProviderError::new(
            "InsecureSearchUrl",
            format!(
                "the search URL of {shown} is plain http: search connections that leave this machine need https, \
                 the server's certificate verified"
            ),
        ));
    }
    let client = OpenSearch::from_url(url, ca)
        .map_err(|e| ProviderError::new("SearchUnavailable", format!("search endpoint: {e}")))?;
    Ok((Backend::OpenSearch(Arc::new(client)), shown))
}

/// A new password for a stack's store: 32 characters with upper- and lower-case letters,
/// digits and a special character (as RDS and OpenSearch Service demand), none of which
/// needs escaping in a URL.
pub(crate) fn generate_password() -> String {
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

/// `url` with `username` and `password` as its user information instead of its own.
pub fn with_login(url: &str, username: &str, password: &str) -> String {
    // Percent-encodes all but RFC 3986's unreserved characters.
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{}:{}@{host}{tail}", encode(username), encode(password))
}

fn region_name(region: &Region) -> String {
    region.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_shows_host_port_and_database_and_nothing_of_the_password() {
        for (url, shown) in [
            (
                "postgres://meridian:s3cret@postgres.ns.svc:5432/meridian",
                "postgres.ns.svc:5432/meridian",
            ),
            (
                "postgres://u:p%40ss%3Aw%2Ford@db.example:5432/meridian?sslmode=verify-full",
                "db.example:5432/meridian",
            ),
            (
                "postgres://u:p@ss:w@rd@db.example:5432/meridian",
                "db.example:5432/meridian",
            ),
            ("postgres://u:@@@db.example/meridian", "db.example/meridian"),
            (
                "postgres://db.example/meridian?user=u&password=p@ss",
                "db.example/meridian",
            ),
            ("https://admin:pa@ss@search.example", "search.example"),
            ("http://127.0.0.1:9200", "127.0.0.1:9200"),
            // An unescaped '/' ends the authority: what follows is not shown.
            (
                "postgres://admin:12/34@db.example:5432/meridian",
                "(a connection URL that does not parse; not shown)",
            ),
            (
                "postgres://u:pa/ss@db.example/meridian",
                "(a connection URL that does not parse; not shown)",
            ),
            (
                "postgres://u:pa?ss@db.example/meridian",
                "(a connection URL that does not parse; not shown)",
            ),
            ("not a url at all", "(a connection URL that does not parse; not shown)"),
        ] {
            assert_eq!(Endpoint::from_url(url.into()).display, shown, "{url}");
        }
    }
}
