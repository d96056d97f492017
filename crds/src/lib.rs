//! The `Country`, `Region` and `PatientIndex` custom resources of API group `platform.meridian.dev`.
//!
//! These types are the contract between platform teams (who write the manifests)
//! and everything that reads them: the operator, `meridian dev`, the CLI and the
//! end-to-end suite. The CRD schemas in `crds/*.yaml` are generated from them by
//! `cargo run -p meridian-crds --bin crdgen`.

mod common;
// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated `type_ = ...`
// inside them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
mod country;
#[allow(clippy::duplicated_attributes)]
mod patient_index;
#[allow(clippy::duplicated_attributes)]
mod region;
pub mod serving;

pub use common::{DeletionPolicy, SecretKeyRef, condition_types};
pub use country::{
    Billing, Consent, Country, CountrySpec, CountryStatus, Features, Regulatory, Residency, SearchAnalyzer,
    SearchSettings, code_holder,
};
pub use patient_index::{KeySecretRef, PatientIndex, PatientIndexSpec, PatientIndexStatus};
pub use region::{
    CloudResource, DatabaseRole, DatabaseSizing, EventsBroker, ExternalEndpoints, Isolation, KafkaSasl, Region,
    RegionEvents, RegionNotifications, RegionProvider, RegionResources, RegionSpec, RegionStatus, RegionTls,
    ResourceOrigin, SaslMechanism, SearchSizing, SmsProvider, SmtpRelay, SmtpSecurity,
};

use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

/// API group of every Meridian resource.
pub const GROUP: &str = "platform.meridian.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
/// Finalizer that guards a Country's partitions and a Region's stack.
pub const FINALIZER: &str = "platform.meridian.dev/cleanup";
/// Annotation that lets a deletion finish without touching unreachable stores.
pub const ABANDON_ANNOTATION: &str = "platform.meridian.dev/abandon";

/// The generated CRDs as one multi-document YAML stream, in the order of [`crd_files`].
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for (name, yaml) in crd_files() {
        out.push_str("---\n");
        out.push_str(&format!("# {name}\n"));
        out.push_str(&yaml);
    }
    out
}

/// Each CRD as `(file name, YAML)`, in the order they should be applied: Regions, then
/// PatientIndexes (they live in a Region), then Countries.
pub fn crd_files() -> Vec<(&'static str, String)> {
    let render = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        // merge_crds with a single version only checks consistency; it keeps the output canonical.
        let crd = merge_crds(vec![crd], VERSION).expect("single-version CRD merges");
        serde_yaml_ng::to_string(&crd).expect("CRD serializes to YAML")
    };
    vec![
        ("regions.platform.meridian.dev.yaml", render(Region::crd())),
        ("patientindexes.platform.meridian.dev.yaml", render(PatientIndex::crd())),
        ("countries.platform.meridian.dev.yaml", render(Country::crd())),
    ]
}
