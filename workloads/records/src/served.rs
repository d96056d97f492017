//! Which countries a Region's records service serves, with which rules and data keys: read
//! from the Country objects (as every workload reads them) and the Region's `vault-keys`.

use std::collections::BTreeMap;

use meridian_crds::Country;
use meridian_crds::serving::{bound_to, serving};

use crate::http::CountryEntry;
use crate::keys::Keyring;
use crate::validate::Rules;

/// The records entries of the countries bound to `region`, with their keys from the
/// Region's `vault-keys` entries (a country whose keys cannot be read answers 503).
pub fn entries<'a>(
    countries: impl IntoIterator<Item = &'a Country>,
    region: &str,
    keys: &BTreeMap<String, String>,
) -> Vec<CountryEntry> {
    bound_to(countries, region)
        .into_iter()
        .map(|country| CountryEntry {
            rules: Rules::of(&country.spec),
            serving: serving(country),
            keys: Keyring::from_secret(keys, &country.spec.code).map_err(|e| e.to_string()),
        })
        .collect()
}

/// Country manifests (YAML files) served without a cluster (`--country-manifest`): bound to
/// no Region (region `""`) and Ready, as the files say, since nobody reconciles them.
pub fn read_manifests(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<Country>> {
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let mut country: Country =
                serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            country.spec.region = String::new();
            country.status = Some(ready_status());
            Ok(country)
        })
        .collect()
}

/// A `Ready=True` status for a Country served from a file.
fn ready_status() -> meridian_crds::CountryStatus {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    meridian_crds::CountryStatus {
        conditions: vec![Condition {
            type_: meridian_crds::condition_types::READY.into(),
            status: "True".into(),
            reason: "Manifest".into(),
            message: "served from --country-manifest".into(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        }],
        ..Default::default()
    }
}

/// The entries of a mounted Secret: one file per key, as Kubernetes mounts a Secret volume
/// (its `..data` links and dot files skipped).
pub fn read_keys_dir(dir: &std::path::Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut keys = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        keys.insert(name, std::fs::read_to_string(entry.path())?.trim().to_string());
    }
    Ok(keys)
}
