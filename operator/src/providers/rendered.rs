//! Tests' view of rendered objects: the example Region they are rendered for, one object
//! found by kind and name, and the `Kind/name` list of a rendering.

use meridian_crds::Region;
use serde_json::Value;

/// `examples/regions/eu-central-1.yaml`, as shipped.
pub fn example_region() -> Region {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/regions/eu-central-1.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The object of `kind` named `name`; panics naming it when there is none.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// `Kind/name` of each object, in order.
pub fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// `Kind/name` and pod template spec of every Deployment and StatefulSet of a rendering.
pub fn pod_specs(objects: &[Value]) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
        .map(|o| {
            let name = format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            );
            (name, &o["spec"]["template"]["spec"])
        })
        .collect()
}

/// Every container of `pod`: init containers, containers and ephemeral containers.
fn all_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |list| pod[list].as_array().into_iter().flatten())
}

/// The volume sources Pod Security `restricted` allows.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The sysctls Pod Security `baseline` (hence `restricted`) allows, as of Kubernetes 1.33.
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Panics (naming `what` and the rule) unless pod spec `pod` passes the Pod Security
/// Standards' `restricted` profile (Kubernetes 1.33: the `baseline` controls and the
/// `restricted` ones), and runs every container as a numeric user that is not root: the
/// profile accepts `runAsNonRoot` alone, but then an image whose user is root or a name
/// is refused only by the kubelet, so a rendering must say which user.
pub fn assert_restricted(what: &str, pod: &Value) {
    let fail = |rule: &str, detail: &Value| -> ! { panic!("{what} breaks Pod Security restricted ({rule}): {detail}") };
    let pod_context = &pod["securityContext"];
    // baseline: host namespaces, HostProcess, hostPath, host ports, sysctls, AppArmor,
    // SELinux, /proc mount, seccomp; privileged containers and added capabilities below.
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == true {
            fail("host namespaces", &pod[host]);
        }
    }
    for sysctl in pod_context["sysctls"].as_array().into_iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl["name"].as_str().unwrap_or_default()) {
            fail("sysctls", sysctl);
        }
    }
    // restricted: volume types.
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        let sources: Vec<&String> = volume.as_object().unwrap().keys().filter(|k| *k != "name").collect();
        if sources.len() != 1 || !RESTRICTED_VOLUMES.contains(&sources[0].as_str()) {
            fail("volume types", volume);
        }
    }
    let contexts = std::iter::once(pod_context).chain(all_containers(pod).map(|c| &c["securityContext"]));
    for context in contexts {
        if context["windowsOptions"]["hostProcess"] == true {
            fail("HostProcess", context);
        }
        if !matches!(
            context["appArmorProfile"]["type"].as_str(),
            None | Some("RuntimeDefault" | "Localhost")
        ) {
            fail("AppArmor", context);
        }
        let selinux = &context["seLinuxOptions"];
        if !matches!(
            selinux["type"].as_str(),
            None | Some("" | "container_t" | "container_init_t" | "container_kvm_t" | "container_engine_t")
        ) || !selinux["user"].is_null()
            || !selinux["role"].is_null()
        {
            fail("SELinux", context);
        }
        // restricted: seccomp RuntimeDefault or Localhost where set, and no user 0 anywhere.
        if !matches!(
            context["seccompProfile"]["type"].as_str(),
            None | Some("RuntimeDefault" | "Localhost")
        ) {
            fail("seccomp", context);
        }
        if context["runAsUser"] == 0 {
            fail("running as non-root user", context);
        }
    }
    for container in all_containers(pod) {
        let context = &container["securityContext"];
        if context["privileged"] == true {
            fail("privileged containers", container);
        }
        if !matches!(context["procMount"].as_str(), None | Some("Default")) {
            fail("/proc mount type", container);
        }
        for port in container["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_i64().unwrap_or(0) != 0 {
                fail("host ports", container);
            }
        }
        // restricted: no privilege escalation, every capability dropped and none added
        // but NET_BIND_SERVICE, not root.
        if context["allowPrivilegeEscalation"] != false {
            fail("privilege escalation", container);
        }
        let dropped = context["capabilities"]["drop"].as_array().cloned().unwrap_or_default();
        if !dropped.contains(&"ALL".into()) {
            fail("capabilities: drop ALL", container);
        }
        for added in context["capabilities"]["add"].as_array().into_iter().flatten() {
            if added != "NET_BIND_SERVICE" {
                fail("capabilities: add", container);
            }
        }
        // ... and set: on the pod, or on each container.
        if pod_context["seccompProfile"]["type"].is_null() && context["seccompProfile"]["type"].is_null() {
            fail("seccomp", container);
        }
        let non_root = match &context["runAsNonRoot"] {
            Value::Bool(set) => *set,
            _ => pod_context["runAsNonRoot"] == true,
        };
        if !non_root {
            fail("running as non-root", container);
        }
        let user = match &context["runAsUser"] {
            Value::Null => &pod_context["runAsUser"],
            user => user,
        };
        if user.as_i64().is_none_or(|uid| uid <= 0) {
            fail("a numeric non-root runAsUser (this project's rule)", container);
        }
    }
}

/// Panics (naming `what`) unless every container of pod spec `pod` says its resources
/// (CPU and memory requested, a memory limit) and every long-running one has readiness
/// and liveness probes, each with a check, and any named port it probes among its ports.
pub fn assert_probed_and_sized(what: &str, pod: &Value) {
    assert_sized(what, pod);
    for container in pod["containers"].as_array().unwrap() {
        let name = &container["name"];
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let probe_of = &container[probe];
            if probe_of.is_null() {
                assert!(probe == "startupProbe", "{what}: container {name} has no {probe}");
                continue;
            }
            let checks = ["exec", "httpGet", "tcpSocket", "grpc"];
            assert!(
                checks.iter().filter(|c| !probe_of[**c].is_null()).count() == 1,
                "{what}: {name}'s {probe} checks nothing: {probe_of}"
            );
            let port = probe_of["httpGet"]["port"]
                .as_str()
                .or(probe_of["tcpSocket"]["port"].as_str());
            if let Some(port) = port {
                let ports = container["ports"].as_array().cloned().unwrap_or_default();
                assert!(
                    ports.iter().any(|p| p["name"] == port),
                    "{what}: {name}'s {probe} probes port {port}, which it does not name"
                );
            }
        }
    }
}

/// Panics (naming `what`) unless every container of pod spec `pod`, init containers too,
/// requests CPU and memory and has a memory limit.
pub fn assert_sized(what: &str, pod: &Value) {
    for container in all_containers(pod) {
        let resources = &container["resources"];
        for (kind, resource) in [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")] {
            assert!(
                resources[kind][resource].is_string(),
                "{what}: container {} has no {kind}.{resource}: {resources}",
                container["name"]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::in_cluster::{self, StackConfig, StackTls};
    use serde_json::json;

    fn notifications() -> meridian_crds::RegionNotifications {
        serde_yaml_ng::from_str(
            "{smtp: {host: smtp.example, from: a@clinic.example, usernameSecretRef: {name: m, key: u},
                     passwordSecretRef: {name: m, key: p}},
              sms: {url: 'https://sms.example/send', tokenSecretRef: {name: s, key: t}}}",
        )
        .unwrap()
    }

    /// Every pod template of `objects` passes `restricted` and is probed and sized.
    fn assert_every_pod_hardened(objects: &[Value]) -> Vec<String> {
        let pods = pod_specs(objects);
        for (what, pod) in &pods {
            assert_restricted(what, pod);
            assert_probed_and_sized(what, pod);
        }
        pods.into_iter().map(|(what, _)| what).collect()
    }

    #[test]
    fn every_pod_of_an_in_cluster_stack_with_its_broker_and_notifications_is_restricted_probed_and_sized() {
        let mut region = example_region();
        region.spec.provider = meridian_crds::RegionProvider::InCluster;
        region.spec.events = Some(serde_yaml_ng::from_str("{broker: inCluster}").unwrap());
        region.spec.notifications = Some(notifications());
        let objects = in_cluster::stack(&region, &StackConfig::default(), "s3cret", &StackTls::default());
        assert_eq!(
            assert_every_pod_hardened(&objects),
            [
                "StatefulSet/postgres",
                "StatefulSet/opensearch",
                "Deployment/booking",
                "Deployment/records",
                "StatefulSet/kafka",
                "Deployment/relay",
                "Deployment/billing",
                "Deployment/analytics",
                "Deployment/search-indexer",
                "Deployment/notifications",
            ]
        );
    }

    #[test]
    fn every_pod_an_aws_region_runs_in_the_cluster_is_restricted_probed_and_sized() {
        let mut region = example_region();
        region.spec.provider = meridian_crds::RegionProvider::Aws;
        region.spec.events = Some(
            serde_yaml_ng::from_str(
                "{broker: aws, bootstrapServersSecretRef: {name: msk, key: bootstrap},
                  sasl: {mechanism: SCRAM-SHA-512, usernameSecretRef: {name: msk, key: user},
                         passwordSecretRef: {name: msk, key: password}}}",
            )
            .unwrap(),
        );
        region.spec.notifications = Some(notifications());
        // What AwsStacks applies in the cluster: the stores are AWS's.
        let objects = in_cluster::workload(&region, &StackConfig::default());
        assert_eq!(
            assert_every_pod_hardened(&objects),
            [
                "Deployment/booking",
                "Deployment/records",
                "Deployment/relay",
                "Deployment/billing",
                "Deployment/analytics",
                "Deployment/search-indexer",
                "Deployment/notifications",
            ]
        );
    }

    /// A pod that passes, to break one rule at a time.
    fn compliant() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{
                "name": "init",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
            }],
            "containers": [{
                "name": "main",
                "ports": [{"name": "http", "containerPort": 8080}],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
                "readinessProbe": {"tcpSocket": {"port": "http"}},
                "livenessProbe": {"httpGet": {"path": "/", "port": 8080}},
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}, {"name": "tmp", "emptyDir": {}}],
        })
    }

    fn refused(check: fn(&str, &Value), pod: &Value) -> bool {
        let pod = pod.clone();
        std::panic::catch_unwind(move || check("pod", &pod)).is_err()
    }

    #[test]
    fn the_checks_refuse_each_breach_of_the_profile() {
        assert!(!refused(assert_restricted, &compliant()));
        assert!(!refused(assert_probed_and_sized, &compliant()));
        let breaches: [(&str, &str, Value); 17] = [
            ("hostNetwork", "", json!(true)),
            ("hostPID", "", json!(true)),
            ("volumes", "", json!([{"name": "host", "hostPath": {"path": "/"}}])),
            ("securityContext", "runAsNonRoot", json!(false)),
            ("securityContext", "runAsUser", json!(0)),
            ("securityContext", "seccompProfile", json!({"type": "Unconfined"})),
            ("securityContext", "seccompProfile", Value::Null),
            (
                "securityContext",
                "sysctls",
                json!([{"name": "kernel.msgmax", "value": "1"}]),
            ),
            ("main", "privileged", json!(true)),
            ("main", "allowPrivilegeEscalation", Value::Null),
            ("init", "allowPrivilegeEscalation", json!(true)),
            ("init", "capabilities", json!({"drop": ["NET_RAW"]})),
            ("main", "capabilities", json!({"drop": ["ALL"], "add": ["SYS_ADMIN"]})),
            ("main", "runAsNonRoot", json!(false)),
            ("main", "runAsUser", json!(0)),
            ("main", "seLinuxOptions", json!({"user": "system_u"})),
            ("main", "procMount", json!("Unmasked")),
        ];
        for (place, key, value) in breaches {
            let mut pod = compliant();
            let target = match place {
                "main" => &mut pod["containers"][0]["securityContext"][key],
                "init" => &mut pod["initContainers"][0]["securityContext"][key],
                "securityContext" => &mut pod["securityContext"][key],
                _ => &mut pod[place],
            };
            *target = value;
            assert!(refused(assert_restricted, &pod), "{place} {key} let through: {pod}");
        }
        // Not restricted without a user named for every container.
        let mut pod = compliant();
        pod["securityContext"]["runAsUser"] = Value::Null;
        assert!(refused(assert_restricted, &pod));
        // Probes and resources.
        for (key, value) in [
            ("readinessProbe", Value::Null),
            ("livenessProbe", Value::Null),
            ("livenessProbe", json!({"periodSeconds": 5})),
            ("readinessProbe", json!({"tcpSocket": {"port": "https"}})),
            ("resources", json!({"requests": {"cpu": "10m", "memory": "16Mi"}})),
        ] {
            let mut pod = compliant();
            pod["containers"][0][key] = value;
            assert!(refused(assert_probed_and_sized, &pod), "{key} let through: {pod}");
        }
        let mut pod = compliant();
        pod["initContainers"][0]["resources"]["requests"]["cpu"] = Value::Null;
        assert!(refused(assert_probed_and_sized, &pod));
    }
}
