//! `meridian billing`: the billing consumer on its own, as a Region's deployment runs it — on
//! the Region's Kafka, at the terms of the Countries bound to the Region (watched through the
//! Kubernetes API, so a fee changed in a manifest applies to the next booking), or of
//! Country manifests given on the command line.

use std::path::PathBuf;

use meridian_crds::Country;
use meridian_events::worker::{self, WorkerOptions};

use crate::{BillingHandler, CountryRates, Rates};

/// Options of `meridian billing`.
#[derive(clap::Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("billed").required(true).args(["region", "country_manifests"])))]
pub struct BillingOptions {
    #[command(flatten)]
    pub worker: WorkerOptions,
    /// Bill the Countries bound to this Region, as the cluster's Country objects say.
    #[arg(long, env = "MERIDIAN_REGION")]
    pub region: Option<String>,
    /// Without a cluster: Country manifests (YAML files) whose terms to bill at.
    #[arg(long = "country-manifest", value_name = "FILE")]
    pub country_manifests: Vec<PathBuf>,
}

/// Issues invoices until Ctrl-C or SIGTERM.
pub async fn run(options: BillingOptions) -> anyhow::Result<()> {
    let rates = Rates::default();
    match &options.region {
        Some(region) => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("--region needs the Kubernetes API: {e}"))?;
            let (rates, region) = (rates.clone(), region.clone());
            tokio::spawn(meridian_crds::serving::follow_countries(client, move |all| {
                rates.set(crate::rates::region_rates(all.iter().copied(), &region))
            }));
        }
        None => rates.set(manifest_rates(&options.country_manifests)?),
    }
    worker::consume(&options.worker, BillingHandler { rates }).await
}

/// The terms of Country manifests; a manifest that cannot be read, or whose terms are
/// wrong, stops the start with the file and the field named.
fn manifest_rates(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, CountryRates)>> {
    let mut terms = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let country: Country =
            serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        match CountryRates::of(&country.spec) {
            Some(Ok(rates)) => terms.push((country.spec.code.clone(), rates)),
            Some(Err(e)) => anyhow::bail!("{}: spec.billing: {e}", path.display()),
            None => tracing::warn!(path = %path.display(), "no spec.billing: the country's bookings are not billed"),
        }
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_give_their_terms_and_a_wrong_one_names_its_file() {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/countries");
        let terms = manifest_rates(&[format!("{examples}/de.yaml").into()]).unwrap();
        assert_eq!(terms[0].0, "DE");
        assert_eq!(terms[0].1.currency, "EUR");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yaml");
        let text = std::fs::read_to_string(format!("{examples}/de.yaml"))
            .unwrap()
            .replace("appointmentFee: \"60.00\"", "appointmentFee: \"60.001\"");
        std::fs::write(&bad, text).unwrap();
        let error = manifest_rates(&[bad]).unwrap_err().to_string();
        assert!(error.contains("bad.yaml") && error.contains("spec.billing"), "{error}");
    }
}
