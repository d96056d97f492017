//! The OpenSearch client over real TLS: an HTTPS server on 127.0.0.1 (axum behind rustls,
//! with a certificate this test makes) answers a recorded OpenSearch exchange. The client
//! verifies the server against the CA it is given; a certificate no root vouches for, or
//! made for another name, is refused before any request is sent; plain `http://` is
//! refused for a server off this machine.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use meridian_search::SearchError;
use meridian_search::opensearch::{Credentials, OpenSearch};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A CA: its certificate (PEM) and an issuer to sign with.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    TestCa {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `names` signed by `ca`, and its key (PEM).
fn server_cert(ca: &TestCa, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    (params.signed_by(&key, &ca.issuer).unwrap().pem(), key.serialize_pem())
}

/// Accepts TLS connections for axum; a failed handshake is the client's problem, not the
/// listener's, and the next connection is awaited.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The requests the server saw, as `METHOD /path` with the authorization header, if any.
type Seen = Arc<Mutex<Vec<String>>>;

/// OpenSearch 2.x's answer to `GET /_alias/<missing>`, whatever is asked.
async fn missing_alias(State(seen): State<Seen>, request: Request) -> impl IntoResponse {
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    seen.lock().unwrap().push(format!(
        "{} {} ({authorization})",
        request.method(),
        request.uri().path()
    ));
    (
        StatusCode::NOT_FOUND,
        [("content-type", "application/json; charset=UTF-8")],
        r#"{"error":"alias [practitioners_de] missing","status":404}"#,
    )
}

/// An HTTPS server on 127.0.0.1 presenting `cert`; its port and what it saw.
async fn https_server(cert: &str, key: &str) -> (u16, Seen) {
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let seen = Seen::default();
    let app = axum::Router::new().fallback(missing_alias).with_state(seen.clone());
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

#[tokio::test]
async fn https_verified_against_the_regions_ca_answers() {
    let ca = ca("Region CA");
    let (cert, key) = server_cert(&ca, &["127.0.0.1", "localhost"]);
    let (port, seen) = https_server(&cert, &key).await;
    let credentials = Credentials {
        username: "admin".into(),
        password: "s3cret".into(),
    };
    for host in ["127.0.0.1", "localhost"] {
        let client = OpenSearch::with_ca(
            &format!("https://{host}:{port}"),
            Some(credentials.clone()),
            Some(&ca.pem),
        )
        .unwrap();
        assert_eq!(client.resolve("practitioners_de").await.unwrap(), None, "{host}");
    }
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /_alias/practitioners_de (Basic YWRtaW46czNjcmV0)"; 2],
        "both requests arrived, credentials inside TLS"
    );
}

#[tokio::test]
async fn a_certificate_no_root_vouches_for_is_refused_before_any_request() {
    // Self-signed, known to nobody.
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (port, seen) = https_server(&cert.pem(), &signing_key.serialize_pem()).await;
    let url = format!("https://127.0.0.1:{port}");
    let other = ca("Another CA");
    for client in [
        OpenSearch::new(&url, None).unwrap(),
        OpenSearch::with_ca(&url, None, Some(&other.pem)).unwrap(),
    ] {
        let err = client.resolve("practitioners_de").await.unwrap_err();
        assert!(
            matches!(&err, SearchError::Unreachable(m) if m.contains("certificate")),
            "{err}"
        );
    }
    assert!(seen.lock().unwrap().is_empty(), "no request was sent");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let ca = ca("Region CA");
    let (cert, key) = server_cert(&ca, &["opensearch.meridian-region-eu-central-1.svc"]);
    let (port, seen) = https_server(&cert, &key).await;
    let client = OpenSearch::with_ca(&format!("https://127.0.0.1:{port}"), None, Some(&ca.pem)).unwrap();
    let err = client.resolve("practitioners_de").await.unwrap_err();
    assert!(
        matches!(&err, SearchError::Unreachable(m) if m.contains("not valid for name")),
        "{err}"
    );
    assert!(seen.lock().unwrap().is_empty(), "no request was sent");
}

#[test]
fn plain_http_is_refused_off_this_machine_and_a_ca_that_is_not_pem_is_refused() {
    for url in [
        "http://search.example:9200",
        "http://10.0.0.7:9200",
        "http://opensearch.ns.svc:9200",
    ] {
        match OpenSearch::new(url, None) {
            Err(SearchError::Unreachable(message)) => assert!(message.contains("https"), "{message}"),
            other => panic!("{url}: {:?}", other.map(|_| ())),
        }
    }
    for url in [
        "http://127.0.0.1:9200",
        "http://localhost:9200",
        "http://[::1]:9200",
        "https://search.example",
    ] {
        assert!(OpenSearch::new(url, None).is_ok(), "{url}");
    }
    assert!(matches!(
        OpenSearch::with_ca("https://search.example", None, Some("not PEM")),
        Err(SearchError::Unreachable(m)) if m.contains("no PEM certificate")
    ));
}
