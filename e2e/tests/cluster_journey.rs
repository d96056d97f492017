//! The operator against a real Kubernetes API server (kind, or any disposable cluster).
//! Opt-in: it runs only when `MERIDIAN_E2E_KUBECONFIG` names an admin kubeconfig of a
//! disposable test cluster, because it installs the CRDs and creates cluster-scoped objects
//! there. Two operator replicas run on this machine against that cluster, as the Helm
//! chart's ServiceAccount with the chart's RBAC (rendered with the Helm SDK), and the
//! Region points at a PostgreSQL the test starts.
//!
//!     kind create cluster --name meridian
//!     kind get kubeconfig --name meridian > /tmp/kind.yaml
//!     MERIDIAN_E2E_KUBECONFIG=/tmp/kind.yaml cargo test -p meridian-e2e --test cluster_journey -- --nocapture
//!
//! What it shows: every example manifest is accepted as shipped (strict field validation)
//! and a misspelt field is refused; an `inCluster` Region's whole stack with its own Kafka
//! broker and event workers is accepted as rendered (server-side dry run), and the pod of
//! each of its workloads is admitted where Pod Security `restricted` is enforced (one that
//! breaks it is refused); an `external` Region gets its namespace and its Countries their
//! HTTPRoutes; a second Country with a held code is refused and its
//! deletion with `Delete` leaves the first one's partitions and route alone; the leader's
//! death hands over to the standby, which goes on reconciling; `Retain` keeps the data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    ValidationDirective,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Discovery;
use kube::{Client, Config, ResourceExt};
use meridian_crds::{Country, Region};
use meridian_e2e::{free_addr, meridian_bin};
use meridian_localpg::TempCluster;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

const MANAGER: &str = "meridian-e2e";

fn say(line: &str) {
    // Straight to stderr, past the test harness's capture.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "cluster_journey: {line}");
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Server-side applies every document of `yaml` with strict field validation, as
/// `kubectl apply --server-side --validate=strict` does; `dry_run` only asks the server.
async fn apply_yaml(client: &Client, yaml: &str, namespace: Option<&str>, dry_run: bool) -> Result<(), String> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| format!("discovery: {e}"))?;
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        use serde::Deserialize;
        let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        let types = object.types.clone().ok_or("a document without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| format!("the server does not serve {gvk:?}"))?;
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Cluster {
            Api::all_with(client.clone(), &resource)
        } else {
            let ns = object
                .namespace()
                .or(namespace.map(String::from))
                .unwrap_or("default".into());
            Api::namespaced_with(client.clone(), &ns, &resource)
        };
        let mut params = PatchParams::apply(MANAGER).force();
        params.field_validation = Some(ValidationDirective::Strict);
        params.dry_run = dry_run;
        api.patch(&object.name_any(), &params, &Patch::Apply(&value))
            .await
            .map_err(|e| format!("{} {}: {e}", types.kind, object.name_any()))?;
    }
    Ok(())
}

/// Waits up to `limit` for `check` to return `Some`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn condition(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], t: &str) -> (String, String) {
    conditions
        .iter()
        .find(|c| c.type_ == t)
        .map_or((String::new(), String::new()), |c| (c.status.clone(), c.reason.clone()))
}

async fn country_ready(api: &Api<Country>, name: &str, status: &str, reason: &str) -> Country {
    eventually(
        &format!("Country {name} Ready={status} ({reason})"),
        Duration::from_secs(90),
        || async {
            let c = api.get_opt(name).await.ok().flatten()?;
            let conds = c.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            (condition(&conds, "Ready") == (status.to_string(), reason.to_string())).then_some(c)
        },
    )
    .await
}

/// Partitions of country `cc` in `pg`: (attached, detached).
async fn partitions(pg: &TempCluster, cc: &str) -> (i64, i64) {
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE relispartition), count(*) FILTER (WHERE NOT relispartition)
           FROM pg_class WHERE relkind = 'r' AND relname LIKE '%\\_' || $1",
    )
    .bind(cc)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Every document of `yaml`, empty ones left out.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| !d.is_null())
        .collect()
}

/// The chart rendered with the Helm SDK for `namespace`: its templates' manifests, and the
/// CRDs of its `crds/` folder (what Helm installs before the templates).
fn render_chart(namespace: &str) -> (Vec<(String, String)>, Vec<String>) {
    let venv = std::env::var("MERIDIAN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/meridian-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} missing: the chart is rendered with the Helm SDK; install it with `.ci/run` or \
         `python3 -m venv {v} && {v}/bin/pip install helm-python-sdk`",
        python.display(),
        v = venv.display()
    );
    let out = Command::new(python)
        .arg(workspace().join("charts/check.py"))
        .arg(workspace().join("charts/meridian-operator"))
        .arg("{}")
        .arg(namespace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rendered: Value = serde_json::from_slice(&out.stdout).unwrap();
    let texts = |key: &str| -> Vec<(String, String)> {
        rendered[key]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    };
    (
        texts("manifests"),
        texts("crds").into_iter().map(|(_, yaml)| yaml).collect(),
    )
}

/// A kubeconfig like the admin one, but authenticating with `token`.
fn kubeconfig_with_token(admin: &str, token: &str, path: &Path) {
    let mut config: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    config["users"] = json!([{"name": "meridian-operator", "user": {"token": token}}]);
    for context in config["contexts"].as_array_mut().unwrap() {
        context["context"]["user"] = json!("meridian-operator");
    }
    std::fs::write(path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
}

struct Operator {
    identity: String,
    child: Child,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_operator(identity: &str, kubeconfig: &Path, namespace: &str) -> Operator {
    let child = Command::new(meridian_bin())
        .args([
            "operator",
            "--listen",
            &free_addr().to_string(),
            "--namespace",
            namespace,
            "--identity",
            identity,
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .spawn()
        .expect("start meridian operator");
    Operator {
        identity: identity.into(),
        child,
    }
}

/// Installs a minimal HTTPRoute CRD when the cluster has none, so that routes can be
/// stored and read back (kind users install the Gateway API's own, as the README says).
async fn ensure_http_routes(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if crds
        .get_opt("httproutes.gateway.networking.k8s.io")
        .await
        .unwrap()
        .is_some()
    {
        return;
    }
    say("no Gateway API in this cluster: installing a minimal HTTPRoute CRD for the test");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        // A group under k8s.io needs the approval annotation; the Gateway API's own CRDs
        // carry this one.
        "metadata": {"name": "httproutes.gateway.networking.k8s.io",
                     "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"}},
        "spec": {
            "group": "gateway.networking.k8s.io",
            "names": {"kind": "HTTPRoute", "listKind": "HTTPRouteList", "plural": "httproutes", "singular": "httproute"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    });
    apply_yaml(client, &serde_json::to_string(&crd).unwrap(), None, false)
        .await
        .unwrap();
    wait_established(&crds, "httproutes.gateway.networking.k8s.io").await;
}

async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) {
    eventually(&format!("CRD {name} Established"), Duration::from_secs(30), || async {
        let crd = crds.get(name).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await
}

/// Pod Security `restricted` as the API server enforces it. Its admission checks Pods (on
/// Deployments and StatefulSets it only warns), so each workload of `objects` goes in as
/// the Pod its controller would make (a StatefulSet's with its volume claim's volume), as a
/// server-side dry run into namespace `namespace`, made here with the profile enforced at
/// its latest version, with the ServiceAccounts the pods name. Then a pod that breaks the
/// profile (a copy of the first with privilege escalation allowed and root as its user)
/// must be refused. Answers the workloads admitted and the refusal's message; the namespace
/// goes.
async fn restricted_pods(client: &Client, objects: &[Value], namespace: &str) -> (Vec<String>, String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labelled = json!({"metadata": {"name": namespace, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(labelled).unwrap())
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    for account in objects.iter().filter(|o| o["kind"] == "ServiceAccount") {
        let mut account = account.clone();
        account["metadata"]["namespace"] = namespace.into();
        accounts
            .create(&PostParams::default(), &serde_json::from_value(account).unwrap())
            .await
            .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dry_run = PostParams {
        dry_run: true,
        field_manager: Some(MANAGER.into()),
    };
    let mut admitted = Vec::new();
    let mut first = None;
    for workload in objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
    {
        let kind = workload["kind"].as_str().unwrap();
        let name = workload["metadata"]["name"].as_str().unwrap();
        let template = &workload["spec"]["template"];
        let mut spec = template["spec"].clone();
        for claim in workload["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let volume = claim["metadata"]["name"].as_str().unwrap();
            if spec["volumes"].is_null() {
                spec["volumes"] = json!([]);
            }
            spec["volumes"].as_array_mut().unwrap().push(json!({
                "name": volume,
                "persistentVolumeClaim": {"claimName": format!("{volume}-{name}-0")},
            }));
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{}-{name}", kind.to_lowercase()), "labels": template["metadata"]["labels"]},
            "spec": spec,
        });
        pods.create(&dry_run, &serde_json::from_value(pod.clone()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("the pod of {kind} {name} refused in a namespace enforcing restricted: {e}"));
        admitted.push(format!("{kind}/{name}"));
        first.get_or_insert(pod);
    }
    let mut breaking = first.expect("a workload");
    breaking["metadata"]["name"] = "escalating".into();
    breaking["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = true.into();
    breaking["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0.into();
    let refusal = match pods.create(&dry_run, &serde_json::from_value(breaking).unwrap()).await {
        Err(kube::Error::Api(status)) if status.code == 403 && status.message.contains("violates PodSecurity") => {
            status.message.clone()
        }
        other => panic!("a pod breaking restricted was not refused by Pod Security admission: {other:?}"),
    };
    assert!(
        refusal.contains("allowPrivilegeEscalation") && refusal.contains("runAsUser"),
        "{refusal}"
    );
    namespaces.delete(namespace, &DeleteParams::default()).await.unwrap();
    (admitted, refusal)
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_replicas_reconcile_regions_and_countries_in_a_real_cluster() {
    let Ok(admin_kubeconfig) = std::env::var("MERIDIAN_E2E_KUBECONFIG") else {
        say("skipped: set MERIDIAN_E2E_KUBECONFIG to the kubeconfig of a disposable cluster (e.g. kind) to run it");
        return;
    };
    // The kube client's TLS takes rustls's process-wide provider; with the AWS SDK's
    // aws-lc-rs linked in (the operator's crate renders the stack below), it is named.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = KubeConfigOptions::default();
    let config = Config::from_custom_kubeconfig(Kubeconfig::read_from(&admin_kubeconfig).unwrap(), &options)
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.expect("the API server answers");
    say(&format!(
        "API server {}.{} ({})",
        version.major, version.minor, version.git_version
    ));
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let suffix = std::process::id();
    let namespace = format!("meridian-e2e-{suffix}");
    let region = format!("e2e-{suffix}");
    let scratch = tempfile::tempdir().unwrap();

    // The CRDs from the chart's crds/ folder, as `helm install` applies them; `meridian crds`
    // prints the same.
    let (chart, chart_crds) = render_chart(&namespace);
    let crds_yaml = String::from_utf8(Command::new(meridian_bin()).arg("crds").output().unwrap().stdout).unwrap();
    let by_name = |docs: Vec<Value>| -> BTreeMap<String, Value> {
        docs.into_iter()
            .map(|d| (d["metadata"]["name"].as_str().unwrap().to_string(), d))
            .collect()
    };
    assert_eq!(
        by_name(chart_crds.iter().flat_map(|c| documents(c)).collect()),
        by_name(documents(&crds_yaml)),
        "the chart's CRDs are the ones `meridian crds` prints"
    );
    for crd in &chart_crds {
        apply_yaml(&client, crd, None, false).await.unwrap();
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "countries.platform.meridian.dev",
        "regions.platform.meridian.dev",
        "patientindexes.platform.meridian.dev",
    ] {
        wait_established(&crds, name).await;
    }

    // Every example, as shipped, is accepted with strict field validation; a misspelt
    // field is refused with its path.
    for dir in ["examples/regions", "examples/patientindex", "examples/countries"] {
        for entry in std::fs::read_dir(workspace().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let yaml = std::fs::read_to_string(&path).unwrap();
            apply_yaml(&client, &yaml, Some("default"), true)
                .await
                .unwrap_or_else(|e| panic!("{} refused by the API server: {e}", path.display()));
        }
    }
    let misspelt = std::fs::read_to_string(workspace().join("examples/regions/eu-central-1.yaml"))
        .unwrap()
        .replace("storageGiB", "storageGib");
    let refused = apply_yaml(&client, &misspelt, None, true).await.unwrap_err();
    assert!(refused.contains("storageGib"), "{refused}");
    say("examples accepted as shipped; a misspelt field refused");

    // What an inCluster Region with its own broker runs (the stores, the booking and records
    // services, the broker, the relay and the consumers) is accepted by the API server as
    // rendered: its namespace made, everything else a server-side dry run.
    let mut in_cluster: Region = serde_yaml_ng::from_str(
        &std::fs::read_to_string(workspace().join("examples/regions/eu-central-1.yaml")).unwrap(),
    )
    .unwrap();
    let stack_region = format!("e2e-stack-{suffix}");
    in_cluster.metadata.name = Some(stack_region.clone());
    in_cluster.spec.events = Some(serde_yaml_ng::from_str("{broker: inCluster, volumeGib: 5}").unwrap());
    in_cluster.spec.notifications = Some(
        serde_yaml_ng::from_str(
            "{smtp: {host: smtp.example, from: a@clinic.example, usernameSecretRef: {name: m, key: u},
                     passwordSecretRef: {name: m, key: p}},
              sms: {url: 'https://sms.example/send', tokenSecretRef: {name: s, key: t}}}",
        )
        .unwrap(),
    );
    let objects = meridian_operator::providers::in_cluster::stack(
        &in_cluster,
        &meridian_operator::providers::StackConfig::default(),
        "dry-run",
        &Default::default(),
    );
    let (home, rest): (Vec<Value>, Vec<Value>) = objects.into_iter().partition(|o| o["kind"] == "Namespace");
    let as_yaml = |objects: &[Value]| {
        objects
            .iter()
            .map(|o| serde_yaml_ng::to_string(o).unwrap())
            .collect::<Vec<_>>()
            .join("---\n")
    };
    apply_yaml(&client, &as_yaml(&home), None, false).await.unwrap();
    let kinds: BTreeMap<String, usize> = rest.iter().fold(BTreeMap::new(), |mut kinds, o| {
        *kinds.entry(o["kind"].as_str().unwrap().to_string()).or_default() += 1;
        kinds
    });
    apply_yaml(&client, &as_yaml(&rest), None, true)
        .await
        .unwrap_or_else(|e| panic!("an inCluster stack with events refused by the API server: {e}"));
    Api::<Namespace>::all(client.clone())
        .delete(&format!("meridian-region-{stack_region}"), &DeleteParams::default())
        .await
        .unwrap();
    say(&format!(
        "an inCluster Region's stack with its broker and event workers accepted: {kinds:?}"
    ));
    // With them, the pods the chart runs (the operator) and the kind walkthrough's token
    // issuer (e2e/kind/dev-issuer.yaml).
    let mut workloads = rest.clone();
    let issuer_yaml = std::fs::read_to_string(workspace().join("e2e/kind/dev-issuer.yaml")).unwrap();
    for object in chart
        .iter()
        .flat_map(|(_, yaml)| documents(yaml))
        .chain(documents(&issuer_yaml))
    {
        if object["kind"] == "Deployment" || object["kind"] == "ServiceAccount" {
            workloads.push(object);
        }
    }
    let (admitted, refusal) = restricted_pods(&client, &workloads, &format!("meridian-e2e-restricted-{suffix}")).await;
    assert_eq!(
        admitted.len(),
        kinds["Deployment"] + kinds["StatefulSet"] + 2,
        "every workload's pod, the operator's and the dev issuer's: {admitted:?}"
    );
    say(&format!(
        "Pod Security restricted admits the pod of each of the {} workloads ({admitted:?}) and refuses an escalating one: {refusal}",
        admitted.len()
    ));

    // The chart's ServiceAccount and RBAC, rendered for this namespace.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .unwrap();
    let mut service_account = None;
    for (template, yaml) in &chart {
        let (template, yaml) = (template.as_str(), yaml.as_str());
        if template.ends_with("serviceaccount.yaml") || template.ends_with("rbac.yaml") {
            apply_yaml(&client, yaml, Some(&namespace), false)
                .await
                .unwrap_or_else(|e| panic!("{template}: {e}"));
        } else {
            // The operator's own Deployment, Service and PodDisruptionBudget: accepted as
            // rendered (dry run: this suite runs the replicas on this machine instead).
            apply_yaml(&client, yaml, Some(&namespace), true)
                .await
                .unwrap_or_else(|e| panic!("{template}: {e}"));
        }
        if template.ends_with("serviceaccount.yaml") {
            let sa: Value = serde_yaml_ng::from_str(yaml).unwrap();
            service_account = sa["metadata"]["name"].as_str().map(String::from);
        }
    }
    let service_account = service_account.expect("the chart has a ServiceAccount");
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .create_token_request(
            &service_account,
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap(),
        )
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("a token for the chart's ServiceAccount");
    let operator_kubeconfig = scratch.path().join("operator.kubeconfig");
    kubeconfig_with_token(&admin_kubeconfig, &token, &operator_kubeconfig);
    ensure_http_routes(&client).await;

    // An external Region (its database URL in a Secret) and a Country on it.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "region-db", "namespace": namespace},
        "stringData": {"url": pg.url()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let country_yaml = |name: &str, code: &str, policy: &str| {
        format!(
            "apiVersion: platform.meridian.dev/v1alpha1
kind: Country
metadata: {{name: {name}}}
spec:
  code: {code}
  displayName: Test {code}
  timezone: Europe/Dublin
  locale: en-IE
  languages: [en]
  currency: EUR
  region: {region}
  residency: shared
  deletionPolicy: {policy}
  regulatory: {{retentionYears: 8, minimumAge: 16, consent: {{recordSharing: true}}}}
"
        )
    };
    let manifests = format!(
        "apiVersion: platform.meridian.dev/v1alpha1
kind: Region
metadata: {{name: {region}}}
spec:
  provider: external
  cloudRegion: eu-west-1
  isolation: shared
  external: {{databaseUrlSecretRef: {{name: region-db, namespace: {namespace}, key: url}}}}
---
{}",
        country_yaml(&format!("{region}-xa"), "XA", "Retain")
    );
    apply_yaml(&client, &manifests, None, false).await.unwrap();

    // Two replicas as the chart's ServiceAccount: one leads, the other stands by.
    let started = Instant::now();
    let mut replicas = vec![
        start_operator(&format!("{region}-a"), &operator_kubeconfig, &namespace),
        start_operator(&format!("{region}-b"), &operator_kubeconfig, &namespace),
    ];
    let countries: Api<Country> = Api::all(client.clone());
    let regions: Api<Region> = Api::all(client.clone());
    eventually("the Region Ready", Duration::from_secs(90), || async {
        let r = regions.get(&region).await.ok()?;
        (condition(&r.status?.conditions, "Ready").0 == "True").then_some(())
    })
    .await;
    let xa = country_ready(&countries, &format!("{region}-xa"), "True", "Reconciled").await;
    say(&format!(
        "Region and Country Ready {:.1}s after the operators started",
        started.elapsed().as_secs_f64()
    ));
    let xa_status = xa.status.unwrap();
    assert_eq!(
        condition(&xa_status.conditions, "SearchIndexReady"),
        ("False".into(), "NotConfigured".into())
    );
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_partitioned_table")
        .fetch_one(&mut PgConnection::connect(&pg.url()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(partitions(&pg, "xa").await, (tables, 0));

    // The external Region has its namespace, and the Country its route there.
    let region_ns = format!("meridian-region-{region}");
    assert!(
        namespaces.get_opt(&region_ns).await.unwrap().is_some(),
        "namespace {region_ns}"
    );
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &region_ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        ),
    );
    let route = routes.get("country-xa").await.expect("HTTPRoute country-xa");
    assert_eq!(route.owner_references()[0].uid, xa.metadata.uid.clone().unwrap());

    // The Country's first data key is in the Region's `vault-keys` Secret, and a rotation
    // from the command line (as an administrator would run it) adds the next one there with
    // a write conditional on the version it read, keeping the first.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &region_ns);
    let keys = |s: Secret| -> BTreeMap<String, String> {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect()
    };
    let first = keys(secrets.get("vault-keys").await.expect("Secret vault-keys"));
    assert_eq!(
        first.get("XA.active").map(String::as_str),
        Some("k1"),
        "{:?}",
        first.keys()
    );
    assert_eq!(xa_status.data_keys, ["k1"]);
    let rotate = Command::new(meridian_bin())
        .args(["vault", "rotate", "--cluster", "--region", &region, "--country", "XA"])
        .env("KUBECONFIG", &admin_kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&rotate.stdout);
    assert!(
        rotate.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    assert!(stdout.contains("XA: key k2 added to"), "{stdout}");
    let rotated = keys(secrets.get("vault-keys").await.unwrap());
    assert_eq!(rotated["XA.active"], "k2");
    assert_eq!(rotated["XA.k1"], first["XA.k1"], "the first key is kept");
    say("the Country's data key in its Region's Secret, rotated by `meridian vault rotate --cluster`");

    // A PatientIndex in the Region: its first key in the Region's namespace, the keys and
    // the index role's connection handed to the Region's records service, the role able
    // to reach the entries.
    let index_name = format!("{region}-mpi");
    apply_yaml(
        &client,
        &format!(
            "apiVersion: platform.meridian.dev/v1alpha1
kind: PatientIndex
metadata: {{name: {index_name}}}
spec:
  region: {region}
  keySecretRef: {{name: patient-index-keys}}
  deletionPolicy: Delete
"
        ),
        None,
        false,
    )
    .await
    .unwrap();
    let indexes: Api<meridian_crds::PatientIndex> = Api::all(client.clone());
    let index = eventually("the PatientIndex Ready", Duration::from_secs(60), || async {
        let i = indexes.get(&index_name).await.ok()?;
        let status = i.status.clone()?;
        (condition(&status.conditions, "Ready").0 == "True").then_some(status)
    })
    .await;
    assert_eq!(index.active_key_version.as_deref(), Some("k1"));
    assert_eq!(index.linked_countries, ["XA"]);
    let index_keys = keys(
        secrets
            .get("patient-index-keys")
            .await
            .expect("Secret patient-index-keys"),
    );
    assert_eq!(index_keys["active"], "k1");
    let link = keys(secrets.get("patient-index").await.expect("Secret patient-index"));
    assert_eq!(
        (link["countries"].as_str(), link["k1"].as_str()),
        ("XA", index_keys["k1"].as_str())
    );
    let mut as_index = PgConnection::connect(&link["url"])
        .await
        .expect("the index role connects");
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM mpi.entries")
        .fetch_one(&mut as_index)
        .await
        .unwrap();
    assert_eq!(entries, 0);
    // Other Regions' records services prove who they are with a ServiceAccount token for
    // `meridian-records`, which the API server reviews; a token for another audience fails.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &region_ns);
    let records_sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "records"}})).unwrap();
    let _ = accounts.create(&PostParams::default(), &records_sa).await;
    let token_for = |audience: &'static str| {
        let accounts = accounts.clone();
        async move {
            accounts
                .create_token_request(
                    "records",
                    &PostParams::default(),
                    &serde_json::from_value(json!({"spec": {"audiences": [audience], "expirationSeconds": 600}}))
                        .unwrap(),
                )
                .await
                .unwrap()
                .status
                .and_then(|s| s.token)
                .unwrap()
        }
    };
    let reviewer = meridian_records::crossborder::Accept::TokenReview(std::sync::Arc::new(
        meridian_records::crossborder::TokenReviewer::new(client.clone()),
    ));
    let subject = reviewer
        .subject(Some(&format!("Bearer {}", token_for("meridian-records").await)))
        .await
        .unwrap();
    assert_eq!(subject, format!("system:serviceaccount:{region_ns}:records"));
    let refused = reviewer
        .subject(Some(&format!("Bearer {}", token_for("somewhere-else").await)))
        .await
        .unwrap_err();
    say(&format!(
        "PatientIndex Ready (key k1, linked XA); a records service's token reviewed as {subject}; another audience refused: {refused}"
    ));
    // Deleted with `deletionPolicy: Delete`: the store it made is dropped, the link withdrawn.
    indexes.delete(&index_name, &DeleteParams::default()).await.unwrap();
    eventually("the PatientIndex gone", Duration::from_secs(60), || async {
        indexes.get_opt(&index_name).await.unwrap().is_none().then_some(())
    })
    .await;
    let schema: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'mpi')")
        .fetch_one(&mut PgConnection::connect(&pg.url()).await.unwrap())
        .await
        .unwrap();
    assert!(!schema, "Delete dropped the index's schema");
    let emptied = keys(secrets.get("patient-index").await.unwrap());
    assert_eq!(emptied.get("countries").map(String::as_str), Some(""));
    assert!(!emptied.contains_key("url"), "the link is withdrawn");

    // A second Country with the held code is refused, and deleting it with Delete drops
    // nothing of the first one.
    let dupe = format!("{region}-xa-dupe");
    apply_yaml(&client, &country_yaml(&dupe, "XA", "Delete"), None, false)
        .await
        .unwrap();
    let refused = country_ready(&countries, &dupe, "False", "CodeConflict").await;
    let message = refused
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(message.contains(&format!("held by Country {region}-xa")), "{message}");
    countries.delete(&dupe, &DeleteParams::default()).await.unwrap();
    eventually("the duplicate gone", Duration::from_secs(60), || async {
        countries.get_opt(&dupe).await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(
        partitions(&pg, "xa").await,
        (tables, 0),
        "the first Country's partitions stay attached"
    );
    assert!(
        routes.get_opt("country-xa").await.unwrap().is_some(),
        "and its route stays"
    );
    country_ready(&countries, &format!("{region}-xa"), "True", "Reconciled").await;
    say("a duplicate code refused; its deletion touched nothing");

    // The leader dies: the standby takes the Lease and goes on reconciling.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let lease_name = leases
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|l| {
            l.spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_ref())
                .is_some_and(|h| h.starts_with(&region))
        })
        .expect("a Lease held by one of the replicas")
        .name_any();
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let leader = holder(leases.get(&lease_name).await.unwrap());
    let index = replicas
        .iter()
        .position(|r| r.identity == leader)
        .expect("the leader is ours");
    let mut dead = replicas.remove(index);
    // SIGKILL: no chance to release the Lease; the standby must wait for it to expire.
    dead.child.kill().unwrap();
    let killed = Instant::now();
    let standby = replicas[0].identity.clone();
    eventually("the standby leading", Duration::from_secs(60), || async {
        (holder(leases.get(&lease_name).await.ok()?) == standby).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    apply_yaml(
        &client,
        &country_yaml(&format!("{region}-xb"), "XB", "Retain"),
        None,
        false,
    )
    .await
    .unwrap();
    country_ready(&countries, &format!("{region}-xb"), "True", "Reconciled").await;
    say(&format!(
        "leader {leader} killed; {standby} took the Lease {:.1}s later and reconciled a new Country {:.1}s after the kill",
        takeover.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    ));
    assert!(takeover < Duration::from_secs(30), "takeover took {takeover:?}");

    // Deleting with Retain detaches the partitions and keeps them.
    for cc in ["xa", "xb"] {
        countries
            .delete(&format!("{region}-{cc}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    for cc in ["xa", "xb"] {
        let name = format!("{region}-{cc}");
        eventually(&format!("{name} gone"), Duration::from_secs(60), || async {
            countries.get_opt(&name).await.unwrap().is_none().then_some(())
        })
        .await;
        assert_eq!(
            partitions(&pg, cc).await,
            (0, tables),
            "Retain keeps {cc}'s partitions, detached"
        );
    }
    regions.delete(&region, &DeleteParams::default()).await.unwrap();
    eventually("the Region gone", Duration::from_secs(60), || async {
        regions.get_opt(&region).await.unwrap().is_none().then_some(())
    })
    .await;
    drop(replicas);
    drop(dead);
    for ns in [&namespace, &region_ns] {
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
}
