//! A Kubernetes API that keeps objects, for the tests whose backends write and read them
//! back (Secrets, namespaces) rather than the tests that check each exact call.

/// The Kubernetes API's side (through kube's `tower-test` mock): keeps what is applied,
/// answers reads from it, and forgets what is deleted. An apply replaces the object, as
/// server-side apply does for the fields one manager owns; a Secret's `stringData` is
/// stored as `data`, as the API server does.
pub async fn serve_objects(
    mut handle: tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<kube::client::Body>>,
) {
    use base64::Engine;
    let mut objects: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    let not_found = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found", "metadata": {}});
    while let Some((request, reply)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let bytes = body.collect_bytes().await.unwrap();
        let found = match parts.method {
            http::Method::PATCH => {
                let mut applied: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                if let Some(strings) = applied.as_object_mut().unwrap().remove("stringData") {
                    let data: serde_json::Map<String, serde_json::Value> = strings
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap());
                            (k.clone(), encoded.into())
                        })
                        .collect();
                    applied["data"] = data.into();
                }
                objects.insert(path.clone(), applied.clone());
                Some(applied)
            }
            // A list (kube asks with a label selector): the kept objects under the path whose
            // labels carry every `key=value` asked for.
            http::Method::GET if parts.uri.query().is_some_and(|q| q.contains("labelSelector=")) => {
                let query = parts.uri.query().unwrap_or_default();
                let selector = url::form_urlencoded::parse(query.as_bytes())
                    .find(|(key, _)| key == "labelSelector")
                    .map(|(_, value)| value.into_owned())
                    .unwrap_or_default();
                let wanted: Vec<(String, String)> = selector
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let items: Vec<serde_json::Value> = objects
                    .iter()
                    .filter(|(kept, _)| kept.starts_with(&format!("{path}/")))
                    .filter(|(_, object)| {
                        wanted
                            .iter()
                            .all(|(k, v)| object["metadata"]["labels"][k.as_str()].as_str() == Some(v.as_str()))
                    })
                    .map(|(_, object)| object.clone())
                    .collect();
                Some(serde_json::json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}))
            }
            http::Method::GET => objects.get(&path).cloned(),
            http::Method::DELETE => objects.remove(&path).map(|_| serde_json::json!({})),
            other => panic!("unexpected {other} {path}"),
        };
        let (status, answer) = match found {
            Some(object) => (200, object),
            None => (404, not_found.clone()),
        };
        reply.send_response(
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
    }
}

/// What Secret `ns/name` holds (it must exist).
pub async fn secret(kube: &kube::Client, ns: &str, name: &str) -> std::collections::BTreeMap<String, String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(kube.clone(), ns);
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret {ns}/{name}: {e}"))
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// A client of a fresh [`serve_objects`] API.
pub fn client() -> kube::Client {
    let (service, handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    tokio::spawn(serve_objects(handle));
    kube::Client::new(service, "default")
}
