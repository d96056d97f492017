use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{DeletionPolicy, SecretKeyRef};

/// A Region is where data lives: one PostgreSQL database (and later one search
/// endpoint) that holds the partitions of every Country bound to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "platform.meridian.dev",
    version = "v1alpha1",
    kind = "Region",
    plural = "regions",
    shortname = "reg",
    category = "meridian",
    status = "RegionStatus",
    cel,
    doc = "A Region: the regional stack (database and search) that holds the data of the Countries bound to it.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Cloud Region", type_ = "string", json_path = ".spec.cloudRegion"),
    printcolumn(name = "Isolation", type_ = "string", json_path = ".spec.isolation"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.provider != 'external' || has(self.external)").message("spec.external is required when spec.provider is external").field_path(".external"))]
#[x_kube(validation = Rule::new("!has(self.events) || self.events.broker != 'inCluster' || self.provider == 'inCluster' || self.provider == 'aws'").message("spec.events.broker inCluster runs in the Region's namespace: it needs spec.provider inCluster or aws").field_path(".events.broker"))]
#[x_kube(validation = Rule::new("!has(self.notifications) || has(self.events) || self.provider == 'local'").message("spec.notifications needs spec.events: the notifications consumer follows the Region's Kafka").field_path(".notifications"))]
#[x_kube(validation = Rule::new("!has(self.notifications) || has(self.notifications.smtp) || has(self.notifications.sms)").message("spec.notifications needs smtp, sms or both").field_path(".notifications"))]
#[x_kube(validation = Rule::new("!has(self.notifications) || !has(self.notifications.smtp) || (has(self.notifications.smtp.usernameSecretRef) == has(self.notifications.smtp.passwordSecretRef))").message("spec.notifications.smtp: usernameSecretRef and passwordSecretRef go together").field_path(".notifications.smtp"))]
#[x_kube(validation = Rule::new("!has(self.events) || self.events.broker == 'inCluster' || has(self.events.bootstrapServersSecretRef)").message("spec.events.bootstrapServersSecretRef is required unless spec.events.broker is inCluster").field_path(".events.bootstrapServersSecretRef"))]
#[serde(rename_all = "camelCase")]
pub struct RegionSpec {
    /// How the stack is provided: `aws` (Aurora PostgreSQL and OpenSearch Service),
    /// `inCluster` (PostgreSQL and OpenSearch StatefulSets in namespace
    /// `meridian-region-<name>`), `external` (endpoints read from referenced Secrets) or
    /// `local` (a PostgreSQL cluster that `meridian dev` starts itself). Immutable: a new
    /// provider would be an empty stack, not the one that holds the data.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.provider is immutable"))]
    pub provider: RegionProvider,
    /// Cloud region the data stays in, e.g. `eu-central-1`. Immutable: data does not move
    /// between regions by editing a field.
    #[schemars(pattern(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.cloudRegion is immutable"))]
    pub cloud_region: String,
    /// `shared` stacks hold several countries; a `dedicated` stack holds exactly one
    /// country, as strict data residency requires. A `dedicated` Region stays dedicated: a
    /// strict country's data is already in it.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf || oldSelf != 'dedicated'").message("spec.isolation cannot change from dedicated to shared: strict countries rely on it; create a shared Region instead"))]
    pub isolation: Isolation,
    /// Database sizing, used by the `aws` and `inCluster` providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSizing>,
    /// Search sizing, used by the `aws` and `inCluster` providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSizing>,
    /// Where to find the endpoints of an `external` stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalEndpoints>,
    /// The Region's Kafka, where the relay publishes its outbox and the consumers (search
    /// indexer, billing, analytics, notifications) read. Without it, `meridian dev`'s
    /// consumers read the outbox directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<RegionEvents>,
    /// How the Region's notifications consumer reaches patients in a cluster: an SMTP relay
    /// for e-mail and an HTTP SMS provider. Deployed with the event workers (it needs
    /// `events`); `meridian dev` sends nothing and shows the messages on `/dev/outbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<RegionNotifications>,
    /// How the database's and search's certificates are verified. Outside `local`, every
    /// connection to them verifies the server's certificate and host name (PostgreSQL
    /// `sslmode=verify-full`, OpenSearch over `https`); a URL asking for less is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RegionTls>,
    /// `Retain` (default) keeps databases and cloud resources when the Region is deleted;
    /// `Delete` removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// How a Region's stack is provided.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RegionProvider {
    /// Aurora PostgreSQL and an OpenSearch Service domain, created with the AWS SDKs.
    Aws,
    /// A PostgreSQL StatefulSet inside the cluster (kind, development clusters).
    InCluster,
    /// Existing endpoints, read from the Secrets named in `spec.external`.
    External,
    /// A PostgreSQL cluster started by `meridian dev` on this machine.
    Local,
}

/// Whether a Region's stack is shared between countries.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Isolation {
    /// Several countries share the stack (each in its own partitions).
    #[default]
    Shared,
    /// The stack serves exactly one country.
    Dedicated,
}

/// Database sizing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSizing {
    /// Instance class, e.g. `db.r6g.large`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_class: Option<String>,
    /// Allocated storage in GiB.
    #[serde(rename = "storageGiB", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub storage_gib: Option<i32>,
    /// Number of instances (writer plus readers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub instances: Option<i32>,
}

/// Search sizing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchSizing {
    /// Instance type, e.g. `r6g.large.search`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Number of data nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 80))]
    pub instance_count: Option<i32>,
    /// EBS volume size per node in GiB.
    #[serde(rename = "volumeGiB", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 16384))]
    pub volume_gib: Option<i32>,
}

/// Endpoints of an `external` stack, read from Secrets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalEndpoints {
    /// Secret key holding a PostgreSQL connection URL (`postgres://user:pass@host:port/db`).
    pub database_url_secret_ref: SecretKeyRef,
    /// Secret key holding the search endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_url_secret_ref: Option<SecretKeyRef>,
}

/// A Region's Kafka.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionEvents {
    /// `external`: an existing Kafka, reached as the Secrets below say. `aws`: an existing
    /// Amazon MSK cluster (its bootstrap brokers string in a Secret; TLS always, SASL/SCRAM
    /// as MSK's `sasl.scram` listener needs). `inCluster`: a single-node Kafka-compatible
    /// broker (tansu) that the operator runs in the Region's namespace, with its own volume,
    /// reachable by the Region's workers and the operator only (plaintext inside the
    /// cluster; for development and small installations).
    pub broker: EventsBroker,
    /// Secret key holding the bootstrap servers, `host:port[,host:port...]` (`external`
    /// and `aws`; an `inCluster` broker's address is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers_secret_ref: Option<SecretKeyRef>,
    /// Size of an `inCluster` broker's volume, in GiB (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16384))]
    pub volume_gib: Option<i32>,
    /// Speak TLS to the brokers, verifying their certificates (always for `aws`).
    #[serde(default)]
    pub tls: bool,
    /// Secret key holding the CA certificates (PEM) the brokers' certificates are verified
    /// against; without it, the system's roots. Implies `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// SASL authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// Partitions of each topic the operator creates (an existing topic keeps its own).
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    pub partitions: i32,
    /// Replication factor of each topic it creates (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 7))]
    pub replication_factor: Option<i32>,
    /// How long the broker keeps events, in hours (default a week).
    #[serde(default = "default_retention_hours")]
    #[schemars(range(min = 1, max = 87600))]
    pub retention_hours: i32,
}

fn default_partitions() -> i32 {
    6
}

fn default_retention_hours() -> i32 {
    168
}

/// The channels of a Region's notifications; at least one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionNotifications {
    /// E-mail through an SMTP relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpRelay>,
    /// SMS through an HTTP provider (`POST` JSON `{to, body, idempotencyKey}` with a bearer
    /// token), used where the Country's `features.smsReminders` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsProvider>,
}

/// An SMTP relay.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpRelay {
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Default 587.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// `starttls` (default; required, port 587) or `tls` (port 465). Never plain.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The sender, e.g. `Meridian <no-reply@clinic.example>`.
    #[schemars(length(min = 3))]
    pub from: String,
    /// Secret key holding the user name, with `passwordSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// How the connection to an SMTP relay is protected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
}

/// An HTTP SMS provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmsProvider {
    /// Its endpoint; `https`.
    #[schemars(pattern(r"^https://"))]
    pub url: String,
    /// Secret key holding the bearer token.
    pub token_secret_ref: SecretKeyRef,
}

/// Where a Region's Kafka comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EventsBroker {
    External,
    Aws,
    InCluster,
}

/// SASL credentials for a Region's Kafka.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    /// Secret key holding the user name.
    pub username_secret_ref: SecretKeyRef,
    /// Secret key holding the password.
    pub password_secret_ref: SecretKeyRef,
}

/// SASL mechanisms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The CA certificates a Region's stores are verified against.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionTls {
    /// Secret key holding CA certificates (PEM, one or more) that the database's and the
    /// search endpoint's server certificates are verified against, besides the system's
    /// roots. `aws`: required; the Amazon RDS CA bundle (`global-bundle.pem` from AWS's
    /// trust store), whose CAs no system trusts. `external`: the CA of the servers when it
    /// is not a public one. Not used by `inCluster`, whose stack gets a CA and server
    /// certificates from the operator, nor by `local`, which stays on this machine.
    pub ca_bundle_secret_ref: SecretKeyRef,
}

/// Observed state of a Region.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    /// `DatabaseReady`, `SearchReady` and `Ready`, each with a reason and message.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Database endpoint (`host:port/database`, never credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_endpoint: Option<String>,
    /// Search endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_endpoint: Option<String>,
    /// The Secret the Region's workloads connect with: the workload role's connection URL
    /// (`url`, with `username` and `password`), as `namespace/name`
    /// (`meridian-region-<name>/postgres-workload`; a file's path in `meridian dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<String>,
    /// The Secret of the owner role (`meridian-region-<name>/postgres-owner`): the
    /// operator's own, for migrations and partitions; never mounted into a workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_secret: Option<String>,
    /// The database roles the Region created and keeps, each with the Secret holding its
    /// credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database_roles: Vec<DatabaseRole>,
    /// What this Region made, and what it found and took over. Its deletion with
    /// `deletionPolicy: Delete` removes only what is recorded here as `created`; adopted
    /// resources and anything not recorded are left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<RegionResources>,
    /// Latest platform schema migration applied to the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
}

/// A login role of a Region's database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRole {
    /// The role's name on the PostgreSQL server, e.g. `meridian_eu_central_1_workload`.
    pub name: String,
    /// `owner` (owns the schema: migrations, partitions; the operator only) or `workload`
    /// (rows only: no DDL, the audit trail insert-only).
    pub purpose: String,
    /// Where its credentials are, as `namespace/name`.
    pub secret: String,
}

/// What a Region made or took over.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionResources {
    /// The Region's namespace (`meridian-region-<name>`) when the operator made it (it
    /// carries the operator's `app.kubernetes.io/managed-by` label); unset for a namespace
    /// someone else made, which is never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Cloud resources of an `aws` Region: its Aurora cluster (with its numbered instances)
    /// and its OpenSearch domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cloud: Vec<CloudResource>,
    /// Kafka topics this Region created on its `external` or `aws` broker (a `Delete`
    /// removes them; topics that existed before are never recorded nor removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
}

/// A cloud resource a Region uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudResource {
    /// `DBCluster` or `OpenSearchDomain`.
    pub kind: String,
    /// Its identifier, e.g. `meridian-eu-central-1`.
    pub id: String,
    /// `Created` by this Region (removed by a `Delete`), or `Adopted`: it existed, tagged
    /// for this Region (e.g. left by an earlier Region of the same name with `Retain`), and
    /// is never removed by the operator.
    pub origin: ResourceOrigin,
}

/// Whether a Region made a resource or took it over.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ResourceOrigin {
    Created,
    Adopted,
}
