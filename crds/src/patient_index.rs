use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::DeletionPolicy;
use crate::region::DatabaseRole;

/// The Master Patient Index: where a national ID's keyed hash says a patient's records live.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "platform.meridian.dev",
    version = "v1alpha1",
    kind = "PatientIndex",
    plural = "patientindexes",
    shortname = "mpi",
    category = "meridian",
    status = "PatientIndexStatus",
    cel,
    doc = "The Master Patient Index: keyed hashes of national IDs pointing to each patient's home Region. No raw ID, no clinical data.",
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Key", type_ = "string", json_path = ".status.activeKeyVersion"),
    printcolumn(name = "Countries", type_ = "string", json_path = ".status.linkedCountries"),
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
#[serde(rename_all = "camelCase")]
pub struct PatientIndexSpec {
    /// The Region whose database holds the index: schema `mpi`, reached with a database
    /// role of its own that can read and write the index's entries and nothing else.
    /// Immutable: the entries stay where they were made.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.region is immutable"))]
    pub region: String,
    /// The Secret of the index's HMAC-SHA-256 keys, in the home of `spec.region`
    /// (namespace `meridian-region-<region>`; a file in `meridian dev`): entries `k1`,
    /// `k2`, ... (32 bytes, base64) and `active`, the version new entries are hashed with.
    /// Created with a first key when it does not exist; never replaced. The operator hands
    /// the keys to the records service of every Region holding a linked country (Secret
    /// `patient-index` there); the index's database role never sees them.
    pub key_secret_ref: KeySecretRef,
    /// Countries (ISO 3166-1 alpha-2 codes) whose patients are indexed and who may look
    /// patients up. Default: every Country whose `regulatory.consent.recordSharing` is
    /// true. A country listed here whose `recordSharing` is false is left out, and the
    /// status says so: its patients' records are never shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(pattern(r"^[A-Z]{2}$")))]
    pub countries: Option<Vec<String>>,
    /// `Retain` (default) keeps the index's schema, entries and role when the PatientIndex
    /// is deleted; `Delete` removes the schema and the role it created.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Names a whole Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// Observed state of a PatientIndex.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatientIndexStatus {
    /// `DatabaseReady` (schema and role), `KeysReady` (the key Secret and its copies) and
    /// `Ready`, each with a reason and message.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The key version new entries are hashed with, e.g. `k2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key_version: Option<String>,
    /// Every key version the Secret holds, oldest first: lookups try the active one, then
    /// the one before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_versions: Vec<String>,
    /// Countries whose patients are indexed and who may look patients up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linked_countries: Vec<String>,
    /// The Regions whose records services were handed the keys and the index's
    /// connection (Secret `patient-index` in each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linked_regions: Vec<String>,
    /// The index's database role and the Secret holding its credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_role: Option<DatabaseRole>,
    /// Whether this PatientIndex created schema `mpi` (`Created`) or found it there
    /// (`Adopted`, e.g. left by an earlier PatientIndex with `Retain`). A deletion with
    /// `deletionPolicy: Delete` drops only a schema it created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<crate::region::ResourceOrigin>,
}
