//! The `aws` provider's database against a moto server (AWS's APIs, emulated) that the test
//! starts on 127.0.0.1: create, wait, adopt, modify, refuse someone else's cluster, and
//! delete with a final snapshot (or keep, with Retain).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_rds::config::{BehaviorVersion, Credentials, Region as AwsRegion};
use meridian_crds::{DeletionPolicy, Region};
use meridian_operator::providers::aws::{AwsDatabases, AwsError, Progress, cluster_id};

mod kept;

/// A moto server on a free port of 127.0.0.1, stopped on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// A moto server with `settings` in its environment (moto reads some limits from there).
    fn start_with(settings: &[(&str, &str)]) -> Self {
        let candidates = [
            std::env::var_os("MOTO_SERVER").map(PathBuf::from),
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/meridian-venv/bin/moto_server")),
            Some(PathBuf::from("moto_server")),
        ];
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = candidates
            .into_iter()
            .flatten()
            .find_map(|bin| {
                Command::new(bin)
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .envs(settings.iter().copied())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "moto_server not found: install it with `python3 -m venv ~/.cache/meridian-venv && \
                     ~/.cache/meridian-venv/bin/pip install 'moto[server]'` (.ci/run does), or set MOTO_SERVER"
                )
            });
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    fn opensearch(&self) -> aws_sdk_opensearch::Client {
        let config = aws_sdk_opensearch::Config::builder()
            .behavior_version(aws_sdk_opensearch::config::BehaviorVersion::latest())
            .region(aws_sdk_opensearch::config::Region::new("eu-central-1"))
            .credentials_provider(aws_sdk_opensearch::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_opensearch::Client::from_conf(config)
    }

    /// How many OpenSearch domains exist.
    async fn domains(&self) -> usize {
        self.opensearch()
            .list_domain_names()
            .send()
            .await
            .unwrap()
            .domain_names()
            .len()
    }

    /// The Region's OpenSearch domain as moto describes it.
    async fn domain(&self) -> aws_sdk_opensearch::types::DomainStatus {
        self.opensearch()
            .describe_domain()
            .domain_name("meridian-eu-central-1")
            .send()
            .await
            .unwrap()
            .domain_status
            .unwrap()
    }

    /// Every DB cluster moto holds.
    async fn clusters(&self) -> Vec<aws_sdk_rds::types::DbCluster> {
        let out = self.rds().describe_db_clusters().send().await.unwrap();
        out.db_clusters().to_vec()
    }

    /// The identifiers of every DB cluster snapshot moto holds.
    async fn snapshots(&self) -> Vec<String> {
        let out = self.rds().describe_db_cluster_snapshots().send().await.unwrap();
        out.db_cluster_snapshots()
            .iter()
            .filter_map(|s| s.db_cluster_snapshot_identifier().map(String::from))
            .collect()
    }

    /// Every DB instance moto holds: identifier, class and whether it is its cluster's writer.
    async fn instances(&self) -> Vec<(String, String, bool)> {
        let rds = self.rds();
        let clusters = self.clusters().await;
        let writers: Vec<&str> = clusters
            .iter()
            .flat_map(|c| c.db_cluster_members())
            .filter(|m| m.is_cluster_writer() == Some(true))
            .filter_map(|m| m.db_instance_identifier())
            .collect();
        let out = rds.describe_db_instances().send().await.unwrap();
        let mut instances: Vec<(String, String, bool)> = out
            .db_instances()
            .iter()
            .map(|i| {
                let id = i.db_instance_identifier().unwrap().to_string();
                let writer = writers.contains(&id.as_str());
                (id, i.db_instance_class().unwrap().to_string(), writer)
            })
            .collect();
        instances.sort();
        instances
    }

    fn rds(&self) -> aws_sdk_rds::Client {
        let config = aws_sdk_rds::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(AwsRegion::new("eu-central-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_rds::Client::from_conf(config)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn frankfurt(policy: DeletionPolicy) -> Region {
    let mut region: Region = serde_yaml_ng::from_str(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: Region
metadata: {name: eu-central-1}
spec: {provider: aws, cloudRegion: eu-central-1, isolation: dedicated}",
    )
    .unwrap();
    region.spec.deletion_policy = policy;
    region
}

/// Calls `ensure` until the database is available (each call is one reconcile).
async fn until_available(db: &AwsDatabases, region: &Region) -> (Vec<String>, Progress) {
    let mut waited = Vec::new();
    for _ in 0..10 {
        match db.ensure(region, "Initial-Passw0rd").await.unwrap() {
            Progress::Waiting(why) | Progress::Created(why) => waited.push(why),
            available => return (waited, available),
        }
    }
    panic!("never available: {waited:?}");
}

#[tokio::test]
async fn aurora_is_created_encrypted_and_protected_adopted_modified_and_deleted_after_a_snapshot() {
    let moto = Moto::start();
    let rds = moto.rds();
    let db = AwsDatabases::new(rds.clone());
    let mut region = frankfurt(DeletionPolicy::Retain);
    let (waited, available) = until_available(&db, &region).await;
    assert_eq!(waited[0], "creating DB cluster meridian-eu-central-1", "{waited:?}");
    assert!(
        waited.iter().any(|w| w.starts_with("creating DB instance")),
        "{waited:?}"
    );
    let Progress::Available { host, port } = available else {
        unreachable!()
    };
    assert!(host.contains("meridian-eu-central-1"), "{host}");
    assert_eq!(port, 5432);

    let cluster = rds
        .describe_db_clusters()
        .db_cluster_identifier(cluster_id("eu-central-1"))
        .send()
        .await
        .unwrap()
        .db_clusters()[0]
        .clone();
    assert_eq!(cluster.engine(), Some("aurora-postgresql"));
    assert_eq!(cluster.storage_encrypted(), Some(true));
    assert_eq!(
        cluster.deletion_protection(),
        Some(true),
        "Retain protects the database"
    );
    let tags: Vec<(Option<&str>, Option<&str>)> = cluster.tag_list().iter().map(|t| (t.key(), t.value())).collect();
    assert!(
        tags.contains(&(Some("meridian.dev/region"), Some("eu-central-1"))),
        "{tags:?}"
    );
    assert!(
        tags.contains(&(Some("meridian.dev/managed-by"), Some("meridian-operator"))),
        "{tags:?}"
    );

    // Another operator replica (or a restart) adopts what exists.
    let again = AwsDatabases::new(rds.clone());
    assert!(matches!(
        again.ensure(&region, "ignored").await.unwrap(),
        Progress::Available { .. }
    ));

    // A bigger instance class and a reader are modifications.
    region.spec.database = Some(meridian_crds::DatabaseSizing {
        instance_class: Some("db.r6g.xlarge".into()),
        instances: Some(2),
        ..Default::default()
    });
    let (waited, _) = until_available(&db, &region).await;
    assert!(
        waited.contains(&"creating DB instance meridian-eu-central-1-2".to_string()),
        "{waited:?}"
    );
    assert!(waited.iter().any(|w| w.contains("db.r6g.xlarge")), "{waited:?}");
    assert_eq!(
        moto.instances().await,
        [
            ("meridian-eu-central-1-1".to_string(), "db.r6g.xlarge".to_string(), true),
            (
                "meridian-eu-central-1-2".to_string(),
                "db.r6g.xlarge".to_string(),
                false
            ),
        ]
    );

    // AWS fails over to the reader; then the Region asks for one instance again. The
    // operator hands writing back to instance 1 before it removes instance 2, and leaves
    // alone an instance someone else added to the cluster.
    rds.failover_db_cluster()
        .db_cluster_identifier(cluster_id("eu-central-1"))
        .target_db_instance_identifier("meridian-eu-central-1-2")
        .send()
        .await
        .unwrap();
    rds.create_db_instance()
        .db_instance_identifier("analytics-replica")
        .db_cluster_identifier(cluster_id("eu-central-1"))
        .db_instance_class("db.r6g.large")
        .engine("aurora-postgresql")
        .send()
        .await
        .unwrap();
    region.spec.database.as_mut().unwrap().instances = Some(1);
    let (waited, _) = until_available(&db, &region).await;
    assert_eq!(
        waited,
        [
            "failing over from DB instance meridian-eu-central-1-2 to meridian-eu-central-1-1 before removing it",
            "removing DB instance meridian-eu-central-1-2",
        ]
    );
    assert_eq!(
        moto.instances().await,
        [
            ("analytics-replica".to_string(), "db.r6g.large".to_string(), false),
            ("meridian-eu-central-1-1".to_string(), "db.r6g.xlarge".to_string(), true),
        ]
    );
    rds.delete_db_instance()
        .db_instance_identifier("analytics-replica")
        .send()
        .await
        .unwrap();

    // Retain: releasing leaves everything.
    db.release(&region, "unused").await.unwrap();
    assert_eq!(moto.clusters().await.len(), 1);

    // Delete: deletion protection off, a final snapshot, then gone.
    region.spec.deletion_policy = DeletionPolicy::Delete;
    db.release(&region, "meridian-eu-central-1-final").await.unwrap();
    assert!(moto.clusters().await.is_empty());
    let ids = moto.snapshots().await;
    assert!(ids.iter().any(|id| id == "meridian-eu-central-1-final"), "{ids:?}");
}

#[tokio::test]
async fn a_cluster_tagged_for_another_region_is_not_adopted_and_aws_errors_are_reported() {
    let moto = Moto::start();
    let rds = moto.rds();
    rds.create_db_cluster()
        .db_cluster_identifier("meridian-eu-central-1")
        .engine("aurora-postgresql")
        .master_username("someone")
        .master_user_password("Elses-Passw0rd")
        .tags(
            aws_sdk_rds::types::Tag::builder()
                .key("meridian.dev/region")
                .value("eu-west-3")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let db = AwsDatabases::new(rds.clone());
    let err = db
        .ensure(&frankfurt(DeletionPolicy::Retain), "Passw0rd-123")
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::NotOurs { .. }), "{err}");
    assert!(err.to_string().contains("eu-west-3"), "{err}");

    // AWS refusing a request: the message says which call and why.
    let unreachable =
        aws_sdk_rds::Client::from_conf(rds.config().to_builder().endpoint_url("http://127.0.0.1:9").build());
    let err = AwsDatabases::new(unreachable)
        .ensure(&frankfurt(DeletionPolicy::Retain), "x")
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("describe DB cluster meridian-eu-central-1"),
        "{err}"
    );
}

#[tokio::test]
async fn an_untagged_cluster_or_domain_with_the_regions_name_is_refused_never_given_a_password_nor_deleted() {
    use meridian_operator::conditions;
    use meridian_operator::controller::{Context, region as reconcile};
    use meridian_operator::providers::aws_search::AwsSearch;
    use meridian_operator::providers::{Providers, StaticSecrets};
    let moto = Moto::start();
    // Someone's cluster and domain that merely have the names the Region would give its own.
    moto.rds()
        .create_db_cluster()
        .db_cluster_identifier("meridian-eu-central-1")
        .engine("aurora-postgresql")
        .master_username("someone")
        .master_user_password("Elses-Passw0rd")
        .send()
        .await
        .unwrap();
    moto.opensearch()
        .create_domain()
        .domain_name("meridian-eu-central-1")
        .engine_version("OpenSearch_2.13")
        .send()
        .await
        .unwrap();
    let (kube, stacks) = aws_providers(&moto);
    let ctx = Context::new(Providers::new(None, std::sync::Arc::new(StaticSecrets::default())).with_aws(stacks));
    let region = frankfurt(DeletionPolicy::Delete);
    for _ in 0..2 {
        let status = reconcile::apply(&region, &ctx).await.status;
        let ready = conditions::find(&status.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "AdoptionRefused")
        );
        assert!(
            ready
                .message
                .contains("DB cluster meridian-eu-central-1 exists but has no meridian.dev/region tag"),
            "{}",
            ready.message
        );
    }
    assert!(
        !secret(&kube, "postgres").await.contains_key("passwordSet"),
        "its master password was never set"
    );
    let err = AwsSearch::new(moto.opensearch())
        .ensure(&region, "Master-Passw0rd")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            AwsError::NotOurs {
                owner: None,
                kind: "OpenSearch domain",
                ..
            }
        ),
        "{err}"
    );
    // Deleting the Region, even with Delete, leaves both.
    reconcile::cleanup(&region, &[], &[], &ctx).await.unwrap();
    assert_eq!(moto.clusters().await.len(), 1);
    assert_eq!(moto.domains().await, 1);
    AwsSearch::new(moto.opensearch()).release(&region).await.unwrap();
    AwsDatabases::new(moto.rds()).release(&region, "never").await.unwrap();
    assert_eq!((moto.clusters().await.len(), moto.domains().await), (1, 1));
    let ids = moto.snapshots().await;
    assert!(!ids.iter().any(|id| id == "never"), "no final snapshot: {ids:?}");
}

#[tokio::test]
async fn an_opensearch_domain_is_created_encrypted_https_only_resized_and_deleted_only_with_delete() {
    use meridian_operator::providers::aws_search::{AwsSearch, SearchProgress};
    let moto = Moto::start();
    let client = moto.opensearch();
    let search = AwsSearch::new(client.clone());
    let mut region = frankfurt(DeletionPolicy::Retain);
    let first = search.ensure(&region, "Master-Passw0rd").await.unwrap();
    assert_eq!(
        first,
        SearchProgress::Created("creating OpenSearch domain meridian-eu-central-1".into())
    );
    let mut endpoint = None;
    for _ in 0..10 {
        if let SearchProgress::Available(e) = search.ensure(&region, "Master-Passw0rd").await.unwrap() {
            endpoint = Some(e);
            break;
        }
    }
    let endpoint = endpoint.expect("the domain became available");
    assert!(endpoint.starts_with("https://"), "{endpoint}");

    let status = moto.domain().await;
    assert_eq!(
        status.encryption_at_rest_options().and_then(|o| o.enabled()),
        Some(true)
    );
    assert_eq!(
        status.node_to_node_encryption_options().and_then(|o| o.enabled()),
        Some(true)
    );
    assert_eq!(
        status.domain_endpoint_options().and_then(|o| o.enforce_https()),
        Some(true)
    );
    assert_eq!(status.cluster_config().and_then(|c| c.instance_count()), Some(2));
    let security = status.advanced_security_options().expect("fine-grained access control");
    assert_eq!(security.enabled(), Some(true));
    assert_eq!(security.internal_user_database_enabled(), Some(true));

    // A new size in the spec is a modification.
    region.spec.search = Some(meridian_crds::SearchSizing {
        instance_count: Some(3),
        ..Default::default()
    });
    let resized = search.ensure(&region, "Master-Passw0rd").await.unwrap();
    assert!(
        matches!(&resized, SearchProgress::Waiting(w) if w.contains("3 x")),
        "{resized:?}"
    );
    let status = moto.domain().await;
    assert_eq!(status.cluster_config().and_then(|c| c.instance_count()), Some(3));

    search.release(&region).await.unwrap();
    assert_eq!(moto.domains().await, 1, "Retain keeps it");
    region.spec.deletion_policy = DeletionPolicy::Delete;
    search.release(&region).await.unwrap();
    assert_eq!(moto.domains().await, 0);
}

const NS: &str = "meridian-region-eu-central-1";

/// What Secret `name` of the Region's namespace holds.
async fn secret(kube: &kube::Client, name: &str) -> std::collections::BTreeMap<String, String> {
    kept::secret(kube, NS, name).await
}

/// An HTTP server on 127.0.0.1 standing where the domain's endpoint would be: it answers
/// every request as an OpenSearch without indexes would, and keeps the `Authorization`
/// headers it was sent.
async fn search_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = axum::Router::new().fallback(move |headers: http::HeaderMap| {
        let kept = kept.clone();
        async move {
            let authorization = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            kept.lock().unwrap().push(authorization.to_string());
            (
                http::StatusCode::NOT_FOUND,
                [(http::header::CONTENT_TYPE, "application/json")],
                r#"{"error":"alias [practitioners_de] missing","status":404}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Kubernetes (mocked, keeping what is applied) and an `aws` provider against `moto`.
fn aws_providers(moto: &Moto) -> (kube::Client, meridian_operator::providers::AwsStacks) {
    let kube = kept::client();
    let stacks = meridian_operator::providers::AwsStacks::new(
        kube.clone(),
        meridian_operator::providers::StackConfig::default(),
        Some(moto.endpoint.clone()),
    )
    .with_credentials(Credentials::new("testing", "testing", None, None, "moto"));
    (kube, stacks)
}

/// Calls the stack's `ensure` until it succeeds (each call is one reconcile); what it
/// waited for on the way.
async fn until_ready(stacks: &meridian_operator::providers::AwsStacks, region: &Region) -> Vec<String> {
    let mut waits = Vec::new();
    while let Err(e) = stacks.ensure(region).await {
        waits.push(e.message);
        assert!(waits.len() < 10, "{waits:?}");
    }
    waits
}

#[tokio::test]
async fn an_aws_region_gets_its_passwords_then_its_database_and_domain_and_their_urls_in_secrets() {
    use base64::Engine;
    use meridian_operator::providers::{Providers, StaticSecrets};
    let moto = Moto::start();
    let (kube, stacks) = aws_providers(&moto);
    let (search_url, seen) = search_endpoint().await;
    let providers = Providers::new(None, std::sync::Arc::new(StaticSecrets::default()))
        .with_aws(stacks.with_search_address(search_url.clone()));
    let region = frankfurt(DeletionPolicy::Retain);
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(kube.clone(), NS);
    let mut waits = Vec::new();
    let endpoint = loop {
        match providers.ensure(&region).await {
            Ok(endpoint) => break endpoint,
            Err(e) => {
                assert_eq!(e.reason, "DatabaseCreating", "{e}");
                waits.push(e.message);
                assert!(waits.len() < 10, "{waits:?}");
                assert!(
                    deployments.get_opt("booking").await.unwrap().is_none(),
                    "the workload waits for its stores"
                );
            }
        }
    };
    // The Region's workload runs in its namespace, reading both stores' URLs from Secrets.
    let booking = deployments.get("booking").await.unwrap();
    let container = &booking.spec.template.spec.unwrap().containers[0];
    let from_secret: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), format!("{}/{}", r.name, r.key)))
        })
        .collect();
    assert_eq!(
        from_secret,
        [
            ("DATABASE_URL".to_string(), "postgres-workload/url".to_string()),
            ("SEARCH_URL".to_string(), "search/url".to_string())
        ]
    );
    // Beside it the records service, which reaches the PII vault as the vault role.
    let records = deployments.get("records").await.unwrap();
    let container = &records.spec.template.spec.unwrap().containers[0];
    let from_secret: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), format!("{}/{}", r.name, r.key)))
        })
        .collect();
    assert_eq!(
        from_secret,
        [
            ("DATABASE_URL".to_string(), "postgres-workload/url".to_string()),
            ("VAULT_DATABASE_URL".to_string(), "postgres-vault/url".to_string())
        ]
    );
    // With an MSK cluster, its event workers run beside them; without it again, they go.
    let mut with_events = region.clone();
    with_events.spec.events =
        Some(serde_yaml_ng::from_str("{broker: aws, bootstrapServersSecretRef: {name: msk, key: bootstrap}}").unwrap());
    providers.ensure(&with_events).await.unwrap();
    for worker in ["relay", "billing", "analytics", "search-indexer"] {
        assert!(deployments.get_opt(worker).await.unwrap().is_some(), "{worker}");
    }
    providers.ensure(&region).await.unwrap();
    for worker in ["relay", "billing", "analytics", "search-indexer"] {
        assert!(
            deployments.get_opt(worker).await.unwrap().is_none(),
            "{worker} left behind"
        );
    }
    assert!(deployments.get_opt("booking").await.unwrap().is_some());
    assert!(waits[0].contains("creating DB cluster"), "{waits:?}");
    assert!(waits.iter().any(|w| w.contains("OpenSearch domain")), "{waits:?}");
    assert!(
        !waits.iter().any(|w| w.contains("setting the master")),
        "created with the stored passwords, never reset: {waits:?}"
    );
    assert_eq!(secret(&kube, "postgres").await["passwordSet"], "true");
    assert!(
        endpoint.url.as_str().starts_with("postgres://meridian:"),
        "{}",
        endpoint.display
    );
    assert!(
        endpoint.display.contains("meridian-eu-central-1"),
        "{}",
        endpoint.display
    );
    assert_eq!(
        endpoint.secret.as_deref(),
        Some("meridian-region-eu-central-1/postgres")
    );
    // The published URL is what the administrator's endpoint reads back.
    assert_eq!(providers.admin(&region).await.unwrap().url, endpoint.url);

    // The domain's master user: a password AWS accepts, kept in its own Secret with the URL.
    let search = secret(&kube, "search").await;
    let password = &search["password"];
    assert_eq!(password.len(), 32);
    for class in [
        char::is_ascii_uppercase,
        char::is_ascii_lowercase,
        char::is_ascii_digit,
        |c: &char| "-._~".contains(*c),
    ] {
        assert!(password.chars().any(|c| class(&c)), "{password}");
    }
    assert_eq!(search["username"], "meridian");
    assert_ne!(password, &secret(&kube, "postgres").await["password"]);
    let status = moto.domain().await;
    assert_eq!(status.advanced_security_options().and_then(|o| o.enabled()), Some(true));

    // Search goes to the domain as that user.
    let backend = providers.search(&region).await.unwrap();
    assert_eq!(backend.resolve("practitioners_de").await.unwrap(), None);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("meridian:{password}"))
    );
    assert_eq!(seen.lock().unwrap().as_slice(), [expected]);
    let (_, shown) = providers.search_store(&region).await.unwrap();
    assert!(!shown.contains(password.as_str()), "{shown}");
}

#[tokio::test]
async fn an_adopted_domain_gets_fine_grained_access_control_with_the_operators_master_user() {
    let moto = Moto::start();
    let opensearch = moto.opensearch();
    // Someone created the domain for this Region (tagged for it), without fine-grained
    // access control.
    let tag = |key: &str, value: &str| {
        aws_sdk_opensearch::types::Tag::builder()
            .key(key)
            .value(value)
            .build()
            .unwrap()
    };
    opensearch
        .create_domain()
        .domain_name("meridian-eu-central-1")
        .engine_version("OpenSearch_2.13")
        .tag_list(tag("meridian.dev/region", "eu-central-1"))
        .tag_list(tag("meridian.dev/managed-by", "meridian-operator"))
        .cluster_config(
            aws_sdk_opensearch::types::ClusterConfig::builder()
                .instance_type(aws_sdk_opensearch::types::OpenSearchPartitionInstanceType::from(
                    "r6g.large.search",
                ))
                .instance_count(2)
                .build(),
        )
        .ebs_options(
            aws_sdk_opensearch::types::EbsOptions::builder()
                .ebs_enabled(true)
                .volume_size(100)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let security = || async {
        moto.domain()
            .await
            .advanced_security_options()
            .and_then(|o| o.enabled())
    };
    assert_ne!(security().await, Some(true));
    let (kube, stacks) = aws_providers(&moto);
    let waits = until_ready(&stacks, &frankfurt(DeletionPolicy::Retain)).await;
    assert!(
        waits
            .iter()
            .any(|w| w.contains("setting the master user of OpenSearch domain")),
        "{waits:?}"
    );
    assert_eq!(security().await, Some(true));
    assert_eq!(moto.domains().await, 1, "adopted, not created again");
    let search = secret(&kube, "search").await;
    assert_eq!(search["passwordSet"], "true");
    assert!(search["url"].starts_with("https://meridian:"), "{search:?}");
}

#[tokio::test]
async fn an_adopted_cluster_gets_the_operators_master_password() {
    let moto = Moto::start();
    // Someone created the cluster for this Region (or the operator did, and its Secret was
    // lost since): its master password is not the one the operator will store.
    let mut create = moto
        .rds()
        .create_db_cluster()
        .db_cluster_identifier(cluster_id("eu-central-1"))
        .engine("aurora-postgresql")
        .master_username("meridian")
        .master_user_password("Someone-Elses-Passw0rd")
        .storage_encrypted(true);
    for (key, value) in [
        ("meridian.dev/region", "eu-central-1"),
        ("meridian.dev/managed-by", "meridian-operator"),
    ] {
        create = create.tags(aws_sdk_rds::types::Tag::builder().key(key).value(value).build());
    }
    create.send().await.unwrap();
    let (kube, stacks) = aws_providers(&moto);
    let waits = until_ready(&stacks, &frankfurt(DeletionPolicy::Retain)).await;
    let setting = "setting the master password of DB cluster meridian-eu-central-1";
    assert_eq!(
        waits.iter().filter(|w| w.contains(setting)).count(),
        1,
        "set once, and only once the cluster is adopted: {waits:?}"
    );
    assert!(!waits.iter().any(|w| w.contains("creating DB cluster")), "{waits:?}");
    assert_eq!(moto.clusters().await.len(), 1, "adopted, not created again");
    let postgres = secret(&kube, "postgres").await;
    assert_eq!(postgres["passwordSet"], "true");
    assert!(
        postgres["url"].starts_with(&format!("postgres://meridian:{}@", postgres["password"])),
        "{postgres:?}"
    );

    // Adopted, not created: even a Delete leaves it, and its Secrets with the password.
    let region = frankfurt(DeletionPolicy::Delete);
    let cloud = stacks.recorded(&region).await.unwrap();
    let origins: Vec<(&str, meridian_crds::ResourceOrigin)> =
        cloud.iter().map(|r| (r.kind.as_str(), r.origin)).collect();
    assert_eq!(
        origins,
        [
            ("DBCluster", meridian_crds::ResourceOrigin::Adopted),
            ("OpenSearchDomain", meridian_crds::ResourceOrigin::Created)
        ]
    );
    let recorded = meridian_crds::RegionResources {
        namespace: Some(NS.into()),
        cloud,
        topics: Vec::new(),
    };
    stacks.release(&region, &recorded).await.unwrap();
    assert_eq!(moto.clusters().await.len(), 1, "an adopted cluster is never deleted");
    assert_eq!(moto.domains().await, 0, "the domain it created is");
    let ids = moto.snapshots().await;
    assert!(
        !ids.iter().any(|id| id.contains("-final-")),
        "no final snapshot: {ids:?}"
    );
    assert_eq!(secret(&kube, "postgres").await["passwordSet"], "true");
}

#[tokio::test]
async fn the_example_region_on_aws_becomes_ready_once_its_stack_is_available_retain_keeps_it_and_delete_removes_it() {
    use meridian_operator::conditions;
    use meridian_operator::controller::{Context, region as reconcile};
    use meridian_operator::providers::{Providers, StaticSecrets};
    let moto = Moto::start();
    // moto creates clusters but runs no database behind them: the migrations go to a local one.
    let pg = meridian_localpg::TempCluster::start().await.expect("start PostgreSQL");
    let address = pg
        .url()
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (kube, stacks) = aws_providers(&moto);
    let ctx = Context::new(
        Providers::new(None, std::sync::Arc::new(StaticSecrets::default()))
            .with_aws(stacks.with_database_address(address)),
    );
    // The example Region, with provider aws.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/regions/eu-central-1.yaml");
    let mut region: Region = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    region.spec.provider = meridian_crds::RegionProvider::Aws;
    let mut reasons = Vec::new();
    let status = loop {
        let outcome = reconcile::apply(&region, &ctx).await;
        if conditions::is_true(&outcome.status.conditions, "Ready") {
            break outcome.status;
        }
        let ready = conditions::find(&outcome.status.conditions, "Ready").unwrap();
        reasons.push(format!("{}: {}", ready.reason, ready.message));
        assert!(reasons.len() < 10, "{reasons:#?}");
    };
    assert!(
        reasons.iter().all(|r| r.starts_with("DatabaseCreating")),
        "{reasons:#?}"
    );
    // The status records what the Region made: a deletion goes by it.
    let created = |kind: &str| meridian_crds::CloudResource {
        kind: kind.into(),
        id: "meridian-eu-central-1".into(),
        origin: meridian_crds::ResourceOrigin::Created,
    };
    assert_eq!(
        status.resources,
        Some(meridian_crds::RegionResources {
            namespace: Some(NS.into()),
            cloud: vec![created("DBCluster"), created("OpenSearchDomain")],
            topics: Vec::new(),
        })
    );
    region.status = Some(status.clone());
    assert_eq!(
        status.connection_secret.as_deref(),
        Some("meridian-region-eu-central-1/postgres-workload"),
        "workloads connect as the workload role"
    );
    assert_eq!(
        status.owner_secret.as_deref(),
        Some("meridian-region-eu-central-1/postgres-owner")
    );
    let workload = secret(&kube, "postgres-workload").await;
    assert_eq!(workload["username"], "meridian_eu_central_1_workload");
    assert!(
        workload["url"].starts_with("postgres://meridian_eu_central_1_workload:"),
        "{}",
        workload["url"]
    );
    assert_eq!(
        status.schema_version,
        meridian_shared::schema::MIGRATIONS.last().map(|m| m.version)
    );
    // moto runs no OpenSearch behind the domain's endpoint: SearchReady says so, and the
    // Region is Ready all the same (search is optional).
    let search = conditions::find(&status.conditions, "SearchReady").unwrap();
    assert_eq!(
        (search.status.as_str(), search.reason.as_str()),
        ("False", "SearchUnreachable")
    );
    assert!(search.message.contains("GET /_cluster/health"), "{}", search.message);
    let search_endpoint = status.search_endpoint.clone().unwrap_or_default();
    assert!(
        search_endpoint.contains("meridian-eu-central-1") && !search_endpoint.contains("meridian:"),
        "the domain, without credentials: {search_endpoint}"
    );

    // Retain (the example's policy): deleting the Region stops its workload and leaves the
    // stores, still protected, and their Secrets.
    assert_eq!(region.spec.deletion_policy, DeletionPolicy::Retain);
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(kube.clone(), NS);
    assert!(deployments.get_opt("booking").await.unwrap().is_some());
    assert!(deployments.get_opt("records").await.unwrap().is_some());
    reconcile::cleanup(&region, &[], &[], &ctx).await.unwrap();
    assert!(deployments.get_opt("booking").await.unwrap().is_none());
    assert!(deployments.get_opt("records").await.unwrap().is_none());
    assert!(secret(&kube, "postgres").await.contains_key("url"));
    assert!(secret(&kube, "search").await.contains_key("password"));
    let clusters = moto.clusters().await;
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].deletion_protection(), Some(true));
    assert_eq!(
        moto.instances().await,
        [
            ("meridian-eu-central-1-1".to_string(), "db.r6g.large".to_string(), true),
            ("meridian-eu-central-1-2".to_string(), "db.r6g.large".to_string(), false),
        ],
        "the example's two instances: a writer and a reader"
    );
    assert_eq!(moto.domains().await, 1);

    // Delete: gone after a final snapshot, and the namespace with its Secrets last.
    region.spec.deletion_policy = DeletionPolicy::Delete;
    reconcile::cleanup(&region, &[], &[], &ctx).await.unwrap();
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(kube.clone());
    assert!(namespaces.get_opt(NS).await.unwrap().is_none());
    assert!(moto.clusters().await.is_empty());
    assert!(moto.instances().await.is_empty());
    let ids = moto.snapshots().await;
    assert!(
        ids.iter().any(|id| id.starts_with("meridian-eu-central-1-final-")),
        "a final snapshot: {ids:?}"
    );
    assert_eq!(moto.domains().await, 0);
}

#[tokio::test]
async fn a_snapshot_quota_refusing_the_final_snapshot_blocks_deletion_with_a_condition_and_keeps_the_cluster() {
    use meridian_operator::controller::{Context, region as reconcile};
    use meridian_operator::providers::{Providers, StaticSecrets};
    // An account whose manual cluster snapshot quota is used up (AWS's default is 100).
    let moto = Moto::start_with(&[("MOTO_RDS_SNAPSHOT_LIMIT", "0")]);
    let (kube, stacks) = aws_providers(&moto);
    let ctx = Context::new(Providers::new(None, std::sync::Arc::new(StaticSecrets::default())).with_aws(stacks));
    let mut region = frankfurt(DeletionPolicy::Delete);
    let mut attempts = 0;
    while let Err(e) = ctx.providers.ensure(&region).await {
        attempts += 1;
        assert!(attempts < 10, "{e}");
    }
    region.status = Some(meridian_crds::RegionStatus {
        resources: Some(ctx.providers.recorded(&region, Some(NS.into())).await.unwrap()),
        ..Default::default()
    });
    let blocked = reconcile::cleanup(&region, &[], &[], &ctx).await.unwrap_err();
    let ready = blocked.reports.iter().find(|r| r.type_ == "Ready").unwrap();
    assert!(!ready.is_true());
    assert_eq!(ready.reason, "AwsError");
    assert!(
        ready.message.contains("delete DB cluster meridian-eu-central-1")
            && ready.message.contains("SnapshotQuotaExceeded"),
        "{}",
        ready.message
    );
    // No snapshot, no deletion: the data is still there, and so is its password.
    assert_eq!(moto.clusters().await.len(), 1);
    let ids = moto.snapshots().await;
    assert!(!ids.iter().any(|id| id.contains("-final-")), "{ids:?}");
    assert!(secret(&kube, "postgres").await.contains_key("password"));
}
