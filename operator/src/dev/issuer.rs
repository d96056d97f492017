//! The development token issuer: `meridian dev` serves it under `/auth`, and
//! `meridian dev-issuer` runs it alone, for a kind cluster (e2e/kind) that has no identity
//! provider. It signs a token for whoever asks, so it must never face real users.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meridian_shared::auth::{DevIssuer, Role};
use serde::Deserialize;

/// How long the tokens it signs last.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
pub struct TokenRequest {
    sub: String,
    roles: String,
    countries: String,
}

/// A token for any subject, roles and countries, e.g.
/// `token?sub=<practitioner-id>&roles=Practitioner&countries=DE`; an unknown role is a 400.
pub fn token(issuer: &DevIssuer, request: &TokenRequest) -> Response {
    let roles: Result<Vec<Role>, _> = request.roles.split(',').map(str::parse).collect();
    let Ok(roles) = roles else {
        return (
            StatusCode::BAD_REQUEST,
            "roles: a comma-separated list of Patient, Practitioner, ClinicAdmin, PracticeManager, SystemAdmin",
        )
            .into_response();
    };
    let countries: Vec<&str> = request.countries.split(',').collect();
    issuer
        .token(&request.sub, &roles, &countries, TOKEN_TTL)
        .into_response()
}

/// Options of `meridian dev-issuer`.
#[derive(clap::Args, Debug)]
pub struct DevIssuerOptions {
    /// Address to serve `/jwks.json`, `/token` and `/healthz` on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The `iss` of its tokens: the URL the workloads are told is their issuer
    /// (`oidc.issuer` of the chart), e.g. `http://dev-issuer.meridian-system.svc:8080`.
    #[arg(long)]
    pub issuer: String,
    /// The `aud` of its tokens.
    #[arg(long, default_value = super::workloads::AUDIENCE)]
    pub audience: String,
}

/// The issuer's routes: its key set and its tokens.
pub fn router(issuer: Arc<DevIssuer>) -> Router {
    Router::new()
        .route(
            "/jwks.json",
            get(|State(i): State<Arc<DevIssuer>>| async move { i.jwks().to_string() }),
        )
        .route(
            "/token",
            get(|State(i): State<Arc<DevIssuer>>, Query(q): Query<TokenRequest>| async move { token(&i, &q) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(issuer)
}

/// Serves the issuer until Ctrl-C or SIGTERM. Its key is made at start: tokens from before a
/// restart are refused after it.
pub async fn run(options: DevIssuerOptions) -> anyhow::Result<()> {
    let issuer = Arc::new(DevIssuer::new(&options.issuer, &options.audience));
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    tracing::warn!(
        listen = %listener.local_addr()?,
        issuer = %options.issuer,
        "development token issuer: it signs a token for anyone who asks; never expose it"
    );
    axum::serve(listener, router(issuer))
        .with_graceful_shutdown(meridian_shared::shutdown::signal())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn its_tokens_verify_against_the_key_set_it_serves() {
        let issuer = Arc::new(DevIssuer::new("http://dev-issuer.test", "meridian"));
        let app = router(issuer.clone());
        let get = |uri: &str| {
            let app = app.clone();
            let uri = uri.to_string();
            async move {
                let response = app
                    .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                (status, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        let (status, jwks) = get("/jwks.json").await;
        assert_eq!(status, StatusCode::OK);
        let (status, token) = get("/token?sub=demo-patient&roles=Patient&countries=DE").await;
        assert_eq!(status, StatusCode::OK);
        let verifier = meridian_shared::auth::Verifier::from_jwks("http://dev-issuer.test", "meridian", &jwks).unwrap();
        let principal = verifier.verify(&token).unwrap();
        assert_eq!(principal.subject, "demo-patient");
        assert!(principal.has_role(Role::Patient));
        let (status, _) = get("/token?sub=x&roles=Doctor&countries=DE").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
