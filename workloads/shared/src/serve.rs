//! What every workload's entry point (`meridian booking`, `meridian records`) takes the same
//! way: the identity provider whose tokens it accepts, and the CA its stores' certificates
//! are checked against.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::jwks::{Jwks, JwksSource};

/// The identity provider's options.
#[derive(clap::Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("keys").required(true).args(["jwks_url", "jwks_file"])))]
pub struct OidcOptions {
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
}

impl OidcOptions {
    /// Reads the key set and keeps it current in the background.
    pub async fn load(&self) -> Result<(Arc<Jwks>, tokio::task::JoinHandle<()>), String> {
        let source = match (&self.jwks_url, &self.jwks_file) {
            (Some(url), _) => JwksSource::Url(url.clone()),
            (None, Some(file)) => JwksSource::File(file.clone()),
            (None, None) => return Err("--jwks-url or --jwks-file is required".into()),
        };
        let jwks = Jwks::load(source, &self.issuer, &self.audience)
            .await
            .map_err(|e| e.to_string())?;
        let refresh = jwks.refresh_every(Duration::from_secs(self.jwks_refresh_seconds.max(10)));
        Ok((jwks, refresh))
    }
}

/// The PEM file `path` names, if one is named; `flag` names it in the error.
pub fn read_ca(path: Option<&Path>, flag: &str) -> Result<Option<String>, String> {
    path.map(|p| std::fs::read_to_string(p).map_err(|e| format!("{flag} {}: {e}", p.display())))
        .transpose()
}

pub use crate::pool::ACQUIRE_TIMEOUT;

/// The settings of every workload's sqlx pools (the request paths of `meridian records` and the
/// read log use [`crate::pool::Pool`] instead): a short [`ACQUIRE_TIMEOUT`], and a connection that sat
/// unused for 500 ms or longer checked before it is handed out, so that connections broken
/// by a database restart are dropped and replaced rather than given to a request
/// (`e2e/tests/dev_restart.rs`). sqlx checks every connection as it comes back, so one used
/// more recently was alive a moment ago; checking every one on its way out too cost a round
/// trip per request, about 6% of the records benchmark's throughput.
pub fn pool_options(max_connections: u32) -> sqlx::postgres::PgPoolOptions {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move { crate::pool::check_if_idle(conn, meta.idle_for).await.map(|()| true) })
        })
}

/// The request's correlation ID: its `X-Correlation-ID` when that is a UUID, else a new one.
/// It ties the audit records and the log lines of one request together.
pub fn correlation_id(headers: &http::HeaderMap) -> uuid::Uuid {
    headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(uuid::Uuid::new_v4)
}

/// The `Authorization` header, when it is text.
pub fn authorization(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}
