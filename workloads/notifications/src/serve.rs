//! `meridian notifications`: the consumer and the dispatcher as a Region's deployment runs
//! them — the Region's database as two roles (the notices as the workload role; the
//! patients' contacts as the vault role), the countries the Region holds (watched, or from
//! manifests), their data keys from the mounted `vault-keys` Secret, events from the
//! Region's Kafka, and e-mail through an SMTP relay and SMS through an HTTP provider.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_crds::Country;
use meridian_events::kafka::KafkaOptions;
use meridian_events::worker::Readiness;
use meridian_records::serve::VaultStores;

use crate::dispatch::{Dispatcher, Settings};
use crate::handler::NotificationsHandler;
use crate::rules::{Rules, region_rules};
use crate::transport::Transports;
use crate::transport::sms::{Sms, SmsSettings};
use crate::transport::smtp::{Security, Smtp, SmtpSettings};

/// Options of `meridian notifications`.
#[derive(clap::Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("served").required(true).args(["region", "country_manifests"])))]
#[command(group(clap::ArgGroup::new("channels").required(true).multiple(true).args(["smtp_host", "sms_url"])))]
pub struct NotificationsOptions {
    /// The notices are the workload role's; the patients' contacts the vault role's.
    #[command(flatten)]
    pub stores: VaultStores,
    /// Notify for the countries bound to this Region, as the cluster's Country objects say.
    #[arg(long, env = "MERIDIAN_REGION")]
    pub region: Option<String>,
    /// Without a cluster: Country manifests (YAML files) to notify for.
    #[arg(long = "country-manifest", value_name = "FILE")]
    pub country_manifests: Vec<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaOptions,
    /// The SMTP relay e-mail goes through. Without it, no e-mail is sent.
    #[arg(long, env = "MERIDIAN_SMTP_HOST")]
    pub smtp_host: Option<String>,
    #[arg(long, env = "MERIDIAN_SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,
    /// `starttls` (required, port 587), `tls` (port 465), or `none` (a relay on this
    /// machine only).
    #[arg(long, env = "MERIDIAN_SMTP_SECURITY", value_enum, default_value = "starttls")]
    pub smtp_security: Security,
    /// The sender, e.g. `Meridian <no-reply@clinic.example>`.
    #[arg(long, env = "MERIDIAN_SMTP_FROM")]
    pub smtp_from: Option<String>,
    #[arg(long, env = "MERIDIAN_SMTP_USERNAME", requires = "smtp_password_file")]
    pub smtp_username: Option<String>,
    /// A file holding the SMTP password (a mounted Secret), never the password itself.
    #[arg(long, env = "MERIDIAN_SMTP_PASSWORD_FILE", requires = "smtp_username")]
    pub smtp_password_file: Option<PathBuf>,
    /// The SMS provider's endpoint (see the `transport::sms` interface). Without it, notices
    /// go by e-mail even where `features.smsReminders` is true.
    #[arg(long, env = "MERIDIAN_SMS_URL", requires = "sms_token_file")]
    pub sms_url: Option<String>,
    /// A file holding the provider's bearer token (a mounted Secret).
    #[arg(long, env = "MERIDIAN_SMS_TOKEN_FILE")]
    pub sms_token_file: Option<PathBuf>,
    /// Attempts at a notice the provider refuses before it is marked `failed`.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: i32,
    #[command(flatten)]
    pub ops: meridian_events::worker::OpsOptions,
}

fn read_secret(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    Ok(text.trim().to_string())
}

/// The transports the options configure.
pub fn transports(options: &NotificationsOptions) -> anyhow::Result<Transports> {
    let mut transports = Transports::default();
    if let Some(host) = &options.smtp_host {
        let from = options
            .smtp_from
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--smtp-host needs --smtp-from, the sender"))?;
        let credentials = match (&options.smtp_username, &options.smtp_password_file) {
            (Some(user), Some(file)) => Some((user.clone(), read_secret(file, "--smtp-password-file")?)),
            _ => None,
        };
        let smtp = Smtp::new(&SmtpSettings {
            host: host.clone(),
            port: options.smtp_port,
            security: options.smtp_security,
            from,
            credentials,
            timeout: Duration::from_secs(30),
        })?;
        transports.email = Some(Arc::new(smtp));
    }
    if let (Some(url), Some(file)) = (&options.sms_url, &options.sms_token_file) {
        let sms = Sms::new(&SmsSettings {
            url: url.clone(),
            token: read_secret(file, "--sms-token-file")?,
            timeout: Duration::from_secs(10),
        })?;
        transports.sms = Some(Arc::new(sms));
    }
    Ok(transports)
}

/// Runs the consumer and the dispatcher until Ctrl-C or SIGTERM.
pub async fn run(options: NotificationsOptions) -> anyhow::Result<()> {
    let readiness = options.ops.start().await?;
    run_ready(options, meridian_shared::shutdown::signal(), readiness).await
}

/// Runs the consumer and the dispatcher until `stop` resolves (without the ops listener).
pub async fn run_until(
    options: NotificationsOptions,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_ready(options, stop, Readiness::default()).await
}

/// [`run_until`], saying in `readiness` when the database and Kafka have answered.
async fn run_ready(
    options: NotificationsOptions,
    stop: impl Future<Output = ()> + Send + 'static,
    readiness: Readiness,
) -> anyhow::Result<()> {
    use futures::FutureExt as _;
    let stop = stop.boxed().shared();
    let transports = transports(&options)?;
    let kafka = options.kafka.client_config()?;
    let (workload, vault) = options.stores.pools(8)?;
    readiness.when_connected(workload.clone(), kafka.clone(), None);
    let read_keys = options.stores.keys_reader();
    let keys = Arc::new(Mutex::new(read_keys()?));
    let rules = Rules::default();
    let region = options.region.clone().unwrap_or_default();
    // The Country objects, kept for when the keys change.
    let known: Arc<Mutex<Vec<Country>>> = Arc::default();
    let update = {
        let (rules, keys, known, region) = (rules.clone(), keys.clone(), known.clone(), region.clone());
        move || {
            let known = known.lock().unwrap_or_else(|p| p.into_inner());
            let keys = keys.lock().unwrap_or_else(|p| p.into_inner());
            rules.set(region_rules(known.iter(), &region, &keys));
        }
    };
    let (first_tx, mut first) = tokio::sync::watch::channel(false);
    // Tasks that follow the Countries and the keys, ended with the rest.
    let mut followers = Vec::new();
    if options.region.is_some() {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("--region needs the Kubernetes API: {e}"))?;
        let (known, update) = (known.clone(), update.clone());
        followers.push(tokio::spawn(meridian_crds::serving::follow_countries(
            client,
            move |all| {
                *known.lock().unwrap_or_else(|p| p.into_inner()) = all.iter().map(|c| (*c).clone()).collect();
                update();
                let _ = first_tx.send(true);
            },
        )));
    } else {
        *known.lock().unwrap_or_else(|p| p.into_inner()) =
            meridian_records::served::read_manifests(&options.country_manifests)?;
        update();
        let _ = first_tx.send(true);
    }
    // Rotations reach the dispatcher through the mounted Secret.
    {
        let (keys, update) = (keys.clone(), update.clone());
        followers.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                match read_keys() {
                    Ok(fresh) => {
                        *keys.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
                        update();
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the vault keys; keeping the last ones"),
                }
            }
        }));
    }
    // Events of a country not known yet would fail: wait for the Countries first.
    first
        .wait_for(|known| *known)
        .await
        .map_err(|_| anyhow::anyhow!("the Countries could not be followed"))?;
    let settings = Settings {
        max_attempts: options.max_attempts.max(1),
        ..Settings::default()
    };
    let dispatcher = Dispatcher::new(workload.clone(), vault, rules.clone(), transports, settings);
    let sending = tokio::spawn(dispatcher.run(stop.clone()));
    println!(
        "meridian notifications: following appointment-events on {} for {}",
        options.kafka.bootstrap,
        match &options.region {
            Some(region) => format!("the countries of Region {region}"),
            None => "the countries of --country-manifest".to_string(),
        }
    );
    meridian_events::consumer::run_kafka(workload, kafka, NotificationsHandler { rules }, stop).await?;
    sending.await?;
    for follower in followers {
        follower.abort();
    }
    Ok(())
}
