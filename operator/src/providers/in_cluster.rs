//! The `inCluster` provider's stack (kind and other clusters without a cloud database): a
//! namespace per Region, `meridian-region-<name>`, holding PostgreSQL as a StatefulSet with
//! a PersistentVolumeClaim, its Service and generated password Secret; a single-node
//! OpenSearch for the countries' search indexes, also a StatefulSet with its own volume;
//! the Region's booking and records workloads (Deployment, Service, ServiceAccount each); and NetworkPolicies
//! that admit traffic to the workload only from the gateway and the operator, and to
//! PostgreSQL and OpenSearch only from the workload and the operator. Built here as plain
//! objects; applied with server-side apply.
//!
//! Both stores speak TLS only, with certificates from the operator: a CA per Region (Secret
//! `tls-ca`, made once and kept), and a server certificate per store for its Service's
//! names (`postgres-tls`, `opensearch-tls`). The operator and the workload verify them
//! against the CA (Secret `ca`, the certificate alone, mounted into the workload).
//! PostgreSQL takes no connection without TLS; OpenSearch runs its security plugin in
//! TLS-only mode (`plugins.security.ssl_only`): HTTPS and encrypted transport, no users.
//! The NetworkPolicy is what keeps others out, and the index holds the practitioner
//! directory, not patient data. Its URL reaches the workload through a Secret (`search`),
//! as the `aws` provider's does.
//!
//! No object that holds data (the namespace, the StatefulSet's volume claims, the Secret)
//! has an owner reference to the Region: garbage collection must never delete patient data.
//! What goes on deletion is the reconciler's decision, by `deletionPolicy`.

use kube::Client;
use meridian_crds::{Region, RegionResources};
use serde_json::{Value, json};

use super::certificates::{self, Ca, ServerCert};
use super::objects::Objects;
use super::{Endpoint, ProviderError};
use crate::FIELD_MANAGER;

/// Images and neighbours of every in-cluster stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackConfig {
    pub postgres_image: String,
    pub opensearch_image: String,
    /// The Kafka-compatible broker of Regions whose `spec.events.broker` is `inCluster`.
    pub kafka_image: String,
    pub workload_image: String,
    /// Where the operator runs (it migrates the database and reads the Secret).
    pub operator_namespace: String,
    /// Where the Gateway runs (the only other way into the workload).
    pub gateway_namespace: String,
    /// The identity provider the workload checks tokens against.
    pub oidc_issuer: String,
    pub oidc_jwks_url: String,
    /// The ClusterRole (installed with the operator) that lets a workload watch Countries;
    /// each Region's workload is bound to it.
    pub workload_cluster_role: String,
    /// The ClusterRole the records services are bound to instead: Countries, and
    /// TokenReviews of other Regions' records services' tokens.
    pub records_cluster_role: String,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            postgres_image: "postgres:15".into(),
            opensearch_image: "opensearchproject/opensearch:2.13.0".into(),
            kafka_image: "ghcr.io/tansu-io/tansu:0.6.0".into(),
            workload_image: "meridian:0.1.0".into(),
            operator_namespace: "meridian-system".into(),
            gateway_namespace: "meridian-system".into(),
            oidc_issuer: "https://idp.example".into(),
            oidc_jwks_url: "https://idp.example/.well-known/jwks.json".into(),
            workload_cluster_role: "meridian-workload".into(),
            records_cluster_role: "meridian-records".into(),
        }
    }
}

/// The database and user every stack's PostgreSQL serves.
pub const DATABASE: &str = "meridian";
/// Storage of the database volume when the Region does not size it.
const DEFAULT_STORAGE_GIB: i32 = 10;
/// Storage of the search volume when the Region does not size it.
const DEFAULT_SEARCH_GIB: i32 = 10;

/// The Region's namespace.
pub fn namespace(region: &str) -> String {
    format!("meridian-region-{region}")
}

/// The connection URL the stack's Secret publishes, for the operator and the workload:
/// TLS, the server's certificate and name verified.
pub fn database_url(region: &str, password: &str) -> String {
    format!(
        "postgres://{DATABASE}:{password}@postgres.{}.svc:5432/{DATABASE}?sslmode=verify-full",
        namespace(region)
    )
}

/// Where the stack's OpenSearch answers, inside the cluster.
pub fn search_url(region: &str) -> String {
    format!("https://opensearch.{}.svc:9200", namespace(region))
}

/// The names a store's Service answers to, the one the URLs use first.
pub fn service_names(region: &str, component: &str) -> Vec<String> {
    let ns = namespace(region);
    vec![
        format!("{component}.{ns}.svc"),
        format!("{component}.{ns}.svc.cluster.local"),
        format!("{component}.{ns}"),
        component.to_string(),
    ]
}

/// Where the workload finds the CA certificate of its Region's stores (Secret `ca`).
pub const CA_FILE: &str = "/etc/meridian/ca/ca.crt";
/// Where PostgreSQL reads its certificate, key and client rules: copied there by an init
/// container running as the server's account, so the copies are its own with mode 0600.
/// PostgreSQL refuses a key that its group or others can read, and a Secret's files belong
/// to root (readable by the pod's `fsGroup`, not owned by the server).
const POSTGRES_TLS_DIR: &str = "/tls";
/// Where OpenSearch reads its certificate and key: under its configuration directory, the
/// only place its security plugin reads from.
const OPENSEARCH_TLS_DIR: &str = "/usr/share/opensearch/config/tls";
/// Annotation on the stores' pod templates naming their certificate: a new certificate
/// rolls the pod, which reads it at start.
const CERTIFICATE_ANNOTATION: &str = "platform.meridian.dev/certificate";

/// The account (uid and gid) the `meridian` image runs as: its Dockerfile's `USER`.
pub const WORKLOAD_USER: i64 = 65532;
/// The `postgres` account of the official PostgreSQL image (Debian variant), which owns the
/// data directory of every stack started before pods ran as it.
const POSTGRES_USER: i64 = 999;
/// The `opensearch` account of the OpenSearch image (its Dockerfile's `USER 1000`).
const OPENSEARCH_USER: i64 = 1000;

/// The pod-level half of Pod Security `restricted` for a pod whose processes run as `user`
/// (uid and gid): never root, the runtime's default seccomp profile, and `user` as the
/// pod's `fsGroup`. The kubelet hands the pod's volumes to that group: the data volume
/// becomes writable for `user` (recursively only while its top directory is not yet the
/// group's, so a volume that root wrote before is handed over once), and the files of
/// Secret volumes, mode 0400 and owned by root, become readable to the group (0440), hence
/// to `user`.
pub(super) fn pod_security(user: i64) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// Completes `pod` (a pod template's spec) to Pod Security `restricted`: whatever it does
/// not say itself, it gets; every container and init container runs without privilege
/// escalation, without capabilities, and with a read-only root file system (a container
/// whose image must write under its root says `readOnlyRootFilesystem: false` itself).
/// The user comes from [`pod_security`], which every pod of a stack names.
pub(super) fn restrict(pod: &mut Value) {
    fill(
        &mut pod["securityContext"],
        json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}),
    );
    for list in ["initContainers", "containers"] {
        for container in pod[list].as_array_mut().into_iter().flatten() {
            fill(
                &mut container["securityContext"],
                json!({
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                }),
            );
        }
    }
}

/// Sets each key of `defaults` that `target` (an object, or null) does not have.
fn fill(target: &mut Value, defaults: Value) {
    if target.is_null() {
        *target = json!({});
    }
    if let (Some(target), Value::Object(defaults)) = (target.as_object_mut(), defaults) {
        for (key, value) in defaults {
            target.entry(key).or_insert(value);
        }
    }
}

/// Resources of a container: `cpu` and `memory` requested, `memory` its limit (no CPU
/// limit: a throttled process answers its probes late, and an idle node's CPU is free).
pub(super) fn resources(cpu: &str, memory: &str, memory_limit: &str) -> Value {
    json!({"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}})
}

/// `pg_isready` (over the unix socket) every `period` seconds, failing after `failures`
/// misses in a row.
fn pg_isready(period: u32, failures: u32) -> Value {
    json!({
        "exec": {"command": ["pg_isready", "-U", DATABASE, "-d", DATABASE]},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    })
}

/// A scratch directory in the pod, for a process with a read-only root file system.
pub(super) fn scratch(name: &str, size: &str) -> Value {
    json!({"name": name, "emptyDir": {"sizeLimit": size}})
}

/// The certificates of a stack: made (or read back) by [`InClusterStacks::ensure`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackTls {
    pub ca: Ca,
    pub postgres: ServerCert,
    pub opensearch: ServerCert,
}

/// A short fingerprint of `pem`, for the pod template annotation.
fn fingerprint(pem: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(pem.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The Secret holding `component`'s server certificate, with the CA that signed it and
/// the names it was made for (so that a changed CA or name list makes a new one).
fn server_secret(region: &str, component: &str, cert: &ServerCert, ca: &Ca) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": metadata(&format!("{component}-tls"), region, component),
        "type": "kubernetes.io/tls",
        "stringData": {
            (certificates::TLS_CERT): cert.cert_pem,
            (certificates::TLS_KEY): cert.key_pem,
            (certificates::CA_CERT): ca.cert_pem,
            (certificates::EXPIRES): cert.expires,
            "names": service_names(region, component).join(","),
        },
    })
}

pub(super) fn labels(region: &str, component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": region,
        "app.kubernetes.io/part-of": "meridian",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
    })
}

pub(super) fn selector(region: &str, component: &str) -> Value {
    json!({"app.kubernetes.io/name": component, "app.kubernetes.io/instance": region})
}

pub(super) fn metadata(name: &str, region: &str, component: &str) -> Value {
    json!({"name": name, "namespace": namespace(region), "labels": labels(region, component)})
}

/// Every object of `region`'s stack, in the order they are applied. `password` is the
/// database password and `tls` the certificates: generated once, then read back from the
/// Secrets.
pub fn stack(region: &Region, config: &StackConfig, password: &str, tls: &StackTls) -> Vec<Value> {
    let name = region.metadata.name.clone().unwrap_or_default();
    let storage = region
        .spec
        .database
        .as_ref()
        .and_then(|d| d.storage_gib)
        .unwrap_or(DEFAULT_STORAGE_GIB);
    let search_storage = region
        .spec
        .search
        .as_ref()
        .and_then(|s| s.volume_gib)
        .unwrap_or(DEFAULT_SEARCH_GIB);
    // Run as the server's account (see [`POSTGRES_TLS_DIR`]): its copies are its own, no
    // chown (nor root) needed.
    let postgres_tls_files = format!(
        "install -m 0600 -t {POSTGRES_TLS_DIR} /tls-secret/{crt} /tls-secret/{key} && \
         printf '%s\\n' 'local all all trust' 'hostssl all all all scram-sha-256' > {POSTGRES_TLS_DIR}/pg_hba.conf",
        crt = certificates::TLS_CERT,
        key = certificates::TLS_KEY,
    );
    let tls_file = |file: &str| format!("{POSTGRES_TLS_DIR}/{file}");
    let opensearch_file = |key: &str| format!("tls/{key}");
    let mut postgres = statefulset(
        &name,
        "postgres",
        // As the image's `postgres` account, which owns the data directory of every stack
        // started before (the image's entry point used to switch to it from root). Its
        // group (fsGroup) reads the Secret's 0400 files for the init container's copy.
        json!({
            "securityContext": pod_security(POSTGRES_USER),
            "initContainers": [{
                "name": "tls",
                "image": config.postgres_image,
                "command": ["sh", "-c", postgres_tls_files],
                "volumeMounts": [
                    {"name": "tls-secret", "mountPath": "/tls-secret", "readOnly": true},
                    {"name": "tls", "mountPath": POSTGRES_TLS_DIR},
                ],
                "resources": resources("10m", "16Mi", "64Mi"),
            }],
            "volumes": [
                {"name": "tls-secret", "secret": {"secretName": "postgres-tls", "defaultMode": 0o400}},
                {"name": "tls", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                // With the root file system read-only, the server writes to its volume
                // (PGDATA) and to these two only: its socket and its lock file, and the
                // temporary files of the image's entry point and of psql.
                scratch("run", "16Mi"),
                scratch("tmp", "256Mi"),
            ],
        }),
        json!({
            "image": config.postgres_image,
            // TLS only: `hostssl` is the one rule for TCP clients, so a client without TLS
            // is turned away by the server too.
            "args": [
                "-c", "ssl=on",
                "-c", format!("ssl_cert_file={}", tls_file(certificates::TLS_CERT)),
                "-c", format!("ssl_key_file={}", tls_file(certificates::TLS_KEY)),
                "-c", format!("hba_file={}", tls_file("pg_hba.conf")),
            ],
            "ports": [{"name": "postgres", "containerPort": 5432}],
            "env": [
                {"name": "POSTGRES_USER", "value": DATABASE},
                {"name": "POSTGRES_DB", "value": DATABASE},
                {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "postgres", "key": "password"}}},
                {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
            ],
            "volumeMounts": [
                {"name": "tls", "mountPath": POSTGRES_TLS_DIR, "readOnly": true},
                {"name": "run", "mountPath": "/var/run/postgresql"},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            "resources": resources("250m", "512Mi", "2Gi"),
            // Over the unix socket, as the server's own account: up once initdb (first
            // start) or crash recovery (after an unclean stop) is done, which may take
            // minutes on a big database; until then neither liveness nor readiness counts.
            "startupProbe": pg_isready(5, 120),
            "readinessProbe": pg_isready(5, 3),
            "livenessProbe": pg_isready(15, 4),
        }),
        "/var/lib/postgresql/data",
        storage,
    );
    postgres["spec"]["template"]["metadata"]["annotations"] =
        json!({CERTIFICATE_ANNOTATION: fingerprint(&tls.postgres.cert_pem)});
    let mut opensearch = statefulset(
        &name,
        "opensearch",
        // The image runs as uid 1000 (group 1000): the volume must be writable for it, and
        // the key readable by its group only.
        json!({
            "securityContext": pod_security(OPENSEARCH_USER),
            "volumes": [{"name": "tls", "secret": {"secretName": "opensearch-tls", "defaultMode": 0o440}}],
        }),
        json!({
            "image": config.opensearch_image,
            "ports": [{"name": "https", "containerPort": 9200}],
            "env": [
                // One node: no cluster formation, and no bootstrap checks
                // (vm.max_map_count) that kind nodes would fail.
                {"name": "discovery.type", "value": "single-node"},
                // Nor a need for a larger vm.max_map_count at all: raising it takes a
                // privileged init container (sysctl on the node), which Pod Security
                // `restricted` refuses. Without mmap the store reads its files through
                // NIO: the same files on the volume, a little slower on large indexes.
                {"name": "node.store.allow_mmap", "value": "false"},
                // The security plugin for TLS only (no users, no demo certificates):
                // HTTPS for clients, TLS between nodes, with the operator's certificate.
                {"name": "DISABLE_INSTALL_DEMO_CONFIG", "value": "true"},
                {"name": "plugins.security.ssl_only", "value": "true"},
                {"name": "plugins.security.ssl.http.enabled", "value": "true"},
                {"name": "plugins.security.ssl.http.pemcert_filepath", "value": opensearch_file(certificates::TLS_CERT)},
                {"name": "plugins.security.ssl.http.pemkey_filepath", "value": opensearch_file(certificates::TLS_KEY)},
                {"name": "plugins.security.ssl.http.pemtrustedcas_filepath", "value": opensearch_file(certificates::CA_CERT)},
                {"name": "plugins.security.ssl.transport.pemcert_filepath", "value": opensearch_file(certificates::TLS_CERT)},
                {"name": "plugins.security.ssl.transport.pemkey_filepath", "value": opensearch_file(certificates::TLS_KEY)},
                {"name": "plugins.security.ssl.transport.pemtrustedcas_filepath", "value": opensearch_file(certificates::CA_CERT)},
                {"name": "plugins.security.ssl.transport.enforce_hostname_verification", "value": "false"},
                {"name": "OPENSEARCH_JAVA_OPTS", "value": "-Xms512m -Xmx512m"},
            ],
            "volumeMounts": [{"name": "tls", "mountPath": OPENSEARCH_TLS_DIR, "readOnly": true}],
            // Not a read-only root file system: the image writes under its home at start
            // and while it runs (logs/, the performance analyzer's files, the keystore the
            // node creates in config/ when there is none), and config/ holds the image's
            // own settings, so an emptyDir cannot simply stand in for it. Everything else of
            // `restricted` holds.
            "securityContext": {"readOnlyRootFilesystem": false},
            "resources": resources("250m", "1Gi", "1536Mi"),
            // The JVM and the security plugin take a while to start, more on a cold node.
            "startupProbe": {
                "httpGet": {"path": "/_cluster/health?local=true", "port": 9200, "scheme": "HTTPS"},
                "periodSeconds": 10,
                "timeoutSeconds": 5,
                "failureThreshold": 30,
            },
            "readinessProbe": {
                "httpGet": {"path": "/_cluster/health?local=true", "port": 9200, "scheme": "HTTPS"},
                "periodSeconds": 10,
                "timeoutSeconds": 5,
            },
            // Alive while it accepts connections: a red or yellow index is not a reason to
            // restart the node.
            "livenessProbe": {"tcpSocket": {"port": 9200}, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3},
        }),
        "/usr/share/opensearch/data",
        search_storage,
    );
    opensearch["spec"]["template"]["metadata"]["annotations"] =
        json!({CERTIFICATE_ANNOTATION: fingerprint(&tls.opensearch.cert_pem)});
    let mut postgres_clients = vec!["meridian-booking".to_string(), "meridian-records".to_string()];
    postgres_clients.extend(super::event_backbone::clients(region));
    let mut search_clients = vec!["meridian-booking".to_string()];
    search_clients.extend(super::event_backbone::search_clients(region));
    vec![
        namespace_object(&name),
        // The CA with its key, for the operator only; nothing mounts it.
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": metadata("tls-ca", &name, "meridian-region"),
            "type": "Opaque",
            "stringData": {(certificates::CA_CERT): tls.ca.cert_pem, (certificates::CA_KEY): tls.ca.key_pem},
        }),
        // The CA certificate alone, for the workload.
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": metadata("ca", &name, "meridian-region"),
            "type": "Opaque",
            "stringData": {(certificates::CA_CERT): tls.ca.cert_pem},
        }),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": metadata("postgres", &name, "postgres"),
            "type": "Opaque",
            "stringData": {"username": DATABASE, "password": password, "url": database_url(&name, password)},
        }),
        server_secret(&name, "postgres", &tls.postgres, &tls.ca),
        service(&name, "postgres", "postgres", 5432),
        postgres,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": metadata("search", &name, "opensearch"),
            "type": "Opaque",
            "stringData": {"url": search_url(&name)},
        }),
        server_secret(&name, "opensearch", &tls.opensearch, &tls.ca),
        service(&name, "opensearch", "https", 9200),
        opensearch,
    ]
    .into_iter()
    .chain(workload(region, config))
    .chain([
        store_policy(
            &name,
            "postgres",
            5432,
            &postgres_clients.iter().map(String::as_str).collect::<Vec<_>>(),
            config,
        ),
        store_policy(
            &name,
            "opensearch",
            9200,
            &search_clients.iter().map(String::as_str).collect::<Vec<_>>(),
            config,
        ),
    ])
    .collect()
}

/// A one-replica StatefulSet `component` running `container` (its name and volume mount
/// added here) in a pod with `pod` settings, completed to Pod Security `restricted`
/// ([`restrict`]; `pod` names its user with [`pod_security`]); its volume claim `data` of
/// `storage_gib`, mounted at `mount`, outlives the StatefulSet unless a Delete policy
/// removes the namespace.
pub(super) fn statefulset(
    region: &str,
    component: &str,
    pod: Value,
    mut container: Value,
    mount: &str,
    storage_gib: i32,
) -> Value {
    container["name"] = component.into();
    let mut mounts = vec![json!({"name": "data", "mountPath": mount})];
    if let Some(more) = container["volumeMounts"].as_array() {
        mounts.extend(more.iter().cloned());
    }
    container["volumeMounts"] = Value::Array(mounts);
    let mut pod = pod;
    pod["containers"] = json!([container]);
    restrict(&mut pod);
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": metadata(component, region, component),
        "spec": {
            "serviceName": component,
            "replicas": 1,
            "selector": {"matchLabels": selector(region, component)},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": labels(region, component)},
                "spec": pod,
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data", "labels": labels(region, component)},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": format!("{storage_gib}Gi")}},
                },
            }],
        },
    })
}

/// The Service in front of `component`'s `port`.
pub(super) fn service(region: &str, component: &str, port_name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(component, region, component),
        "spec": {
            "selector": selector(region, component),
            "ports": [{"name": port_name, "port": port, "targetPort": port}],
        },
    })
}

/// Admits to store `component`'s `port` only the Region's workloads named in `clients` and
/// the operator.
pub(super) fn store_policy(region: &str, component: &str, port: u16, clients: &[&str], config: &StackConfig) -> Value {
    let from: Vec<Value> = clients
        .iter()
        .map(|client| json!({"podSelector": {"matchLabels": selector(region, client)}}))
        .chain([from_namespace(&config.operator_namespace)])
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata(component, region, component),
        "spec": {
            "podSelector": {"matchLabels": selector(region, component)},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": from,
                "ports": [{"protocol": "TCP", "port": port}],
            }],
        },
    })
}

/// The Region's namespace, as an object.
pub fn namespace_object(region: &str) -> Value {
    let mut labels = labels(region, "meridian-region");
    // Every pod of a stack passes Pod Security `restricted`; the namespace has the API
    // server enforce it, so nothing weaker (a hand-made debug pod, a later change of ours)
    // runs beside the Region's data.
    for mode in ["enforce", "audit", "warn"] {
        labels[format!("pod-security.kubernetes.io/{mode}")] = "restricted".into();
        labels[format!("pod-security.kubernetes.io/{mode}-version")] = "latest".into();
    }
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace(region), "labels": labels},
    })
}

fn from_namespace(namespace: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}})
}

/// Where the records service finds the vault's data keys: Secret `vault-keys`, one file per
/// entry.
pub const VAULT_KEYS_DIR: &str = "/var/run/meridian/vault-keys";
/// Where the records service finds what the PatientIndex handed its Region: Secret
/// `patient-index`, one file per entry.
pub const PATIENT_INDEX_DIR: &str = "/var/run/meridian/patient-index";
/// The records service's projected ServiceAccount token for other Regions' records services.
pub const SERVICE_TOKEN_FILE: &str = "/var/run/secrets/meridian/records/token";

/// The Region's workloads, for every provider whose workloads run in this cluster: booking
/// and records, each a ServiceAccount, a Deployment, a Service and a NetworkPolicy. Booking
/// reads `DATABASE_URL` from the workload role's Secret `postgres-workload` (never the
/// administrator's `postgres` nor the owner's) and `SEARCH_URL` from `search`, in the
/// Region's namespace, and verifies both stores against the CA certificates of Secret `ca`
/// (the operator's CA for `inCluster`, the Region's CA bundle for `aws`), mounted at
/// [`CA_FILE`]. Records reads the clinical tables as the workload role and the PII vault as
/// the vault role (`VAULT_DATABASE_URL` from `postgres-vault`), with the countries' data keys
/// from Secret `vault-keys` mounted read-only at [`VAULT_KEYS_DIR`], the PatientIndex's link
/// from Secret `patient-index` at [`PATIENT_INDEX_DIR`], and a ServiceAccount token for
/// other Regions' records services (audience `meridian-records`) at [`SERVICE_TOKEN_FILE`];
/// other Regions' records services may reach it. With `spec.events`, the Region's relay and
/// consumers too ([`super::event_backbone`]).
pub fn workload(region: &Region, config: &StackConfig) -> Vec<Value> {
    let name = region.metadata.name.clone().unwrap_or_default();
    let mut objects = booking(&name, config, region.spec.events.is_some());
    objects.extend(records(&name, config));
    objects.extend(super::event_backbone::objects(region, config));
    objects
}

/// The records service (FHIR R4 under `/{cc}/v1/fhir`): see [`workload`].
fn records(name: &str, config: &StackConfig) -> Vec<Value> {
    let env = vec![
        json!({"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": super::WORKLOAD_SECRET, "key": "url"}}}),
        json!({"name": "VAULT_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": super::VAULT_SECRET, "key": "url"}}}),
        json!({"name": "DATABASE_CA_FILE", "value": CA_FILE}),
        json!({"name": "VAULT_KEYS_DIR", "value": VAULT_KEYS_DIR}),
        json!({"name": "PATIENT_INDEX_DIR", "value": PATIENT_INDEX_DIR}),
        json!({"name": "SERVICE_TOKEN_FILE", "value": SERVICE_TOKEN_FILE}),
    ];
    let mounts = vec![
        json!({"name": "ca", "mountPath": "/etc/meridian/ca", "readOnly": true}),
        json!({"name": "vault-keys", "mountPath": VAULT_KEYS_DIR, "readOnly": true}),
        json!({"name": "patient-index", "mountPath": PATIENT_INDEX_DIR, "readOnly": true}),
        json!({"name": "service-token", "mountPath": "/var/run/secrets/meridian/records", "readOnly": true}),
    ];
    let volumes = vec![
        json!({"name": "ca", "secret": {"secretName": "ca", "optional": true}}),
        // Made by the first Country's reconcile; the kubelet updates the files as Countries
        // add keys and rotations add more.
        json!({"name": "vault-keys", "secret": {
            "secretName": meridian_records::keys::VAULT_KEYS_SECRET,
            "optional": true,
            "defaultMode": 0o400,
        }}),
        // Made by the PatientIndex's reconcile when a country of the Region is linked.
        json!({"name": "patient-index", "secret": {
            "secretName": meridian_records::mpi::LINK_SECRET,
            "optional": true,
            "defaultMode": 0o400,
        }}),
        // The kubelet renews it before it ends.
        json!({"name": "service-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": meridian_records::crossborder::peers::AUDIENCE,
            "expirationSeconds": 3600,
            "path": "token",
        }}]}}),
    ];
    // Other Regions' records services ask this one for its patients ($disclose).
    let peers = json!({
        "namespaceSelector": {"matchLabels": {"app.kubernetes.io/part-of": "meridian", "app.kubernetes.io/name": "meridian-region"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "meridian-records"}},
    });
    let mut objects = workload_service(name, "records", config, env, mounts, volumes);
    for object in objects.iter_mut().filter(|o| o["kind"] == "NetworkPolicy") {
        if let Some(from) = object["spec"]["ingress"][0]["from"].as_array_mut() {
            from.push(peers.clone());
        }
    }
    objects
}

/// The booking service: see [`workload`]. With a Kafka (`events`), `meridian indexer` keeps
/// the indexes current instead of the booking replicas.
fn booking(name: &str, config: &StackConfig, events: bool) -> Vec<Value> {
    let mut env = vec![
        json!({"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": super::WORKLOAD_SECRET, "key": "url"}}}),
        json!({"name": "DATABASE_CA_FILE", "value": CA_FILE}),
        json!({"name": "SEARCH_URL", "valueFrom": {"secretKeyRef": {"name": "search", "key": "url"}}}),
        json!({"name": "SEARCH_CA_FILE", "value": CA_FILE}),
    ];
    if events {
        env.push(json!({"name": "MERIDIAN_OUTBOX_INDEXER", "value": "false"}));
    }
    let mounts = vec![json!({"name": "ca", "mountPath": "/etc/meridian/ca", "readOnly": true})];
    // Optional: an `aws` Region reached on loopback (tests) has none.
    let volumes = vec![json!({"name": "ca", "secret": {"secretName": "ca", "optional": true}})];
    workload_service(name, "booking", config, env, mounts, volumes)
}

/// A workload `service` of Region `name` (`meridian <service> --region <name>`): its
/// ServiceAccount, bound to the ClusterRole that lets it watch the Countries it serves; two
/// replicas with `env` (the OIDC settings added), `mounts` and `volumes`; its Service; and a
/// NetworkPolicy that admits the gateway and the operator only.
fn workload_service(
    name: &str,
    service: &str,
    config: &StackConfig,
    mut env: Vec<Value>,
    mounts: Vec<Value>,
    volumes: Vec<Value>,
) -> Vec<Value> {
    let name = name.to_string();
    let app = format!("meridian-{service}");
    let role = if service == "records" {
        &config.records_cluster_role
    } else {
        &config.workload_cluster_role
    };
    env.push(json!({"name": "OIDC_ISSUER", "value": config.oidc_issuer}));
    env.push(json!({"name": "OIDC_JWKS_URL", "value": config.oidc_jwks_url}));
    let container = json!({
        "image": config.workload_image,
        "args": [service, "--listen", "0.0.0.0:8080", "--region", name],
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": env,
        "volumeMounts": mounts,
        "resources": resources("100m", "128Mi", "512Mi"),
        // Neither service has a health path of its own (everything it serves is under
        // `/{cc}/v1`); it listens once it is set up (the identity provider's keys loaded;
        // booking's database connected too), and not before, so its open port is the check.
        "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2, "failureThreshold": 60},
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 20, "failureThreshold": 3},
    });
    let mut objects = identity(&name, service, &app, Some(role));
    objects.extend([
        deployment(&name, service, &app, container, volumes),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": metadata(service, &name, &app),
            "spec": {
                "selector": selector(&name, &app),
                "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
            },
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata(service, &name, &app),
            "spec": {
                "podSelector": {"matchLabels": selector(&name, &app)},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [from_namespace(&config.gateway_namespace), from_namespace(&config.operator_namespace)],
                    "ports": [{"protocol": "TCP", "port": 8080}],
                }],
            },
        }),
    ]);
    objects
}

/// What workload `component` of Region `region` runs as: ServiceAccount `component`, bound
/// to ClusterRole `role` where it talks to the Kubernetes API (else it gets no token).
pub(super) fn identity(region: &str, component: &str, app: &str, role: Option<&str>) -> Vec<Value> {
    let mut account = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": metadata(component, region, app),
    });
    let Some(role) = role else {
        account["automountServiceAccountToken"] = false.into();
        return vec![account];
    };
    vec![
        account,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{}-{component}", namespace(region)), "labels": labels(region, app)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": component, "namespace": namespace(region)}],
        }),
    ]
}

/// Two replicas of `container` (named `component`) as ServiceAccount `component`, with
/// `volumes`: the `meridian` image as its own account ([`WORKLOAD_USER`]), held to Pod
/// Security `restricted` with a read-only root file system (and an emptyDir at `/tmp`), with
/// a worker's resources unless `container` names its own.
pub(super) fn deployment(
    region: &str,
    component: &str,
    app: &str,
    mut container: Value,
    mut volumes: Vec<Value>,
) -> Value {
    container["name"] = component.into();
    if container["resources"].is_null() {
        container["resources"] = resources("50m", "64Mi", "256Mi");
    }
    match container["volumeMounts"].as_array_mut() {
        Some(mounts) => mounts.push(json!({"name": "tmp", "mountPath": "/tmp"})),
        None => container["volumeMounts"] = json!([{"name": "tmp", "mountPath": "/tmp"}]),
    }
    volumes.push(scratch("tmp", "64Mi"));
    let mut pod = json!({
        "serviceAccountName": component,
        "securityContext": pod_security(WORKLOAD_USER),
        "containers": [container],
        "volumes": volumes,
    });
    restrict(&mut pod);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(component, region, app),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": selector(region, app)},
            "template": {
                "metadata": {"labels": labels(region, app)},
                "spec": pod,
            },
        },
    })
}

/// Lets the records services of every Meridian Region reach PostgreSQL in Region `region`,
/// where PatientIndex `index` keeps its entries (they still need the index role's
/// credentials, and see nothing but the index). The PatientIndex's object, labelled as its
/// own: the Region's stack leaves it alone.
pub fn index_policy(region: &str, index: &str) -> Value {
    let owner = format!("patientindex-{index}");
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": owner, "namespace": namespace(region), "labels": labels(&owner, "meridian-patientindex")},
        "spec": {
            "podSelector": {"matchLabels": selector(region, "postgres")},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{
                    "namespaceSelector": {"matchLabels": {"app.kubernetes.io/part-of": "meridian", "app.kubernetes.io/name": "meridian-region"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "meridian-records"}},
                }],
                "ports": [{"protocol": "TCP", "port": 5432}],
            }],
        },
    })
}

/// Builds, applies and removes in-cluster stacks through the Kubernetes API.
pub struct InClusterStacks {
    objects: Objects,
    config: StackConfig,
}

impl InClusterStacks {
    pub fn new(client: Client, config: StackConfig) -> Self {
        Self {
            objects: Objects::new(client),
            config,
        }
    }

    pub(super) fn objects(&self) -> &Objects {
        &self.objects
    }

    /// The password in the stack's Secret, if it exists yet.
    async fn password(&self, region: &str) -> Result<Option<String>, ProviderError> {
        Ok(self
            .objects
            .secret(&namespace(region), "postgres")
            .await?
            .remove("password"))
    }

    /// The stack's certificates: the CA kept in Secret `tls-ca` (made the first time), and
    /// each store's server certificate kept in its Secret while it was signed by that CA
    /// for the same names and is not near its end (made again otherwise).
    pub async fn certificates(&self, region: &str) -> Result<StackTls, ProviderError> {
        let ns = namespace(region);
        let ca = match Ca::from_secret(&self.objects.secret(&ns, "tls-ca").await?) {
            Some(ca) => ca,
            None => Ca::generate(region)?,
        };
        let mut servers = Vec::new();
        for component in ["postgres", "opensearch"] {
            let names = service_names(region, component);
            let stored = self.objects.secret(&ns, &format!("{component}-tls")).await?;
            servers.push(match ServerCert::reusable(&stored, &ca, &names) {
                Some(cert) => cert,
                None => ca.issue(region, &names)?,
            });
        }
        let opensearch = servers.pop().expect("two server certificates");
        let postgres = servers.pop().expect("two server certificates");
        Ok(StackTls {
            ca,
            postgres,
            opensearch,
        })
    }

    /// The CA certificate the stack's stores are verified against (Secret `ca`), once made.
    pub async fn ca(&self, region: &Region) -> Result<Option<String>, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        Ok(self
            .objects
            .secret(&namespace(&name), "ca")
            .await?
            .remove(certificates::CA_CERT))
    }

    /// Applies the Region's stack (a password and certificates are made the first time and
    /// kept after), removes objects of the stack it no longer has, and answers once
    /// PostgreSQL is ready.
    pub async fn ensure(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let password = match self.password(&name).await? {
            Some(password) => password,
            None => super::generate_password(),
        };
        let tls = self.certificates(&name).await?;
        let wanted = stack(region, &self.config, &password, &tls);
        let ns = namespace(&name);
        self.objects.apply(&wanted).await?;
        self.objects.remove_orphans(&name, &ns, &wanted).await?;
        self.objects.await_ready(&ns, "postgres", "DatabaseStarting").await?;
        Ok(Endpoint {
            secret: Some(format!("{ns}/postgres")),
            ..Endpoint::from_url(database_url(&name, &password))
        }
        .with_ca(Some(tls.ca.cert_pem)))
    }

    /// Applies [`index_policy`].
    pub async fn admit_index_clients(&self, region: &str, index: &str) -> Result<(), ProviderError> {
        self.objects.apply(&[index_policy(region, index)]).await
    }

    /// Removes [`index_policy`].
    pub async fn remove_index_clients(&self, region: &str, index: &str) -> Result<(), ProviderError> {
        self.objects.delete(&[index_policy(region, index)]).await
    }

    /// The stack's OpenSearch, once it answers.
    pub async fn search_url(&self, region: &Region) -> Result<String, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        self.objects
            .await_ready(&namespace(&name), "opensearch", "SearchStarting")
            .await?;
        Ok(search_url(&name))
    }

    /// The running stack's database.
    pub async fn locate(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let password = self.password(&name).await?.ok_or_else(|| {
            ProviderError::new(
                "DatabaseNotCreated",
                format!("the stack of Region {name} has not been created yet"),
            )
        })?;
        Ok(Endpoint {
            secret: Some(format!("{}/postgres", namespace(&name))),
            ..Endpoint::from_url(database_url(&name, &password))
        }
        .with_ca(self.ca(region).await?))
    }

    /// Takes the stack down. `Retain` stops the database, search and the workload but
    /// keeps the namespace, the Secrets and the volume claims (the data, which the
    /// StatefulSets' retention policy keeps); `Delete` removes the namespace and everything
    /// in it.
    ///
    /// Only a namespace `recorded` as the Region's goes: with `Delete` but no such record
    /// (the namespace was someone else's), the stack stops as with `Retain`.
    pub async fn release(
        &self,
        region: &Region,
        delete: bool,
        recorded: &RegionResources,
    ) -> Result<(), ProviderError> {
        if let (true, Some(ns)) = (delete, &recorded.namespace) {
            // The namespace takes everything in it; the workload's ClusterRoleBinding is not in it.
            let workload: Vec<Value> = workload(region, &self.config).into_iter().rev().collect();
            self.objects.delete(&workload).await?;
            return self.objects.delete_namespace(ns).await;
        }
        let running: Vec<Value> = stack(region, &self.config, "", &StackTls::default())
            .into_iter()
            .filter(|o| o["kind"] != "Namespace" && o["kind"] != "Secret")
            .rev()
            .collect();
        self.objects.delete(&running).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::rendered::{example_region, find, names};
    use super::*;

    fn frankfurt() -> Region {
        let mut region = example_region();
        region.spec.database = Some(meridian_crds::DatabaseSizing {
            storage_gib: Some(50),
            ..Default::default()
        });
        region
    }

    #[test]
    fn the_stack_holds_a_database_the_workload_and_the_policies_in_the_regions_namespace() {
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret", &StackTls::default());
        assert_eq!(
            names(&objects),
            [
                "Namespace/meridian-region-eu-central-1",
                "Secret/tls-ca",
                "Secret/ca",
                "Secret/postgres",
                "Secret/postgres-tls",
                "Service/postgres",
                "StatefulSet/postgres",
                "Secret/search",
                "Secret/opensearch-tls",
                "Service/opensearch",
                "StatefulSet/opensearch",
                "ServiceAccount/booking",
                "ClusterRoleBinding/meridian-region-eu-central-1-booking",
                "Deployment/booking",
                "Service/booking",
                "NetworkPolicy/booking",
                "ServiceAccount/records",
                "ClusterRoleBinding/meridian-region-eu-central-1-records",
                "Deployment/records",
                "Service/records",
                "NetworkPolicy/records",
                "NetworkPolicy/postgres",
                "NetworkPolicy/opensearch",
            ]
        );
        for o in objects
            .iter()
            .filter(|o| o["kind"] != "Namespace" && o["kind"] != "ClusterRoleBinding")
        {
            assert_eq!(o["metadata"]["namespace"], "meridian-region-eu-central-1", "{o}");
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "meridian-operator"
            );
            assert!(
                o["metadata"].get("ownerReferences").is_none(),
                "no garbage collection of data: {o}"
            );
        }
        assert_eq!(
            find(&objects, "Secret", "postgres")["stringData"]["url"],
            "postgres://meridian:s3cret@postgres.meridian-region-eu-central-1.svc:5432/meridian?sslmode=verify-full"
        );
    }

    #[test]
    fn the_regions_namespace_enforces_pod_security_restricted() {
        let labels = &namespace_object("eu-central-1")["metadata"]["labels"];
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(labels[format!("pod-security.kubernetes.io/{mode}")], "restricted");
        }
        assert_eq!(
            labels["app.kubernetes.io/name"], "meridian-region",
            "what the kind Gateway admits"
        );
    }

    #[test]
    fn the_workload_may_watch_countries_through_the_operators_cluster_role() {
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret", &StackTls::default());
        let binding = find(&objects, "ClusterRoleBinding", "meridian-region-eu-central-1-booking");
        assert_eq!(
            (&binding["roleRef"], &binding["subjects"]),
            (
                &json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "meridian-workload"}),
                &json!([{"kind": "ServiceAccount", "name": "booking", "namespace": "meridian-region-eu-central-1"}])
            )
        );
    }

    #[test]
    fn the_records_service_reaches_the_vault_as_the_vault_role_with_the_keys_mounted_read_only() {
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret", &StackTls::default());
        let records = find(&objects, "Deployment", "records");
        let pod = &records["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            container["args"],
            json!(["records", "--listen", "0.0.0.0:8080", "--region", "eu-central-1"])
        );
        assert_eq!(pod["serviceAccountName"], "records");
        assert_eq!(
            container["env"],
            json!([
                {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "postgres-workload", "key": "url"}}},
                {"name": "VAULT_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "postgres-vault", "key": "url"}}},
                {"name": "DATABASE_CA_FILE", "value": "/etc/meridian/ca/ca.crt"},
                {"name": "VAULT_KEYS_DIR", "value": "/var/run/meridian/vault-keys"},
                {"name": "PATIENT_INDEX_DIR", "value": "/var/run/meridian/patient-index"},
                {"name": "SERVICE_TOKEN_FILE", "value": "/var/run/secrets/meridian/records/token"},
                {"name": "OIDC_ISSUER", "value": "https://idp.example"},
                {"name": "OIDC_JWKS_URL", "value": "https://idp.example/.well-known/jwks.json"},
            ])
        );
        assert_eq!(
            container["volumeMounts"][1],
            json!({"name": "vault-keys", "mountPath": "/var/run/meridian/vault-keys", "readOnly": true})
        );
        assert_eq!(
            pod["volumes"][1],
            json!({"name": "vault-keys", "secret": {"secretName": "vault-keys", "optional": true, "defaultMode": 256}})
        );
        // Booking never sees the vault: neither its role's URL nor the keys.
        let booking = find(&objects, "Deployment", "booking").to_string();
        assert!(
            !booking.contains("postgres-vault") && !booking.contains("vault-keys"),
            "{booking}"
        );
        // What the PatientIndex hands the Region, and a token only records services accept.
        assert_eq!(
            pod["volumes"][2],
            json!({"name": "patient-index", "secret": {"secretName": "patient-index", "optional": true, "defaultMode": 256}})
        );
        assert_eq!(
            pod["volumes"][3]["projected"]["sources"][0]["serviceAccountToken"],
            json!({"audience": "meridian-records", "expirationSeconds": 3600, "path": "token"})
        );
        assert!(
            !booking.contains("patient-index") && !booking.contains("service-token"),
            "{booking}"
        );
        let binding = find(&objects, "ClusterRoleBinding", "meridian-region-eu-central-1-records");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "records", "namespace": "meridian-region-eu-central-1"}])
        );
        assert_eq!(binding["roleRef"]["name"], "meridian-records");
        assert_eq!(
            find(&objects, "ClusterRoleBinding", "meridian-region-eu-central-1-booking")["roleRef"]["name"],
            "meridian-workload"
        );
        assert_eq!(
            find(&objects, "Service", "records")["spec"]["ports"],
            json!([{"name": "http", "port": 8080, "targetPort": 8080}])
        );
    }

    #[test]
    fn postgres_keeps_its_volume_and_takes_its_size_from_the_region() {
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret", &StackTls::default());
        let statefulset = find(&objects, "StatefulSet", "postgres");
        assert_eq!(
            statefulset["spec"]["volumeClaimTemplates"][0],
            json!({
                "metadata": {"name": "data", "labels": {
                    "app.kubernetes.io/name": "postgres", "app.kubernetes.io/instance": "eu-central-1",
                    "app.kubernetes.io/part-of": "meridian", "app.kubernetes.io/managed-by": "meridian-operator"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}}
            })
        );
        assert_eq!(
            statefulset["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
    }

    #[test]
    fn the_stores_run_as_their_images_accounts_with_their_data_where_it_was() {
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret", &StackTls::default());
        let postgres = &find(&objects, "StatefulSet", "postgres")["spec"]["template"]["spec"];
        assert_eq!(
            postgres["securityContext"],
            json!({
                "runAsNonRoot": true, "runAsUser": 999, "runAsGroup": 999, "fsGroup": 999,
                "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
            })
        );
        let server = &postgres["containers"][0];
        // The data where it always was: the volume at the same path, PGDATA the same
        // directory in it.
        assert_eq!(
            server["volumeMounts"],
            json!([
                {"name": "data", "mountPath": "/var/lib/postgresql/data"},
                {"name": "tls", "mountPath": "/tls", "readOnly": true},
                {"name": "run", "mountPath": "/var/run/postgresql"},
                {"name": "tmp", "mountPath": "/tmp"},
            ])
        );
        assert!(
            server["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}))
        );
        assert_eq!(server["securityContext"]["readOnlyRootFilesystem"], true);
        // The init container copies the key as the server's account: no chown, no root.
        let init = &postgres["initContainers"][0];
        let script = init["command"][2].as_str().unwrap();
        assert!(!script.contains("chown") && !script.contains("-o "), "{script}");
        assert_eq!(init["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(postgres["volumes"][0]["secret"]["defaultMode"], 0o400);

        let opensearch = &find(&objects, "StatefulSet", "opensearch")["spec"]["template"]["spec"];
        assert_eq!(opensearch["securityContext"]["runAsUser"], 1000);
        assert_eq!(opensearch["securityContext"]["fsGroup"], 1000);
        assert!(opensearch["initContainers"].is_null(), "nothing runs as root first");
        let node = &opensearch["containers"][0];
        assert_eq!(node["securityContext"]["readOnlyRootFilesystem"], false);
        assert_eq!(
            node["volumeMounts"][0],
            json!({"name": "data", "mountPath": "/usr/share/opensearch/data"})
        );
        assert!(
            node["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": "node.store.allow_mmap", "value": "false"}))
        );

        // The workloads: the image's own account, a read-only root and a scratch /tmp.
        let booking = &find(&objects, "Deployment", "booking")["spec"]["template"]["spec"];
        assert_eq!(booking["securityContext"]["runAsUser"], 65532);
        assert_eq!(booking["securityContext"]["fsGroup"], 65532);
        assert_eq!(
            booking["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
        );
        assert_eq!(
            booking["volumes"].as_array().unwrap().last().unwrap(),
            &json!({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}})
        );
    }

    #[test]
    fn opensearch_is_one_node_with_its_own_volume_and_the_workload_finds_it_through_a_secret() {
        let mut region = frankfurt();
        region.spec.search = Some(meridian_crds::SearchSizing {
            volume_gib: Some(20),
            ..Default::default()
        });
        let objects = stack(&region, &StackConfig::default(), "s3cret", &StackTls::default());
        assert_eq!(
            find(&objects, "Secret", "search")["stringData"],
            json!({"url": "https://opensearch.meridian-region-eu-central-1.svc:9200"})
        );
        let opensearch = find(&objects, "StatefulSet", "opensearch");
        let container = &opensearch["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "opensearchproject/opensearch:2.13.0");
        assert_eq!(
            container["env"][0],
            json!({"name": "discovery.type", "value": "single-node"})
        );
        assert_eq!(
            opensearch["spec"]["volumeClaimTemplates"][0]["spec"]["resources"],
            json!({"requests": {"storage": "20Gi"}})
        );
        assert_eq!(
            opensearch["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        let booking = find(&objects, "Deployment", "booking");
        assert_eq!(
            booking["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([
                {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "postgres-workload", "key": "url"}}},
                {"name": "DATABASE_CA_FILE", "value": "/etc/meridian/ca/ca.crt"},
                {"name": "SEARCH_URL", "valueFrom": {"secretKeyRef": {"name": "search", "key": "url"}}},
                {"name": "SEARCH_CA_FILE", "value": "/etc/meridian/ca/ca.crt"},
                {"name": "OIDC_ISSUER", "value": "https://idp.example"},
                {"name": "OIDC_JWKS_URL", "value": "https://idp.example/.well-known/jwks.json"},
            ])
        );
        let policy = find(&objects, "NetworkPolicy", "opensearch");
        assert_eq!(
            policy["spec"]["ingress"],
            json!([{
                "from": [
                    {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "meridian-booking", "app.kubernetes.io/instance": "eu-central-1"}}},
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "meridian-system"}}}
                ],
                "ports": [{"protocol": "TCP", "port": 9200}]
            }])
        );
    }

    #[test]
    fn only_the_gateway_and_the_operator_reach_the_workload_and_only_it_and_the_operator_the_database() {
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret", &StackTls::default());
        assert_eq!(
            find(&objects, "NetworkPolicy", "booking"),
            &json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "booking", "namespace": "meridian-region-eu-central-1", "labels": {
                    "app.kubernetes.io/name": "meridian-booking", "app.kubernetes.io/instance": "eu-central-1",
                    "app.kubernetes.io/part-of": "meridian", "app.kubernetes.io/managed-by": "meridian-operator"}},
                "spec": {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "meridian-booking", "app.kubernetes.io/instance": "eu-central-1"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "meridian-system"}}},
                            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "meridian-system"}}}
                        ],
                        "ports": [{"protocol": "TCP", "port": 8080}]
                    }]
                }
            })
        );
        let postgres = find(&objects, "NetworkPolicy", "postgres");
        assert_eq!(
            postgres["spec"]["ingress"][0]["from"],
            json!([
                {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "meridian-booking", "app.kubernetes.io/instance": "eu-central-1"}}},
                {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "meridian-records", "app.kubernetes.io/instance": "eu-central-1"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "meridian-system"}}}
            ])
        );
        let records = find(&objects, "NetworkPolicy", "records");
        let booking_from = find(&objects, "NetworkPolicy", "booking")["spec"]["ingress"][0]["from"].clone();
        let records_from = records["spec"]["ingress"][0]["from"].as_array().unwrap();
        assert_eq!(
            json!(records_from[..2]),
            booking_from,
            "the records service is reached as booking is: from the gateway and the operator"
        );
        assert_eq!(
            records_from[2],
            json!({
                "namespaceSelector": {"matchLabels": {"app.kubernetes.io/part-of": "meridian", "app.kubernetes.io/name": "meridian-region"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "meridian-records"}},
            }),
            "and by other Regions' records services"
        );
        let index = index_policy("eu-central-1", "global");
        assert_eq!(
            index["metadata"]["labels"]["app.kubernetes.io/instance"],
            "patientindex-global"
        );
        assert_eq!(index["spec"]["podSelector"], postgres["spec"]["podSelector"]);
        assert_eq!(
            postgres["spec"]["ingress"][0]["ports"],
            json!([{"protocol": "TCP", "port": 5432}])
        );
    }

    #[test]
    fn with_events_the_workers_reach_the_stores_and_the_booking_replicas_stop_indexing() {
        let mut region = frankfurt();
        region.spec.events = Some(serde_yaml_ng::from_str("{broker: inCluster}").unwrap());
        let objects = stack(&region, &StackConfig::default(), "s3cret", &StackTls::default());
        let admitted = |store: &str| -> Vec<String> {
            find(&objects, "NetworkPolicy", store)["spec"]["ingress"][0]["from"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|f| f["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str())
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            admitted("postgres"),
            [
                "meridian-booking",
                "meridian-records",
                "meridian-relay",
                "meridian-billing",
                "meridian-analytics",
                "meridian-search-indexer"
            ]
        );
        assert_eq!(admitted("opensearch"), ["meridian-booking", "meridian-search-indexer"]);
        let booking_env = &find(&objects, "Deployment", "booking")["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            booking_env
                .as_array()
                .unwrap()
                .contains(&json!({"name": "MERIDIAN_OUTBOX_INDEXER", "value": "false"}))
        );
        find(&objects, "StatefulSet", "kafka");
        // Without events, booking indexes from the outbox as before.
        let plain = stack(&frankfurt(), &StackConfig::default(), "s3cret", &StackTls::default());
        let env = find(&plain, "Deployment", "booking")["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(!env.contains("MERIDIAN_OUTBOX_INDEXER"));
    }
}
