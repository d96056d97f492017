//! `meridian mpi rotate` and `meridian mpi rekey`: the PatientIndex moved onto a new HMAC key.
//!
//! `rotate` adds the next key version to the index's key Secret and makes it active
//! ([`meridian_records::mpi::rotate`]), hands the keys to the linked Regions' records
//! services (their `patient-index` Secrets: new registrations are hashed with the new key,
//! and lookups try it first, then the previous one), then re-keys. `rekey` only re-keys,
//! onto the key already active (the rerun after an interrupted rotation):
//!
//! 1. every patient of every linked country is registered again under the active key from
//!    their home Region's vault, which holds the raw IDs (the index never sees one); their
//!    entries under older keys stay for now, so that a records service that has not taken
//!    the new keys yet still finds them;
//! 2. once the records services have had `--grace-seconds` to take the new keys (a mounted
//!    Secret reaches a pod within a minute or two), patients whose only entry is under an
//!    older key (registered meanwhile by a service still on it) are registered once more;
//! 3. the older versions are retired: their entries removed, their keys taken out of the
//!    key Secret and the links. Patients whose vault rows do not open are named, the older
//!    versions kept (their entries are how they are still found), and the exit code says so.
//!
//! The Regions are found as `meridian dev` runs them (its manifests and data directory,
//! like `meridian vault`), or with `--cluster` in the cluster of the current kubeconfig.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use meridian_crds::{Country, PatientIndex, Region, RegionProvider};
use meridian_records::crossborder::registrar::register_country;
use meridian_records::http::CountryEntry;
use meridian_records::keys::{Keyring, VAULT_KEYS_SECRET};
use meridian_records::mpi::{self, IndexKeys, LINK_SECRET};
use meridian_records::validate::Rules;
use sqlx::PgPool;
use uuid::Uuid;

use crate::controller::Context;
use crate::controller::patient_index::{linked_countries, login_secret};
use crate::providers::{ConnectionUrl, Providers};

/// Options of `meridian mpi rotate` and `meridian mpi rekey`.
#[derive(clap::Args, Clone, Debug)]
pub struct MpiOptions {
    /// The PatientIndex.
    #[arg(long, default_value = "global")]
    pub index: String,
    /// Folder of the manifests `meridian dev` runs.
    #[arg(long, default_value = "examples")]
    pub manifests: PathBuf,
    /// Data directory of `meridian dev`.
    #[arg(long, default_value = ".meridian")]
    pub data_dir: PathBuf,
    /// Read the PatientIndex, Regions and Countries, and write the Secrets, in the cluster of
    /// the current kubeconfig; the databases are reached at the URLs of the vault and index
    /// roles' Secrets, which must be reachable from here.
    #[arg(long)]
    pub cluster: bool,
    /// How long the records services are given to take new keys before older versions are
    /// retired (default: 150 with `--cluster`, where a Secret reaches a pod within about a
    /// minute and a service reads it every minute; 2 for `meridian dev`).
    #[arg(long)]
    pub grace_seconds: Option<u64>,
}

/// What a run came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// What to print on stdout.
    pub text: String,
    /// Why it could not run, when it could not (for stderr).
    pub error: Option<String>,
    /// Entries still under an older key at the end, and patients whose rows did not open.
    pub left: u64,
}

impl Outcome {
    /// 0: every entry is under the active key and older versions are retired; 1: some are
    /// not (run `rekey` again); 2: the index, a Region or a database could not be reached.
    pub fn exit_code(&self) -> u8 {
        match () {
            _ if self.error.is_some() => 2,
            _ if self.left > 0 => 1,
            _ => 0,
        }
    }
}

/// Everything a re-key reads.
struct World {
    index: PatientIndex,
    regions: Vec<Region>,
    countries: Vec<Country>,
}

/// Rotates (`rotate` true) or only re-keys; never fails: what went wrong is in
/// [`Outcome::error`].
pub async fn run(options: &MpiOptions, rotate: bool) -> Outcome {
    let mut outcome = Outcome::default();
    let result = if options.cluster {
        run_cluster(options, rotate, &mut outcome).await
    } else {
        run_dev(options, rotate, &mut outcome).await
    };
    if let Err(e) = result {
        outcome.error = Some(format!("{e:#}"));
    }
    outcome
}

async fn run_cluster(options: &MpiOptions, rotate: bool, outcome: &mut Outcome) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client: {e}"))?;
    let index = kube::Api::<PatientIndex>::all(client.clone())
        .get_opt(&options.index)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no PatientIndex {} in the cluster", options.index))?;
    let world = World {
        index,
        regions: kube::Api::<Region>::all(client.clone())
            .list(&Default::default())
            .await?
            .items,
        countries: kube::Api::<Country>::all(client.clone())
            .list(&Default::default())
            .await?
            .items,
    };
    let ctx = crate::residency::cluster_context(client);
    let grace = std::time::Duration::from_secs(options.grace_seconds.unwrap_or(150));
    with_world(&ctx, &world, rotate, false, grace, outcome).await
}

async fn run_dev(options: &MpiOptions, rotate: bool, outcome: &mut Outcome) -> anyhow::Result<()> {
    let loaded = crate::dev::manifests::load(&options.manifests)?;
    let index = loaded
        .indexes
        .get(&options.index)
        .map(|l| l.object.clone())
        .ok_or_else(|| anyhow::anyhow!("no PatientIndex {} in {}", options.index, options.manifests.display()))?;
    let world = World {
        index,
        regions: loaded.regions.values().map(|l| l.object.clone()).collect(),
        countries: loaded.countries.values().map(|l| l.object.clone()).collect(),
    };
    let (local, lock) = crate::plan_cmd::local_clusters(&options.data_dir)?;
    let local = Arc::new(local);
    // Without a `meridian dev` running there, this command starts the Regions' clusters and
    // reaches them as their administrator.
    let started_here = lock.is_some();
    for region in &world.regions {
        let name = region.metadata.name.clone().unwrap_or_default();
        if region.spec.provider == RegionProvider::Local && local.exists(&name) && local.locate(&name).is_err() {
            local.ensure(&name).await?;
        }
    }
    let ctx = Context::new(Providers::new(Some(local.clone()), Arc::new(loaded.secrets.clone())));
    let grace = std::time::Duration::from_secs(options.grace_seconds.unwrap_or(2));
    let result = with_world(&ctx, &world, rotate, started_here, grace, outcome).await;
    let stop = local.clone();
    tokio::task::spawn_blocking(move || stop.stop_all()).await?;
    drop(lock);
    result
}

fn region_named<'a>(world: &'a World, name: &str) -> anyhow::Result<&'a Region> {
    world
        .regions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| anyhow::anyhow!("no Region {name}"))
}

async fn connect(url: &ConnectionUrl) -> anyhow::Result<PgPool> {
    let options = meridian_shared::tls::pg_options(url.as_str(), url.ca())
        .map_err(|e| anyhow::anyhow!("the database URL: {e}"))?
        .application_name("meridian-mpi-rekey");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))
}

/// The steps, once the index, Regions and Countries are known (see the module's
/// documentation). `admin`: reach `local` Regions' databases as their administrator.
async fn with_world(
    ctx: &Context,
    world: &World,
    rotate: bool,
    admin: bool,
    grace: std::time::Duration,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let name = world.index.metadata.name.clone().unwrap_or_default();
    let home = region_named(world, &world.index.spec.region)?;
    let home_name = home.metadata.name.clone().unwrap_or_default();
    let store = ctx
        .providers
        .region_secrets(home)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let key_secret = &world.index.spec.key_secret_ref.name;
    let location = store.location(&home_name, key_secret);
    // The index's database first: a rotation nobody can carry out is not started.
    let index_url = if admin && home.spec.provider == RegionProvider::Local {
        ctx.providers
            .admin(home)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?
            .url
    } else {
        let login = store
            .read(&home_name, &login_secret(&name))
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let url = login
            .get("url")
            .ok_or_else(|| anyhow::anyhow!("PatientIndex {name} has no database role yet (is it Ready?)"))?;
        ConnectionUrl::new(
            url.clone(),
            ctx.providers
                .admin(home)
                .await
                .ok()
                .and_then(|e| e.url.ca().map(String::from)),
        )
    };
    let index = connect(&index_url)
        .await
        .map_err(|e| anyhow::anyhow!("the PatientIndex's database in Region {home_name}: {e}"))?;

    let mut data = store
        .read(&home_name, key_secret)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    IndexKeys::from_secret(&data).map_err(|e| anyhow::anyhow!("{location}: {e}"))?;
    if rotate {
        let added = std::sync::Mutex::new(None);
        let change = |d: &mut BTreeMap<String, String>| {
            let result = mpi::rotate(d);
            let changed = result.is_ok();
            *added.lock().expect("not poisoned") = Some(result);
            changed
        };
        data = store
            .update(&home_name, key_secret, &change)
            .await
            .map_err(|e| anyhow::anyhow!("{location}: {}", e.message))?;
        match added.into_inner().expect("not poisoned") {
            Some(Ok(version)) => outcome.text += &format!("key {version} added to {location} and made active\n"),
            Some(Err(e)) => anyhow::bail!("{location}: {e}"),
            None => anyhow::bail!("{location}: not changed"),
        }
    }
    let keys = IndexKeys::from_secret(&data).map_err(|e| anyhow::anyhow!("{location}: {e}"))?;
    let (linked, _) = linked_countries(&world.index, &world.countries);
    let holders: Vec<&Region> = world
        .regions
        .iter()
        .filter(|r| {
            world
                .countries
                .iter()
                .any(|c| linked.contains(&c.spec.code) && Some(&c.spec.region) == r.metadata.name.as_ref())
        })
        .collect();
    hand_over(ctx, &holders, &data).await?;
    let handed = std::time::Instant::now();
    outcome.text += &format!(
        "keys {} handed to the records services of {}\n",
        keys.versions().join(", "),
        holders
            .iter()
            .filter_map(|r| r.metadata.name.as_deref())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Every patient of every linked country, from their home Region's vault.
    let mut vaults: Vec<(&Region, PgPool, BTreeMap<String, String>)> = Vec::new();
    for region in &holders {
        let region_name = region.metadata.name.clone().unwrap_or_default();
        let endpoint = if admin && region.spec.provider == RegionProvider::Local {
            ctx.providers.admin(region).await
        } else {
            ctx.providers.vault(region).await
        }
        .map_err(|e| anyhow::anyhow!("Region {region_name}: {}", e.message))?;
        let pool = connect(&endpoint.url)
            .await
            .map_err(|e| anyhow::anyhow!("Region {region_name}: {e}"))?;
        let secrets = ctx
            .providers
            .region_secrets(region)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let data_keys = secrets
            .read(&region_name, VAULT_KEYS_SECRET)
            .await
            .map_err(|e| anyhow::anyhow!("Region {region_name}: {}", e.message))?;
        vaults.push((region, pool, data_keys));
    }
    let entry = |country: &Country, data_keys: &BTreeMap<String, String>| CountryEntry {
        rules: Rules::of(&country.spec),
        serving: meridian_crds::serving::Serving::Ready,
        keys: Keyring::from_secret(data_keys, &country.spec.code).map_err(|e| e.to_string()),
    };
    let mut skipped: Vec<(String, Uuid)> = Vec::new();
    for (region, pool, data_keys) in &vaults {
        let region_name = region.metadata.name.as_deref().unwrap_or_default();
        for country in world
            .countries
            .iter()
            .filter(|c| linked.contains(&c.spec.code) && c.spec.region == region_name)
        {
            let done = register_country(pool, &entry(country, data_keys), &index, &keys, region_name, None, true)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e} (run `meridian mpi rekey` to finish)", country.spec.code))?;
            outcome.text += &format!(
                "{}: {} patients registered under key {}{}\n",
                country.spec.code,
                done.patients,
                keys.active_version(),
                if done.skipped.is_empty() {
                    String::new()
                } else {
                    format!(", {} left out (their vault rows do not open)", done.skipped.len())
                }
            );
            skipped.extend(done.skipped.into_iter().map(|id| (country.spec.code.clone(), id)));
        }
    }

    // Patients registered under an older key meanwhile, once the services have the new keys.
    tokio::time::sleep(grace.saturating_sub(handed.elapsed())).await;
    let stragglers: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT DISTINCT o.home_country, o.client_id FROM mpi.entries o
          WHERE o.key_version <> $1
            AND NOT EXISTS (SELECT 1 FROM mpi.entries a WHERE a.key_version = $1
                             AND a.home_country = o.home_country AND a.client_id = o.client_id)",
    )
    .bind(keys.active_version())
    .fetch_all(&index)
    .await?;
    for (code, client_id) in &stragglers {
        let Some(country) = world.countries.iter().find(|c| &c.spec.code == code) else {
            continue;
        };
        let Some((region, pool, data_keys)) = vaults
            .iter()
            .find(|(r, _, _)| r.metadata.name.as_deref() == Some(country.spec.region.as_str()))
        else {
            continue;
        };
        register_country(
            pool,
            &entry(country, data_keys),
            &index,
            &keys,
            region.metadata.name.as_deref().unwrap_or_default(),
            Some(std::slice::from_ref(client_id)),
            false,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{code}: {e}"))?;
    }
    for (_, pool, _) in vaults {
        pool.close().await;
    }
    outcome.left = skipped.len() as u64;
    for (code, id) in &skipped {
        outcome.text += &format!("  not registered: {code} Patient/{id} (its vault row does not open)\n");
    }
    if !skipped.is_empty() {
        // Their entries under the older key are how they are still found.
        outcome.text += "older key versions kept: run `meridian mpi rekey` again once those rows open\n";
        index.close().await;
        return Ok(());
    }
    // Retire: the older versions' entries go, then their keys leave the Secret and the links.
    let mut removed = 0;
    for version in keys.versions().into_iter().filter(|v| *v != keys.active_version()) {
        removed += mpi::retire(&index, &keys, version).await?;
    }
    index.close().await;
    if removed > 0 {
        outcome.text += &format!("{removed} entries under older keys removed\n");
    }
    let retired = std::sync::Mutex::new(Vec::new());
    let active = keys.active_version();
    let retire = |d: &mut BTreeMap<String, String>| {
        let gone = mpi::retire_older(d);
        let changed = !gone.is_empty();
        *retired.lock().expect("not poisoned") = gone;
        changed
    };
    let data = store
        .update(&home_name, key_secret, &retire)
        .await
        .map_err(|e| anyhow::anyhow!("{location}: {}", e.message))?;
    hand_over(ctx, &holders, &data).await?;
    let retired = retired.into_inner().expect("not poisoned");
    if !retired.is_empty() {
        outcome.text += &format!("retired {}: every entry is under key {active}\n", retired.join(", "));
    } else {
        outcome.text += &format!("every entry is under key {active}\n");
    }
    Ok(())
}

/// Puts the keys of `data` (the index's key Secret) into the `patient-index` Secret of each
/// Region of `holders` that has a link, keeping its connection and countries.
async fn hand_over(ctx: &Context, holders: &[&Region], data: &BTreeMap<String, String>) -> anyhow::Result<()> {
    for region in holders {
        let name = region.metadata.name.clone().unwrap_or_default();
        let store = ctx
            .providers
            .region_secrets(region)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let change = |link: &mut BTreeMap<String, String>| mpi::Link::replace_keys(link, data);
        store
            .update(&name, LINK_SECRET, &change)
            .await
            .map_err(|e| anyhow::anyhow!("Region {name}: {}", e.message))?;
    }
    Ok(())
}
