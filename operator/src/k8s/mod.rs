//! `meridian operator`: the reconcilers as kube-runtime controllers, with leader election,
//! Kubernetes Events, Prometheus metrics and health endpoints.

mod controllers;
mod leader;
mod secrets;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use kube::Client;

pub use controllers::{Error, KubeContext, Reconciled, reconcile};
pub use leader::{DEFAULT_LEASE_NAME, Fence, Fenced, LEASE_DURATION, LeaderElection, RENEW_DEADLINE, RETRY_PERIOD};
pub use secrets::KubeSecrets;

use crate::backends::gateway::{Gateway, GatewayConfig};
use crate::controller::Context;
use crate::providers::{AwsStacks, InClusterStacks, Providers, StackConfig};

/// Options of `meridian operator`.
#[derive(clap::Args, Clone, Debug)]
pub struct OperatorOptions {
    /// Address for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Namespace of the leader-election Lease, and of Secrets referenced without a namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "meridian-system")]
    pub namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Name of the leader-election Lease (the Helm chart uses the same).
    #[arg(long, default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// The Gateway (Gateway API) that Countries' HTTPRoutes attach to.
    #[arg(long, default_value = "meridian")]
    pub gateway_name: String,
    /// Namespace of that Gateway; its listeners must allow routes from the Regions'
    /// namespaces (`meridian-region-<name>`).
    #[arg(long, default_value = "meridian-system")]
    pub gateway_namespace: String,
    /// The booking Service in each Region's namespace that routes send traffic to.
    #[arg(long, default_value = "booking")]
    pub workload_service: String,
    #[arg(long, default_value_t = 8080)]
    pub workload_port: u16,
    /// Image of PostgreSQL in `inCluster` Regions.
    #[arg(long, default_value = "postgres:15")]
    pub postgres_image: String,
    /// Image of OpenSearch in `inCluster` Regions.
    #[arg(long, default_value = "opensearchproject/opensearch:2.13.0")]
    pub opensearch_image: String,
    /// Image of the Kafka-compatible broker (tansu, built with its SQLite storage) of Regions
    /// whose `spec.events.broker` is `inCluster`.
    #[arg(long, default_value = "ghcr.io/tansu-io/tansu:0.6.0")]
    pub kafka_image: String,
    /// Image with the `meridian` binary, run as each `inCluster` Region's booking workload.
    #[arg(long, default_value = "meridian:0.1.0")]
    pub workload_image: String,
    /// The ClusterRole each Region's workload is bound to (it watches Countries); the Helm
    /// chart installs it.
    #[arg(long, default_value = "meridian-workload")]
    pub workload_cluster_role: String,
    /// The ClusterRole each Region's records service is bound to: it watches Countries and
    /// has the API server review other Regions' records services' tokens (TokenReview).
    #[arg(long, default_value = "meridian-records")]
    pub records_cluster_role: String,
    /// The identity provider the workloads of `inCluster` Regions accept tokens from.
    #[arg(long, env = "OIDC_ISSUER", default_value = "https://idp.example")]
    pub oidc_issuer: String,
    #[arg(
        long,
        env = "OIDC_JWKS_URL",
        default_value = "https://idp.example/.well-known/jwks.json"
    )]
    pub oidc_jwks_url: String,
    /// Sends the AWS API calls of `aws` Regions here instead of AWS (e.g. a moto server).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint: Option<String>,
}

/// Runs until SIGTERM/Ctrl-C, or until leadership is lost (then exits non-zero so the
/// replica restarts as a standby).
pub async fn run(options: OperatorOptions) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client: {e}"))?;
    let identity = options.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "meridian".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let secrets = Arc::new(KubeSecrets::new(client.clone(), options.namespace.clone()));
    let gateway = Gateway::Cluster {
        client: client.clone(),
        config: GatewayConfig {
            name: options.gateway_name.clone(),
            namespace: options.gateway_namespace.clone(),
            service: options.workload_service.clone(),
            port: options.workload_port,
            ..GatewayConfig::default()
        },
    };
    let stack_config = StackConfig {
        postgres_image: options.postgres_image.clone(),
        opensearch_image: options.opensearch_image.clone(),
        kafka_image: options.kafka_image.clone(),
        workload_image: options.workload_image.clone(),
        operator_namespace: options.namespace.clone(),
        gateway_namespace: options.gateway_namespace.clone(),
        oidc_issuer: options.oidc_issuer.clone(),
        oidc_jwks_url: options.oidc_jwks_url.clone(),
        workload_cluster_role: options.workload_cluster_role.clone(),
        records_cluster_role: options.records_cluster_role.clone(),
    };
    let stacks = InClusterStacks::new(client.clone(), stack_config.clone());
    let aws = AwsStacks::new(client.clone(), stack_config, options.aws_endpoint.clone());
    let providers = Providers::new(None, secrets).with_in_cluster(stacks).with_aws(aws);
    let core = Context::new(providers).with_gateway(gateway);
    let ctx = Arc::new(KubeContext::new(client.clone(), core, &identity));

    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    tokio::spawn(serve_health(listener, ctx.clone(), ready.clone()));

    client
        .apiserver_version()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API: {e}"))?;
    ready.store(true, Ordering::SeqCst);

    let mut election = LeaderElection::new(client.clone(), &options.namespace, &options.lease_name, &identity)
        .with_gauge(ctx.core.metrics.leader());
    tracing::info!(identity, lease = %options.lease_name, namespace = %options.namespace, "waiting for leadership");
    // The controllers, and every reconcile they start, run under the fence: they stop at
    // the renew deadline, before any standby can take the Lease over.
    election
        .lead(
            |fence| {
                tracing::info!(
                    identity,
                    "leading: starting the Country, Region and PatientIndex controllers"
                );
                controllers::run(ctx.clone(), fence)
            },
            meridian_shared::shutdown::signal(),
        )
        .await
        .map_err(|lost| anyhow::anyhow!("lost leadership: {lost}"))
}

async fn serve_health(listener: tokio::net::TcpListener, ctx: Arc<KubeContext>, ready: Arc<AtomicBool>) {
    let app = health_router(move || ctx.core.metrics.response(), ready);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "health server stopped");
    }
}

/// `/healthz`, `/readyz` (while `ready`) and `/metrics` (what `metrics` answers).
fn health_router(
    metrics: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
    ready: Arc<AtomicBool>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route("/metrics", get(move || async move { metrics() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn metrics_are_served_with_the_openmetrics_media_type() {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let ready = Arc::new(AtomicBool::new(false));
        let app = health_router(move || metrics.response(), ready.clone());
        let get = |path: &str| {
            app.clone()
                .oneshot(axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap())
        };
        let response = get("/metrics").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            crate::metrics::CONTENT_TYPE
        );
        assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        ready.store(true, Ordering::SeqCst);
        assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::OK);
    }
}
