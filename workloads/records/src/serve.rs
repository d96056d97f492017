//! `meridian records`: the records workload on its own, as a Region's deployment runs it —
//! its Region's database as two roles (clinical rows; the vault), the countries the Region
//! holds, their data keys from the mounted `vault-keys` Secret, tokens checked against the
//! identity provider's key set; and, with the mounted `patient-index` Secret, lookups of
//! other countries' patients through the PatientIndex, other Regions' records services
//! called with this service's ServiceAccount token and theirs checked by the API server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_crds::Country;
use meridian_shared::pool::Pool;
use meridian_shared::serve::{OidcOptions, read_ca};
use sqlx::postgres::PgConnectOptions;

use crate::http::{Countries, Service, app};

/// The Region's database as its workload and vault roles, and the vault's keys: what a
/// process that reads the PII vault is given (`meridian records`, `meridian notifications`).
#[derive(clap::Args, Clone, Debug)]
pub struct VaultStores {
    /// The Region's database as its workload (clinical) role: the `url` of the
    /// `postgres-workload` Secret. Off this machine the connection is `sslmode=verify-full`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// The Region's database as its vault role: the `url` of the `postgres-vault` Secret.
    #[arg(long, env = "VAULT_DATABASE_URL")]
    pub vault_database_url: String,
    /// CA certificates (a PEM file) the database's certificate is verified against.
    #[arg(long, env = "DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
    /// The Region's `vault-keys` Secret, mounted: one file per entry (`DE.k1`, `DE.active`).
    /// Read again every minute, so a rotation reaches the service without a restart.
    #[arg(long, env = "VAULT_KEYS_DIR")]
    pub vault_keys_dir: PathBuf,
}

impl VaultStores {
    /// How to connect as the workload role and as the vault role.
    pub fn connect_options(&self) -> anyhow::Result<(PgConnectOptions, PgConnectOptions)> {
        let ca = read_ca(self.database_ca_file.as_deref(), "--database-ca-file").map_err(anyhow::Error::msg)?;
        let connect = |url: &str, flag: &str| {
            meridian_shared::tls::pg_options(url, ca.as_deref()).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
        };
        Ok((
            connect(&self.database_url, "--database-url")?,
            connect(&self.vault_database_url, "--vault-database-url")?,
        ))
    }

    /// sqlx pools of up to `size` connections as the workload role and as the vault role,
    /// connecting when first used.
    pub fn pools(&self, size: u32) -> anyhow::Result<(sqlx::PgPool, sqlx::PgPool)> {
        let (workload, vault) = self.connect_options()?;
        Ok((
            crate::pool_options(size).connect_lazy_with(workload),
            crate::pool_options(size).connect_lazy_with(vault),
        ))
    }

    /// Reads the mounted `vault-keys` Secret (again at every call).
    pub fn keys_reader(
        &self,
    ) -> impl Fn() -> anyhow::Result<std::collections::BTreeMap<String, String>> + Send + 'static {
        let dir = self.vault_keys_dir.clone();
        move || {
            crate::served::read_keys_dir(&dir).map_err(|e| anyhow::anyhow!("--vault-keys-dir {}: {e}", dir.display()))
        }
    }
}

/// Options of `meridian records`.
#[derive(clap::Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("served").required(true).args(["region", "country_manifests"])))]
pub struct RecordsOptions {
    #[command(flatten)]
    pub stores: VaultStores,
    /// Address to serve `/{cc}/v1/fhir` on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub oidc: OidcOptions,
    /// Serve the countries bound to this Region, as the cluster's Country objects say.
    #[arg(long, env = "MERIDIAN_REGION")]
    pub region: Option<String>,
    /// Without a cluster: Country manifests (YAML files) to serve, all as Ready.
    #[arg(long = "country-manifest", value_name = "FILE")]
    pub country_manifests: Vec<PathBuf>,
    /// The Region's `patient-index` Secret, mounted (the PatientIndex's keys, the index
    /// role's URL, the linked countries): read again every minute. Without it, or while it
    /// links no country here, no lookup abroad and no registration in the index.
    #[arg(long, env = "PATIENT_INDEX_DIR")]
    pub patient_index_dir: Option<PathBuf>,
    /// Base URL of a Region's records service, `{region}` standing for its name: where
    /// lookups abroad go.
    #[arg(
        long,
        env = "MERIDIAN_PEER_URL",
        default_value = "http://records.meridian-region-{region}.svc:8080"
    )]
    pub peer_url: String,
    /// This service's ServiceAccount token for other Regions' records services (projected
    /// with audience `meridian-records`), read at every call. Without it, no lookup abroad.
    #[arg(long, env = "SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,
    /// How long a lookup abroad waits for the other Region, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub peer_timeout_ms: u64,
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(options: RecordsOptions) -> anyhow::Result<()> {
    let (jwks, _refresh) = options.oidc.load().await.map_err(anyhow::Error::msg)?;
    let (clinical_options, vault_options) = options.stores.connect_options()?;
    // Requests borrow connections thousands of times a second: pools that hand them back
    // without a round trip. The registrar, in the background, has two sqlx connections of
    // its own, so that neither starves the other.
    let (clinical, vault) = (
        Pool::new(clinical_options.clone(), 16),
        Pool::new(vault_options.clone(), 16),
    );
    let registrar_pools = (
        crate::pool_options(2).connect_lazy_with(clinical_options),
        crate::pool_options(2).connect_lazy_with(vault_options),
    );
    let read_keys = options.stores.keys_reader();
    let keys = Arc::new(Mutex::new(read_keys()?));
    let countries = Countries::default();
    let mut crossborder = crate::crossborder::CrossBorder::default();
    if let Some(file) = &options.service_token_file {
        crossborder.peers = Some(Arc::new(crate::crossborder::peers::Peers::new(
            &options.peer_url,
            crate::crossborder::peers::TokenSource::File(file.clone()),
            Duration::from_millis(options.peer_timeout_ms.max(100)),
        )));
    }
    let read_link = {
        let (dir, link) = (options.patient_index_dir.clone(), crossborder.link.clone());
        move || {
            let Some(dir) = &dir else { return };
            match crate::served::read_keys_dir(dir) {
                Ok(data) => {
                    if let Err(e) = link.set(&data) {
                        tracing::warn!(error = %e, "the PatientIndex link cannot be used");
                    }
                }
                // Not mounted yet (the Secret is optional): no link.
                Err(e) => tracing::debug!(error = %e, "no PatientIndex link"),
            }
        }
    };
    read_link();
    let (serving, region) = match &options.region {
        Some(region) => (format!("the countries of Region {region}"), region.clone()),
        None => ("the countries of --country-manifest".to_string(), String::new()),
    };
    // The Country objects the service serves, kept for when the keys change.
    let known: Arc<Mutex<Vec<Country>>> = Arc::default();
    if options.region.is_some() {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("--region needs the Kubernetes API: {e}"))?;
        // Other Regions' records services prove who they are with their ServiceAccount
        // tokens, which the API server checks.
        crossborder.accept = Some(crate::crossborder::Accept::TokenReview(Arc::new(
            crate::crossborder::TokenReviewer::new(client.clone()),
        )));
        let directory = crossborder.directory.clone();
        let (countries, keys, known, region) = (countries.clone(), keys.clone(), known.clone(), region.clone());
        tokio::spawn(meridian_crds::serving::follow_countries(client, move |all| {
            directory.set(all.iter().copied());
            *known.lock().expect("lock") = all.iter().map(|c| (*c).clone()).collect();
            countries.set(crate::served::entries(
                all.iter().copied(),
                &region,
                &keys.lock().expect("lock"),
            ));
        }));
    } else {
        let manifests = crate::served::read_manifests(&options.country_manifests)?;
        countries.set(crate::served::entries(&manifests, "", &keys.lock().expect("lock")));
        crossborder.directory.set(&manifests);
        *known.lock().expect("lock") = manifests;
    }
    // Rotations reach the service through the mounted Secret.
    {
        let (countries, keys, known) = (countries.clone(), keys.clone(), known.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                read_link();
                match read_keys() {
                    Ok(fresh) => {
                        *keys.lock().expect("lock") = fresh;
                        let known = known.lock().expect("lock").clone();
                        countries.set(crate::served::entries(&known, &region, &keys.lock().expect("lock")));
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the vault keys; keeping the last ones"),
                }
            }
        });
    }
    tokio::spawn(
        crate::crossborder::registrar::Registrar::new(
            registrar_pools.0,
            registrar_pools.1,
            countries.clone(),
            crossborder.link.clone(),
            options.region.as_deref().unwrap_or_default(),
        )
        .run(),
    );
    let service = Arc::new(
        Service::new(clinical, vault, jwks.verifier(), countries)
            .with_jwks(jwks)
            .with_crossborder(crossborder),
    );
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    println!(
        "meridian records: serving {serving} on http://{}",
        listener.local_addr()?
    );
    // `/metrics` beside the API, not under `/{cc}/v1`: the gateway's routes never reach it.
    let app = app(service).route("/metrics", axum::routing::get(meridian_shared::metrics::serve_metrics));
    axum::serve(listener, app)
        .with_graceful_shutdown(meridian_shared::shutdown::signal())
        .await?;
    Ok(())
}
