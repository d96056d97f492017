//! `meridian vault rotate` and `meridian vault rekey`: a country's PII vault moved onto a
//! new data key. `rotate` adds the country's next key to its Region's `vault-keys` Secret
//! and makes it active ([`meridian_records::keys::rotate`]), writes the Secret back first
//! (the running records services take the new key for new writes when they reload it, and
//! the old key still opens the rows not moved yet), then moves every older row onto it
//! ([`meridian_records::vault_rotation::rekey`]). `rekey` only does the moving, onto the key
//! already active: the rerun after an interrupted rotation, or after rows a service still
//! on the old key wrote meanwhile.
//!
//! The Region is found as `meridian dev` runs it (its manifests and data directory, like
//! `meridian audit verify`): its Secrets are `meridian dev`'s files, its database reached as
//! the vault role while `meridian dev` runs, or as the cluster's administrator when the
//! command starts the stopped cluster itself (the vault role's Secret then names a port the
//! cluster no longer has). With `--cluster`, the Region and its Secrets are the cluster's
//! (the current kubeconfig's), and its database is reached as the vault role.

use std::path::PathBuf;
use std::sync::Arc;

use meridian_crds::{Region, RegionProvider};
use meridian_records::keys::{self, Keyring, VAULT_KEYS_SECRET};
use meridian_records::vault_rotation::{Rekeyed, rekey};
use sqlx::PgPool;

use crate::controller::Context;
use crate::providers::Providers;

/// Options of `meridian vault rotate` and `meridian vault rekey`.
#[derive(clap::Args, Clone, Debug)]
pub struct VaultOptions {
    /// The Region whose vault is re-encrypted (one of `meridian dev`'s, from the manifests).
    #[arg(long)]
    pub region: String,
    /// The country whose data key changes (ISO 3166-1 alpha-2, e.g. DE).
    #[arg(long)]
    pub country: String,
    /// Folder of Region (and Secret) manifests.
    #[arg(long, default_value = "examples")]
    pub manifests: PathBuf,
    /// Data directory of `meridian dev`.
    #[arg(long, default_value = ".meridian")]
    pub data_dir: PathBuf,
    /// Rows moved per transaction (each batch leaves one audit record).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub batch: i64,
    /// Read the Region and write its `vault-keys` Secret in the cluster of the current
    /// kubeconfig instead of `meridian dev`'s files; the Region's database is reached as its
    /// vault role at the URL of its `postgres-vault` Secret, which must be reachable from
    /// here (inside the cluster for an `inCluster` Region).
    #[arg(long)]
    pub cluster: bool,
}

/// What a run came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// What to print on stdout.
    pub text: String,
    /// Why it could not run, when it could not (for stderr).
    pub error: Option<String>,
    /// What the rows came to, when they were reached.
    pub rekeyed: Option<Rekeyed>,
}

impl Outcome {
    /// 0: every row of the country is under the active key; 1: some are not (rows that do
    /// not open, or rows written under the old key meanwhile); 2: the Region, its keys or
    /// its database could not be reached.
    pub fn exit_code(&self) -> u8 {
        match &self.rekeyed {
            _ if self.error.is_some() => 2,
            Some(r) if r.unmoved.is_empty() && r.left == 0 => 0,
            Some(_) => 1,
            None => 2,
        }
    }

    fn failed(text: String, error: String) -> Self {
        Self {
            text,
            error: Some(error),
            rekeyed: None,
        }
    }
}

/// Rotates (`rotate` true) or only re-encrypts, as the options say; never fails: what went
/// wrong is in [`Outcome::error`].
pub async fn run(options: &VaultOptions, rotate: bool) -> Outcome {
    let country = options.country.trim().to_ascii_uppercase();
    if !meridian_shared::schema::is_country_code(&country) {
        return Outcome::failed(
            String::new(),
            format!(
                "--country {}: a country code is two letters (ISO 3166-1 alpha-2)",
                options.country
            ),
        );
    }
    let run = if options.cluster {
        run_cluster(options, &country, rotate).await
    } else {
        run_dev(options, &country, rotate).await
    };
    match run {
        Ok(outcome) => outcome,
        Err(e) => Outcome::failed(String::new(), format!("{e:#}")),
    }
}

async fn run_cluster(options: &VaultOptions, country: &str, rotate: bool) -> anyhow::Result<Outcome> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client: {e}"))?;
    let name = &options.region;
    let region = kube::Api::<Region>::all(client.clone())
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no Region {name} in the cluster"))?;
    let ctx = crate::residency::cluster_context(client);
    Ok(with_region(&ctx, &region, country, rotate, false, options.batch).await)
}

async fn run_dev(options: &VaultOptions, country: &str, rotate: bool) -> anyhow::Result<Outcome> {
    let name = &options.region;
    let loaded = crate::dev::manifests::load(&options.manifests)?;
    let region = loaded
        .regions
        .get(name)
        .map(|l| l.object.clone())
        .ok_or_else(|| anyhow::anyhow!("no Region {name} in {}", options.manifests.display()))?;
    let (local, lock) = crate::plan_cmd::local_clusters(&options.data_dir)?;
    let local = Arc::new(local);
    // Without a `meridian dev` running there, this command starts the Region's cluster.
    let started_here = lock.is_some();
    if region.spec.provider == RegionProvider::Local {
        if !local.exists(name) {
            anyhow::bail!(
                "Region {name} has no database in {} yet (has `meridian dev` run there?)",
                options.data_dir.display()
            );
        }
        if local.locate(name).is_err() {
            local.ensure(name).await?;
        }
    }
    let ctx = Context::new(Providers::new(Some(local.clone()), Arc::new(loaded.secrets.clone())));
    let outcome = with_region(&ctx, &region, country, rotate, started_here, options.batch).await;
    let stop = local.clone();
    tokio::task::spawn_blocking(move || stop.stop_all()).await?;
    drop(lock);
    Ok(outcome)
}

/// The steps, once the Region is known: reach the database (as the Region's administrator
/// when `admin` and the Region is `local`, else as its vault role), read the keys, rotate
/// them and write them back (when `rotate`), move the rows.
pub async fn with_region(
    ctx: &Context,
    region: &Region,
    country: &str,
    rotate: bool,
    admin: bool,
    batch: i64,
) -> Outcome {
    let name = region.metadata.name.clone().unwrap_or_default();
    let mut text = String::new();
    // The database first: a rotation nobody can carry out is not started.
    let endpoint = if admin && region.spec.provider == RegionProvider::Local {
        ctx.providers.admin(region).await
    } else {
        ctx.providers.vault(region).await
    };
    let endpoint = match endpoint {
        Ok(endpoint) => endpoint,
        Err(e) => return Outcome::failed(text, format!("Region {name}: {}", e.message)),
    };
    let pool = match connect(&endpoint.url).await {
        Ok(pool) => pool,
        Err(e) => return Outcome::failed(text, format!("Region {name}: {e}")),
    };
    let store = match ctx.providers.region_secrets(region) {
        Ok(store) => store,
        Err(e) => return Outcome::failed(text, format!("Region {name}: {}", e.message)),
    };
    let location = store.location(&name, VAULT_KEYS_SECRET);
    let mut data = match store.read(&name, VAULT_KEYS_SECRET).await {
        Ok(data) => data,
        Err(e) => return Outcome::failed(text, format!("Region {name}: {}", e.message)),
    };
    if let Err(e) = Keyring::from_secret(&data, country) {
        return Outcome::failed(text, format!("{location}: {e}"));
    }
    if rotate {
        // Read and changed again if the operator writes the Secret meanwhile (it adds the
        // first keys of countries being launched): neither write undoes the other.
        let added = std::sync::Mutex::new(None);
        let change = |data: &mut std::collections::BTreeMap<String, String>| {
            let result = keys::rotate(data, country);
            let changed = result.is_ok();
            *added.lock().expect("not poisoned") = Some(result);
            changed
        };
        data = match store.update(&name, VAULT_KEYS_SECRET, &change).await {
            Ok(data) => data,
            Err(e) => return Outcome::failed(text, format!("{location}: {}", e.message)),
        };
        let id = match added.into_inner().expect("not poisoned") {
            Some(Ok(id)) => id,
            Some(Err(e)) => return Outcome::failed(text, format!("{location}: {e}")),
            None => return Outcome::failed(text, format!("{location}: not changed")),
        };
        text += &format!("{country}: key {id} added to {location} and made active\n");
    }
    let ring = match Keyring::from_secret(&data, country) {
        Ok(ring) => ring,
        Err(e) => return Outcome::failed(text, format!("{location}: {e}")),
    };
    let rekeyed = match rekey(&pool, &ring, batch).await {
        Ok(rekeyed) => rekeyed,
        Err(e) => {
            pool.close().await;
            return Outcome::failed(
                text,
                format!("Region {name}: re-encrypting stopped (run `meridian vault rekey` to finish): {e}"),
            );
        }
    };
    pool.close().await;
    text += &report(&rekeyed);
    Outcome {
        text,
        error: None,
        rekeyed: Some(rekeyed),
    }
}

/// The summary line, then one line per row left behind.
pub fn report(rekeyed: &Rekeyed) -> String {
    let mut text = format!("{}\n", rekeyed.summary());
    for unmoved in &rekeyed.unmoved {
        text += &format!("  not moved: {unmoved}\n");
    }
    let unexplained = rekeyed.left.saturating_sub(rekeyed.unmoved.len() as u64);
    if unexplained > 0 {
        text += &format!(
            "  {unexplained} rows were written under an older key meanwhile: run `meridian vault rekey` again once the records services use key {}\n",
            rekeyed.active
        );
    }
    text
}

async fn connect(url: &crate::providers::ConnectionUrl) -> Result<PgPool, String> {
    let options = meridian_shared::tls::pg_options(url.as_str(), url.ca())
        .map_err(|e| format!("the database URL: {e}"))?
        .application_name("meridian-vault-rotation");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_says_whether_every_row_moved() {
        let mut r = Rekeyed {
            country: "DE".into(),
            active: "k2".into(),
            ..Default::default()
        };
        let mut outcome = Outcome {
            rekeyed: Some(r.clone()),
            ..Default::default()
        };
        assert_eq!(outcome.exit_code(), 0);
        r.left = 1;
        assert!(report(&r).contains("1 rows were written under an older key meanwhile"));
        outcome.rekeyed = Some(r);
        assert_eq!(outcome.exit_code(), 1);
        outcome.error = Some("cannot connect".into());
        assert_eq!(outcome.exit_code(), 2);
        assert_eq!(Outcome::default().exit_code(), 2);
    }
}
