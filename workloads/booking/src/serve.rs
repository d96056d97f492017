//! `meridian booking`: the booking workload on its own, as a Region's deployment runs it —
//! one database (its Region's), the countries that Region holds, tokens checked against the
//! identity provider's key set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use meridian_search::Backend;
use meridian_search::indexer::Indexer;
use meridian_search::opensearch::OpenSearch;
use meridian_shared::serve::{OidcOptions, read_ca};

use crate::http::{Countries, CountryEntry, Service, Serving, app};

/// Options of `meridian booking`.
#[derive(clap::Args, Clone, Debug)]
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
    #[command(flatten)]
    pub oidc: OidcOptions,
    /// The Region's OpenSearch endpoint (the URL of its search Secret, credentials as user
    /// information). With it the service answers practitioner search and, unless
    /// `--outbox-indexer false`, keeps the countries' indexes current from the outbox.
    #[arg(long, env = "SEARCH_URL")]
    pub search_url: Option<String>,
    /// Index from the outbox. `false` where the Region has a Kafka: `meridian indexer`
    /// follows its `practitioner-events` instead.
    #[arg(long, env = "MERIDIAN_OUTBOX_INDEXER", default_value_t = true, action = clap::ArgAction::Set)]
    pub outbox_indexer: bool,
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
    if !meridian_shared::schema::is_country_code(code) {
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
    let (jwks, _refresh) = options.oidc.load().await.map_err(anyhow::Error::msg)?;
    let database_ca = read_ca(options.database_ca_file.as_deref(), "--database-ca-file").map_err(anyhow::Error::msg)?;
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
            let ca = read_ca(options.search_ca_file.as_deref(), "--search-ca-file").map_err(anyhow::Error::msg)?;
            let client = OpenSearch::from_url(url, ca.as_deref()).map_err(|e| anyhow::anyhow!("--search-url: {e}"))?;
            let backend = Backend::OpenSearch(Arc::new(client));
            service = service.with_search(backend.clone());
            // Every replica follows the outbox; their writes are idempotent by version.
            match options.outbox_indexer {
                true => Some(Indexer::start(pool, backend, "search-indexer").await?.spawn()),
                false => None,
            }
        }
        None => None,
    };
    let service = Arc::new(service);
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    println!(
        "meridian booking: serving {serving} on http://{}",
        listener.local_addr()?
    );
    // `/metrics` beside the API, not under `/{cc}/v1`: the gateway's routes never reach it.
    let app = app(service).route("/metrics", axum::routing::get(meridian_shared::metrics::serve_metrics));
    axum::serve(listener, app)
        .with_graceful_shutdown(meridian_shared::shutdown::signal())
        .await?;
    Ok(())
}

/// Keeps `countries` in line with the cluster's Country objects bound to `region`.
async fn follow_region(client: kube::Client, region: String, countries: Countries) {
    meridian_crds::serving::follow_countries(client, |all| {
        countries.set(crate::served::entries(all.iter().copied(), &region))
    })
    .await
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
