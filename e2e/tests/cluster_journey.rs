//! The operator against a real Kubernetes cluster (e.g. kind). Opt-in: it runs only when
//! `MERIDIAN_E2E_KUBECONFIG` names a kubeconfig for a disposable test cluster, because it
//! installs the CRDs and creates cluster-scoped objects there. The operator runs on this
//! machine against that cluster, and the Region points at a PostgreSQL the test starts.
//!
//!     kind create cluster --name meridian
//!     kind get kubeconfig --name meridian > /tmp/kind.yaml
//!     MERIDIAN_E2E_KUBECONFIG=/tmp/kind.yaml cargo test -p meridian-e2e --test cluster_journey -- --nocapture

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_e2e::{free_addr, meridian_bin};
use meridian_localpg::TempCluster;
use sqlx::{Connection, PgConnection};

struct Kubectl {
    kubeconfig: String,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ready(&self, kind: &str, name: &str) -> String {
        self.run(
            &[
                "get",
                kind,
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        )
    }

    fn wait_ready(&self, kind: &str, name: &str) {
        let started = Instant::now();
        while self.ready(kind, name) != "True" {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "{kind} {name} not Ready: {}",
                self.run(&["get", kind, name, "-o", "yaml"], None)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_reconciles_a_region_and_countries_in_a_real_cluster() {
    let Ok(kubeconfig) = std::env::var("MERIDIAN_E2E_KUBECONFIG") else {
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "cluster_journey skipped: set MERIDIAN_E2E_KUBECONFIG to the kubeconfig of a disposable cluster (e.g. kind) to run it"
        );
        return;
    };
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
    };
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let suffix = std::process::id();
    let (namespace, region) = (format!("meridian-e2e-{suffix}"), format!("e2e-{suffix}"));

    kubectl.run(&["apply", "-f", "-"], Some(&meridian_crds_yaml()));
    kubectl.run(
        &[
            "wait",
            "--for=condition=Established",
            "crd/countries.platform.meridian.dev",
            "crd/regions.platform.meridian.dev",
        ],
        None,
    );
    kubectl.run(&["create", "namespace", &namespace], None);
    kubectl.run(
        &[
            "-n",
            &namespace,
            "create",
            "secret",
            "generic",
            "region-db",
            &format!("--from-literal=url={}", pg.url()),
        ],
        None,
    );
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
apiVersion: platform.meridian.dev/v1alpha1
kind: Country
metadata: {{name: {region}-xa}}
spec:
  code: XA
  displayName: Test A
  timezone: Europe/Dublin
  locale: en-IE
  languages: [en]
  currency: EUR
  region: {region}
  residency: shared
  regulatory: {{retentionYears: 8, minimumAge: 16}}
"
    );
    kubectl.run(&["apply", "-f", "-"], Some(&manifests));

    let mut operator = Command::new(meridian_bin())
        .args([
            "operator",
            "--listen",
            &free_addr().to_string(),
            "--namespace",
            &namespace,
            "--lease-name",
            &region,
        ])
        .env("KUBECONFIG", &kubeconfig)
        .spawn()
        .expect("start meridian operator");

    kubectl.wait_ready("region", &region);
    kubectl.wait_ready("country", &format!("{region}-xa"));
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    let attached: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_xa' AND relispartition")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(attached, 5);

    // The API server enforces the CEL rules: the code is immutable.
    let refused = Command::new("kubectl")
        .args([
            "--kubeconfig",
            &kubeconfig,
            "patch",
            "country",
            &format!("{region}-xa"),
            "--type=merge",
            "-p",
            r#"{"spec":{"code":"XB"}}"#,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("spec.code is immutable"));

    // Deleting with Retain detaches the partitions and keeps them.
    kubectl.run(&["delete", "country", &format!("{region}-xa"), "--timeout=60s"], None);
    let detached: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_xa' AND NOT relispartition")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(detached, 5);

    kubectl.run(&["delete", "region", &region, "--timeout=60s"], None);
    let _ = operator.kill();
    let _ = operator.wait();
    kubectl.run(&["delete", "namespace", &namespace, "--wait=false"], None);
}

fn meridian_crds_yaml() -> String {
    let out = Command::new(meridian_bin()).arg("crds").output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}
