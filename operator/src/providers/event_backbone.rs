//! A Region's event backbone in the cluster, for every provider whose workloads run there
//! (`inCluster`, `aws`), once the Region has `spec.events`: the relay that publishes the
//! Region's outbox to its Kafka, and the consumers that follow its topics (billing,
//! analytics). Each is a ServiceAccount, a Deployment of two replicas (the relay's replicas
//! take turns through a database lock; the consumers share their consumer group's
//! partitions) and a NetworkPolicy that lets nothing in: they serve nothing but their ops
//! listener (port [`OPS_PORT`], `http-ops`: `/healthz` and `/readyz` for the kubelet's
//! probes, `/metrics`), and the kubelet's probes are not subject to NetworkPolicies.
//!
//! With `spec.events.broker: inCluster` the broker is here too: a one-node tansu StatefulSet
//! keeping its log in SQLite on its own volume (kept when the StatefulSet goes, like the
//! database's), its Service, and a NetworkPolicy that admits the workers and the operator
//! only.
//!
//! They reach the database as the workload role (`postgres-workload`) and the Kafka through
//! Secret [`KAFKA_SECRET`], which the Region's events step copies from the Secrets that
//! `spec.events` names: `bootstrap`, and where set `ca.crt`, `username` and `password`,
//! the last two mounted as files, never in the environment.

use meridian_crds::{EventsBroker, Region};
use serde_json::{Value, json};

use super::in_cluster::{
    CA_FILE, StackConfig, deployment, identity, metadata, namespace, pod_security, resources, scratch, selector,
    service, statefulset, store_policy,
};

/// The Region's Secret holding how its workers reach its Kafka.
pub const KAFKA_SECRET: &str = "kafka";
/// The Region's Secret holding its notification channels' credentials.
pub const NOTIFICATIONS_SECRET: &str = "notifications";
/// Where the notifications consumer finds [`NOTIFICATIONS_SECRET`]'s files.
const NOTIFICATIONS_DIR: &str = "/etc/meridian/notifications";
/// Where the workers find [`KAFKA_SECRET`]'s files.
const KAFKA_DIR: &str = "/etc/meridian/kafka";

/// The port of every worker's ops listener (`--listen`: `/healthz`, `/readyz`, `/metrics`).
pub const OPS_PORT: u16 = 9090;

/// The port of an `inCluster` broker.
const KAFKA_PORT: u16 = 9092;
/// Size of an `inCluster` broker's volume when the Region does not say.
const DEFAULT_KAFKA_GIB: i32 = 10;
/// The account an `inCluster` broker runs as. The tansu image (`FROM scratch`, a static
/// binary and no `/etc/passwd`) names no user, so it would run as root: any non-root uid
/// does, given the volume through `fsGroup`.
const BROKER_USER: i64 = 65532;

/// Where an `inCluster` broker of Region `region` is reached.
pub fn kafka_bootstrap(region: &str) -> String {
    format!("kafka.{}.svc:{KAFKA_PORT}", namespace(region))
}

/// The workers: `(component, arguments, watches Countries)`.
const WORKERS: [(&str, &[&str], bool); 4] = [
    ("relay", &["relay"], false),
    // Bills at the terms of the Region's Countries, which it watches.
    ("billing", &["billing", "--region"], true),
    ("analytics", &["analytics"], false),
    (INDEXER, &["indexer"], false),
];
/// The worker that writes to the Region's search engine.
const INDEXER: &str = "search-indexer";

/// The app names of the workers, for the database's NetworkPolicy.
pub fn clients(region: &Region) -> Vec<String> {
    if region.spec.events.is_none() {
        return Vec::new();
    }
    let mut clients: Vec<String> = WORKERS.iter().map(|(w, _, _)| format!("meridian-{w}")).collect();
    if region.spec.notifications.is_some() {
        clients.push("meridian-notifications".into());
    }
    clients
}

/// The app names of the workers that reach the search engine.
pub fn search_clients(region: &Region) -> Vec<String> {
    match region.spec.events {
        Some(_) => vec![format!("meridian-{INDEXER}")],
        None => Vec::new(),
    }
}

/// Every worker object of `region`: none without `spec.events`.
pub fn objects(region: &Region, config: &StackConfig) -> Vec<Value> {
    let Some(events) = &region.spec.events else {
        return Vec::new();
    };
    let name = region.metadata.name.clone().unwrap_or_default();
    let mut env = vec![
        json!({"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": super::WORKLOAD_SECRET, "key": "url"}}}),
        json!({"name": "DATABASE_CA_FILE", "value": CA_FILE}),
        json!({"name": "MERIDIAN_KAFKA_BOOTSTRAP", "valueFrom": {"secretKeyRef": {"name": KAFKA_SECRET, "key": "bootstrap"}}}),
    ];
    // As the operator's own connection (Providers::events) does: MSK's listeners that take
    // credentials all speak TLS.
    if events.tls || events.broker == EventsBroker::Aws {
        env.push(json!({"name": "MERIDIAN_KAFKA_TLS", "value": "true"}));
    }
    if events.ca_secret_ref.is_some() {
        env.push(json!({"name": "MERIDIAN_KAFKA_CA_FILE", "value": format!("{KAFKA_DIR}/ca.crt")}));
    }
    if let Some(sasl) = &events.sasl {
        env.extend([
            json!({"name": "MERIDIAN_KAFKA_SASL_MECHANISM", "value": sasl.mechanism.as_str()}),
            json!({"name": "MERIDIAN_KAFKA_USERNAME", "valueFrom": {"secretKeyRef": {"name": KAFKA_SECRET, "key": "username"}}}),
            json!({"name": "MERIDIAN_KAFKA_PASSWORD_FILE", "value": format!("{KAFKA_DIR}/password")}),
        ]);
    }
    let mut objects = Vec::new();
    for (worker, args, watches) in WORKERS {
        let app = format!("meridian-{worker}");
        let mut args = with_listen(args);
        if watches {
            args.push(name.clone());
        }
        let mut env = env.clone();
        if worker == INDEXER {
            env.extend([
                json!({"name": "SEARCH_URL", "valueFrom": {"secretKeyRef": {"name": "search", "key": "url"}}}),
                json!({"name": "SEARCH_CA_FILE", "value": CA_FILE}),
            ]);
        }
        objects.extend(identity(
            &name,
            worker,
            &app,
            watches.then_some(config.workload_cluster_role.as_str()),
        ));
        let mut container = json!({
            "image": config.workload_image,
            "args": args,
            "env": env,
            "volumeMounts": [
                {"name": "ca", "mountPath": "/etc/meridian/ca", "readOnly": true},
                {"name": "kafka", "mountPath": KAFKA_DIR, "readOnly": true},
            ],
        });
        with_ops(&mut container);
        objects.push(deployment(&name, worker, &app, container, store_volumes()));
        objects.push(closed_policy(&name, worker, &app));
    }
    if let Some(notifications) = &region.spec.notifications {
        objects.extend(notifier(&name, notifications, env, config));
    }
    if events.broker == EventsBroker::InCluster {
        objects.splice(
            0..0,
            broker(&name, events.volume_gib.unwrap_or(DEFAULT_KAFKA_GIB), config, region),
        );
    }
    objects
}

/// The notifications consumer and dispatcher (`meridian notifications --region`): the
/// workers' database and Kafka settings (`env`), the patients' contacts as the vault role
/// with the countries' data keys (Secret `vault-keys`, as the records service has them), the
/// channels as `spec.notifications` says, their credentials as files of Secret
/// [`NOTIFICATIONS_SECRET`] (the SMTP user name as a variable).
fn notifier(
    name: &str,
    notifications: &meridian_crds::RegionNotifications,
    mut env: Vec<Value>,
    config: &StackConfig,
) -> Vec<Value> {
    let app = "meridian-notifications";
    env.extend([
        json!({"name": "VAULT_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": super::VAULT_SECRET, "key": "url"}}}),
        json!({"name": "VAULT_KEYS_DIR", "value": super::in_cluster::VAULT_KEYS_DIR}),
    ]);
    if let Some(smtp) = &notifications.smtp {
        let security = match smtp.security {
            meridian_crds::SmtpSecurity::Starttls => "starttls",
            meridian_crds::SmtpSecurity::Tls => "tls",
        };
        env.extend([
            json!({"name": "MERIDIAN_SMTP_HOST", "value": smtp.host}),
            json!({"name": "MERIDIAN_SMTP_PORT", "value": smtp.port.unwrap_or(587).to_string()}),
            json!({"name": "MERIDIAN_SMTP_SECURITY", "value": security}),
            json!({"name": "MERIDIAN_SMTP_FROM", "value": smtp.from}),
        ]);
        if smtp.username_secret_ref.is_some() {
            env.extend([
                json!({"name": "MERIDIAN_SMTP_USERNAME", "valueFrom": {"secretKeyRef": {"name": NOTIFICATIONS_SECRET, "key": "smtp-username"}}}),
                json!({"name": "MERIDIAN_SMTP_PASSWORD_FILE", "value": format!("{NOTIFICATIONS_DIR}/smtp-password")}),
            ]);
        }
    }
    if let Some(sms) = &notifications.sms {
        env.extend([
            json!({"name": "MERIDIAN_SMS_URL", "value": sms.url}),
            json!({"name": "MERIDIAN_SMS_TOKEN_FILE", "value": format!("{NOTIFICATIONS_DIR}/sms-token")}),
        ]);
    }
    let mut args = with_listen(&["notifications", "--region"]);
    args.push(name.to_string());
    let mut container = json!({
        "image": config.workload_image,
        "args": args,
        "env": env,
        "volumeMounts": [
            {"name": "ca", "mountPath": "/etc/meridian/ca", "readOnly": true},
            {"name": "kafka", "mountPath": KAFKA_DIR, "readOnly": true},
            {"name": "vault-keys", "mountPath": super::in_cluster::VAULT_KEYS_DIR, "readOnly": true},
            {"name": "channels", "mountPath": NOTIFICATIONS_DIR, "readOnly": true},
        ],
    });
    with_ops(&mut container);
    let mut volumes = store_volumes();
    volumes.extend([
        json!({"name": "vault-keys", "secret": {
            "secretName": meridian_records::keys::VAULT_KEYS_SECRET,
            "optional": true,
            "defaultMode": 0o400,
        }}),
        // None while the channels need no credentials.
        json!({"name": "channels", "secret": {"secretName": NOTIFICATIONS_SECRET, "optional": true, "defaultMode": 0o400}}),
    ]);
    // It watches the Countries of its Region (their rules and consent settings).
    let mut objects = identity(name, "notifications", app, Some(&config.workload_cluster_role));
    objects.push(deployment(name, "notifications", app, container, volumes));
    objects.push(closed_policy(name, "notifications", app));
    objects
}

/// A worker's arguments: its command, the ops listener, then `rest`.
fn with_listen(command: &[&str]) -> Vec<String> {
    let (command, rest) = command.split_first().expect("a worker has a command");
    let mut args = vec![command.to_string(), format!("--listen=0.0.0.0:{OPS_PORT}")];
    args.extend(rest.iter().map(|a| a.to_string()));
    args
}

/// The ops listener's port and the kubelet's probes of it. Ready once the worker has
/// reached its database and Kafka; restarted when `/healthz` goes unanswered for 30 s (the
/// process is stuck, not merely waiting for its stores: that is `/readyz`'s business).
fn with_ops(container: &mut Value) {
    container["ports"] = json!([{"name": "http-ops", "containerPort": OPS_PORT, "protocol": "TCP"}]);
    container["readinessProbe"] = json!({
        "httpGet": {"path": "/readyz", "port": "http-ops"},
        "periodSeconds": 5,
        "failureThreshold": 3,
    });
    container["livenessProbe"] = json!({
        "httpGet": {"path": "/healthz", "port": "http-ops"},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    });
}

/// The volumes every worker has: the stores' CA, and Secret [`KAFKA_SECRET`].
fn store_volumes() -> Vec<Value> {
    vec![
        json!({"name": "ca", "secret": {"secretName": "ca", "optional": true}}),
        json!({"name": "kafka", "secret": {"secretName": KAFKA_SECRET, "defaultMode": 0o400}}),
    ]
}

/// A NetworkPolicy that lets nothing in: the workers serve nothing but their ops listener.
/// The kubelet's probes come from the node, which NetworkPolicies do not restrict; a
/// Prometheus that scrapes `http-ops` needs a policy of its own admitting its namespace to
/// [`OPS_PORT`] (added by whoever runs it: which namespace that is, only they know; the
/// operator's namespace does not scrape, so admitting it would open a port for no one).
fn closed_policy(region: &str, component: &str, app: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata(component, region, app),
        "spec": {
            "podSelector": {"matchLabels": selector(region, app)},
            "policyTypes": ["Ingress"],
            "ingress": [],
        },
    })
}

/// The `inCluster` broker: StatefulSet, Service, NetworkPolicy (see the module's doc).
fn broker(name: &str, volume_gib: i32, config: &StackConfig, region: &Region) -> Vec<Value> {
    let advertised = format!("tcp://{}", kafka_bootstrap(name));
    let listen = format!("tcp://0.0.0.0:{KAFKA_PORT}");
    let broker = statefulset(
        name,
        "kafka",
        // A broker started before ran as root and left its log root's: the kubelet hands
        // the volume to the group once (fsGroup), where the volume type supports it.
        json!({
            "securityContext": pod_security(BROKER_USER),
            // The image's TMP, for SQLite's temporary files; the root file system is
            // read-only, and the log is on the volume.
            "volumes": [scratch("tmp", "256Mi")],
        }),
        json!({
            "image": config.kafka_image,
            // The log in SQLite under the working directory: /data, the volume.
            "workingDir": "/",
            "args": [
                "broker",
                "--listener-url", listen,
                "--advertised-listener-url", advertised,
                "--storage-engine", "sqlite://data/tansu.db",
            ],
            "ports": [{"name": "kafka", "containerPort": KAFKA_PORT}],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            "resources": resources("100m", "128Mi", "512Mi"),
            // tansu serves no health endpoint; it listens once its storage is open.
            "readinessProbe": {"tcpSocket": {"port": KAFKA_PORT}, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": KAFKA_PORT}, "periodSeconds": 20, "failureThreshold": 3},
        }),
        "/data",
        volume_gib,
    );
    let clients = clients(region);
    vec![
        broker,
        service(name, "kafka", "kafka", KAFKA_PORT),
        store_policy(
            name,
            "kafka",
            KAFKA_PORT,
            &clients.iter().map(String::as_str).collect::<Vec<_>>(),
            config,
        ),
    ]
}

/// What [`KAFKA_SECRET`] holds for a connection the operator read from `spec.events`.
pub fn kafka_secret(connection: &meridian_events::kafka::Connection) -> super::SecretData {
    let mut data = super::SecretData::new();
    data.insert("bootstrap".into(), connection.bootstrap.clone());
    if let Some(meridian_events::kafka::Ca::Pem(pem)) = &connection.ca {
        data.insert("ca.crt".into(), pem.clone());
    }
    if let Some(sasl) = &connection.sasl {
        data.insert("username".into(), sasl.username.clone());
        data.insert("password".into(), sasl.password.clone());
    }
    data
}

#[cfg(test)]
mod tests {
    use super::super::rendered::{example_region, find, names};
    use super::*;

    fn region(events: &str) -> Region {
        let mut region = example_region();
        region.spec.events = (!events.is_empty()).then(|| serde_yaml_ng::from_str(events).unwrap());
        region
    }

    #[test]
    fn without_events_there_are_no_workers() {
        assert!(objects(&region(""), &StackConfig::default()).is_empty());
        assert!(clients(&region("")).is_empty());
    }

    #[test]
    fn the_workers_reach_kafka_through_the_regions_secret_and_serve_nothing() {
        let r = region(
            "{broker: external, bootstrapServersSecretRef: {name: kafka, key: bootstrap}, tls: true,
              caSecretRef: {name: kafka, key: ca.crt},
              sasl: {mechanism: SCRAM-SHA-512, usernameSecretRef: {name: kafka, key: user},
                     passwordSecretRef: {name: kafka, key: password}}}",
        );
        let objects = objects(&r, &StackConfig::default());
        assert_eq!(
            names(&objects),
            [
                "ServiceAccount/relay",
                "Deployment/relay",
                "NetworkPolicy/relay",
                "ServiceAccount/billing",
                "ClusterRoleBinding/meridian-region-eu-central-1-billing",
                "Deployment/billing",
                "NetworkPolicy/billing",
                "ServiceAccount/analytics",
                "Deployment/analytics",
                "NetworkPolicy/analytics",
                "ServiceAccount/search-indexer",
                "Deployment/search-indexer",
                "NetworkPolicy/search-indexer",
            ]
        );
        let relay = &find(&objects, "Deployment", "relay")["spec"]["template"]["spec"];
        let container = &relay["containers"][0];
        assert_eq!(container["args"], json!(["relay", "--listen=0.0.0.0:9090"]));
        let env = container["env"].as_array().unwrap();
        let value = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
        assert_eq!(
            value("MERIDIAN_KAFKA_BOOTSTRAP").unwrap()["valueFrom"]["secretKeyRef"],
            json!({"name": "kafka", "key": "bootstrap"})
        );
        assert_eq!(value("MERIDIAN_KAFKA_TLS").unwrap()["value"], "true");
        assert_eq!(
            value("MERIDIAN_KAFKA_CA_FILE").unwrap()["value"],
            "/etc/meridian/kafka/ca.crt"
        );
        assert_eq!(
            value("MERIDIAN_KAFKA_SASL_MECHANISM").unwrap()["value"],
            "SCRAM-SHA-512"
        );
        assert_eq!(
            value("MERIDIAN_KAFKA_PASSWORD_FILE").unwrap()["value"],
            "/etc/meridian/kafka/password"
        );
        // The password is a file, never a variable; the database is the workload role's.
        assert!(
            env.iter()
                .all(|e| e.to_string().find("\"password\"").is_none() || e["name"] == "MERIDIAN_KAFKA_PASSWORD_FILE")
        );
        assert_eq!(
            value("DATABASE_URL").unwrap()["valueFrom"]["secretKeyRef"]["name"],
            "postgres-workload"
        );
        assert_eq!(
            find(&objects, "ServiceAccount", "relay")["automountServiceAccountToken"],
            false
        );
        let billing = &find(&objects, "Deployment", "billing")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            billing["args"],
            json!(["billing", "--listen=0.0.0.0:9090", "--region", "eu-central-1"])
        );
        assert_eq!(
            find(&objects, "NetworkPolicy", "analytics")["spec"]["ingress"],
            json!([])
        );
        assert_eq!(
            clients(&r),
            [
                "meridian-relay",
                "meridian-billing",
                "meridian-analytics",
                "meridian-search-indexer"
            ]
        );
        // The indexer alone reaches the search engine, as the booking service does.
        let indexer = &find(&objects, "Deployment", "search-indexer")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(indexer["args"], json!(["indexer", "--listen=0.0.0.0:9090"]));
        let indexer_env = indexer["env"].as_array().unwrap();
        assert!(indexer_env.iter().any(|e| e["name"] == "SEARCH_URL"));
        assert!(!env.iter().any(|e| e["name"] == "SEARCH_URL"));
        assert_eq!(search_clients(&r), ["meridian-search-indexer"]);
    }

    #[test]
    fn every_worker_is_probed_on_its_ops_listener_and_takes_the_flag() {
        use clap::{Args, Command};
        let mut r = region("{broker: inCluster}");
        r.spec.notifications = Some(
            serde_yaml_ng::from_str(
                "{sms: {url: 'https://sms.example/send', tokenSecretRef: {name: sms, key: token}}}",
            )
            .unwrap(),
        );
        let objects = objects(&r, &StackConfig::default());
        let workers = ["relay", "billing", "analytics", "search-indexer", "notifications"];
        for worker in workers {
            let container = &find(&objects, "Deployment", worker)["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(
                container["ports"],
                json!([{"name": "http-ops", "containerPort": 9090, "protocol": "TCP"}]),
                "{worker}"
            );
            assert_eq!(
                container["readinessProbe"]["httpGet"],
                json!({"path": "/readyz", "port": "http-ops"})
            );
            assert_eq!(
                container["livenessProbe"]["httpGet"],
                json!({"path": "/healthz", "port": "http-ops"})
            );
            // Still closed to everyone: probes come from the node.
            assert_eq!(find(&objects, "NetworkPolicy", worker)["spec"]["ingress"], json!([]));

            // The arguments are what the worker's command line takes (the subcommand is
            // the binary's; each worker's options are parsed as `meridian <command>` would).
            let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
            // What the container's environment gives it, on the command line instead.
            let stores = ["--database-url=postgres://x@db/x", "--kafka-bootstrap=kafka:9092"];
            let (command, given): (Command, Vec<&str>) = match args[0].as_str() {
                "relay" | "analytics" => (
                    meridian_events::worker::WorkerOptions::augment_args(Command::new("w")),
                    stores.to_vec(),
                ),
                "billing" => (
                    meridian_billing::serve::BillingOptions::augment_args(Command::new("w")),
                    stores.to_vec(),
                ),
                "indexer" => (
                    meridian_search::indexer::IndexerOptions::augment_args(Command::new("w")),
                    [&stores[..], &["--search-url=https://search:9200"]].concat(),
                ),
                "notifications" => (
                    meridian_notifications::serve::NotificationsOptions::augment_args(Command::new("w")),
                    [
                        &stores[..],
                        &[
                            "--vault-database-url=postgres://x@db/x",
                            "--vault-keys-dir=/keys",
                            "--sms-url=https://sms.example/send",
                            "--sms-token-file=/token",
                        ],
                    ]
                    .concat(),
                ),
                other => panic!("unknown worker command {other}"),
            };
            // args[0], the subcommand, stands where the binary's name goes.
            let mut line = args.clone();
            line.extend(given.into_iter().map(String::from));
            let matches = command
                .ignore_errors(false)
                .try_get_matches_from(&line)
                .unwrap_or_else(|e| panic!("{worker}: {args:?}: {e}"));
            assert_eq!(
                matches.get_one::<std::net::SocketAddr>("listen").unwrap().to_string(),
                "0.0.0.0:9090",
                "{worker}"
            );
        }
    }

    #[test]
    fn plaintext_without_credentials_sets_nothing_more() {
        let r = region("{broker: external, bootstrapServersSecretRef: {name: kafka, key: bootstrap}}");
        let objects = objects(&r, &StackConfig::default());
        let env = find(&objects, "Deployment", "analytics")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        assert_eq!(env, ["DATABASE_URL", "DATABASE_CA_FILE", "MERIDIAN_KAFKA_BOOTSTRAP"]);
    }

    #[test]
    fn an_in_cluster_broker_keeps_its_log_on_its_volume_and_admits_the_workers_only() {
        let r = region("{broker: inCluster, volumeGib: 20}");
        let objects = objects(&r, &StackConfig::default());
        let kafka = find(&objects, "StatefulSet", "kafka");
        assert_eq!(kafka["metadata"]["namespace"], "meridian-region-eu-central-1");
        let container = &kafka["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "ghcr.io/tansu-io/tansu:0.6.0");
        assert_eq!(
            container["args"],
            json!([
                "broker",
                "--listener-url",
                "tcp://0.0.0.0:9092",
                "--advertised-listener-url",
                "tcp://kafka.meridian-region-eu-central-1.svc:9092",
                "--storage-engine",
                "sqlite://data/tansu.db",
            ])
        );
        assert_eq!(
            container["volumeMounts"][0],
            json!({"name": "data", "mountPath": "/data"})
        );
        // Not as the image's root: a numeric account that the volume's group lets write.
        let pod = &kafka["spec"]["template"]["spec"]["securityContext"];
        assert_eq!((&pod["runAsUser"], &pod["fsGroup"]), (&json!(65532), &json!(65532)));
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["volumeMounts"][1],
            json!({"name": "tmp", "mountPath": "/tmp"})
        );
        let claim = &kafka["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"];
        assert_eq!(claim, "20Gi");
        assert_eq!(
            kafka["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            "Retain"
        );
        assert_eq!(find(&objects, "Service", "kafka")["spec"]["ports"][0]["port"], 9092);
        let admitted: Vec<&Value> = find(&objects, "NetworkPolicy", "kafka")["spec"]["ingress"][0]["from"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(admitted.len(), 5, "the four workers and the operator: {admitted:?}");
        assert_eq!(
            admitted[0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "meridian-relay"
        );
        assert_eq!(
            kafka_bootstrap("eu-central-1"),
            "kafka.meridian-region-eu-central-1.svc:9092"
        );
        // The workers are still there, reaching it through Secret kafka like any other.
        assert!(
            objects
                .iter()
                .any(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "relay")
        );
    }

    #[test]
    fn the_notifications_consumer_gets_its_channels_the_vault_and_its_credentials_as_files() {
        let mut r = region("{broker: inCluster}");
        r.spec.notifications = Some(
            serde_yaml_ng::from_str(
                "{smtp: {host: smtp.example, from: 'Meridian <no-reply@clinic.example>',
                         usernameSecretRef: {name: mail, key: user}, passwordSecretRef: {name: mail, key: password}},
                  sms: {url: 'https://sms.example/send', tokenSecretRef: {name: sms, key: token}}}",
            )
            .unwrap(),
        );
        let objects = objects(&r, &StackConfig::default());
        let container = &find(&objects, "Deployment", "notifications")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["args"],
            json!(["notifications", "--listen=0.0.0.0:9090", "--region", "eu-central-1"])
        );
        let env = container["env"].as_array().unwrap();
        let value = |name: &str| {
            env.iter()
                .find(|e| e["name"] == name)
                .unwrap_or_else(|| panic!("no {name}"))
                .clone()
        };
        assert_eq!(
            value("VAULT_DATABASE_URL")["valueFrom"]["secretKeyRef"]["name"],
            "postgres-vault"
        );
        assert_eq!(value("MERIDIAN_SMTP_HOST")["value"], "smtp.example");
        assert_eq!(value("MERIDIAN_SMTP_PORT")["value"], "587");
        assert_eq!(value("MERIDIAN_SMTP_SECURITY")["value"], "starttls");
        assert_eq!(
            value("MERIDIAN_SMTP_USERNAME")["valueFrom"]["secretKeyRef"],
            json!({"name": "notifications", "key": "smtp-username"})
        );
        assert_eq!(
            value("MERIDIAN_SMTP_PASSWORD_FILE")["value"],
            "/etc/meridian/notifications/smtp-password"
        );
        assert_eq!(
            value("MERIDIAN_SMS_TOKEN_FILE")["value"],
            "/etc/meridian/notifications/sms-token"
        );
        assert_eq!(
            value("MERIDIAN_KAFKA_BOOTSTRAP")["valueFrom"]["secretKeyRef"]["name"],
            "kafka"
        );
        // No password or token in a variable.
        assert!(
            !env.iter()
                .any(|e| e["name"] == "MERIDIAN_SMTP_PASSWORD" || e["name"] == "MERIDIAN_SMS_TOKEN")
        );
        assert_eq!(
            find(&objects, "NetworkPolicy", "notifications")["spec"]["ingress"],
            json!([])
        );
        assert!(clients(&r).contains(&"meridian-notifications".to_string()));
        // Without spec.notifications, no such worker.
        let plain = super::objects(&region("{broker: inCluster}"), &StackConfig::default());
        assert!(!plain.iter().any(|o| o["metadata"]["name"] == "notifications"));
    }

    #[test]
    fn the_secret_holds_the_connection_as_read() {
        use meridian_events::kafka::{Ca, Connection, Sasl};
        let data = kafka_secret(&Connection {
            bootstrap: "b-1.msk:9096".into(),
            tls: true,
            ca: Some(Ca::Pem("PEM".into())),
            sasl: Some(Sasl {
                mechanism: "SCRAM-SHA-512",
                username: "relay".into(),
                password: "s3cret".into(),
            }),
        });
        assert_eq!(
            data.into_iter().collect::<Vec<_>>(),
            [
                ("bootstrap".to_string(), "b-1.msk:9096".to_string()),
                ("ca.crt".into(), "PEM".into()),
                ("password".into(), "s3cret".into()),
                ("username".into(), "relay".into()),
            ]
        );
    }
}
