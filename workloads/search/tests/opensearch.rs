//! The OpenSearch client against recorded OpenSearch 2.x exchanges. No OpenSearch runs
//! here, so each recording (tests/recordings/*.json) lists the requests the client must
//! send, checked exactly (method, path, query, headers named, JSON or NDJSON body compared
//! as JSON), and the answers OpenSearch 2.x gives to them, written after the shapes of the
//! OpenSearch 2.x REST API reference (create index, aliases, _cat/indices, bulk with
//! external versioning and require_alias, search).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_search::opensearch::{Credentials, OpenSearch};
use meridian_search::{Document, IndexSettings, Language, Query, SearchError};
use serde_json::Value;
use uuid::Uuid;

/// A replaying OpenSearch on 127.0.0.1: answers each request with the next recorded
/// answer if it is the next recorded request, and otherwise with 599 and a note of what
/// differed.
struct Replay {
    exchanges: Arc<Mutex<Vec<Value>>>,
    mismatches: Arc<Mutex<Vec<String>>>,
    endpoint: String,
}

impl Replay {
    async fn start(recording: &str) -> Self {
        let path = format!("{}/tests/recordings/{recording}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let fingerprint = german().fingerprint();
        let mut exchanges: Vec<Value> = serde_json::from_str(&text.replace("{{fingerprint}}", &fingerprint)).unwrap();
        exchanges.reverse();
        let exchanges = Arc::new(Mutex::new(exchanges));
        let mismatches = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state((exchanges.clone(), mismatches.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Replay {
            exchanges,
            mismatches,
            endpoint,
        }
    }

    fn client(&self) -> OpenSearch {
        OpenSearch::new(&self.endpoint, None).unwrap()
    }

    /// Every recorded exchange happened, and nothing else.
    fn finish(&self) {
        let mismatches = self.mismatches.lock().unwrap();
        assert!(
            mismatches.is_empty(),
            "requests differed from the recording:\n{}",
            mismatches.join("\n")
        );
        let left = self.exchanges.lock().unwrap();
        assert!(left.is_empty(), "recorded requests never sent: {left:#?}");
    }
}

type Shared = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<Vec<String>>>);

async fn answer(State((exchanges, mismatches)): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let seen = format!(
        "{} {}?{}",
        parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or_default()
    );
    let Some(exchange) = exchanges.lock().unwrap().pop() else {
        mismatches.lock().unwrap().push(format!("unexpected request {seen}"));
        return (StatusCode::from_u16(599).unwrap(), "not recorded").into_response();
    };
    let expected = &exchange["request"];
    let mut differences = Vec::new();
    if parts.method.as_str() != expected["method"] || parts.uri.path() != expected["path"] {
        differences.push(format!("expected {} {}", expected["method"], expected["path"]));
    }
    let query = parts.uri.query().unwrap_or_default();
    if expected["query"].as_str().unwrap_or_default() != query {
        differences.push(format!("query {query:?}, expected {}", expected["query"]));
    }
    for (name, value) in expected["headers"].as_object().into_iter().flatten() {
        let sent = parts.headers.get(name).and_then(|v| v.to_str().ok());
        if sent != value.as_str() {
            differences.push(format!("header {name}: {sent:?}, expected {value}"));
        }
    }
    let sent_lines = |bytes: &[u8]| -> Vec<Value> {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.into())))
            .collect()
    };
    if let Some(lines) = expected["ndjson"].as_array() {
        let sent = sent_lines(&bytes);
        if &sent != lines {
            differences.push(format!(
                "NDJSON body\n  sent     {}\n  expected {}",
                Value::from(sent),
                Value::from(lines.clone())
            ));
        }
    } else if !expected["body"].is_null() {
        let sent: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if sent != expected["body"] {
            differences.push(format!("body\n  sent     {sent}\n  expected {}", expected["body"]));
        }
    } else if !bytes.is_empty() {
        differences.push(format!("unexpected body {}", String::from_utf8_lossy(&bytes)));
    }
    if !differences.is_empty() {
        mismatches
            .lock()
            .unwrap()
            .push(format!("{seen}: {}", differences.join("; ")));
        return (StatusCode::from_u16(599).unwrap(), "differs from the recording").into_response();
    }
    let response = &exchange["response"];
    let status = StatusCode::from_u16(response["status"].as_u64().unwrap() as u16).unwrap();
    match response["text"].as_str() {
        Some(text) => (status, text.to_string()).into_response(),
        None => (
            status,
            [("content-type", "application/json")],
            response["body"].to_string(),
        )
            .into_response(),
    }
}

fn german() -> IndexSettings {
    IndexSettings {
        language: Language::German,
        synonyms: vec!["Hausarzt, Allgemeinarzt => Allgemeinmedizin".into()],
    }
}

fn doc(n: u128, family: &str, version: i64, country: &str) -> Document {
    Document {
        id: Uuid::from_u128(0xa0 + n),
        country_code: country.into(),
        given_name: "Anna".into(),
        family_name: family.into(),
        specialty: "Kardiologie".into(),
        city: "Berlin".into(),
        languages: vec!["de".into()],
        active: true,
        version,
    }
}

#[tokio::test]
async fn an_index_version_is_created_with_the_countrys_analysis_once() {
    let replay = Replay::start("create_index").await;
    let credentials = Credentials {
        username: "admin".into(),
        password: "admin".into(),
    };
    let client = OpenSearch::new(&format!("{}/", replay.endpoint), Some(credentials)).unwrap();
    client.create_index("practitioners_de_v1", &german()).await.unwrap();
    client.create_index("practitioners_de_v1", &german()).await.unwrap();
    replay.finish();
}

#[tokio::test]
async fn an_alias_resolves_to_its_version_and_fingerprint() {
    let replay = Replay::start("resolve").await;
    let client = replay.client();
    assert_eq!(client.resolve("practitioners_de").await.unwrap(), None);
    let resolved = client.resolve("practitioners_de").await.unwrap().unwrap();
    assert_eq!(
        (resolved.index.as_str(), resolved.fingerprint.as_str()),
        ("practitioners_de_v1", "0a1b2c3d4e5f6071")
    );
    replay.finish();
}

#[tokio::test]
async fn the_alias_moves_in_one_call_and_versions_sort_by_number() {
    let replay = Replay::start("swap").await;
    let client = replay.client();
    client
        .point_alias("practitioners_de", "practitioners_de_v2")
        .await
        .unwrap();
    assert_eq!(
        client.versions("practitioners_de").await.unwrap(),
        ["practitioners_de_v2", "practitioners_de_v10"]
    );
    client.delete_index("practitioners_de_v1").await.unwrap();
    client.delete_index("practitioners_de_v1").await.unwrap();
    replay.finish();
}

#[tokio::test]
async fn bulk_writes_are_versioned_and_only_real_item_errors_fail() {
    let replay = Replay::start("bulk").await;
    let client = replay.client();
    // One document OpenSearch holds at this version already (409): not an error.
    client
        .upsert(
            "practitioners_de",
            &[doc(1, "Schmidt", 3, "DE"), doc(2, "Weber", 1, "DE")],
        )
        .await
        .unwrap();
    let err = client
        .fill("practitioners_de_v1", &[doc(2, "Weber", 2, "DE")])
        .await
        .unwrap_err();
    match err {
        SearchError::Refused { request, status, body } => {
            assert_eq!((request.as_str(), status), ("POST /practitioners_de_v1/_bulk", 400));
            assert!(body.contains("mapper_parsing_exception"), "{body}");
        }
        other => panic!("{other}"),
    }
    replay.finish();
}

#[tokio::test]
async fn writing_through_a_missing_alias_creates_nothing_and_says_so() {
    let replay = Replay::start("missing_alias").await;
    let err = replay
        .client()
        .upsert("practitioners_fr", &[doc(1, "Martin", 1, "FR")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SearchError::NoSuchIndex(ref i) if i == "practitioners_fr"),
        "{err}"
    );
    replay.finish();
}

#[tokio::test]
async fn a_search_sends_filters_and_fuzzy_words_and_reads_the_hits() {
    let replay = Replay::start("search").await;
    let client = replay.client();
    let query = Query {
        text: Some("Kardiologin  Schmitt".into()),
        specialty: Some("Kardiologie".into()),
        city: Some(" Berlin".into()),
        language: Some("EN".into()),
        offset: 20,
        limit: 10,
    };
    let hits = client.search("practitioners_de", &query).await.unwrap();
    assert_eq!(hits.total, 21);
    assert_eq!(hits.hits[0].document, doc(1, "Schmidt", 3, "DE"));
    assert!((hits.hits[0].score - 4.2).abs() < 1e-6);
    let missing = client
        .search(
            "practitioners_gb",
            &Query {
                limit: 20,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, SearchError::NoSuchIndex(_)), "{missing}");
    replay.finish();
}

#[tokio::test]
async fn refusals_and_an_unreachable_cluster_are_errors_that_say_what_happened() {
    let replay = Replay::start("unauthorized").await;
    let err = replay.client().resolve("practitioners_de").await.unwrap_err();
    match &err {
        SearchError::Refused { request, status, body } => {
            assert_eq!((request.as_str(), *status), ("GET /_alias/practitioners_de", 401));
            assert!(body.contains("Unauthorized"), "{body}");
        }
        other => panic!("{other}"),
    }
    replay.finish();

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = OpenSearch::new(&format!("http://{closed}"), None).unwrap();
    let err = client.resolve("practitioners_de").await.unwrap_err();
    assert!(matches!(err, SearchError::Unreachable(_)), "{err}");
    assert!(OpenSearch::new("not a url", None).is_err());
}
