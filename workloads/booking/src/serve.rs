//! `meridian booking`: the booking workload on its own, as a Region's deployment runs it —
//! one database (its Region's), the countries that Region holds, tokens checked against the
//! identity provider's key set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use meridian_crds::Country;
use meridian_search::Backend;
use meridian_search::indexer::Indexer;
use meridian_search::opensearch::OpenSearch;
use meridian_shared::jwks::{Jwks, JwksSource};

use crate::http::{Countries, CountryEntry, Service, Serving, app};

/// Options of `meridian booking`.
#[derive(clap::Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("keys").required(true).args(["jwks_url", "jwks_file"])))]
#[command(group(clap::ArgGroup::new("served").required(true).args(["region", "countries"])))]
pub struct BookingOptions {
    /// The Region's database (the `url` of its connection Secret). Off this machine the
    /// connection is `sslmode=verify-full`; a URL asking for less is refused.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// CA certificates (a PEM file) the database's certificate is verified against, besides
    /// the system's roots (the Region's Secret `ca`, mounted).
    #[arg(long, env = "DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
    /// Address to serve `/{cc}/v1/...` on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The identity provider's `jwks_uri` (https, or http on a trusted network).
    #[arg(long, env = "OIDC_JWKS_URL")]
    pub jwks_url: Option<http::Uri>,
    /// The identity provider's JWKS document as a file (mounted from a ConfigMap or Secret).
    #[arg(long, env = "OIDC_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Seconds between reads of the JWKS; a token naming an unknown key triggers one sooner.
    #[arg(long, default_value_t = 300)]
    pub jwks_refresh_seconds: u64,
    /// Expected `iss` of tokens.
    #[arg(long, env = "OIDC_ISSUER")]
    pub issuer: String,
    /// Expected `aud` of tokens.
    #[arg(long, env = "OIDC_AUDIENCE", default_value = "meridian")]
    pub audience: String,
    /// The Region's OpenSearch endpoint (the URL of its search Secret, credentials as user
    /// information). With it the service answers practitioner search and keeps the
    /// countries' indexes current from the outbox.
    #[arg(long, env = "SEARCH_URL")]
    pub search_url: Option<String>,
    /// CA certificates (a PEM file) the search endpoint's certificate is verified against,
    /// besides the system's roots. Plain `http://` is refused off this machine.
    #[arg(long, env = "SEARCH_CA_FILE")]
    pub search_ca_file: Option<PathBuf>,
    /// Serve the countries bound to this Region, as the cluster's Country objects say
    /// (watched through the Kubernetes API, from the in-cluster or kubeconfig credentials).
    #[arg(long, env = "MERIDIAN_REGION")]
    pub region: Option<String>,
    /// Without a cluster: a country to serve, as `CODE=IANA-zone`, e.g. `DE=Europe/Berlin`;
    /// append `,noreassign` where the country's `features.reassignment` is off. Repeat per
    /// country.
    #[arg(long = "country", value_name = "CODE=ZONE")]
    pub countries: Vec<String>,
}

/// Parses one `--country` value.
pub fn country(value: &str) -> Result<CountryEntry, String> {
    let (spec, flags) = value.split_once(',').unwrap_or((value, ""));
    let (code, zone) = spec
        .split_once('=')
        .ok_or_else(|| format!("--country {value:?}: expected CODE=IANA-zone"))?;
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "--country {value:?}: {code:?} is not an ISO 3166-1 alpha-2 code in upper case"
        ));
    }
    let timezone = zone
        .parse()
        .map_err(|_| format!("--country {value:?}: unknown IANA time zone {zone:?}"))?;
    let reassignment = match flags {
        "" => true,
        "noreassign" => false,
        other => return Err(format!("--country {value:?}: unknown flag {other:?} (only noreassign)")),
    };
    Ok(CountryEntry {
        code: code.into(),
        timezone,
        serving: Serving::Ready,
        reassignment,
    })
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(options: BookingOptions) -> anyhow::Result<()> {
    let fixed = options
        .countries
        .iter()
        .map(|c| country(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let source = match (&options.jwks_url, &options.jwks_file) {
        (Some(url), _) => JwksSource::Url(url.clone()),
        (None, Some(file)) => JwksSource::File(file.clone()),
        (None, None) => anyhow::bail!("--jwks-url or --jwks-file is required"),
    };
    let jwks = Jwks::load(source, &options.issuer, &options.audience).await?;
    let _refresh = jwks.refresh_every(Duration::from_secs(options.jwks_refresh_seconds.max(10)));
    let database_ca = read_ca(options.database_ca_file.as_deref(), "--database-ca-file")?;
    let connect = meridian_shared::tls::pg_options(&options.database_url, database_ca.as_deref())
        .map_err(|e| anyhow::anyhow!("--database-url: {e}"))?;
    let pool = crate::pool_options(32)
        .connect_with(connect)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to --database-url: {e}"))?;
    let countries = Countries::default();
    let serving = match &options.region {
        Some(region) => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("--region needs the Kubernetes API: {e}"))?;
            tokio::spawn(follow_region(client, region.clone(), countries.clone()));
            format!("the countries of Region {region}")
        }
        None => {
            let codes: Vec<String> = fixed.iter().map(|e| e.code.clone()).collect();
            countries.set(fixed);
            codes.join(", ")
        }
    };
    let mut service = Service::new(pool.clone(), jwks.verifier(), countries).with_jwks(jwks);
    let _indexer = match &options.search_url {
        Some(url) => {
            let ca = read_ca(options.search_ca_file.as_deref(), "--search-ca-file")?;
            let client = OpenSearch::from_url(url, ca.as_deref()).map_err(|e| anyhow::anyhow!("--search-url: {e}"))?;
            let backend = Backend::OpenSearch(Arc::new(client));
            service = service.with_search(backend.clone());
            // Every replica follows the outbox; their writes are idempotent by version.
            Some(Indexer::start(pool, backend, "search-indexer").await?.spawn())
        }
        None => None,
    };
    let service = Arc::new(service);
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    println!(
        "meridian booking: serving {serving} on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app(service))
        .with_graceful_shutdown(meridian_shared::shutdown::signal())
        .await?;
    Ok(())
}

/// The PEM file `path` names, if one is named.
fn read_ca(path: Option<&std::path::Path>, flag: &str) -> anyhow::Result<Option<String>> {
    path.map(|p| std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display())))
        .transpose()
}

/// Keeps `countries` in line with the cluster's Country objects bound to `region`: a
/// country starts answering when it becomes Ready and stops when it is suspended or deleted.
async fn follow_region(client: kube::Client, region: String, countries: Countries) {
    let (reader, writer) = reflector::store::<Country>();
    let stream = watcher(kube::Api::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => countries.set(crate::served::entries(reader.state().iter().map(|c| &**c), &region)),
            Err(e) => tracing::warn!(error = %e, "watching Country objects"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_flags_are_checked_and_name_the_problem() {
        let de = country("DE=Europe/Berlin").unwrap();
        assert_eq!((de.code.as_str(), de.reassignment), ("DE", true));
        assert!(!country("IT=Europe/Rome,noreassign").unwrap().reassignment);
        assert!(country("de=Europe/Berlin").unwrap_err().contains("upper case"));
        assert!(country("DE=Mars/Olympus").unwrap_err().contains("IANA"));
        assert!(country("DE").unwrap_err().contains("CODE=IANA-zone"));
    }
}
