use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happens to data and cloud resources when the object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the data: partitions are detached and kept, indexes and databases stay.
    #[default]
    Retain,
    /// Remove the data for good. Only ever done when a manifest says so.
    Delete,
}

/// Points at one key of a Kubernetes Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace of the Secret; defaults to the operator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Condition types written to `status.conditions`.
pub mod condition_types {
    /// The database is reachable and on the current schema (Region), or holds the country's partitions (Country).
    pub const DATABASE_READY: &str = "DatabaseReady";
    /// The Region's search endpoint is reachable.
    pub const SEARCH_READY: &str = "SearchReady";
    /// The Region's Kafka answers and holds the Region's topics.
    pub const EVENTS_READY: &str = "EventsReady";
    /// The country's search index and alias exist.
    pub const SEARCH_INDEX_READY: &str = "SearchIndexReady";
    /// The country's gateway routes are published.
    pub const ROUTES_READY: &str = "RoutesReady";
    /// The country is bound to a Region its residency rules allow.
    pub const RESIDENCY_COMPLIANT: &str = "ResidencyCompliant";
    /// The PatientIndex's key Secret exists and the records services of its linked Regions hold it.
    pub const KEYS_READY: &str = "KeysReady";
    /// Everything above holds; the object serves traffic.
    pub const READY: &str = "Ready";
}
