//! The `inCluster` provider's calls to the Kubernetes API, against kube's `tower-test` mock:
//! the whole stack server-side applied, an orphan removed, the waits for PostgreSQL and
//! OpenSearch, and the two deletion policies. Its TLS: a CA and server certificates that
//! verify for the Services' names (checked with rustls's own verifier), kept across
//! reconciles, mounted into PostgreSQL and OpenSearch, and trusted by the workload.

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use meridian_crds::Region;
use meridian_operator::providers::in_cluster::{self, StackTls};
use meridian_operator::providers::{InClusterStacks, StackConfig};
use serde_json::{Value, json};

mod scripted;
use scripted::{ApiServer, expect, not_found};

const NS: &str = "meridian-region-eu-central-1";
const BINDING: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/meridian-region-eu-central-1-booking";
const RECORDS_BINDING: &str =
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/meridian-region-eu-central-1-records";

fn frankfurt() -> Region {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/regions/eu-central-1.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn stacks() -> (InClusterStacks, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (
        InClusterStacks::new(Client::new(service, "default"), StackConfig::default()),
        handle,
    )
}

/// Whether `cert` (PEM) chains to `ca` (PEM) and names `host`, as rustls (which sqlx and
/// the search client use) decides.
fn verify(ca: &str, cert: &str, host: &str) -> Result<(), rustls::Error> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let cert = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    verifier
        .verify_server_cert(
            &cert,
            &[],
            &ServerName::try_from(host.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

/// A Secret as the API server answers it: `data` base64-encoded.
fn stored_secret(name: &str, data: &Value) -> Value {
    use base64::Engine;
    let data: serde_json::Map<String, Value> = data
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap());
            (k.clone(), Value::String(encoded))
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": data})
}

fn list(kind: &str, names: &[&str]) -> Value {
    let items: Vec<Value> = names
        .iter()
        .map(|n| json!({"metadata": {"name": n, "namespace": NS}}))
        .collect();
    json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": {}, "items": items})
}

#[tokio::test]
async fn the_stack_is_applied_an_orphan_removed_and_postgres_awaited() {
    let (stacks, mut server) = stacks();
    let region = frankfurt();
    let scenario = async {
        for secret in ["postgres", "tls-ca", "postgres-tls", "opensearch-tls"] {
            expect(
                &mut server,
                Method::GET,
                &format!("/api/v1/namespaces/{NS}/secrets/{secret}"),
                &[],
                404,
                not_found("not found"),
            )
            .await;
        }
        let applied = [
            "/api/v1/namespaces/meridian-region-eu-central-1".to_string(),
            format!("/api/v1/namespaces/{NS}/secrets/tls-ca"),
            format!("/api/v1/namespaces/{NS}/secrets/ca"),
            format!("/api/v1/namespaces/{NS}/secrets/postgres"),
            format!("/api/v1/namespaces/{NS}/secrets/postgres-tls"),
            format!("/api/v1/namespaces/{NS}/services/postgres"),
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets/postgres"),
            format!("/api/v1/namespaces/{NS}/secrets/search"),
            format!("/api/v1/namespaces/{NS}/secrets/opensearch-tls"),
            format!("/api/v1/namespaces/{NS}/services/opensearch"),
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets/opensearch"),
            format!("/api/v1/namespaces/{NS}/serviceaccounts/booking"),
            BINDING.to_string(),
            format!("/apis/apps/v1/namespaces/{NS}/deployments/booking"),
            format!("/api/v1/namespaces/{NS}/services/booking"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/booking"),
            format!("/api/v1/namespaces/{NS}/serviceaccounts/records"),
            RECORDS_BINDING.to_string(),
            format!("/apis/apps/v1/namespaces/{NS}/deployments/records"),
            format!("/api/v1/namespaces/{NS}/services/records"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/records"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/postgres"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/opensearch"),
        ];
        let mut password = String::new();
        let mut secrets = std::collections::BTreeMap::new();
        for path in &applied {
            let (_, body) = expect(
                &mut server,
                Method::PATCH,
                path,
                &["fieldManager=meridian-operator", "force=true"],
                200,
                Value::Null,
            )
            .await;
            if body["kind"] == "Secret" && body["metadata"]["name"] == "postgres" {
                password = body["stringData"]["password"].as_str().unwrap().to_string();
            }
            if body["kind"] == "Secret" {
                secrets.insert(body["metadata"]["name"].as_str().unwrap().to_string(), body);
            }
        }
        assert_eq!(password.len(), 32, "a generated password");
        // One CA: the one the operator keeps, the one the workload trusts, the one that
        // signed both server certificates, which verify for their Services' names.
        let ca = secrets["tls-ca"]["stringData"]["ca.crt"].as_str().unwrap().to_string();
        assert_eq!(
            secrets["ca"]["stringData"],
            json!({"ca.crt": ca}),
            "the workload's Secret holds no key"
        );
        for name in ["postgres", "opensearch"] {
            let secret = &secrets[&format!("{name}-tls")];
            assert_eq!(secret["type"], "kubernetes.io/tls");
            assert_eq!(secret["stringData"]["ca.crt"], ca.as_str());
            let cert = secret["stringData"]["tls.crt"].as_str().unwrap();
            verify(&ca, cert, &format!("{name}.{NS}.svc")).unwrap();
            verify(&ca, cert, &format!("{name}.{NS}.svc.cluster.local")).unwrap();
            assert!(
                verify(&ca, cert, "db.example.com").is_err(),
                "{name}: another name is refused"
            );
        }
        assert_eq!(
            secrets["search"]["stringData"]["url"],
            format!("https://opensearch.{NS}.svc:9200")
        );
        // Secrets are never orphans (the roles' Secrets are published by another step).
        for (path, kind, names) in [
            (
                format!("/api/v1/namespaces/{NS}/services"),
                "Service",
                vec!["postgres", "opensearch", "booking"],
            ),
            (
                format!("/apis/apps/v1/namespaces/{NS}/statefulsets"),
                "StatefulSet",
                vec!["postgres", "opensearch"],
            ),
            (
                format!("/api/v1/namespaces/{NS}/serviceaccounts"),
                "ServiceAccount",
                vec!["booking"],
            ),
            (
                format!("/apis/apps/v1/namespaces/{NS}/deployments"),
                "Deployment",
                vec!["booking", "old-worker"],
            ),
        ] {
            let (query, _) = expect(&mut server, Method::GET, &path, &[], 200, list(kind, &names)).await;
            assert!(
                query.contains("labelSelector=app.kubernetes.io%2Finstance%3Deu-central-1"),
                "{query}"
            );
            if kind == "Deployment" {
                expect(
                    &mut server,
                    Method::DELETE,
                    &format!("{path}/old-worker"),
                    &[],
                    200,
                    json!({}),
                )
                .await;
            }
        }
        expect(
            &mut server,
            Method::GET,
            &format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"),
            &[],
            200,
            list("NetworkPolicy", &["booking", "postgres", "opensearch"]),
        )
        .await;
        expect(
            &mut server,
            Method::GET,
            &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/postgres"),
            &[],
            200,
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "postgres", "namespace": NS}, "status": {"readyReplicas": 1}}),
        )
        .await;
        (password, secrets)
    };
    let (endpoint, (password, secrets)) = scripted::against(stacks.ensure(&region), scenario).await;
    let endpoint = endpoint.unwrap();
    assert_eq!(
        endpoint.url.as_str(),
        format!("postgres://meridian:{password}@postgres.{NS}.svc:5432/meridian?sslmode=verify-full")
    );
    assert_eq!(
        endpoint.url.ca(),
        secrets["tls-ca"]["stringData"]["ca.crt"].as_str(),
        "the operator verifies the database against the stack's CA"
    );
    assert_eq!(endpoint.display, format!("postgres.{NS}.svc:5432/meridian"));
    assert_eq!(
        endpoint.secret.as_deref(),
        Some("meridian-region-eu-central-1/postgres")
    );
}

/// What stopping the stack deletes, in order: the workloads (records, booking), then each store's
/// StatefulSet and Service (their volumes stay).
fn stopped_stack() -> Vec<String> {
    let mut paths = vec![
        format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/opensearch"),
        format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/postgres"),
    ];
    paths.extend(booking_workload());
    paths.extend([
        format!("/apis/apps/v1/namespaces/{NS}/statefulsets/opensearch"),
        format!("/api/v1/namespaces/{NS}/services/opensearch"),
        format!("/apis/apps/v1/namespaces/{NS}/statefulsets/postgres"),
        format!("/api/v1/namespaces/{NS}/services/postgres"),
    ]);
    paths
}

/// The workloads' objects (records, then booking), as they are deleted.
fn booking_workload() -> Vec<String> {
    vec![
        format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/records"),
        format!("/api/v1/namespaces/{NS}/services/records"),
        format!("/apis/apps/v1/namespaces/{NS}/deployments/records"),
        RECORDS_BINDING.to_string(),
        format!("/api/v1/namespaces/{NS}/serviceaccounts/records"),
        format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/booking"),
        format!("/api/v1/namespaces/{NS}/services/booking"),
        format!("/apis/apps/v1/namespaces/{NS}/deployments/booking"),
        BINDING.to_string(),
        format!("/api/v1/namespaces/{NS}/serviceaccounts/booking"),
    ]
}

#[tokio::test]
async fn retain_stops_the_stack_but_keeps_its_data_and_delete_removes_the_namespace() {
    let (stacks, mut server) = stacks();
    let mut region = frankfurt();
    let scenario = async {
        for path in stopped_stack() {
            // Already gone is fine.
            expect(&mut server, Method::DELETE, &path, &[], 404, not_found("not found")).await;
        }
    };
    let recorded = meridian_crds::RegionResources {
        namespace: Some(NS.into()),
        cloud: Vec::new(),
        topics: Vec::new(),
    };
    let (released, ()) = scripted::against(stacks.release(&region, false, &recorded), scenario).await;
    released.unwrap();

    region.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    let scenario = async {
        // The workload first: its ClusterRoleBinding is not inside the namespace.
        for path in booking_workload() {
            expect(&mut server, Method::DELETE, &path, &[], 200, json!({})).await;
        }
        expect(
            &mut server,
            Method::DELETE,
            &format!("/api/v1/namespaces/{NS}"),
            &[],
            200,
            json!({}),
        )
        .await;
    };
    let (released, _) = scripted::against(stacks.release(&region, true, &recorded), scenario).await;
    released.unwrap();

    // A namespace the Region did not record as its own stays, even with Delete: the stack
    // stops as with Retain.
    let scenario = async {
        for path in stopped_stack() {
            expect(&mut server, Method::DELETE, &path, &[], 200, json!({})).await;
        }
    };
    let unrecorded = meridian_crds::RegionResources::default();
    let (released, ()) = scripted::against(stacks.release(&region, true, &unrecorded), scenario).await;
    released.unwrap();
}

#[tokio::test]
async fn search_waits_for_opensearch_then_answers_with_the_stacks_url() {
    let (stacks, mut server) = stacks();
    let region = frankfurt();
    let path = format!("/apis/apps/v1/namespaces/{NS}/statefulsets/opensearch");
    let statefulset = |ready: i64| json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "opensearch", "namespace": NS}, "status": {"readyReplicas": ready}});
    let scenario = expect(&mut server, Method::GET, &path, &[], 200, statefulset(0));
    let (starting, _) = scripted::against(stacks.search_url(&region), scenario).await;
    let starting = starting.unwrap_err();
    assert_eq!(starting.reason, "SearchStarting");
    assert!(starting.message.contains("opensearch"), "{starting}");
    let scenario = expect(&mut server, Method::GET, &path, &[], 200, statefulset(1));
    let (ready, _) = scripted::against(stacks.search_url(&region), scenario).await;
    assert_eq!(ready.unwrap(), format!("https://opensearch.{NS}.svc:9200"));
}

/// Reads the three certificate Secrets, answering each with `answers` (404 where `None`).
async fn certificates(stacks: &InClusterStacks, server: &mut ApiServer, answers: [Option<Value>; 3]) -> StackTls {
    let scenario = async {
        for (name, answer) in ["tls-ca", "postgres-tls", "opensearch-tls"].iter().zip(answers) {
            let path = format!("/api/v1/namespaces/{NS}/secrets/{name}");
            match answer {
                Some(data) => expect(server, Method::GET, &path, &[], 200, stored_secret(name, &data)).await,
                None => expect(server, Method::GET, &path, &[], 404, not_found("not found")).await,
            };
        }
    };
    let (tls, ()) = scripted::against(stacks.certificates("eu-central-1"), scenario).await;
    tls.unwrap()
}

/// The `stringData` of Secret `name` among `objects`.
fn string_data(objects: &[Value], name: &str) -> Value {
    objects
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Secret {name}"))["stringData"]
        .clone()
}

#[tokio::test]
async fn the_ca_and_server_certificates_are_kept_across_reconciles_and_made_again_when_they_no_longer_fit() {
    let (stacks, mut server) = stacks();
    let first = certificates(&stacks, &mut server, [None, None, None]).await;
    let objects = in_cluster::stack(&frankfurt(), &StackConfig::default(), "pw", &first);
    let stored = |name: &str| Some(string_data(&objects, name));

    // The next reconcile reads them back and keeps every one.
    let again = certificates(
        &stacks,
        &mut server,
        [stored("tls-ca"), stored("postgres-tls"), stored("opensearch-tls")],
    )
    .await;
    assert_eq!(again, first);

    // A server certificate of another CA, for other names, or near its end is made anew,
    // by the same CA; the CA itself stays.
    let mut other_ca = string_data(&objects, "postgres-tls");
    other_ca["ca.crt"] = json!("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let mut ending = string_data(&objects, "opensearch-tls");
    ending["expires"] = json!((chrono::Utc::now().date_naive() + chrono::Days::new(30)).to_string());
    let renewed = certificates(&stacks, &mut server, [stored("tls-ca"), Some(other_ca), Some(ending)]).await;
    assert_eq!(renewed.ca, first.ca);
    assert_ne!(renewed.postgres.cert_pem, first.postgres.cert_pem);
    assert_ne!(renewed.opensearch.cert_pem, first.opensearch.cert_pem);
    verify(
        &first.ca.cert_pem,
        &renewed.postgres.cert_pem,
        &format!("postgres.{NS}.svc"),
    )
    .unwrap();
    verify(
        &first.ca.cert_pem,
        &renewed.opensearch.cert_pem,
        &format!("opensearch.{NS}.svc"),
    )
    .unwrap();
    let mut renamed = string_data(&objects, "postgres-tls");
    renamed["names"] = json!("postgres.elsewhere.svc");
    let reissued = certificates(
        &stacks,
        &mut server,
        [stored("tls-ca"), Some(renamed), stored("opensearch-tls")],
    )
    .await;
    assert_ne!(reissued.postgres.cert_pem, first.postgres.cert_pem);
    assert_eq!(reissued.opensearch, first.opensearch);

    // A CA Secret that lost its key is no CA: a new one is made (and signs new certificates).
    let mut keyless = string_data(&objects, "tls-ca");
    keyless.as_object_mut().unwrap().remove("ca.key");
    let fresh = certificates(
        &stacks,
        &mut server,
        [Some(keyless), stored("postgres-tls"), stored("opensearch-tls")],
    )
    .await;
    assert_ne!(fresh.ca, first.ca);
    verify(
        &fresh.ca.cert_pem,
        &fresh.postgres.cert_pem,
        &format!("postgres.{NS}.svc"),
    )
    .unwrap();
    assert!(
        verify(
            &first.ca.cert_pem,
            &fresh.postgres.cert_pem,
            &format!("postgres.{NS}.svc")
        )
        .is_err()
    );
}

#[tokio::test]
async fn postgres_serves_tls_only_with_its_certificate_in_files_it_accepts() {
    let (stacks, mut server) = stacks();
    let tls = certificates(&stacks, &mut server, [None, None, None]).await;
    let objects = in_cluster::stack(&frankfurt(), &StackConfig::default(), "pw", &tls);
    let postgres = objects
        .iter()
        .find(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == "postgres")
        .unwrap();
    let pod = &postgres["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "tls-secret", "secret": {"secretName": "postgres-tls", "defaultMode": 0o400}},
            {"name": "tls", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            // Writable places for a read-only root: the socket directory and /tmp.
            {"name": "run", "emptyDir": {"sizeLimit": "16Mi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ])
    );
    // The init container runs as the server's account (999, the pod's user) and copies
    // certificate and key, mode 0600
    // (PostgreSQL refuses a key others can read), and writes the client rules: TLS only.
    let init = &pod["initContainers"][0];
    assert_eq!(init["image"], "postgres:15");
    let script = init["command"][2].as_str().unwrap();
    assert!(
        script.contains("install -m 0600 -t /tls /tls-secret/tls.crt /tls-secret/tls.key"),
        "{script}"
    );
    assert!(
        script.contains("'local all all trust' 'hostssl all all all scram-sha-256'"),
        "{script}"
    );
    assert!(!script.contains("'host "), "no rule admits TCP without TLS: {script}");
    let container = &pod["containers"][0];
    assert_eq!(
        container["args"],
        json!([
            "-c",
            "ssl=on",
            "-c",
            "ssl_cert_file=/tls/tls.crt",
            "-c",
            "ssl_key_file=/tls/tls.key",
            "-c",
            "hba_file=/tls/pg_hba.conf"
        ])
    );
    assert_eq!(
        container["volumeMounts"],
        json!([
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            {"name": "tls", "mountPath": "/tls", "readOnly": true},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            {"name": "tmp", "mountPath": "/tmp"},
        ])
    );
    // A new certificate rolls the pod (PostgreSQL reads it at start).
    let annotation = &postgres["spec"]["template"]["metadata"]["annotations"]["platform.meridian.dev/certificate"];
    assert_eq!(annotation.as_str().unwrap().len(), 16);
    let renewed = StackTls {
        postgres: tls
            .ca
            .issue("eu-central-1", &in_cluster::service_names("eu-central-1", "postgres"))
            .unwrap(),
        ..tls.clone()
    };
    let again = in_cluster::stack(&frankfurt(), &StackConfig::default(), "pw", &renewed);
    let again = again
        .iter()
        .find(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == "postgres")
        .unwrap();
    assert_ne!(
        &again["spec"]["template"]["metadata"]["annotations"]["platform.meridian.dev/certificate"],
        annotation
    );
    // The key stays out of every Secret but its own and the CA's.
    for o in objects.iter().filter(|o| o["kind"] == "Secret") {
        let text = o.to_string();
        let name = o["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            text.contains(&tls.postgres.key_pem.replace('\n', "\\n")),
            name == "postgres-tls",
            "{name}"
        );
        assert_eq!(
            text.contains(&tls.ca.key_pem.replace('\n', "\\n")),
            name == "tls-ca",
            "{name}"
        );
    }
}

#[tokio::test]
async fn opensearch_serves_https_with_its_certificate_and_the_workload_trusts_the_stacks_ca() {
    let (stacks, mut server) = stacks();
    let tls = certificates(&stacks, &mut server, [None, None, None]).await;
    let objects = in_cluster::stack(&frankfurt(), &StackConfig::default(), "pw", &tls);
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap()
            .clone()
    };
    let opensearch = find("StatefulSet", "opensearch");
    let pod = &opensearch["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "tls", "secret": {"secretName": "opensearch-tls", "defaultMode": 0o440}}])
    );
    // The image's account (Pod Security restricted); the group reads the 0440 Secret files.
    assert_eq!(
        pod["securityContext"],
        json!({
            "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    let container = &pod["containers"][0];
    let env: std::collections::BTreeMap<String, String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into()))
        .collect();
    assert!(!env.contains_key("DISABLE_SECURITY_PLUGIN"), "{env:?}");
    for (key, value) in [
        ("plugins.security.ssl_only", "true"),
        ("plugins.security.ssl.http.enabled", "true"),
        ("plugins.security.ssl.http.pemcert_filepath", "tls/tls.crt"),
        ("plugins.security.ssl.http.pemkey_filepath", "tls/tls.key"),
        ("plugins.security.ssl.http.pemtrustedcas_filepath", "tls/ca.crt"),
        ("plugins.security.ssl.transport.pemcert_filepath", "tls/tls.crt"),
        ("plugins.security.ssl.transport.pemkey_filepath", "tls/tls.key"),
        ("plugins.security.ssl.transport.pemtrustedcas_filepath", "tls/ca.crt"),
        ("DISABLE_INSTALL_DEMO_CONFIG", "true"),
    ] {
        assert_eq!(env.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert_eq!(
        container["volumeMounts"][1],
        json!({"name": "tls", "mountPath": "/usr/share/opensearch/config/tls", "readOnly": true})
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(
        string_data(&objects, "opensearch-tls")["ca.crt"],
        json!(tls.ca.cert_pem),
        "OpenSearch's trusted CA file is the stack's CA"
    );

    let booking = find("Deployment", "booking");
    let pod = &booking["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "ca", "secret": {"secretName": "ca", "optional": true}},
            // /tmp for a read-only root.
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ])
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["volumeMounts"],
        json!([
            {"name": "ca", "mountPath": "/etc/meridian/ca", "readOnly": true},
            {"name": "tmp", "mountPath": "/tmp"},
        ])
    );
    let env = container["env"].as_array().unwrap();
    for name in ["DATABASE_CA_FILE", "SEARCH_CA_FILE"] {
        assert!(
            env.contains(&json!({"name": name, "value": "/etc/meridian/ca/ca.crt"})),
            "{name}: {env:?}"
        );
    }
    assert_eq!(string_data(&objects, "ca"), json!({"ca.crt": tls.ca.cert_pem}));
}
