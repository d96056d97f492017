//! The `inCluster` provider's stack (kind and other clusters without a cloud database): a
//! namespace per Region, `meridian-region-<name>`, holding PostgreSQL as a StatefulSet with
//! a PersistentVolumeClaim, its Service and generated password Secret; a single-node
//! OpenSearch for the countries' search indexes, also a StatefulSet with its own volume;
//! the Region's booking workload (Deployment, Service, ServiceAccount); and NetworkPolicies
//! that admit traffic to the workload only from the gateway and the operator, and to
//! PostgreSQL and OpenSearch only from the workload and the operator. Built here as plain
//! objects; applied with server-side apply.
//!
//! OpenSearch runs without its security plugin: the NetworkPolicy is what keeps others
//! out, and the index holds the practitioner directory, not patient data. Its URL still
//! reaches the workload through a Secret (`search`), as the `aws` provider's does.
//!
//! No object that holds data (the namespace, the StatefulSet's volume claims, the Secret)
//! has an owner reference to the Region: garbage collection must never delete patient data.
//! What goes on deletion is the reconciler's decision, by `deletionPolicy`.

use kube::Client;
use meridian_crds::{Region, RegionResources};
use serde_json::{Value, json};

use super::objects::Objects;
use super::{Endpoint, ProviderError};
use crate::FIELD_MANAGER;

/// Images and neighbours of every in-cluster stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackConfig {
    pub postgres_image: String,
    pub opensearch_image: String,
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
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            postgres_image: "postgres:15".into(),
            opensearch_image: "opensearchproject/opensearch:2.13.0".into(),
            workload_image: "meridian:0.1.0".into(),
            operator_namespace: "meridian-system".into(),
            gateway_namespace: "meridian-system".into(),
            oidc_issuer: "https://idp.example".into(),
            oidc_jwks_url: "https://idp.example/.well-known/jwks.json".into(),
            workload_cluster_role: "meridian-workload".into(),
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

/// The connection URL the stack's Secret publishes, for the operator and the workload.
pub fn database_url(region: &str, password: &str) -> String {
    format!(
        "postgres://{DATABASE}:{password}@postgres.{}.svc:5432/{DATABASE}",
        namespace(region)
    )
}

/// Where the stack's OpenSearch answers, inside the cluster.
pub fn search_url(region: &str) -> String {
    format!("http://opensearch.{}.svc:9200", namespace(region))
}

fn labels(region: &str, component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": region,
        "app.kubernetes.io/part-of": "meridian",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
    })
}

fn selector(region: &str, component: &str) -> Value {
    json!({"app.kubernetes.io/name": component, "app.kubernetes.io/instance": region})
}

pub(super) fn metadata(name: &str, region: &str, component: &str) -> Value {
    json!({"name": name, "namespace": namespace(region), "labels": labels(region, component)})
}

/// Every object of `region`'s stack, in the order they are applied. `password` is the
/// database password: generated once, then read back from the Secret.
pub fn stack(region: &Region, config: &StackConfig, password: &str) -> Vec<Value> {
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
    vec![
        namespace_object(&name),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": metadata("postgres", &name, "postgres"),
            "type": "Opaque",
            "stringData": {"username": DATABASE, "password": password, "url": database_url(&name, password)},
        }),
        service(&name, "postgres", "postgres", 5432),
        statefulset(
            &name,
            "postgres",
            json!({}),
            json!({
                "image": config.postgres_image,
                "ports": [{"name": "postgres", "containerPort": 5432}],
                "env": [
                    {"name": "POSTGRES_USER", "value": DATABASE},
                    {"name": "POSTGRES_DB", "value": DATABASE},
                    {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "postgres", "key": "password"}}},
                    {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
                ],
                "readinessProbe": {"exec": {"command": ["pg_isready", "-U", DATABASE, "-d", DATABASE]}, "periodSeconds": 5},
            }),
            "/var/lib/postgresql/data",
            storage,
        ),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": metadata("search", &name, "opensearch"),
            "type": "Opaque",
            "stringData": {"url": search_url(&name)},
        }),
        service(&name, "opensearch", "http", 9200),
        statefulset(
            &name,
            "opensearch",
            // The image runs as uid 1000; the volume must be writable for it.
            json!({"securityContext": {"fsGroup": 1000}}),
            json!({
                "image": config.opensearch_image,
                "ports": [{"name": "http", "containerPort": 9200}],
                "env": [
                    // One node: no cluster formation, and no bootstrap checks
                    // (vm.max_map_count) that kind nodes would fail.
                    {"name": "discovery.type", "value": "single-node"},
                    {"name": "DISABLE_SECURITY_PLUGIN", "value": "true"},
                    {"name": "DISABLE_INSTALL_DEMO_CONFIG", "value": "true"},
                    {"name": "OPENSEARCH_JAVA_OPTS", "value": "-Xms512m -Xmx512m"},
                ],
                "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "1536Mi"}},
                "readinessProbe": {
                    "httpGet": {"path": "/_cluster/health?local=true", "port": 9200},
                    "periodSeconds": 10,
                },
            }),
            "/usr/share/opensearch/data",
            search_storage,
        ),
    ]
    .into_iter()
    .chain(workload(&name, config))
    .chain([
        store_policy(&name, "postgres", 5432, config),
        store_policy(&name, "opensearch", 9200, config),
    ])
    .collect()
}

/// A one-replica StatefulSet `component` running `container` (its name and volume mount
/// added here) in a pod with `pod` settings; its volume claim `data` of `storage_gib`,
/// mounted at `mount`, outlives the StatefulSet unless a Delete policy removes the namespace.
fn statefulset(
    region: &str,
    component: &str,
    pod: Value,
    mut container: Value,
    mount: &str,
    storage_gib: i32,
) -> Value {
    container["name"] = component.into();
    container["volumeMounts"] = json!([{"name": "data", "mountPath": mount}]);
    let mut pod = pod;
    pod["containers"] = json!([container]);
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
fn service(region: &str, component: &str, port_name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(component, region, component),
        "spec": {
            "selector": selector(region, component),
            "ports": [{"name": port_name, "port": port, "targetPort": port}],
        },
    })
}

/// Admits to store `component`'s `port` only the Region's workload and the operator.
fn store_policy(region: &str, component: &str, port: u16, config: &StackConfig) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata(component, region, component),
        "spec": {
            "podSelector": {"matchLabels": selector(region, component)},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": selector(region, "meridian-booking")}},
                    from_namespace(&config.operator_namespace),
                ],
                "ports": [{"protocol": "TCP", "port": port}],
            }],
        },
    })
}

/// The Region's namespace, as an object.
pub fn namespace_object(region: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace(region), "labels": labels(region, "meridian-region")},
    })
}

fn from_namespace(namespace: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}})
}

/// The Region's booking workload (ServiceAccount, Deployment, Service, NetworkPolicy), for
/// every provider whose workloads run in this cluster: it reads `DATABASE_URL` from the
/// workload role's Secret `postgres-workload` (never the administrator's `postgres` nor the
/// owner's) and `SEARCH_URL` from `search`, in the Region's namespace.
pub fn workload(name: &str, config: &StackConfig) -> Vec<Value> {
    let name = name.to_string();
    vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": metadata("booking", &name, "meridian-booking"),
        }),
        // The workload serves the Countries bound to its Region, which it watches.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {
                "name": format!("{}-booking", namespace(&name)),
                "labels": labels(&name, "meridian-booking"),
            },
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": config.workload_cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": "booking", "namespace": namespace(&name)}],
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": metadata("booking", &name, "meridian-booking"),
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": selector(&name, "meridian-booking")},
                "template": {
                    "metadata": {"labels": labels(&name, "meridian-booking")},
                    "spec": {
                        "serviceAccountName": "booking",
                        "containers": [{
                            "name": "booking",
                            "image": config.workload_image,
                            "args": ["booking", "--listen", "0.0.0.0:8080", "--region", name],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": super::WORKLOAD_SECRET, "key": "url"}}},
                                {"name": "SEARCH_URL", "valueFrom": {"secretKeyRef": {"name": "search", "key": "url"}}},
                                {"name": "OIDC_ISSUER", "value": config.oidc_issuer},
                                {"name": "OIDC_JWKS_URL", "value": config.oidc_jwks_url},
                            ],
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": metadata("booking", &name, "meridian-booking"),
            "spec": {
                "selector": selector(&name, "meridian-booking"),
                "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
            },
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata("booking", &name, "meridian-booking"),
            "spec": {
                "podSelector": {"matchLabels": selector(&name, "meridian-booking")},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [from_namespace(&config.gateway_namespace), from_namespace(&config.operator_namespace)],
                    "ports": [{"protocol": "TCP", "port": 8080}],
                }],
            },
        }),
    ]
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

    /// Applies the Region's stack (a password is generated the first time and kept after),
    /// removes objects of the stack it no longer has, and answers once PostgreSQL is ready.
    pub async fn ensure(&self, region: &Region) -> Result<Endpoint, ProviderError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let password = match self.password(&name).await? {
            Some(password) => password,
            None => super::generate_password(),
        };
        let wanted = stack(region, &self.config, &password);
        let ns = namespace(&name);
        self.objects.apply(&wanted).await?;
        self.objects.remove_orphans(&name, &ns, &wanted).await?;
        self.objects.await_ready(&ns, "postgres", "DatabaseStarting").await?;
        Ok(Endpoint {
            secret: Some(format!("{ns}/postgres")),
            ..Endpoint::from_url(database_url(&name, &password))
        })
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
        })
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
        let name = region.metadata.name.clone().unwrap_or_default();
        if let (true, Some(ns)) = (delete, &recorded.namespace) {
            // The namespace takes everything in it; the workload's ClusterRoleBinding is not in it.
            let workload: Vec<Value> = workload(&name, &self.config).into_iter().rev().collect();
            self.objects.delete(&workload).await?;
            return self.objects.delete_namespace(ns).await;
        }
        let running: Vec<Value> = stack(region, &self.config, "")
            .into_iter()
            .filter(|o| o["kind"] != "Namespace" && o["kind"] != "Secret")
            .rev()
            .collect();
        self.objects.delete(&running).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frankfurt() -> Region {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/regions/eu-central-1.yaml");
        let mut region: Region = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        region.spec.database = Some(meridian_crds::DatabaseSizing {
            storage_gib: Some(50),
            ..Default::default()
        });
        region
    }

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    #[test]
    fn the_stack_holds_a_database_the_workload_and_the_policies_in_the_regions_namespace() {
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret");
        let kinds: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace/meridian-region-eu-central-1",
                "Secret/postgres",
                "Service/postgres",
                "StatefulSet/postgres",
                "Secret/search",
                "Service/opensearch",
                "StatefulSet/opensearch",
                "ServiceAccount/booking",
                "ClusterRoleBinding/meridian-region-eu-central-1-booking",
                "Deployment/booking",
                "Service/booking",
                "NetworkPolicy/booking",
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
            "postgres://meridian:s3cret@postgres.meridian-region-eu-central-1.svc:5432/meridian"
        );
    }

    #[test]
    fn the_workload_may_watch_countries_through_the_operators_cluster_role() {
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret");
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
    fn postgres_keeps_its_volume_and_takes_its_size_from_the_region() {
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret");
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
    fn opensearch_is_one_node_with_its_own_volume_and_the_workload_finds_it_through_a_secret() {
        let mut region = frankfurt();
        region.spec.search = Some(meridian_crds::SearchSizing {
            volume_gib: Some(20),
            ..Default::default()
        });
        let objects = stack(&region, &StackConfig::default(), "s3cret");
        assert_eq!(
            find(&objects, "Secret", "search")["stringData"],
            json!({"url": "http://opensearch.meridian-region-eu-central-1.svc:9200"})
        );
        let opensearch = find(&objects, "StatefulSet", "opensearch");
        let container = &opensearch["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "opensearchproject/opensearch:2.13.0");
        assert_eq!(
            container["env"],
            json!([
                {"name": "discovery.type", "value": "single-node"},
                {"name": "DISABLE_SECURITY_PLUGIN", "value": "true"},
                {"name": "DISABLE_INSTALL_DEMO_CONFIG", "value": "true"},
                {"name": "OPENSEARCH_JAVA_OPTS", "value": "-Xms512m -Xmx512m"},
            ])
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
                {"name": "SEARCH_URL", "valueFrom": {"secretKeyRef": {"name": "search", "key": "url"}}},
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
        let objects = stack(&frankfurt(), &StackConfig::default(), "s3cret");
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
            postgres["spec"]["ingress"][0]["from"][0],
            json!({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "meridian-booking", "app.kubernetes.io/instance": "eu-central-1"}}})
        );
        assert_eq!(
            postgres["spec"]["ingress"][0]["ports"],
            json!([{"protocol": "TCP", "port": 5432}])
        );
    }
}
