//! The Helm chart, checked with the Helm SDK (helm-python-sdk, no helm binary): it lints
//! clean, renders with its defaults and with the values a platform team sets for EKS, and
//! everything it passes to the operator is a flag the operator has.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use meridian_operator::k8s::OperatorOptions;
use serde_json::{Value, json};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The venv that has the Helm SDK: `MERIDIAN_VENV`, or `~/.cache/meridian-venv`.
fn venv() -> PathBuf {
    std::env::var_os("MERIDIAN_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/meridian-venv")))
        .expect("HOME or MERIDIAN_VENV")
}

/// How to get the Helm SDK into that venv.
fn install_hint() -> String {
    let venv = venv();
    format!(
        "install it with `python3 -m venv {0} && {0}/bin/pip install helm-python-sdk` \
         (.ci/run does), or set MERIDIAN_VENV to a venv that has it",
        venv.display()
    )
}

/// Lints and renders the chart with `values`: the lint report, and every rendered object.
fn render(values: Value) -> (Value, Vec<Value>) {
    let answer = check(values);
    assert!(
        answer.get("error").is_none(),
        "the chart refused its values: {answer:#}"
    );
    let mut objects = Vec::new();
    for manifest in answer["manifests"].as_object().unwrap().values() {
        for document in serde_yaml_ng::Deserializer::from_str(manifest.as_str().unwrap()) {
            let object: Value = serde::Deserialize::deserialize(document).unwrap();
            if !object.is_null() {
                objects.push(object);
            }
        }
    }
    (answer["lint"].clone(), objects)
}

/// What `charts/check.py` answers for `values`: the lint report and the rendered manifests,
/// CRDs and notes, or the error Helm refused the values with.
fn check(values: Value) -> Value {
    let python = venv().join("bin/python");
    let out = Command::new(&python)
        .arg(Path::new(REPO).join("charts/check.py"))
        .arg(Path::new(REPO).join("charts/meridian-operator"))
        .arg(values.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {}", python.display(), install_hint()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'helm_python'"),
        "the Helm SDK is missing: {}",
        install_hint()
    );
    // 2: Helm refused the values or a template; the answer says why.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "charts/check.py failed: {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("charts/check.py: {e}; {stderr}"))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

fn operator_args(objects: &[Value]) -> Vec<String> {
    let deployment = find(objects, "Deployment", "meridian");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The value of `--flag=value` in `args`, when the chart passes that flag.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut values = args.iter().filter_map(|a| a.strip_prefix(flag)?.strip_prefix('='));
    let value = values.next();
    assert_eq!(values.next(), None, "{flag} passed twice: {args:?}");
    value
}

/// The container's environment variables with a literal value.
fn env(container: &Value) -> Vec<(&str, &str)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect()
}

fn container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", "meridian")["spec"]["template"]["spec"]["containers"][0]
}

/// The operator's own command line accepts `args` (after `operator`). Its flags' `env`
/// fallbacks are off, so only what the chart passes counts, not this test's environment
/// (AWS_ENDPOINT_URL, POD_NAMESPACE, ...).
fn parse(args: &[String]) -> OperatorOptions {
    assert_eq!(args[0], "operator");
    let command = OperatorOptions::augment_args(clap::Command::new("operator")).mut_args(|arg| arg.env(None::<&str>));
    let matches = command
        .try_get_matches_from(args)
        .unwrap_or_else(|e| panic!("the chart passes what the operator does not take: {e}"));
    <OperatorOptions as clap::FromArgMatches>::from_arg_matches(&matches).unwrap()
}

#[test]
fn the_chart_lints_clean_and_its_defaults_run_the_operator_for_kind() {
    let (lint, objects) = render(json!({}));
    assert_eq!(lint["errors"], json!([]), "{lint:#}");
    let warnings: Vec<&Value> = lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64() >= Some(2))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");

    let args = operator_args(&objects);
    for (name, value) in [
        ("--listen", "0.0.0.0:8080"),
        ("--lease-name", "meridian-operator"),
        ("--gateway-name", "meridian"),
        ("--gateway-namespace", "meridian-system"),
        ("--workload-service", "booking"),
        ("--workload-port", "8080"),
        ("--workload-image", "meridian:0.1.0"),
        ("--workload-cluster-role", "meridian-workload"),
        ("--records-cluster-role", "meridian-records"),
        ("--postgres-image", "postgres:15"),
        ("--opensearch-image", "opensearchproject/opensearch:2.13.0"),
    ] {
        assert_eq!(flag(&args, name), Some(value), "{name} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--aws-endpoint")),
        "AWS itself unless told otherwise: {args:?}"
    );
    let env = env(container(&objects));
    assert!(env.contains(&("OIDC_ISSUER", "https://idp.example")), "{env:?}");

    let options = parse(&args);
    // One Lease for every replica, whichever way it was started: the chart's is the CLI's.
    assert_eq!(options.lease_name, parse(&["operator".to_string()]).lease_name);
    assert_eq!(options.lease_name, meridian_operator::k8s::DEFAULT_LEASE_NAME);
    assert_eq!(options.aws_endpoint, None);
    assert_eq!(options.workload_image, "meridian:0.1.0", "the chart's own image");
    assert_eq!(options.workload_cluster_role, "meridian-workload");
    assert_eq!(options.records_cluster_role, "meridian-records");
    assert_eq!(options.opensearch_image, "opensearchproject/opensearch:2.13.0");
    assert!(
        find(&objects, "ServiceAccount", "meridian")["metadata"]
            .get("annotations")
            .is_none()
    );

    // The ClusterRole the operator binds each Region's workload to exists, and lets it
    // follow Countries, nothing more.
    assert_eq!(
        find(&objects, "ClusterRole", "meridian-workload")["rules"],
        json!([{"apiGroups": ["platform.meridian.dev"], "resources": ["countries"], "verbs": ["get", "list", "watch"]}])
    );
    // The records services' may also have other Regions' tokens reviewed; booking's may not.
    assert_eq!(
        find(&objects, "ClusterRole", "meridian-records")["rules"],
        json!([
            {"apiGroups": ["platform.meridian.dev"], "resources": ["countries"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
        ])
    );
    // The operator may manage every kind its stacks are made of.
    let rules = find(&objects, "ClusterRole", "meridian")["rules"]
        .as_array()
        .unwrap()
        .clone();
    let may = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r["apiGroups"].as_array().unwrap().iter().any(|g| g == group)
                && r["resources"].as_array().unwrap().iter().any(|x| x == resource)
                && r["verbs"].as_array().unwrap().iter().any(|v| v == verb)
        })
    };
    for (group, resource) in [
        ("", "namespaces"),
        ("", "secrets"),
        ("", "services"),
        ("", "serviceaccounts"),
        ("apps", "statefulsets"),
        ("apps", "deployments"),
        ("networking.k8s.io", "networkpolicies"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
        ("gateway.networking.k8s.io", "httproutes"),
    ] {
        for verb in ["get", "list", "patch", "delete"] {
            assert!(may(group, resource, verb), "{verb} {group}/{resource}");
        }
    }
    for kind in ["countries", "regions", "patientindexes"] {
        assert!(may("platform.meridian.dev", kind, "watch"), "{kind}");
        assert!(
            may("platform.meridian.dev", &format!("{kind}/status"), "patch"),
            "{kind}"
        );
    }
    // The vault's data keys are replaced only if unchanged since read.
    assert!(may("", "secrets", "update"));
    assert!(may("", "secrets", "create"));

    // Leader election: the Lease the operator uses, read and renewed by name.
    assert_eq!(
        find(&objects, "Role", "meridian-leader-election")["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [options.lease_name], "verbs": ["get", "update"]}
        ])
    );
}

#[test]
fn values_for_eks_give_the_operator_its_aws_role_endpoint_and_images() {
    let (lint, objects) = render(json!({
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/meridian"}},
        "aws": {"endpoint": "http://127.0.0.1:5000"},
        "image": {"repository": "registry.example/meridian", "tag": "1.2.3"},
        "inCluster": {
            "postgresImage": "registry.example/postgres:15.8",
            "opensearchImage": "registry.example/opensearch:2.13.0",
        },
        "workload": {"service": "booking-api", "port": 9090},
        "oidc": {"issuer": "https://login.example", "jwksUrl": "https://login.example/keys"},
    }));
    assert_eq!(lint["errors"], json!([]), "{lint:#}");
    assert_eq!(
        find(&objects, "ServiceAccount", "meridian")["metadata"]["annotations"],
        json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/meridian"})
    );
    let args = operator_args(&objects);
    assert_eq!(flag(&args, "--aws-endpoint"), Some("http://127.0.0.1:5000"));
    let options = parse(&args);
    assert_eq!(options.aws_endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(options.workload_image, "registry.example/meridian:1.2.3");
    assert_eq!(options.postgres_image, "registry.example/postgres:15.8");
    assert_eq!(options.opensearch_image, "registry.example/opensearch:2.13.0");
    assert_eq!(options.workload_service, "booking-api");
    assert_eq!(options.workload_port, 9090);
    let container = container(&objects);
    assert_eq!(container["image"], "registry.example/meridian:1.2.3");
    let env = env(container);
    assert!(env.contains(&("OIDC_ISSUER", "https://login.example")), "{env:?}");
    assert!(
        env.contains(&("OIDC_JWKS_URL", "https://login.example/keys")),
        "{env:?}"
    );
}

/// Helm installs the chart's `crds/` before its templates; they are the generated CRDs, byte for
/// byte, as the Helm SDK loads them.
#[test]
fn the_chart_installs_the_generated_crds() {
    let answer = check(json!({}));
    let crds = answer["crds"].as_object().unwrap();
    let generated = meridian_crds::crd_files();
    assert_eq!(crds.len(), generated.len(), "{:?}", crds.keys().collect::<Vec<_>>());
    for (name, yaml) in generated {
        let shipped = &crds[&format!("meridian-operator/crds/{name}")];
        assert_eq!(shipped.as_str(), Some(yaml.as_str()), "{name} differs from crds/{name}");
    }
}

/// values.schema.json refuses what would not run, naming the value, before anything renders.
#[test]
fn values_the_operator_could_not_run_with_are_refused_naming_the_value() {
    for (values, named) in [
        (json!({"replicaCount": 0}), "/replicaCount"),
        (
            json!({"oidc": {"issuer": "idp.example", "jwksUrl": "https://idp.example/keys"}}),
            "/oidc/issuer",
        ),
        (json!({"workload": {"port": 70000}}), "/workload/port"),
        (json!({"gateway": {"name": "Meridian Gateway"}}), "/gateway/name"),
        (
            json!({"metrics": {"serviceMonitor": {"enabled": "yes"}}}),
            "/metrics/serviceMonitor/enabled",
        ),
        (
            json!({"metrics": {"prometheusRule": {"countryNotReadyFor": "ten minutes"}}}),
            "/metrics/prometheusRule/countryNotReadyFor",
        ),
        (json!({"inCluster": {"postgresImage": ""}}), "/inCluster/postgresImage"),
        // A misspelt key would otherwise be ignored silently.
        (json!({"replicas": 3}), "replicas"),
    ] {
        let answer = check(values.clone());
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{values} was accepted"));
        assert!(error.contains(named), "{values}: {error}");
        assert_ne!(answer["lint"]["errors"], json!([]), "helm lint also fails for {values}");
    }
}

/// Two replicas that a drain or a lost node does not take down together, and a pod that
/// passes Pod Security `restricted`, with probes and resources.
#[test]
fn the_operator_runs_two_spread_replicas_kept_by_a_disruption_budget() {
    let (_, objects) = render(json!({}));
    let deployment = find(&objects, "Deployment", "meridian");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let spread =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&spread["labelSelector"]["matchLabels"], selector);

    let budget = find(&objects, "PodDisruptionBudget", "meridian");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], selector);
    let (_, without) = render(json!({"podDisruptionBudget": {"enabled": false}}));
    assert!(!without.iter().any(|o| o["kind"] == "PodDisruptionBudget"));

    // Pod Security `restricted` (the Kubernetes Pod Security Standards, v1.33).
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    for field in ["hostNetwork", "hostPID", "hostIPC", "volumes"] {
        assert!(pod.get(field).is_none(), "{field}");
    }
    let container = container(&objects);
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(security.get("privileged").is_none());
    assert!(security["capabilities"].get("add").is_none());
    for probe in ["livenessProbe", "readinessProbe"] {
        assert!(container[probe]["httpGet"]["path"].is_string(), "{probe}");
    }
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
}

/// Off by default (they need the prometheus-operator's CRDs); on, a ServiceMonitor scrapes
/// every replica and three alerts watch reconciles, Countries and the leader.
#[test]
fn monitoring_objects_come_on_request() {
    let (_, objects) = render(json!({}));
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(!objects.iter().any(|o| o["kind"] == kind), "{kind} by default");
    }
    assert!(
        !objects.iter().any(|o| o["kind"] == "ConfigMap"),
        "dashboard by default"
    );

    let (lint, objects) = render(json!({
        "metrics": {
            "serviceMonitor": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": true, "countryNotReadyFor": "10m"},
        },
        "grafana": {"dashboard": {"enabled": true}},
    }));
    assert_eq!(lint["errors"], json!([]), "{lint:#}");
    let monitor = find(&objects, "ServiceMonitor", "meridian");
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack");
    let service = find(&objects, "Service", "meridian-metrics");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the monitor selects the Service"
        );
    }

    let rules = &find(&objects, "PrometheusRule", "meridian")["spec"]["groups"][0]["rules"];
    let alert = |name: &str| {
        rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no alert {name}: {rules:#}"))
            .clone()
    };
    let country = alert("MeridianCountryNotReady");
    assert_eq!(country["for"], "10m");
    assert!(
        country["expr"]
            .as_str()
            .unwrap()
            .contains(r#"meridian_ready{kind="Country""#)
    );
    assert!(
        alert("MeridianReconcileFailing")["expr"]
            .as_str()
            .unwrap()
            .contains("meridian_reconcile_failures_total")
    );
    assert!(
        alert("MeridianNoLeader")["expr"]
            .as_str()
            .unwrap()
            .contains("meridian_leader")
    );
    // Alert templates reach Prometheus as Prometheus templates, not eaten by Helm's.
    assert!(
        country["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("{{ $labels.name }}")
    );

    let dashboard = find(&objects, "ConfigMap", "meridian-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(dashboard["data"]["meridian.json"].as_str().unwrap()).unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(REPO).join("charts/meridian-operator/dashboards/meridian.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json, committed);
}

/// What `helm install` prints: how to check the leader and what to apply next.
#[test]
fn the_notes_say_what_to_do_after_installing() {
    let answer = check(json!({}));
    let notes = answer["notes"].as_str().unwrap();
    assert!(notes.contains("get lease meridian-operator"), "{notes}");
    assert!(notes.contains("kubectl apply -f examples/regions/"), "{notes}");
    assert!(notes.contains("meridian-system/meridian"), "{notes}");
}

/// The values e2e/kind/run.sh installs the chart with pass the schema and reach the operator.
#[test]
fn the_kind_walkthrough_installs_the_chart_with_values_it_accepts() {
    let script = std::fs::read_to_string(Path::new(REPO).join("e2e/kind/run.sh")).unwrap();
    let issuer = "http://dev-issuer.meridian-system.svc:8080";
    assert!(script.contains(&format!("ISSUER=\"{issuer}\"")), "the script's issuer");
    for set in [
        "--set image.repository=\"$IMAGE_REPOSITORY\" --set image.tag=\"$IMAGE_TAG\"",
        "--set gateway.name=meridian --set gateway.namespace=envoy-gateway-system",
        "--set oidc.issuer=\"$ISSUER\" --set oidc.jwksUrl=\"$ISSUER/jwks.json\"",
    ] {
        assert!(script.contains(set), "run.sh no longer sets {set}");
    }
    let (lint, objects) = render(json!({
        "image": {"repository": "meridian", "tag": "dev"},
        "gateway": {"name": "meridian", "namespace": "envoy-gateway-system"},
        "oidc": {"issuer": issuer, "jwksUrl": format!("{issuer}/jwks.json")},
    }));
    assert_eq!(lint["errors"], json!([]), "{lint:#}");
    let options = parse(&operator_args(&objects));
    assert_eq!(options.workload_image, "meridian:dev");
    assert_eq!(options.gateway_namespace, "envoy-gateway-system");
    let env = env(container(&objects));
    assert!(env.contains(&("OIDC_ISSUER", issuer)), "{env:?}");
}
