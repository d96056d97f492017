//! The OpenSearch backend: OpenSearch 2.x over its REST API. Each versioned index carries
//! the country's analysis settings (language stop words and stemmer, synonyms) and the
//! settings' fingerprint in its mapping's `_meta`; the alias moves between versions in one
//! `_aliases` call; documents are written with external versioning, so a replayed older
//! event is refused by OpenSearch itself; writes through an alias use `require_alias`, so a
//! missing alias never auto-creates an index.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::model::{Document, Hit, Hits, IndexSettings, Query, Resolved, SearchError, version_of};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Documents per `_bulk` request.
const BULK: usize = 1000;
/// Responses larger than this are refused (a page of hits is far smaller).
const MAX_RESPONSE: usize = 32 << 20;
/// Error bodies are cut to this many characters in messages.
const SHOWN: usize = 500;

/// Basic-auth credentials (e.g. the master user of an Amazon OpenSearch Service domain with
/// fine-grained access control).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A client of one OpenSearch cluster.
pub struct OpenSearch {
    endpoint: String,
    authorization: Option<String>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// What one request answered.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl OpenSearch {
    /// A client for `endpoint` (`https://host[:port]`, or `http://` on a trusted network).
    pub fn new(endpoint: &str, credentials: Option<Credentials>) -> Result<Self, SearchError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|uri| uri.host().is_some() && matches!(uri.scheme_str(), Some("http" | "https")))
            .ok_or_else(|| SearchError::BadQuery(format!("{endpoint:?} is not an http(s) URL")))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| SearchError::Unreachable(format!("no TLS root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            endpoint,
            authorization: credentials.map(|c| format!("Basic {}", base64(&format!("{}:{}", c.username, c.password)))),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Answer, SearchError> {
        let shown = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint))
            .header(http::header::ACCEPT, "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let bytes = match body {
            Some((content_type, bytes)) => {
                request = request.header(http::header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Vec::new(),
        };
        let request = request
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| SearchError::BadQuery(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| SearchError::Unreachable(format!("{shown}: {e}")))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| SearchError::Unreachable(format!("{shown}: {e}")))?
                .to_bytes();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
            };
            Ok(Answer { status, body })
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| SearchError::Unreachable(format!("{shown}: no answer within {} s", TIMEOUT.as_secs())))?
    }

    async fn json(&self, method: Method, path: &str, body: &Value) -> Result<Answer, SearchError> {
        self.call(method, path, Some(("application/json", body.to_string().into_bytes())))
            .await
    }

    /// The versioned index `alias` points to, with the fingerprint in its mapping.
    pub async fn resolve(&self, alias: &str) -> Result<Option<Resolved>, SearchError> {
        let answer = self.call(Method::GET, &format!("/_alias/{alias}"), None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let answer = ok(answer, &format!("GET /_alias/{alias}"))?;
        let Some(index) = answer.body.as_object().and_then(|o| o.keys().next().cloned()) else {
            return Ok(None);
        };
        let mapping = ok(
            self.call(Method::GET, &format!("/{index}/_mapping"), None).await?,
            &format!("GET /{index}/_mapping"),
        )?;
        let fingerprint = mapping.body[&index]["mappings"]["_meta"]["meridian"]["fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(Some(Resolved { index, fingerprint }))
    }

    /// Creates `index` with the country's analysis and the practitioner mapping; an index
    /// that exists already is left as it is.
    pub async fn create_index(&self, index: &str, settings: &IndexSettings) -> Result<(), SearchError> {
        let answer = self
            .json(Method::PUT, &format!("/{index}"), &index_body(settings))
            .await?;
        if answer.status == StatusCode::BAD_REQUEST
            && answer.body["error"]["type"] == "resource_already_exists_exception"
        {
            return Ok(());
        }
        ok(answer, &format!("PUT /{index}")).map(drop)
    }

    /// Points `alias` at `index` and away from every other version, atomically.
    pub async fn point_alias(&self, alias: &str, index: &str) -> Result<(), SearchError> {
        let mut actions: Vec<Value> = self
            .versions(alias)
            .await?
            .into_iter()
            .filter(|other| other != index)
            .map(|other| json!({"remove": {"index": other, "alias": alias, "must_exist": false}}))
            .collect();
        actions.push(json!({"add": {"index": index, "alias": alias, "is_write_index": true}}));
        let answer = self
            .json(Method::POST, "/_aliases", &json!({ "actions": actions }))
            .await?;
        ok(answer, "POST /_aliases").map(drop)
    }

    /// Deletes `index`; one that does not exist is fine.
    pub async fn delete_index(&self, index: &str) -> Result<(), SearchError> {
        let answer = self.call(Method::DELETE, &format!("/{index}"), None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        ok(answer, &format!("DELETE /{index}")).map(drop)
    }

    /// Every versioned index of `alias`, oldest first.
    pub async fn versions(&self, alias: &str) -> Result<Vec<String>, SearchError> {
        let path = format!("/_cat/indices/{alias}_v*?format=json&h=index&expand_wildcards=all");
        let answer = ok(
            self.call(Method::GET, &path, None).await?,
            &format!("GET /_cat/indices/{alias}_v*"),
        )?;
        let code = alias.strip_prefix("practitioners_").unwrap_or_default();
        let mut found: Vec<(u32, String)> = answer
            .body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row["index"].as_str())
            .filter_map(|name| Some((version_of(code, name)?, name.to_string())))
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, name)| name).collect())
    }

    /// Writes through `alias` (which must exist); an older or equal version is left alone.
    pub async fn upsert(&self, alias: &str, docs: &[Document]) -> Result<(), SearchError> {
        self.bulk(alias, docs, true).await
    }

    /// Writes into the versioned `index` while it is being built.
    pub async fn fill(&self, index: &str, docs: &[Document]) -> Result<(), SearchError> {
        self.bulk(index, docs, false).await
    }

    async fn bulk(&self, target: &str, docs: &[Document], require_alias: bool) -> Result<(), SearchError> {
        for batch in docs.chunks(BULK) {
            let mut body = Vec::new();
            for doc in batch {
                let action = json!({"index": {"_id": doc.id, "version": doc.version, "version_type": "external"}});
                serde_json::to_writer(&mut body, &action).map_err(|e| SearchError::BadQuery(e.to_string()))?;
                body.push(b'\n');
                serde_json::to_writer(&mut body, doc).map_err(|e| SearchError::BadQuery(e.to_string()))?;
                body.push(b'\n');
            }
            // No forced refresh: OpenSearch makes writes searchable within its refresh
            // interval (1 s by default), which is what "found within a second" needs.
            let path = format!("/{target}/_bulk?require_alias={require_alias}");
            let answer = self
                .call(Method::POST, &path, Some(("application/x-ndjson", body)))
                .await?;
            if answer.status == StatusCode::NOT_FOUND || is_missing_index(&answer.body["error"]) {
                return Err(SearchError::NoSuchIndex(target.to_string()));
            }
            let answer = ok(answer, &format!("POST /{target}/_bulk"))?;
            if answer.body["errors"] != true {
                continue;
            }
            for item in answer.body["items"].as_array().into_iter().flatten() {
                let error = &item["index"]["error"];
                if error.is_null() || error["type"] == "version_conflict_engine_exception" {
                    // A conflict means the index holds this version or a newer one already.
                    continue;
                }
                if is_missing_index(error) {
                    return Err(SearchError::NoSuchIndex(target.to_string()));
                }
                return Err(SearchError::Refused {
                    request: format!("POST /{target}/_bulk"),
                    status: item["index"]["status"].as_u64().unwrap_or(0) as u16,
                    body: cut(&error.to_string()),
                });
            }
        }
        Ok(())
    }

    /// Active practitioners of the alias's country matching `query`.
    pub async fn search(&self, alias: &str, query: &Query) -> Result<Hits, SearchError> {
        let answer = self
            .json(Method::POST, &format!("/{alias}/_search"), &search_body(alias, query))
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(SearchError::NoSuchIndex(alias.to_string()));
        }
        if answer.status == StatusCode::BAD_REQUEST {
            return Err(SearchError::BadQuery(cut(&answer.body.to_string())));
        }
        let answer = ok(answer, &format!("POST /{alias}/_search"))?;
        let hits = &answer.body["hits"];
        Ok(Hits {
            total: hits["total"]["value"].as_u64().unwrap_or(0),
            hits: hits["hits"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|hit| {
                    Some(Hit {
                        score: hit["_score"].as_f64().unwrap_or(0.0) as f32,
                        document: serde_json::from_value(hit["_source"].clone()).ok()?,
                    })
                })
                .collect(),
        })
    }
}

/// Settings and mappings of a versioned index.
pub fn index_body(settings: &IndexSettings) -> Value {
    let mut filters = serde_json::Map::new();
    let mut chain = vec![json!("lowercase")];
    if !settings.synonyms.is_empty() {
        filters.insert(
            "meridian_synonyms".into(),
            json!({"type": "synonym_graph", "synonyms": settings.synonyms}),
        );
        chain.push(json!("meridian_synonyms"));
    }
    if let Some(language) = settings.language.opensearch_name() {
        filters.insert(
            "meridian_stop".into(),
            json!({"type": "stop", "stopwords": format!("_{language}_")}),
        );
        filters.insert(
            "meridian_stemmer".into(),
            json!({"type": "stemmer", "language": language}),
        );
        chain.push(json!("meridian_stop"));
        chain.push(json!("meridian_stemmer"));
    }
    // Stop words and stems are spelled with their diacritics: fold afterwards.
    chain.push(json!("asciifolding"));
    let text = json!({"type": "text", "analyzer": "meridian_text"});
    let text_and_key = json!({"type": "text", "analyzer": "meridian_text",
                              "fields": {"keyword": {"type": "keyword", "normalizer": "meridian_key"}}});
    json!({
        "settings": {
            "index": {"number_of_shards": 1},
            "analysis": {
                "filter": filters,
                "analyzer": {"meridian_text": {"type": "custom", "tokenizer": "standard", "filter": chain}},
                "normalizer": {"meridian_key": {"type": "custom", "filter": ["lowercase", "trim"]}}
            }
        },
        "mappings": {
            "dynamic": "strict",
            "_meta": {"meridian": {"fingerprint": settings.fingerprint()}},
            "properties": {
                "id": {"type": "keyword"},
                "countryCode": {"type": "keyword"},
                "givenName": text,
                "familyName": text,
                "specialty": text_and_key,
                "city": text_and_key,
                "languages": {"type": "keyword", "normalizer": "meridian_key"},
                "active": {"type": "boolean"},
                "version": {"type": "long"}
            }
        }
    })
}

/// The `_search` body of `query` within the alias's country.
pub fn search_body(alias: &str, query: &Query) -> Value {
    let country = alias
        .strip_prefix("practitioners_")
        .unwrap_or(alias)
        .to_ascii_uppercase();
    let mut filter = vec![
        json!({"term": {"active": true}}),
        json!({"term": {"countryCode": country}}),
    ];
    if let Some(specialty) = &query.specialty {
        filter.push(json!({"term": {"specialty.keyword": specialty.trim().to_lowercase()}}));
    }
    if let Some(city) = &query.city {
        filter.push(json!({"term": {"city.keyword": city.trim().to_lowercase()}}));
    }
    if let Some(language) = &query.language {
        filter.push(json!({"term": {"languages": language.trim().to_lowercase()}}));
    }
    // Every word must match some field (each word is its own fuzzy multi_match), the
    // specialty counting most.
    let must: Vec<Value> = query
        .text
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(|word| {
            json!({"multi_match": {
                "query": word,
                "fields": ["specialty^2", "familyName^1.5", "givenName", "city"],
                "fuzziness": "AUTO",
                "type": "best_fields"
            }})
        })
        .collect();
    json!({
        "from": query.offset,
        "size": query.limit.clamp(1, 1000),
        "track_total_hits": true,
        "query": {"bool": {"filter": filter, "must": must}}
    })
}

fn ok(answer: Answer, request: &str) -> Result<Answer, SearchError> {
    if answer.status.is_success() {
        return Ok(answer);
    }
    Err(SearchError::Refused {
        request: request.to_string(),
        status: answer.status.as_u16(),
        body: cut(&answer.body.to_string()),
    })
}

/// OpenSearch's answer to a write through a missing alias with `require_alias=true`, or
/// into a missing index.
fn is_missing_index(error: &Value) -> bool {
    error["type"] == "index_not_found_exception"
}

fn cut(text: &str) -> String {
    text.chars().take(SHOWN).collect()
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(super::base64("admin:admin"), "YWRtaW46YWRtaW4=");
        assert_eq!(super::base64("a:b"), "YTpi");
        assert_eq!(super::base64("ab:cd"), "YWI6Y2Q=");
        assert_eq!(super::base64("master:S3cret!x"), "bWFzdGVyOlMzY3JldCF4");
    }
}
