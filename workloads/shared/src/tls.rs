//! TLS of the stores' connections. A connection that leaves this machine verifies the
//! server's certificate and host name (PostgreSQL `sslmode=verify-full`, OpenSearch over
//! `https`), against the system's roots plus the CA its Region names; anything weaker is
//! refused, whatever the URL asks for. A loopback connection (127.0.0.0/8, `::1`,
//! `localhost`, a unix socket) never leaves the machine: `meridian dev`'s own clusters, a
//! test's, or a sidecar proxy that does the TLS itself. It is taken as the URL says.

use std::net::IpAddr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// An HTTP/1.1 client for `http://` and `https://` URLs that verifies servers against the
/// system's root certificates (rustls with ring, as everywhere here); the error says why
/// there are none.
pub fn https_client<B>() -> Result<HttpsClient<B>, String>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("no TLS root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector))
}

/// What [`https_client`] builds, sending bodies of type `B`.
pub type HttpsClient<B> = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    B,
>;

/// Whether `host` (a URL's host, IPv6 in brackets or not, or a unix socket directory) is
/// this machine.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why a database URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbUrlError {
    #[error("invalid connection URL: {0}")]
    Invalid(#[source] sqlx::Error),
    /// The URL asks for less than a verified connection to a server off this machine.
    #[error("{0}")]
    Insecure(String),
}

/// The `sslmode` a connection URL asks for, if any (the last one, as PostgreSQL reads it).
fn requested_ssl_mode(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1.split('#').next().unwrap_or_default();
    query
        .rsplit('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| matches!(*key, "sslmode" | "ssl-mode"))
        .map(|(_, value)| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// Connection options for `url`. Off this machine the connection is `verify-full`: the
/// server's certificate must chain to the system's roots or to `ca` (PEM, one or more
/// certificates; without it, to the URL's `sslrootcert` or `PGSSLROOTCERT` file if any)
/// and name the host connected to. A URL asking for `disable`, `allow`, `prefer`,
/// `require` or `verify-ca` there is refused rather than upgraded: whoever wrote it may
/// have a server without TLS or a certificate for another name, and should learn it from
/// this message, not from a handshake failure. On loopback the URL is taken as it is (its
/// `verify-full`, if it asks for it, with `ca`).
pub fn pg_options(url: &str, ca: Option<&str>) -> Result<PgConnectOptions, DbUrlError> {
    let mut options: PgConnectOptions = url.parse().map_err(DbUrlError::Invalid)?;
    let local = options.get_socket().is_some() || is_loopback(options.get_host());
    let requested = requested_ssl_mode(url);
    match requested.as_deref() {
        None | Some("verify-full") => {}
        Some(_) if local => return Ok(options),
        Some(mode) => {
            return Err(DbUrlError::Insecure(format!(
                "the database URL asks for sslmode={mode}, which does not verify the certificate and host name of \
                 server {}; connections that leave this machine need sslmode=verify-full (or no sslmode at all)",
                options.get_host()
            )));
        }
    }
    if local && requested.is_none() {
        return Ok(options);
    }
    options = options.ssl_mode(PgSslMode::VerifyFull);
    if let Some(ca) = ca {
        options = options.ssl_root_cert_from_pem(ca.as_bytes().to_vec());
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_this_machine_only() {
        for host in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "[::1]",
            "localhost",
            "LocalHost",
            "/var/run/postgresql",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "postgres.meridian-region-eu.svc",
            "localhost.example",
            "0.0.0.0",
            "[fe80::1]",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn off_this_machine_every_connection_is_verify_full_and_weaker_modes_are_refused() {
        for url in [
            "postgres://u:p@db.example:5432/meridian",
            "postgres://u:p@db.example:5432/meridian?sslmode=verify-full",
            "postgres://u:p@db.example/meridian?application_name=x&sslmode=require&sslmode=verify-full",
        ] {
            let options = pg_options(url, Some("-----BEGIN CERTIFICATE-----\n")).unwrap();
            assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull), "{url}");
        }
        for mode in ["disable", "allow", "prefer", "require", "verify-ca", "verify%2Dca"] {
            let url = format!("postgres://u:p@10.1.2.3:5432/meridian?sslmode={mode}");
            match pg_options(&url, None) {
                Err(DbUrlError::Insecure(message)) => {
                    assert!(message.contains("sslmode=verify-full"), "{message}");
                    assert!(message.contains("10.1.2.3"), "{message}");
                    assert!(!message.contains("u:p"), "no credentials: {message}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn loopback_urls_are_taken_as_they_are() {
        let options = pg_options("postgres://meridian@127.0.0.1:5432/meridian?sslmode=disable", None).unwrap();
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Disable));
        let options = pg_options("postgres://meridian@localhost/meridian?sslmode=verify-full", None).unwrap();
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
        let options = pg_options("postgres:///meridian?host=/run/postgresql&sslmode=require", None).unwrap();
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
    }

    #[test]
    fn a_url_that_is_not_one_is_invalid_not_insecure() {
        assert!(matches!(pg_options("not a url", None), Err(DbUrlError::Invalid(_))));
    }
}
