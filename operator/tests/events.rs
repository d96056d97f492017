//! A Region's `spec.events` against a real Kafka-protocol broker (tansu) and a real
//! PostgreSQL: the operator creates the Region's topics through the Kafka admin API, says so
//! in `EventsReady`, repeats as a no-op, and names what is wrong when it cannot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_crds::Region;
use meridian_localkafka::{Broker, Storage};
use meridian_localpg::TempCluster;
use meridian_operator::conditions;
use meridian_operator::controller::{Context, region};
use meridian_operator::providers::{FileSecrets, Providers, StaticSecrets};
use rdkafka::consumer::{BaseConsumer, Consumer};

fn region_with_events(name: &str, events: &str) -> Region {
    let mut r: Region = serde_yaml_ng::from_str(&format!(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: Region
metadata: {{name: {name}}}
spec:
  provider: external
  cloudRegion: eu-west-1
  external:
    databaseUrlSecretRef: {{name: db, key: url}}
  events: {events}"
    ))
    .unwrap();
    r.metadata.generation = Some(1);
    r
}

fn topics(bootstrap: &str) -> BTreeMap<String, usize> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect()
}

/// A PostgreSQL and a broker the Region's Secrets point at (`kafka` key `bootstrap`; key
/// `closed` names a port nobody listens on), and a context publishing the Region's Secrets
/// as files.
struct World {
    _pg: TempCluster,
    broker: Broker,
    secrets_dir: tempfile::TempDir,
    ctx: Context,
}

impl World {
    async fn start() -> Self {
        let pg = TempCluster::start().await.expect("start PostgreSQL");
        let broker = Broker::start(Storage::Memory).await.unwrap_or_else(|e| panic!("{e}"));
        let mut secrets = StaticSecrets::default();
        secrets.insert("default", "db", BTreeMap::from([("url".into(), pg.url())]));
        secrets.insert(
            "default",
            "kafka",
            BTreeMap::from([
                ("bootstrap".into(), broker.bootstrap()),
                ("closed".into(), "127.0.0.1:1".into()),
            ]),
        );
        let secrets_dir = tempfile::tempdir().unwrap();
        let providers = Providers::new(None, Arc::new(secrets))
            .with_region_secrets(Arc::new(FileSecrets::new(secrets_dir.path().to_path_buf())));
        Self {
            _pg: pg,
            broker,
            secrets_dir,
            ctx: Context::new(providers),
        }
    }
}

#[tokio::test]
async fn the_operator_creates_the_regions_topics_once_and_names_what_is_wrong() {
    let World {
        _pg,
        broker,
        secrets_dir,
        ctx,
    } = World::start().await;

    let r = region_with_events(
        "eu-west-1",
        "{broker: external, bootstrapServersSecretRef: {name: kafka, key: bootstrap}, partitions: 3, retentionHours: 24, replicationFactor: 1}",
    );
    let first = region::apply(&r, &ctx).await;
    let events = conditions::find(&first.status.conditions, "EventsReady").unwrap();
    assert_eq!(
        (events.status.as_str(), events.reason.as_str()),
        ("True", "TopicsReady"),
        "{events:?}"
    );
    assert!(events.message.contains("8 created"), "{}", events.message);
    assert!(conditions::is_true(&first.status.conditions, "Ready"));
    let made = topics(&broker.bootstrap());
    for topic in meridian_events::topics::region_topics() {
        assert_eq!(made.get(&topic), Some(&3), "{topic}: {made:?}");
    }
    // The Region's relay and consumers find the broker in the Region's Secret `kafka`.
    let published = std::fs::read_to_string(secrets_dir.path().join("regions/eu-west-1/secrets/kafka.json")).unwrap();
    let published: BTreeMap<String, String> = serde_json::from_str(&published).unwrap();
    assert_eq!(published, BTreeMap::from([("bootstrap".into(), broker.bootstrap())]));
    // Again: nothing to create, nothing changed.
    let again = region::apply(&r, &ctx).await;
    let events = conditions::find(&again.status.conditions, "EventsReady").unwrap();
    assert!(events.message.contains("0 created"), "{}", events.message);

    // A Secret key that is not there: the field and the Secret named, the database still Ready.
    let missing = region_with_events(
        "eu-west-1",
        "{broker: external, bootstrapServersSecretRef: {name: kafka, key: nope}}",
    );
    let outcome = region::apply(&missing, &ctx).await;
    let events = conditions::find(&outcome.status.conditions, "EventsReady").unwrap();
    assert_eq!(
        (events.status.as_str(), events.reason.as_str()),
        ("False", "EventsSecretMissing")
    );
    assert!(
        events.message.contains("spec.events.bootstrapServersSecretRef"),
        "{}",
        events.message
    );
    assert!(conditions::is_true(&outcome.status.conditions, "Ready"));

    // Nobody listening: said within the admin API's bounded wait.
    let closed = region_with_events(
        "eu-west-1",
        "{broker: external, bootstrapServersSecretRef: {name: kafka, key: closed}}",
    );
    let asked = Instant::now();
    let outcome = region::apply(&closed, &ctx).await;
    let events = conditions::find(&outcome.status.conditions, "EventsReady").unwrap();
    assert_eq!(
        (events.status.as_str(), events.reason.as_str()),
        ("False", "BrokerUnreachable"),
        "{events:?}"
    );
    assert!(asked.elapsed() < Duration::from_secs(30), "{:?}", asked.elapsed());
    // The database's Secret goes away: the reconcile stops before it looks at the broker,
    // and the True it reported before is not repeated as if checked.
    let mut stopped = r.clone();
    stopped.status = Some(again.status.clone());
    stopped.spec.external.as_mut().unwrap().database_url_secret_ref.name = "gone".into();
    let outcome = region::apply(&stopped, &ctx).await;
    let events = conditions::find(&outcome.status.conditions, "EventsReady").unwrap();
    assert_eq!(
        (events.status.as_str(), events.reason.as_str()),
        ("Unknown", "Blocked"),
        "{events:?}"
    );
    // Without spec.events, outside meridian dev: nothing publishes the outbox, and it says so.
    let mut none = closed.clone();
    none.spec.events = None;
    let outcome = region::apply(&none, &ctx).await;
    let events = conditions::find(&outcome.status.conditions, "EventsReady").unwrap();
    assert_eq!(events.reason, "NotConfigured");

    // The notification channels' credentials go to Secret `notifications`; a missing one is
    // named.
    let mut notifying = r.clone();
    notifying.spec.notifications = Some(
        serde_yaml_ng::from_str(
            "{smtp: {host: smtp.example, from: a@clinic.example,
                     usernameSecretRef: {name: kafka, key: bootstrap}, passwordSecretRef: {name: kafka, key: closed}}}",
        )
        .unwrap(),
    );
    let outcome = region::apply(&notifying, &ctx).await;
    assert!(conditions::is_true(&outcome.status.conditions, "EventsReady"));
    let published =
        std::fs::read_to_string(secrets_dir.path().join("regions/eu-west-1/secrets/notifications.json")).unwrap();
    let published: BTreeMap<String, String> = serde_json::from_str(&published).unwrap();
    assert_eq!(
        published,
        BTreeMap::from([
            ("smtp-password".into(), "127.0.0.1:1".into()),
            ("smtp-username".into(), broker.bootstrap())
        ])
    );
    let smtp = notifying.spec.notifications.as_mut().unwrap().smtp.as_mut().unwrap();
    smtp.password_secret_ref.as_mut().unwrap().key = "nope".into();
    let outcome = region::apply(&notifying, &ctx).await;
    let events = conditions::find(&outcome.status.conditions, "EventsReady").unwrap();
    assert_eq!(
        (events.status.as_str(), events.reason.as_str()),
        ("False", "NotificationsSecretMissing")
    );
    assert!(
        events.message.contains("spec.notifications.smtp.passwordSecretRef"),
        "{}",
        events.message
    );
}

/// A Region going with `deletionPolicy: Delete` removes the topics it created on its broker,
/// and only those: a topic that was there before it is someone else's.
#[tokio::test]
async fn delete_removes_the_topics_the_region_created_and_no_other() {
    let World {
        _pg,
        broker,
        secrets_dir: _secrets_dir,
        ctx,
    } = World::start().await;
    // Someone's topic, there before the Region.
    let kafka = meridian_events::kafka::KafkaOptions::plaintext(broker.bootstrap())
        .client_config()
        .unwrap();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = kafka.create().unwrap();
    let theirs = rdkafka::admin::NewTopic::new("appointment-events", 1, rdkafka::admin::TopicReplication::Fixed(1));
    admin
        .create_topics([&theirs], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();

    let mut r = region_with_events(
        "eu-west-1",
        "{broker: external, bootstrapServersSecretRef: {name: kafka, key: bootstrap}, replicationFactor: 1}",
    );
    r.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    let outcome = region::apply(&r, &ctx).await;
    let recorded = outcome.status.resources.clone().unwrap_or_default().topics;
    assert_eq!(recorded.len(), 7, "{recorded:?}");
    assert!(!recorded.contains(&"appointment-events".to_string()));
    // Recorded once, kept across reconciles.
    r.status = Some(outcome.status.clone());
    let again = region::apply(&r, &ctx).await;
    assert_eq!(again.status.resources.unwrap_or_default().topics, recorded);

    region::cleanup(&r, &[], &[], &ctx).await.unwrap();
    let left = topics(&broker.bootstrap());
    assert!(left.contains_key("appointment-events"), "{left:?}");
    for topic in &recorded {
        assert!(!left.contains_key(topic), "{topic} left: {left:?}");
    }
}
