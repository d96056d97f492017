//! The identity provider's keys from a URL or a file, kept current through a key rotation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use meridian_shared::auth::{AuthError, DevIssuer, Role};
use meridian_shared::jwks::{Jwks, JwksError, JwksSource};

const ISSUER: &str = "https://login.example.test";

/// An identity provider's `jwks_uri` on 127.0.0.1: serves whatever document it is given
/// (or a 500 when it is empty) and counts the reads.
struct Provider {
    document: Arc<RwLock<String>>,
    reads: Arc<AtomicUsize>,
    uri: http::Uri,
}

impl Provider {
    async fn start(document: &str) -> Self {
        let document = Arc::new(RwLock::new(document.to_string()));
        let reads = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route(
                "/keys",
                get(
                    |State((doc, reads)): State<(Arc<RwLock<String>>, Arc<AtomicUsize>)>| async move {
                        reads.fetch_add(1, Ordering::SeqCst);
                        let doc = doc.read().unwrap().clone();
                        if doc.is_empty() {
                            (StatusCode::INTERNAL_SERVER_ERROR, String::new())
                        } else {
                            (StatusCode::OK, doc)
                        }
                    },
                ),
            )
            .with_state((document.clone(), reads.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/keys", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider { document, reads, uri }
    }

    fn serve(&self, document: &str) {
        *self.document.write().unwrap() = document.to_string();
    }
}

fn token(issuer: &DevIssuer) -> String {
    issuer.token("patient-1", &[Role::Patient], &["DE"], Duration::from_secs(300))
}

#[tokio::test]
async fn keys_from_a_url_follow_a_rotation_and_survive_an_outage() {
    let (first, second) = (
        DevIssuer::with_key_id(ISSUER, "meridian", "key-2026-10"),
        DevIssuer::with_key_id(ISSUER, "meridian", "key-2026-11"),
    );
    let provider = Provider::start(first.jwks()).await;
    let jwks = Jwks::load_spaced(
        JwksSource::Url(provider.uri.clone()),
        ISSUER,
        "meridian",
        Duration::ZERO,
    )
    .await
    .unwrap();
    let verifier = jwks.verifier();
    assert!(verifier.verify(&token(&first)).is_ok());
    assert_eq!(verifier.verify(&token(&second)), Err(AuthError::UnknownKey));

    // The provider rotates: the new key only.
    provider.serve(second.jwks());
    assert!(jwks.refresh().await.unwrap(), "the keys changed");
    assert!(verifier.verify(&token(&second)).is_ok());
    assert_eq!(verifier.verify(&token(&first)), Err(AuthError::UnknownKey));
    assert!(!jwks.refresh().await.unwrap(), "same document, nothing changes");

    // The provider fails: the keys in use stay.
    provider.serve("");
    let err = jwks.refresh().await.unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    provider.serve("{\"keys\": \"none\"}");
    assert!(matches!(jwks.refresh().await, Err(JwksError::Invalid { .. })));
    assert!(verifier.verify(&token(&second)).is_ok());
}

#[tokio::test]
async fn reads_are_spaced_however_many_unknown_keys_turn_up() {
    let issuer = DevIssuer::with_key_id(ISSUER, "meridian", "k1");
    let provider = Provider::start(issuer.jwks()).await;
    let jwks = Jwks::load(JwksSource::Url(provider.uri.clone()), ISSUER, "meridian")
        .await
        .unwrap();
    for _ in 0..20 {
        assert!(!jwks.refresh().await.unwrap(), "the document did not change");
    }
    // The start-up read, and one refresh: the others fell inside the spacing.
    assert_eq!(provider.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn keys_from_a_file_are_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let (first, second) = (
        DevIssuer::with_key_id(ISSUER, "meridian", "a"),
        DevIssuer::with_key_id(ISSUER, "meridian", "b"),
    );
    std::fs::write(&path, first.jwks()).unwrap();
    let jwks = Jwks::load_spaced(JwksSource::File(path.clone()), ISSUER, "meridian", Duration::ZERO)
        .await
        .unwrap();
    assert!(jwks.verifier().verify(&token(&first)).is_ok());
    // A ConfigMap update replaces the file.
    std::fs::write(&path, second.jwks()).unwrap();
    assert!(jwks.refresh().await.unwrap());
    assert!(jwks.verifier().verify(&token(&second)).is_ok());

    let missing = dir.path().join("missing.json");
    let err = Jwks::load(JwksSource::File(missing), ISSUER, "meridian")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("missing.json"), "{err}");
}
