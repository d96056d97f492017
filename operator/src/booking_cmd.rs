//! `meridian booking`: the booking workload on its own, as a Region's deployment runs it —
//! one database (its Region's), the countries that Region holds, tokens checked against the
//! identity provider's key set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use meridian_booking::http::{Countries, CountryEntry, Service, Serving, app};
use meridian_shared::auth::Verifier;

/// Options of `meridian booking`.
#[derive(clap::Args, Clone, Debug)]
pub struct BookingOptions {
    /// The Region's database (the `url` of its connection Secret).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Address to serve `/{cc}/v1/...` on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The identity provider's JWKS document, as a file (mounted from a ConfigMap or Secret).
    #[arg(long, env = "OIDC_JWKS_FILE")]
    pub jwks_file: PathBuf,
    /// Expected `iss` of tokens.
    #[arg(long, env = "OIDC_ISSUER")]
    pub issuer: String,
    /// Expected `aud` of tokens.
    #[arg(long, env = "OIDC_AUDIENCE", default_value = "meridian")]
    pub audience: String,
    /// A country this Region serves, as `CODE=IANA-zone`, e.g. `DE=Europe/Berlin`; append
    /// `,noreassign` where the country's `features.reassignment` is off. Repeat per country.
    #[arg(long = "country", required = true)]
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
    let entries = options
        .countries
        .iter()
        .map(|c| country(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let jwks = std::fs::read_to_string(&options.jwks_file)
        .map_err(|e| anyhow::anyhow!("cannot read --jwks-file {}: {e}", options.jwks_file.display()))?;
    let verifier = Verifier::from_jwks(&options.issuer, &options.audience, &jwks)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(32)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&options.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to --database-url: {e}"))?;
    let countries = Countries::default();
    let codes: Vec<String> = entries.iter().map(|e| e.code.clone()).collect();
    countries.set(entries);
    let service = Arc::new(Service::new(pool, Arc::new(verifier), countries));
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    println!(
        "meridian booking: serving {} on http://{}",
        codes.join(", "),
        listener.local_addr()?
    );
    axum::serve(listener, app(service))
        .with_graceful_shutdown(crate::shutdown::signal())
        .await?;
    Ok(())
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
