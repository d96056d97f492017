//! `meridian vault rotate --cluster`'s steps against a Region whose Secrets are Kubernetes
//! Secrets (kube's `tower-test` mock plays the API server) and whose database is a real
//! PostgreSQL reached as the vault role: the vault role's URL read from `postgres-vault`,
//! the keys read from `vault-keys`, written back with the next key active before any row
//! moves (only if the Secret is still as read: a write of the operator's in between is
//! kept, and the rotation made again on top of it), then every row moved onto it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use meridian_crds::{Region, RegionProvider};
use meridian_operator::controller::Context;
use meridian_operator::providers::{KubeRegionSecrets, Providers, StaticSecrets};
use meridian_records::keys::{self, Keyring};
use meridian_records::vault;
use serde_json::{Value, json};
use sqlx::PgPool;

mod sealed;

const NS: &str = "/api/v1/namespaces/meridian-region-eu-central-1/secrets";

fn secret(name: &str, data: &BTreeMap<String, String>) -> Value {
    let data: BTreeMap<&String, String> = data.iter().map(|(k, v)| (k, STANDARD.encode(v))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": name, "namespace": "meridian-region-eu-central-1"}, "data": data})
}

/// The next request, which must read Secret `name`; its reply.
async fn get(
    handle: &mut tower_test::mock::Handle<Request<Body>, Response<Body>>,
    name: &str,
) -> tower_test::mock::SendResponse<Response<Body>> {
    let (request, reply) = next(handle).await;
    assert_eq!(
        (request.method(), request.uri().path()),
        (&Method::GET, format!("{NS}/{name}").as_str())
    );
    reply
}

fn versioned(mut secret: Value, version: &str) -> Value {
    secret["metadata"]["resourceVersion"] = json!(version);
    secret
}

/// A `PUT` of Secret `vault-keys`: the version it is conditional on, and its data.
async fn put(request: Request<Body>) -> (String, BTreeMap<String, String>) {
    assert_eq!(
        (request.method(), request.uri().path()),
        (&Method::PUT, format!("{NS}/vault-keys").as_str())
    );
    assert!(
        request.uri().query().unwrap_or_default().contains("fieldManager="),
        "{:?}",
        request.uri()
    );
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let data = body["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let bytes = STANDARD.decode(v.as_str().unwrap()).unwrap();
            (k.clone(), String::from_utf8(bytes).unwrap())
        })
        .collect();
    (body["metadata"]["resourceVersion"].as_str().unwrap().to_string(), data)
}

async fn next(
    handle: &mut tower_test::mock::Handle<Request<Body>, Response<Body>>,
) -> (Request<Body>, tower_test::mock::SendResponse<Response<Body>>) {
    tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("a request")
        .expect("the client is alive")
}

fn respond(reply: tower_test::mock::SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    reply.send_response(
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

#[tokio::test]
async fn a_cluster_regions_keys_are_rotated_in_its_secret_before_its_rows_move() {
    // The Region's database: the platform schema, the vault role, two DE patients under k1.
    let pg = meridian_localpg::TempCluster::start().await.unwrap();
    let admin = PgPool::connect(&pg.url()).await.unwrap();
    {
        let mut conn = admin.acquire().await.unwrap();
        meridian_shared::schema::prepare(&mut conn, &["DE"]).await.unwrap();
    }
    meridian_records::roles::create_login(
        &admin,
        "records_vault",
        "secret",
        meridian_shared::schema::vault_privileges,
    )
    .await
    .unwrap();
    let vault_url = meridian_records::roles::as_login(&pg.url(), "records_vault", "secret");
    let mut stored = BTreeMap::new();
    keys::ensure_country(&mut stored, "DE");
    keys::ensure_country(&mut stored, "AT");
    let first = Keyring::from_secret(&stored, "DE").unwrap();
    sealed::seal_patients(&mut admin.acquire().await.unwrap(), &first, 2).await;

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let providers = Providers::new(None, Arc::new(StaticSecrets::default()))
        .with_region_secrets(Arc::new(KubeRegionSecrets::new(client)));
    let ctx = Context::new(providers);
    let mut region: Region = serde_yaml_ng::from_str(include_str!("../../examples/regions/eu-central-1.yaml")).unwrap();
    region.spec.provider = RegionProvider::External;

    let before = stored.clone();
    let server = tokio::spawn(async move {
        // The vault role's connection first: nothing is rotated before the database is reached.
        let reply = get(&mut handle, "postgres-vault").await;
        let role = BTreeMap::from([
            ("url".to_string(), vault_url),
            ("passwordSet".to_string(), "true".to_string()),
        ]);
        respond(reply, StatusCode::OK, &secret("postgres-vault", &role));
        let reply = get(&mut handle, "vault-keys").await;
        respond(reply, StatusCode::OK, &secret("vault-keys", &before));
        // Read again with its version, to be written only if still at that version.
        let reply = get(&mut handle, "vault-keys").await;
        respond(reply, StatusCode::OK, &versioned(secret("vault-keys", &before), "1"));
        let (request, reply) = next(&mut handle).await;
        let (version, first_try) = put(request).await;
        assert_eq!(version, "1");
        assert_eq!(first_try["DE.active"], "k2");
        // Meanwhile the operator gave a new country its first key: the write is refused...
        respond(
            reply,
            StatusCode::CONFLICT,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                    "message": "the object has been modified; please apply your changes to the latest version and try again"}),
        );
        // ... and the rotation is made again on what the Secret holds now.
        let mut now = before.clone();
        keys::ensure_country(&mut now, "FR");
        let reply = get(&mut handle, "vault-keys").await;
        respond(reply, StatusCode::OK, &versioned(secret("vault-keys", &now), "2"));
        let (request, reply) = next(&mut handle).await;
        let (version, written) = put(request).await;
        assert_eq!(version, "2");
        respond(reply, StatusCode::OK, &versioned(secret("vault-keys", &written), "3"));
        for (entry, value) in &now {
            if entry != "DE.active" {
                assert_eq!(&written[entry], value, "{entry}: the operator's write is kept");
            }
        }
        written
    });

    let outcome = meridian_operator::vault_cmd::with_region(&ctx, &region, "DE", true, false, 500).await;
    let written = server.await.unwrap();
    assert_eq!(outcome.error, None, "{}", outcome.text);
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(
        outcome.text,
        "DE: key k2 added to meridian-region-eu-central-1/vault-keys and made active\n\
         DE: key k2 is active; 2 patients and 2 history versions moved from k1, 0 left\n"
    );
    assert_eq!(written["DE.active"], "k2");
    for (entry, value) in &stored {
        if entry != "DE.active" {
            assert_eq!(&written[entry], value, "{entry} kept as it was");
        }
    }
    // Every row is under the key the Secret now holds, and opens with it alone.
    let mut only_k2 = written.clone();
    only_k2.remove("DE.k1");
    let ring = Keyring::from_secret(&only_k2, "DE").unwrap();
    let rows: Vec<(uuid::Uuid, String, Vec<u8>)> = sqlx::query_as(
        "SELECT client_id, key_id, sealed FROM vault.patients
         UNION ALL SELECT client_id, key_id, sealed FROM vault.patient_history",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    for (id, key_id, sealed) in rows {
        assert_eq!(key_id, "k2");
        vault::open(&ring, id, &key_id, &sealed).unwrap();
    }
}
