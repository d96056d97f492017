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
use serde_json::{Map, Value, json};

use crate::model::{Census, Document, Hit, Hits, IndexSettings, Language, Query, Resolved, SearchError};

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, answer included; a full bulk request on a small domain
/// needs more than a search.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Documents per `_bulk` request.
const BULK_DOCS: usize = 1000;
/// Bytes per `_bulk` request, well under the 10 MB request limit of the smallest Amazon
/// OpenSearch Service instance types.
const BULK_BYTES: usize = 5 << 20;
/// Responses larger than this are refused (a page of hits is far smaller).
const MAX_RESPONSE: usize = 32 << 20;
/// Error bodies are cut to this many characters in messages.
const SHOWN: usize = 500;
/// The custom analyzer documents are indexed with.
const INDEX_ANALYZER: &str = "meridian_text";
/// The same analysis for queries, with synonyms as a graph.
const SEARCH_ANALYZER: &str = "meridian_query";
/// The normalizer of exact-match keys (specialty, city, languages).
const NORMALIZER: &str = "meridian_key";

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

/// TLS with ring, verifying against the system's roots plus `ca` (PEM).
fn tls_config(ca: Option<&str>) -> Result<rustls::ClientConfig, SearchError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    // Certificates the system cannot parse are skipped, as the system's own clients do.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_slice_iter(ca.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SearchError::Unreachable(format!("the search CA certificates do not parse: {e}")))?;
        if certs.is_empty() {
            return Err(SearchError::Unreachable(
                "the search CA holds no PEM certificate".into(),
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| SearchError::Unreachable(format!("a search CA certificate is not usable: {e}")))?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| SearchError::Unreachable(format!("TLS set-up: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// What one request answered.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl OpenSearch {
    /// A client for `endpoint` (`https://host[:port]`, or `http://` on this machine),
    /// sending `credentials` as basic auth when given; the server's certificate and name
    /// are verified against the system's roots.
    pub fn new(endpoint: &str, credentials: Option<Credentials>) -> Result<Self, SearchError> {
        Self::with_ca(endpoint, credentials, None)
    }

    /// [`OpenSearch::new`], the server's certificate verified against the system's roots
    /// and the certificates of `ca` (PEM). Plain `http://` is refused for a server off this
    /// machine (see [`meridian_shared::tls`]).
    pub fn with_ca(endpoint: &str, credentials: Option<Credentials>, ca: Option<&str>) -> Result<Self, SearchError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let uri = endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|uri| uri.host().is_some() && matches!(uri.scheme_str(), Some("http" | "https")))
            .ok_or_else(|| SearchError::Unreachable(format!("{endpoint:?} is not an http(s) URL")))?;
        let host = uri.host().unwrap_or_default();
        if uri.scheme_str() == Some("http") && !meridian_shared::tls::is_loopback(host) {
            return Err(SearchError::Unreachable(format!(
                "http://{host} is plain HTTP to a server off this machine: search connections must use https"
            )));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            endpoint,
            authorization: credentials.map(|c| format!("Basic {}", base64(&format!("{}:{}", c.username, c.password)))),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// An OpenSearch client for `url`, taking credentials from its (percent-encoded) user
    /// information, `https://user:password@host`, so that they never show up in logs or
    /// status; the server is verified against the system's roots and `ca` (PEM).
    pub fn from_url(url: &str, ca: Option<&str>) -> Result<Self, SearchError> {
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        match url.split_once("://").and_then(|(scheme, rest)| {
            let (userinfo, host) = rest.rsplit_once('@')?;
            let (username, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            Some((format!("{scheme}://{host}"), username, password))
        }) {
            Some((endpoint, username, password)) => Self::with_ca(
                &endpoint,
                Some(Credentials {
                    username: decode(username),
                    password: decode(password),
                }),
                ca,
            ),
            None => Self::with_ca(url, None, ca),
        }
    }

    /// Sends one request; `shown` names it in errors (`PUT /practitioners_de_v1`).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        shown: &str,
    ) -> Result<Answer, SearchError> {
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
            .map_err(|e| SearchError::BadQuery(format!("{shown}: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| SearchError::Unreachable(format!("{shown}: {}", chain(&e))))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| SearchError::Unreachable(format!("{shown}: reading the answer: {e}")))?
                .to_bytes();
            // Proxies and the security plugin answer some refusals in plain text.
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

    async fn get(&self, path: &str, shown: &str) -> Result<Answer, SearchError> {
        self.call(Method::GET, path, None, shown).await
    }

    async fn send_json(&self, method: Method, path: &str, body: &Value, shown: &str) -> Result<Answer, SearchError> {
        let bytes = serde_json::to_vec(body).map_err(|e| SearchError::BadQuery(format!("{shown}: {e}")))?;
        self.call(method, path, Some(("application/json", bytes)), shown).await
    }

    /// The indices holding `alias`, each with whether it is the alias's write index.
    async fn holders(&self, alias: &str) -> Result<Vec<(String, bool)>, SearchError> {
        let shown = format!("GET /_alias/{alias}");
        let answer = self.get(&format!("/_alias/{alias}"), &shown).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let answer = ok(answer, &shown)?;
        let mut holders: Vec<(String, bool)> = answer
            .body
            .as_object()
            .into_iter()
            .flatten()
            .map(|(index, entry)| {
                let write = entry["aliases"][alias]["is_write_index"] == true;
                (index.clone(), write)
            })
            .collect();
        holders.sort();
        Ok(holders)
    }

    /// The versioned index `alias` points to, with the fingerprint in its mapping.
    pub async fn resolve(&self, alias: &str) -> Result<Option<Resolved>, SearchError> {
        let holders = self.holders(alias).await?;
        // The alias holds one index, unless a swap was interrupted by hand; the write index
        // is then the one writes (and so the indexer) keep current.
        let Some(index) = holders
            .iter()
            .find(|(_, write)| *write)
            .or_else(|| holders.iter().max_by_key(|(name, _)| version(alias, name)))
            .map(|(name, _)| name.clone())
        else {
            return Ok(None);
        };
        let shown = format!("GET /{index}/_mapping");
        let mapping = ok(self.get(&format!("/{index}/_mapping"), &shown).await?, &shown)?;
        // An index without a fingerprint was not built by Meridian: an empty one never
        // matches the settings, so the next reconcile builds a version that has one.
        let fingerprint = mapping.body[&index]["mappings"]["_meta"]["meridian"]["fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(Some(Resolved { index, fingerprint }))
    }

    /// Creates `index` with the country's analysis and the practitioner mapping; an index
    /// that exists already is left as it is.
    pub async fn create_index(&self, index: &str, settings: &IndexSettings) -> Result<(), SearchError> {
        let shown = format!("PUT /{index}");
        let answer = self
            .send_json(Method::PUT, &format!("/{index}"), &index_body(settings), &shown)
            .await?;
        if answer.status == StatusCode::BAD_REQUEST
            && answer.body["error"]["type"] == "resource_already_exists_exception"
        {
            return Ok(());
        }
        ok(answer, &shown).map(drop)
    }

    /// Points `alias` at `index` and away from every other index, atomically.
    pub async fn point_alias(&self, alias: &str, index: &str) -> Result<(), SearchError> {
        // Removing it from exactly the indices that hold it now needs no `must_exist: false`
        // (an unknown field, so a 400, before OpenSearch 2.12), and lets go of a holder that
        // is not one of the versions too.
        let mut actions: Vec<Value> = self
            .holders(alias)
            .await?
            .into_iter()
            .filter(|(holder, _)| holder != index)
            .map(|(holder, _)| json!({"remove": {"index": holder, "alias": alias}}))
            .collect();
        actions.push(json!({"add": {"index": index, "alias": alias, "is_write_index": true}}));
        let shown = "POST /_aliases";
        let answer = self
            .send_json(Method::POST, "/_aliases", &json!({ "actions": actions }), shown)
            .await?;
        ok(answer, shown).map(drop)
    }

    /// Deletes `index`; one that does not exist is fine.
    pub async fn delete_index(&self, index: &str) -> Result<(), SearchError> {
        let shown = format!("DELETE /{index}");
        let answer = self.call(Method::DELETE, &format!("/{index}"), None, &shown).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        ok(answer, &shown).map(drop)
    }

    /// Every versioned index of `alias`, oldest first.
    pub async fn versions(&self, alias: &str) -> Result<Vec<String>, SearchError> {
        // `all` includes closed versions, which still have to be deleted some day.
        let path = format!("/_cat/indices/{alias}_v*?format=json&h=index&expand_wildcards=all");
        let shown = format!("GET /_cat/indices/{alias}_v*");
        let answer = ok(self.get(&path, &shown).await?, &shown)?;
        let mut found: Vec<(u32, String)> = answer
            .body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row["index"].as_str())
            .filter_map(|name| Some((version(alias, name)?, name.to_string())))
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, name)| name).collect())
    }

    /// Writes through `alias` (which must exist); an older or equal version is left alone.
    pub async fn upsert(&self, alias: &str, docs: &[Document]) -> Result<(), SearchError> {
        self.bulk(alias, docs, "?require_alias=true").await
    }

    /// Writes into the versioned `index` while it is being built.
    pub async fn fill(&self, index: &str, docs: &[Document]) -> Result<(), SearchError> {
        self.bulk(index, docs, "").await
    }

    // No `refresh`: OpenSearch makes writes searchable at its next refresh, every second by
    // default (a search-idle shard refreshes before answering its next search), which is
    // the "found within a second" writes need, without a refresh per request.
    async fn bulk(&self, target: &str, docs: &[Document], query: &str) -> Result<(), SearchError> {
        let shown = format!("POST /{target}/_bulk");
        let path = format!("/{target}/_bulk{query}");
        for body in bulk_bodies(docs, BULK_DOCS, BULK_BYTES)? {
            let answer = self
                .call(Method::POST, &path, Some(("application/x-ndjson", body)), &shown)
                .await?;
            if answer.status == StatusCode::NOT_FOUND && is_missing_index(&answer.body["error"]) {
                return Err(SearchError::NoSuchIndex(target.to_string()));
            }
            let answer = ok(answer, &shown)?;
            if answer.body["errors"] != true {
                continue;
            }
            for item in answer.body["items"].as_array().into_iter().flatten() {
                let Some(outcome) = item.as_object().and_then(|o| o.values().next()) else {
                    continue;
                };
                let error = &outcome["error"];
                // A conflict means the index holds this version or a newer one already.
                if error.is_null() || error["type"] == "version_conflict_engine_exception" {
                    continue;
                }
                if is_missing_index(error) {
                    return Err(SearchError::NoSuchIndex(target.to_string()));
                }
                return Err(SearchError::Refused {
                    request: shown,
                    status: outcome["status"]
                        .as_u64()
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(0),
                    body: cut(&error.to_string()),
                });
            }
        }
        Ok(())
    }

    /// The cluster's health (`GET /_cluster/health`): its name and status (`green`,
    /// `yellow`, `red`), as `name (status)`. An answer of any kind but a success is an error;
    /// so is no answer.
    pub async fn health(&self) -> Result<String, SearchError> {
        let shown = "GET /_cluster/health";
        let answer = ok(self.get("/_cluster/health", shown).await?, shown)?;
        let field = |name: &str| answer.body[name].as_str().map(String::from);
        match (field("cluster_name"), field("status")) {
            (Some(name), Some(status)) => Ok(format!("{name} ({status})")),
            _ => Err(SearchError::Refused {
                request: shown.into(),
                status: answer.status.as_u16(),
                body: cut(&format!("not a cluster health answer: {}", answer.body)),
            }),
        }
    }

    /// Documents per country code in every practitioner index (active or not), for the
    /// residency report.
    pub async fn census(&self) -> Result<Vec<Census>, SearchError> {
        let body = json!({
            "size": 0,
            "query": {"match_all": {}},
            "aggs": {"indexes": {
                "terms": {"field": "_index", "size": 1000},
                "aggs": {"countries": {"terms": {"field": "countryCode", "size": 1000}}}
            }}
        });
        let shown = "POST /practitioners_*/_search";
        let answer = self
            .send_json(
                Method::POST,
                "/practitioners_*/_search?expand_wildcards=all",
                &body,
                shown,
            )
            .await?;
        let answer = ok(answer, shown)?;
        let mut census: Vec<Census> = answer.body["aggregations"]["indexes"]["buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|bucket| {
                let mut countries: Vec<(String, u64)> = bucket["countries"]["buckets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| Some((c["key"].as_str()?.to_string(), c["doc_count"].as_u64()?)))
                    .collect();
                countries.sort();
                Census {
                    index: bucket["key"].as_str().unwrap_or_default().to_string(),
                    countries,
                }
            })
            .collect();
        census.sort_by(|a, b| a.index.cmp(&b.index));
        Ok(census)
    }

    /// Active practitioners of the alias's country matching `query`.
    pub async fn search(&self, alias: &str, query: &Query) -> Result<Hits, SearchError> {
        let shown = format!("POST /{alias}/_search");
        let body = search_body(alias, query)?;
        let answer = self
            .send_json(Method::POST, &format!("/{alias}/_search"), &body, &shown)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(SearchError::NoSuchIndex(alias.to_string()));
        }
        if answer.status == StatusCode::BAD_REQUEST {
            return Err(SearchError::BadQuery(cut(&answer.body.to_string())));
        }
        let answer = ok(answer, &shown)?;
        let hits = &answer.body["hits"];
        Ok(Hits {
            total: hits["total"]["value"].as_u64().unwrap_or(0),
            hits: hits["hits"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|hit| match serde_json::from_value(hit["_source"].clone()) {
                    Ok(document) => Some(Hit {
                        score: hit["_score"].as_f64().unwrap_or(0.0) as f32,
                        document,
                    }),
                    Err(e) => {
                        // Only the kind of error: serde's message quotes the offending value,
                        // which may be a name.
                        tracing::warn!(index = %hit["_index"], id = %hit["_id"], error = ?e.classify(), "unreadable search hit");
                        None
                    }
                })
                .collect(),
        })
    }
}

/// OpenSearch's built-in analyzer of a language rebuilt from its parts (as OpenSearch's
/// documentation of each language analyzer lists them), so that synonyms can go in:
/// `before` runs up to lower-casing, the synonym filter follows, then `after`.
struct Chain {
    tokenizer: &'static str,
    /// A character filter and its definition (Persian: zero-width non-joiners are spaces).
    char_filter: Option<(&'static str, Value)>,
    before: Vec<(&'static str, Option<Value>)>,
    after: Vec<(&'static str, Option<Value>)>,
}

/// The parts of OpenSearch's `language` analyzer: its tokenizer, lower-casing, digit and
/// script normalisation, stop words (`_arabic_`, ...) and stemmer (without the keyword
/// marker, which only serves `stem_exclusion`).
fn language_chain(language: Language) -> Chain {
    use Language as L;
    let builtin = |name: &'static str| (name, None);
    let stop = |words: &str| ("meridian_stop", Some(json!({"type": "stop", "stopwords": words})));
    let stem = |name: &str| ("meridian_stemmer", Some(json!({"type": "stemmer", "language": name})));
    let lowercase = |name: &str| {
        (
            "meridian_lowercase",
            Some(json!({"type": "lowercase", "language": name})),
        )
    };
    let elision = |articles: &[&str]| {
        (
            "meridian_elision",
            Some(json!({"type": "elision", "articles": articles, "articles_case": true})),
        )
    };
    // Most languages: lower-case, then the language's stop words and stemmer.
    let plain = |stopwords: &str, stemmer: &str| Chain {
        tokenizer: "standard",
        char_filter: None,
        before: vec![builtin("lowercase")],
        after: vec![stop(stopwords), stem(stemmer)],
    };
    match language {
        L::Standard => Chain {
            tokenizer: "standard",
            char_filter: None,
            before: vec![builtin("lowercase")],
            after: Vec::new(),
        },
        L::Arabic => Chain {
            tokenizer: "standard",
            char_filter: None,
            before: vec![builtin("lowercase"), builtin("decimal_digit")],
            after: vec![stop("_arabic_"), builtin("arabic_normalization"), stem("arabic")],
        },
        L::Armenian => plain("_armenian_", "armenian"),
        L::Basque => plain("_basque_", "basque"),
        L::Bengali => Chain {
            tokenizer: "standard",
            char_filter: None,
            before: vec![builtin("lowercase"), builtin("decimal_digit")],
            after: vec![
                builtin("indic_normalization"),
                builtin("bengali_normalization"),
                stop("_bengali_"),
                stem("bengali"),
            ],
        },
        L::Brazilian => plain("_brazilian_", "brazilian"),
        L::Bulgarian => plain("_bulgarian_", "bulgarian"),
        L::Catalan => Chain {
            before: vec![elision(&["d", "l", "m", "n", "s", "t"]), builtin("lowercase")],
            ..plain("_catalan_", "catalan")
        },
        L::Cjk => Chain {
            tokenizer: "standard",
            char_filter: None,
            before: vec![builtin("cjk_width"), builtin("lowercase")],
            // OpenSearch's cjk analyzer drops English stop words.
            after: vec![builtin("cjk_bigram"), stop("_english_")],
        },
        L::Czech => plain("_czech_", "czech"),
        L::Danish => plain("_danish_", "danish"),
        L::Dutch => plain("_dutch_", "dutch"),
        L::English => Chain {
            before: vec![
                (
                    "meridian_possessive",
                    Some(json!({"type": "stemmer", "language": "possessive_english"})),
                ),
                builtin("lowercase"),
            ],
            ..plain("_english_", "english")
        },
        L::Estonian => plain("_estonian_", "estonian"),
        L::Finnish => plain("_finnish_", "finnish"),
        L::French => Chain {
            before: vec![
                elision(&[
                    "l", "m", "t", "qu", "n", "s", "j", "d", "c", "jusqu", "quoiqu", "lorsqu", "puisqu",
                ]),
                builtin("lowercase"),
            ],
            ..plain("_french_", "light_french")
        },
        L::Galician => plain("_galician_", "galician"),
        L::German => Chain {
            tokenizer: "standard",
            char_filter: None,
            before: vec![builtin("lowercase")],
            after: vec![stop("_german_"), builtin("german_normalization"), stem("light_german")],
        },
        L::Greek => Chain {
            before: vec![lowercase("greek")],
            ..plain("_greek_", "greek")
        },
        L::Hindi => Chain {
            tokenizer: "standard",
            char_filter: None,
            before: vec![builtin("lowercase"), builtin("decimal_digit")],
            after: vec![
                builtin("indic_normalization"),
                builtin("hindi_normalization"),
                stop("_hindi_"),
                stem("hindi"),
            ],
        },
        L::Hungarian => plain("_hungarian_", "light_hungarian"),
        L::Indonesian => plain("_indonesian_", "indonesian"),
        L::Irish => Chain {
            before: vec![
                (
                    "meridian_hyphenation",
                    Some(json!({"type": "stop", "stopwords": ["h", "n", "t"], "ignore_case": true})),
                ),
                elision(&["d", "m", "b"]),
                lowercase("irish"),
            ],
            ..plain("_irish_", "irish")
        },
        L::Italian => Chain {
            before: vec![
                elision(&[
                    "c", "l", "all", "dall", "dell", "nell", "sull", "coll", "pell", "gl", "agl", "dagl", "degl",
                    "negl", "sugl", "un", "m", "t", "s", "v", "d",
                ]),
                builtin("lowercase"),
            ],
            ..plain("_italian_", "light_italian")
        },
        L::Latvian => plain("_latvian_", "latvian"),
        L::Lithuanian => plain("_lithuanian_", "lithuanian"),
        L::Norwegian => plain("_norwegian_", "norwegian"),
        // OpenSearch's persian analyzer has no stemmer.
        L::Persian => Chain {
            tokenizer: "standard",
            char_filter: Some((
                "meridian_zero_width_spaces",
                json!({"type": "mapping", "mappings": ["\\u200C=>\\u0020"]}),
            )),
            before: vec![builtin("lowercase"), builtin("decimal_digit")],
            after: vec![
                builtin("arabic_normalization"),
                builtin("persian_normalization"),
                stop("_persian_"),
            ],
        },
        L::Portuguese => plain("_portuguese_", "light_portuguese"),
        L::Romanian => plain("_romanian_", "romanian"),
        L::Russian => plain("_russian_", "russian"),
        L::Sorani => Chain {
            before: vec![
                builtin("sorani_normalization"),
                builtin("lowercase"),
                builtin("decimal_digit"),
            ],
            ..plain("_sorani_", "sorani")
        },
        L::Spanish => plain("_spanish_", "light_spanish"),
        L::Swedish => plain("_swedish_", "swedish"),
        L::Turkish => Chain {
            before: vec![builtin("apostrophe"), lowercase("turkish")],
            ..plain("_turkish_", "turkish")
        },
        // Thai is written without spaces between words: the thai tokenizer finds them.
        L::Thai => Chain {
            tokenizer: "thai",
            char_filter: None,
            before: vec![builtin("lowercase"), builtin("decimal_digit")],
            after: vec![stop("_thai_")],
        },
    }
}

/// Settings and mappings of a versioned index.
fn index_body(settings: &IndexSettings) -> Value {
    let chain = language_chain(settings.language);
    let mut filters = Map::new();
    let mut index_chain = Vec::new();
    let mut search_chain = Vec::new();
    let mut add = |(name, definition): (&str, Option<Value>), filters: &mut Map<String, Value>| {
        if let Some(definition) = definition {
            filters.insert(name.into(), definition);
        }
        index_chain.push(json!(name));
        search_chain.push(json!(name));
    };
    for filter in chain.before {
        add(filter, &mut filters);
    }
    if !settings.synonyms.is_empty() {
        // Rules go through the filters before them (tokenizer and lower-casing, so stop
        // words in a rule are kept). `lenient` skips a rule OpenSearch cannot read, as
        // the embedded engine does, rather than failing every build of the country's index.
        // A graph is right for queries only: at index time its multi-word paths flatten, so
        // documents get the plain filter with the same rules.
        filters.insert(
            "meridian_synonyms".into(),
            json!({"type": "synonym", "synonyms": settings.synonyms, "lenient": true}),
        );
        filters.insert(
            "meridian_synonym_graph".into(),
            json!({"type": "synonym_graph", "synonyms": settings.synonyms, "lenient": true}),
        );
        index_chain.push(json!("meridian_synonyms"));
        search_chain.push(json!("meridian_synonym_graph"));
    }
    let mut add = |(name, definition): (&str, Option<Value>), filters: &mut Map<String, Value>| {
        if let Some(definition) = definition {
            filters.insert(name.into(), definition);
        }
        index_chain.push(json!(name));
        search_chain.push(json!(name));
    };
    for filter in chain.after {
        add(filter, &mut filters);
    }
    // Stop words and stems are spelled with their diacritics: fold afterwards.
    index_chain.push(json!("asciifolding"));
    search_chain.push(json!("asciifolding"));
    let analyzer = |filters: Vec<Value>| {
        let mut analyzer = json!({"type": "custom", "tokenizer": chain.tokenizer, "filter": filters});
        if let Some((name, _)) = &chain.char_filter {
            analyzer["char_filter"] = json!([name]);
        }
        analyzer
    };
    let mut analysis = json!({
        "filter": filters,
        "analyzer": {
            INDEX_ANALYZER: analyzer(index_chain),
            SEARCH_ANALYZER: analyzer(search_chain)
        },
        "normalizer": {
            NORMALIZER: {"type": "custom", "filter": ["lowercase", "asciifolding", "trim"]}
        }
    });
    if let Some((name, definition)) = &chain.char_filter {
        analysis["char_filter"] = json!({ *name: definition });
    }
    let text = json!({"type": "text", "analyzer": INDEX_ANALYZER, "search_analyzer": SEARCH_ANALYZER});
    let mut text_and_key = text.clone();
    text_and_key["fields"] = json!({"keyword": {"type": "keyword", "normalizer": NORMALIZER}});
    json!({
        "settings": {
            // A country's practitioners fit one shard; replicas are left to the domain's
            // default, which follows its availability zones.
            "index": {"number_of_shards": 1},
            "analysis": analysis
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
                "languages": {"type": "keyword", "normalizer": NORMALIZER},
                "active": {"type": "boolean"},
                "version": {"type": "long"}
            }
        }
    })
}

/// The `_search` body of `query` within the alias's country.
fn search_body(alias: &str, query: &Query) -> Result<Value, SearchError> {
    // Aliases embed the country: filtering on it too keeps a document indexed into the
    // wrong country's index out of that country's answers.
    let country = alias
        .strip_prefix("practitioners_")
        .map(str::to_ascii_uppercase)
        .ok_or_else(|| SearchError::BadQuery(format!("{alias} is not a practitioner index")))?;
    let mut filter = vec![
        json!({"term": {"active": true}}),
        json!({"term": {"countryCode": country}}),
    ];
    for (field, value) in [
        ("specialty.keyword", &query.specialty),
        ("city.keyword", &query.city),
        ("languages", &query.language),
    ] {
        if let Some(value) = value {
            filter.push(json!({"term": {field: value.trim().to_lowercase()}}));
        }
    }
    // One fuzzy multi_match per word, so that every word must match some field (a single
    // multi_match cannot: `cross_fields` takes no fuzziness, `best_fields` with `and` wants
    // all words in one field). A word the analyzer drops entirely (a stop word) matches
    // everything rather than nothing.
    let mut must: Vec<Value> = query
        .text
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(|word| {
            json!({"multi_match": {
                "query": word,
                "fields": ["specialty^2", "familyName^1.5", "givenName", "city"],
                "type": "best_fields",
                "operator": "and",
                "fuzziness": "AUTO",
                "zero_terms_query": "all"
            }})
        })
        .collect();
    if must.is_empty() {
        must.push(json!({"match_all": {}}));
    }
    Ok(json!({
        "from": query.offset,
        "size": query.limit.clamp(1, 1000),
        "track_total_hits": true,
        // Equal scores (every hit of a search without text) keep their order from page to
        // page; with a sort, scores are only reported when asked for.
        "sort": ["_score", {"id": "asc"}],
        "track_scores": true,
        "query": {"bool": {"filter": filter, "must": must}}
    }))
}

/// NDJSON bodies of `index` actions for `docs`, each with at most `max_docs` documents and,
/// unless a single document is larger, `max_bytes` bytes.
fn bulk_bodies(docs: &[Document], max_docs: usize, max_bytes: usize) -> Result<Vec<Vec<u8>>, SearchError> {
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    let mut count = 0;
    for doc in docs {
        let mut lines = Vec::new();
        let action = json!({"index": {"_id": doc.id, "version": doc.version, "version_type": "external"}});
        serde_json::to_writer(&mut lines, &action).map_err(|e| SearchError::BadQuery(e.to_string()))?;
        lines.push(b'\n');
        serde_json::to_writer(&mut lines, doc).map_err(|e| SearchError::BadQuery(e.to_string()))?;
        lines.push(b'\n');
        if count > 0 && (count == max_docs || body.len() + lines.len() > max_bytes) {
            bodies.push(std::mem::take(&mut body));
            count = 0;
        }
        body.extend(lines);
        count += 1;
    }
    if count > 0 {
        bodies.push(body);
    }
    Ok(bodies)
}

/// The version number of `index` among `alias`'s versions (`practitioners_de_v3`: 3).
fn version(alias: &str, index: &str) -> Option<u32> {
    index.strip_prefix(alias)?.strip_prefix("_v")?.parse().ok()
}

fn ok(answer: Answer, request: &str) -> Result<Answer, SearchError> {
    if answer.status.is_success() {
        return Ok(answer);
    }
    let body = match &answer.body {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    Err(SearchError::Refused {
        request: request.to_string(),
        status: answer.status.as_u16(),
        body: cut(&body),
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

/// An error with its causes: hyper's own message ("client error (Connect)") hides why.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    use super::*;
    use uuid::Uuid;

    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(base64("admin:admin"), "YWRtaW46YWRtaW4=");
        assert_eq!(base64("a:b"), "YTpi");
        assert_eq!(base64("ab:cd"), "YWI6Y2Q=");
        assert_eq!(base64("master:S3cret!x"), "bWFzdGVyOlMzY3JldCF4");
    }

    fn doc(n: u128) -> Document {
        Document {
            id: Uuid::from_u128(n),
            country_code: "DE".into(),
            given_name: "Anna".into(),
            family_name: "Schmidt".into(),
            specialty: "Kardiologie".into(),
            city: "Berlin".into(),
            languages: vec!["de".into()],
            active: true,
            version: 1,
        }
    }

    fn lines(body: &[u8]) -> usize {
        body.iter().filter(|b| **b == b'\n').count()
    }

    #[test]
    fn bulk_requests_are_split_by_count_and_size() {
        let docs: Vec<Document> = (0..2501).map(doc).collect();
        let bodies = bulk_bodies(&docs, 1000, usize::MAX).unwrap();
        let sizes: Vec<usize> = bodies.iter().map(|b| lines(b) / 2).collect();
        assert_eq!(sizes, [1000, 1000, 501]);

        let one = bulk_bodies(&docs[..1], 1000, usize::MAX).unwrap()[0].len();
        let bodies = bulk_bodies(&docs[..5], 1000, 2 * one).unwrap();
        assert_eq!(bodies.iter().map(|b| lines(b) / 2).collect::<Vec<_>>(), [2, 2, 1]);
        // A document larger than the limit still goes, on its own.
        assert_eq!(bulk_bodies(&docs[..2], 1000, 1).unwrap().len(), 2);
        assert!(bulk_bodies(&[], 1000, 1).unwrap().is_empty());
    }

    #[test]
    fn versions_belong_to_their_alias_only() {
        assert_eq!(version("practitioners_de", "practitioners_de_v12"), Some(12));
        assert_eq!(version("practitioners_de", "practitioners_dev_v1"), None);
        assert_eq!(version("practitioners_de", "practitioners_de_vx"), None);
    }

    #[test]
    fn a_standard_index_has_no_language_filters_and_no_synonyms() {
        let body = index_body(&IndexSettings {
            language: crate::Language::Standard,
            synonyms: Vec::new(),
        });
        let analysis = &body["settings"]["analysis"];
        assert_eq!(analysis["filter"], json!({}));
        assert_eq!(
            analysis["analyzer"][INDEX_ANALYZER]["filter"],
            json!(["lowercase", "asciifolding"])
        );
        assert_eq!(
            analysis["analyzer"][SEARCH_ANALYZER]["filter"],
            json!(["lowercase", "asciifolding"])
        );
    }

    /// OpenSearch's built-in token filters the chains name without defining them.
    const BUILT_IN: [&str; 13] = [
        "lowercase",
        "asciifolding",
        "decimal_digit",
        "arabic_normalization",
        "persian_normalization",
        "sorani_normalization",
        "indic_normalization",
        "hindi_normalization",
        "bengali_normalization",
        "german_normalization",
        "cjk_width",
        "cjk_bigram",
        "apostrophe",
    ];

    #[test]
    fn each_language_gets_the_parts_of_opensearchs_own_analyzer() {
        use crate::Language as L;
        // Language, tokenizer, the index analyzer's filters, the stop words, the stemmer.
        type Row = (
            L,
            &'static str,
            &'static [&'static str],
            Option<&'static str>,
            Option<&'static str>,
        );
        let table: [Row; 36] = [
            (L::Standard, "standard", &["lowercase"], None, None),
            (
                L::Arabic,
                "standard",
                &[
                    "lowercase",
                    "decimal_digit",
                    "meridian_stop",
                    "arabic_normalization",
                    "meridian_stemmer",
                ],
                Some("_arabic_"),
                Some("arabic"),
            ),
            (
                L::Armenian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_armenian_"),
                Some("armenian"),
            ),
            (
                L::Basque,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_basque_"),
                Some("basque"),
            ),
            (
                L::Bengali,
                "standard",
                &[
                    "lowercase",
                    "decimal_digit",
                    "indic_normalization",
                    "bengali_normalization",
                    "meridian_stop",
                    "meridian_stemmer",
                ],
                Some("_bengali_"),
                Some("bengali"),
            ),
            (
                L::Brazilian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_brazilian_"),
                Some("brazilian"),
            ),
            (
                L::Bulgarian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_bulgarian_"),
                Some("bulgarian"),
            ),
            (
                L::Catalan,
                "standard",
                &["meridian_elision", "lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_catalan_"),
                Some("catalan"),
            ),
            (
                L::Cjk,
                "standard",
                &["cjk_width", "lowercase", "cjk_bigram", "meridian_stop"],
                Some("_english_"),
                None,
            ),
            (
                L::Czech,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_czech_"),
                Some("czech"),
            ),
            (
                L::Danish,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_danish_"),
                Some("danish"),
            ),
            (
                L::Dutch,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_dutch_"),
                Some("dutch"),
            ),
            (
                L::English,
                "standard",
                &["meridian_possessive", "lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_english_"),
                Some("english"),
            ),
            (
                L::Estonian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_estonian_"),
                Some("estonian"),
            ),
            (
                L::Finnish,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_finnish_"),
                Some("finnish"),
            ),
            (
                L::French,
                "standard",
                &["meridian_elision", "lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_french_"),
                Some("light_french"),
            ),
            (
                L::Galician,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_galician_"),
                Some("galician"),
            ),
            (
                L::German,
                "standard",
                &["lowercase", "meridian_stop", "german_normalization", "meridian_stemmer"],
                Some("_german_"),
                Some("light_german"),
            ),
            (
                L::Greek,
                "standard",
                &["meridian_lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_greek_"),
                Some("greek"),
            ),
            (
                L::Hindi,
                "standard",
                &[
                    "lowercase",
                    "decimal_digit",
                    "indic_normalization",
                    "hindi_normalization",
                    "meridian_stop",
                    "meridian_stemmer",
                ],
                Some("_hindi_"),
                Some("hindi"),
            ),
            (
                L::Hungarian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_hungarian_"),
                Some("light_hungarian"),
            ),
            (
                L::Indonesian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_indonesian_"),
                Some("indonesian"),
            ),
            (
                L::Irish,
                "standard",
                &[
                    "meridian_hyphenation",
                    "meridian_elision",
                    "meridian_lowercase",
                    "meridian_stop",
                    "meridian_stemmer",
                ],
                Some("_irish_"),
                Some("irish"),
            ),
            (
                L::Italian,
                "standard",
                &["meridian_elision", "lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_italian_"),
                Some("light_italian"),
            ),
            (
                L::Latvian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_latvian_"),
                Some("latvian"),
            ),
            (
                L::Lithuanian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_lithuanian_"),
                Some("lithuanian"),
            ),
            (
                L::Norwegian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_norwegian_"),
                Some("norwegian"),
            ),
            (
                L::Persian,
                "standard",
                &[
                    "lowercase",
                    "decimal_digit",
                    "arabic_normalization",
                    "persian_normalization",
                    "meridian_stop",
                ],
                Some("_persian_"),
                None,
            ),
            (
                L::Portuguese,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_portuguese_"),
                Some("light_portuguese"),
            ),
            (
                L::Romanian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_romanian_"),
                Some("romanian"),
            ),
            (
                L::Russian,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_russian_"),
                Some("russian"),
            ),
            (
                L::Sorani,
                "standard",
                &[
                    "sorani_normalization",
                    "lowercase",
                    "decimal_digit",
                    "meridian_stop",
                    "meridian_stemmer",
                ],
                Some("_sorani_"),
                Some("sorani"),
            ),
            (
                L::Spanish,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_spanish_"),
                Some("light_spanish"),
            ),
            (
                L::Swedish,
                "standard",
                &["lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_swedish_"),
                Some("swedish"),
            ),
            (
                L::Turkish,
                "standard",
                &["apostrophe", "meridian_lowercase", "meridian_stop", "meridian_stemmer"],
                Some("_turkish_"),
                Some("turkish"),
            ),
            (
                L::Thai,
                "thai",
                &["lowercase", "decimal_digit", "meridian_stop"],
                Some("_thai_"),
                None,
            ),
        ];
        let mut covered: Vec<&str> = table.iter().map(|row| row.0.name()).collect();
        covered.sort();
        covered.dedup();
        assert_eq!(covered.len(), crate::Language::all().count());
        for (language, tokenizer, filters, stopwords, stemmer) in table {
            let body = index_body(&IndexSettings {
                language,
                synonyms: Vec::new(),
            });
            let analysis = &body["settings"]["analysis"];
            let mut expected: Vec<&str> = filters.to_vec();
            expected.push("asciifolding");
            for analyzer in [INDEX_ANALYZER, SEARCH_ANALYZER] {
                assert_eq!(analysis["analyzer"][analyzer]["tokenizer"], tokenizer, "{language:?}");
                assert_eq!(
                    analysis["analyzer"][analyzer]["filter"],
                    json!(expected),
                    "{language:?}"
                );
            }
            assert_eq!(
                analysis["filter"]["meridian_stop"]["stopwords"].as_str(),
                stopwords,
                "{language:?}"
            );
            assert_eq!(
                analysis["filter"]["meridian_stemmer"]["language"].as_str(),
                stemmer,
                "{language:?}"
            );
            // Every filter is defined here or built into OpenSearch, and every definition is used.
            let defined = analysis["filter"].as_object().unwrap();
            for name in &expected {
                assert!(
                    defined.contains_key(*name) || BUILT_IN.contains(name),
                    "{language:?}: {name} is neither defined nor built in"
                );
            }
            assert!(
                defined.keys().all(|name| expected.contains(&name.as_str())),
                "{language:?}"
            );
        }
    }

    #[test]
    fn synonyms_follow_the_lower_casing_and_persian_maps_zero_width_non_joiners() {
        let body = index_body(&IndexSettings {
            language: crate::Language::Arabic,
            synonyms: vec!["دكتور => طبيب".into()],
        });
        let analysis = &body["settings"]["analysis"];
        assert_eq!(
            analysis["analyzer"][INDEX_ANALYZER]["filter"],
            json!([
                "lowercase",
                "decimal_digit",
                "meridian_synonyms",
                "meridian_stop",
                "arabic_normalization",
                "meridian_stemmer",
                "asciifolding"
            ])
        );
        assert_eq!(
            analysis["analyzer"][SEARCH_ANALYZER]["filter"][2],
            "meridian_synonym_graph"
        );
        assert_eq!(
            analysis["filter"]["meridian_synonyms"]["synonyms"],
            json!(["دكتور => طبيب"])
        );

        let persian = index_body(&IndexSettings {
            language: crate::Language::Persian,
            synonyms: Vec::new(),
        });
        let analysis = &persian["settings"]["analysis"];
        assert_eq!(
            analysis["char_filter"]["meridian_zero_width_spaces"],
            json!({"type": "mapping", "mappings": ["\\u200C=>\\u0020"]})
        );
        assert_eq!(
            analysis["analyzer"][INDEX_ANALYZER]["char_filter"],
            json!(["meridian_zero_width_spaces"])
        );
        let french = index_body(&IndexSettings {
            language: crate::Language::French,
            synonyms: Vec::new(),
        });
        assert_eq!(
            french["settings"]["analysis"]["filter"]["meridian_elision"]["articles"][0],
            "l"
        );
        assert_eq!(
            french["settings"]["analysis"]["filter"]["meridian_elision"]["articles_case"],
            true
        );
    }

    #[test]
    fn only_practitioner_aliases_are_searched() {
        assert!(matches!(
            search_body("patients_de", &Query::default()),
            Err(SearchError::BadQuery(_))
        ));
    }
}
