//! The OpenSearch client against recorded OpenSearch 2.x exchanges.
//!
//! The pairs in tests/recordings/*.json follow the OpenSearch 2.x REST API reference (create
//! index, get alias and mapping, `_aliases`, `_cat/indices`, `_bulk` with external versions
//! and `require_alias`, `_search`) and the error bodies OpenSearch's source produces; they
//! were not captured from a live cluster, as none is available here. Each request the
//! client sends must be the next recorded one: method, path, exact query string, the
//! headers a recording names (`null`: must be absent), and the body compared as JSON
//! (NDJSON line by line, as a list of JSON values).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meridian_search::opensearch::{Credentials, OpenSearch};
use meridian_search::{Document, IndexSettings, Language, Query, Resolved, SearchError};
use serde_json::Value;
use uuid::Uuid;

/// A replaying OpenSearch on 127.0.0.1: answers each request with the next recorded answer
/// if it is the next recorded request, and otherwise with 599 and what differed.
struct Replay {
    script: Arc<Script>,
    endpoint: String,
}

#[derive(Default)]
struct Script {
    exchanges: Mutex<VecDeque<Value>>,
    mismatches: Mutex<Vec<String>>,
}

/// A test that fails on the client's answer to a 599 still shows every difference in full.
impl Drop for Replay {
    fn drop(&mut self) {
        if let Ok(mismatches) = self.script.mismatches.lock()
            && !mismatches.is_empty()
        {
            eprintln!("requests differed from the recording:\n{}", mismatches.join("\n"));
        }
    }
}

impl Replay {
    async fn start(recording: &str) -> Self {
        let path = format!("{}/tests/recordings/{recording}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let exchanges: VecDeque<Value> = serde_json::from_str(&text).unwrap();
        let script = Arc::new(Script {
            exchanges: Mutex::new(exchanges),
            ..Default::default()
        });
        let app = axum::Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Replay { script, endpoint }
    }

    fn client(&self) -> OpenSearch {
        OpenSearch::new(&self.endpoint, None).unwrap()
    }

    /// Every recorded exchange happened, in order, and nothing else.
    fn finish(&self) {
        let mismatches = self.script.mismatches.lock().unwrap();
        assert!(
            mismatches.is_empty(),
            "requests differed from the recording:\n{}",
            mismatches.join("\n")
        );
        let left = self.script.exchanges.lock().unwrap();
        assert!(left.is_empty(), "recorded requests never sent: {left:#?}");
    }
}

async fn answer(State(script): State<Arc<Script>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let query = parts.uri.query().unwrap_or_default();
    let seen = format!("{} {}?{query}", parts.method, parts.uri.path());
    let Some(exchange) = script.exchanges.lock().unwrap().pop_front() else {
        let note = format!("{seen}: not in the recording");
        script.mismatches.lock().unwrap().push(note.clone());
        return (StatusCode::from_u16(599).unwrap(), note).into_response();
    };
    let differences = differences(&exchange["request"], &parts, query, &bytes);
    if !differences.is_empty() {
        let note = format!("{seen}:\n  {}", differences.join("\n  "));
        script.mismatches.lock().unwrap().push(note.clone());
        return (StatusCode::from_u16(599).unwrap(), note).into_response();
    }
    let response = &exchange["response"];
    let status = StatusCode::from_u16(response["status"].as_u64().unwrap() as u16).unwrap();
    match response["text"].as_str() {
        Some(text) => (status, text.to_string()).into_response(),
        None => (
            status,
            [("content-type", "application/json; charset=UTF-8")],
            response["body"].to_string(),
        )
            .into_response(),
    }
}

fn differences(expected: &Value, parts: &axum::http::request::Parts, query: &str, bytes: &[u8]) -> Vec<String> {
    let mut differences = Vec::new();
    if parts.method.as_str() != expected["method"] || parts.uri.path() != expected["path"] {
        differences.push(format!("expected {} {}", expected["method"], expected["path"]));
    }
    if expected["query"].as_str().unwrap_or_default() != query {
        differences.push(format!("query {query:?}, expected {}", expected["query"]));
    }
    for (name, value) in expected["headers"].as_object().into_iter().flatten() {
        let sent = parts.headers.get(name).and_then(|v| v.to_str().ok());
        if sent != value.as_str() {
            differences.push(format!("header {name}: {sent:?}, expected {value}"));
        }
    }
    let mut body = Vec::new();
    json_differences("", &sent_body(&parts.headers, bytes), &expected["body"], &mut body);
    differences.extend(body.into_iter().map(|d| format!("body{d}")));
    differences
}

/// Where `sent` and `expected` differ, as JSON pointers with both values.
fn json_differences(at: &str, sent: &Value, expected: &Value, out: &mut Vec<String>) {
    match (sent, expected) {
        (Value::Object(s), Value::Object(e)) => {
            let mut keys: Vec<&String> = s.keys().chain(e.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (s, e) = (s.get(key), e.get(key));
                let at = format!("{at}/{key}");
                match (s, e) {
                    (Some(s), Some(e)) => json_differences(&at, s, e, out),
                    (Some(s), None) => out.push(format!("{at}: sent {s}, not expected")),
                    (None, Some(e)) => out.push(format!("{at}: missing, expected {e}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(s), Value::Array(e)) if s.len() == e.len() => {
            for (i, (s, e)) in s.iter().zip(e).enumerate() {
                json_differences(&format!("{at}/{i}"), s, e, out);
            }
        }
        (s, e) if s != e => out.push(format!("{at}: sent {s}, expected {e}")),
        _ => {}
    }
}

/// The body as JSON: `null` when empty, a list of lines for NDJSON.
fn sent_body(headers: &HeaderMap, bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let parse = |s: &str| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()));
    let ndjson = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
    if bytes.is_empty() {
        Value::Null
    } else if ndjson {
        assert!(text.ends_with('\n'), "NDJSON must end with a newline: {text:?}");
        Value::Array(text.lines().map(parse).collect())
    } else {
        parse(&text)
    }
}

fn german() -> IndexSettings {
    IndexSettings {
        language: Language::German,
        synonyms: vec!["Hausarzt, Allgemeinarzt => Allgemeinmedizin".into()],
    }
}

fn doc(n: u128, family: &str, version: i64, country: &str, city: &str) -> Document {
    Document {
        id: Uuid::from_u128(0xa0 + n),
        country_code: country.into(),
        given_name: "Anna".into(),
        family_name: family.into(),
        specialty: "Kardiologie".into(),
        city: city.into(),
        languages: vec!["de".into()],
        active: true,
        version,
    }
}

#[tokio::test]
async fn an_index_version_is_created_with_the_countrys_analysis_once() {
    let replay = Replay::start("create_index").await;
    let credentials = Credentials {
        username: "master".into(),
        password: "S3cret!x".into(),
    };
    // A trailing slash on the endpoint does not double the one of the path.
    let client = OpenSearch::new(&format!("{}/", replay.endpoint), Some(credentials)).unwrap();
    client.create_index("practitioners_de_v1", &german()).await.unwrap();
    // Already there (400 resource_already_exists_exception): left as it is.
    client.create_index("practitioners_de_v1", &german()).await.unwrap();
    let standard = IndexSettings {
        language: Language::Standard,
        synonyms: Vec::new(),
    };
    replay
        .client()
        .create_index("practitioners_gb_v1", &standard)
        .await
        .unwrap();
    replay.finish();
}

#[tokio::test]
async fn an_alias_resolves_to_its_version_and_fingerprint() {
    let replay = Replay::start("resolve").await;
    let client = replay.client();
    assert_eq!(client.resolve("practitioners_de").await.unwrap(), None);
    let resolved = client.resolve("practitioners_de").await.unwrap();
    let expected = |index: &str| Resolved {
        index: index.into(),
        fingerprint: german().fingerprint(),
    };
    assert_eq!(resolved, Some(expected("practitioners_de_v1")));
    // Held by two versions (a swap interrupted by hand): the write index counts.
    let resolved = client.resolve("practitioners_de").await.unwrap();
    assert_eq!(resolved, Some(expected("practitioners_de_v2")));
    replay.finish();
}

#[tokio::test]
async fn the_alias_moves_in_one_call_and_versions_sort_by_number() {
    let replay = Replay::start("swap").await;
    let client = replay.client();
    // First version: nothing to remove. Then v1 -> v2 in one request. Then again: no-op add.
    for index in ["practitioners_de_v1", "practitioners_de_v2", "practitioners_de_v2"] {
        client.point_alias("practitioners_de", index).await.unwrap();
    }
    assert_eq!(
        client.versions("practitioners_de").await.unwrap(),
        ["practitioners_de_v1", "practitioners_de_v2", "practitioners_de_v10"]
    );
    // Deleted, and deleting again (404) is fine.
    client.delete_index("practitioners_de_v1").await.unwrap();
    client.delete_index("practitioners_de_v1").await.unwrap();
    assert_eq!(
        client.versions("practitioners_de").await.unwrap(),
        ["practitioners_de_v2", "practitioners_de_v10"]
    );
    replay.finish();
}

#[tokio::test]
async fn bulk_writes_are_versioned_and_only_real_item_errors_fail() {
    let replay = Replay::start("bulk").await;
    let client = replay.client();
    let (schmidt, weber) = (doc(1, "Schmidt", 3, "DE", "Berlin"), doc(2, "Weber", 1, "DE", "Berlin"));
    // OpenSearch holds Schmidt at this version already (409): a replay, not an error.
    client
        .upsert("practitioners_de", &[schmidt.clone(), weber])
        .await
        .unwrap();
    let weber = doc(2, "Weber", 2, "DE", "Berlin");
    let err = client
        .upsert(
            "practitioners_de",
            &[weber.clone(), doc(3, "Becker", 5, "DE", "Berlin")],
        )
        .await
        .unwrap_err();
    match err {
        SearchError::Refused { request, status, body } => {
            assert_eq!((request.as_str(), status), ("POST /practitioners_de/_bulk", 400));
            assert!(body.contains("strict_dynamic_mapping_exception"), "{body}");
        }
        other => panic!("{other}"),
    }
    // Filling a version being built names the index itself, without require_alias.
    client.fill("practitioners_de_v2", &[schmidt, weber]).await.unwrap();
    replay.finish();
}

#[tokio::test]
async fn writing_through_a_missing_alias_creates_nothing_and_says_so() {
    let replay = Replay::start("missing_alias").await;
    let err = replay
        .client()
        .upsert("practitioners_fr", &[doc(1, "Martin", 1, "FR", "Paris")])
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
        // "für" is a German stop word: it must not make the search find nothing.
        text: Some("Kardiologin  für Schmitt".into()),
        specialty: Some("Kardiologie".into()),
        city: Some(" München".into()),
        language: Some("EN".into()),
        offset: 20,
        limit: 10,
    };
    let hits = client.search("practitioners_de", &query).await.unwrap();
    assert_eq!(hits.total, 22);
    let found: Vec<(f32, &Document)> = hits.hits.iter().map(|h| (h.score, &h.document)).collect();
    assert_eq!(
        found,
        [
            (4.2, &doc(1, "Schmidt", 3, "DE", "München")),
            (1.5, &doc(2, "Schmitz", 7, "DE", "München"))
        ]
    );
    // No text: every active practitioner of the country, at most 1000 a page.
    let all = Query {
        text: Some("  ".into()),
        limit: 5000,
        ..Default::default()
    };
    assert_eq!(client.search("practitioners_de", &all).await.unwrap().total, 0);
    let missing = client.search("practitioners_gb", &Query::default()).await.unwrap_err();
    assert!(
        matches!(missing, SearchError::NoSuchIndex(ref i) if i == "practitioners_gb"),
        "{missing}"
    );
    replay.finish();
}

#[tokio::test]
async fn refusals_are_errors_that_say_what_was_refused() {
    let replay = Replay::start("unauthorized").await;
    let credentials = Credentials {
        username: "admin".into(),
        password: "wrong".into(),
    };
    let client = OpenSearch::new(&replay.endpoint, Some(credentials)).unwrap();
    let err = client.resolve("practitioners_de").await.unwrap_err();
    match &err {
        SearchError::Refused { request, status, body } => {
            assert_eq!((request.as_str(), *status), ("GET /_alias/practitioners_de", 401));
            assert_eq!(body, "Unauthorized");
        }
        other => panic!("{other}"),
    }
    replay.finish();
}

#[tokio::test]
async fn health_is_the_clusters_answer_and_a_refusal_is_an_error() {
    let replay = Replay::start("health").await;
    let client = replay.client();
    assert_eq!(
        client.health().await.unwrap(),
        "123456789012:meridian-eu-central-1 (green)"
    );
    let err = client.health().await.unwrap_err();
    assert!(
        matches!(err, SearchError::Refused { ref request, status: 403, .. } if request == "GET /_cluster/health"),
        "{err}"
    );
    replay.finish();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = OpenSearch::new(&format!("http://{closed}"), None)
        .unwrap()
        .health()
        .await
        .unwrap_err();
    assert!(matches!(err, SearchError::Unreachable(_)), "{err}");
}

#[tokio::test]
async fn an_unreachable_cluster_or_a_bad_endpoint_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = OpenSearch::new(&format!("http://{closed}"), None).unwrap();
    let err = client.resolve("practitioners_de").await.unwrap_err();
    assert!(
        matches!(err, SearchError::Unreachable(ref m) if m.starts_with("GET /_alias/practitioners_de")),
        "{err}"
    );
    for endpoint in ["not a url", "ftp://search.example", "/relative"] {
        assert!(
            matches!(OpenSearch::new(endpoint, None), Err(SearchError::Unreachable(_))),
            "{endpoint}"
        );
    }
}

#[tokio::test]
async fn the_census_counts_documents_per_country_in_every_index() {
    let replay = Replay::start("census").await;
    let census = replay.client().census().await.unwrap();
    let found: Vec<(&str, Vec<(String, u64)>)> =
        census.iter().map(|c| (c.index.as_str(), c.countries.clone())).collect();
    assert_eq!(
        found,
        [
            (
                "practitioners_de_v2",
                vec![("AT".to_string(), 1), ("DE".to_string(), 10451)]
            ),
            ("practitioners_fr_v1", vec![("FR".to_string(), 12)]),
        ]
    );
    replay.finish();
}
