//! What the workloads' benchmarks (`meridian bench ...`) share: each prints its figures and
//! ends with one line of `key=value` pairs for scripts.

/// The `p`th percentile of `sorted` (ascending), nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

/// A workload's HTTP app served on a loopback port for a benchmark, and a client with a
/// kept-alive connection per benchmark client. Stops serving when dropped.
pub struct Served {
    pub addr: std::net::SocketAddr,
    pub client:
        hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, axum::body::Body>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    pub async fn start(app: axum::Router, clients: usize) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(clients)
            .build_http();
        Ok(Self { addr, client, server })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}
