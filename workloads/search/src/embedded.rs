//! The embedded search engine of `meridian dev`: tantivy indexes in a directory, one
//! sub-directory per versioned index, with the same alias/version semantics as OpenSearch.
//! Aliases live in `aliases.json`, replaced by an atomic rename, so a swap is all or
//! nothing and survives restarts. A search holds the index it started on (an `Arc`), so
//! swapping the alias and deleting the old version never fails a search in flight.
//!
//! Text is analysed per index from its settings by [`crate::analysis`] (the language's
//! word segmentation, normalisation, synonyms, stop words, stemmer or CJK bigrams, the same
//! for documents and queries). Query terms match the indexed terms with a typo allowance.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query as TantivyQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::model::{Census, Document, Hit, Hits, IndexSettings, Query, Resolved, SearchError};

/// The name each index registers its analyzer under.
const ANALYZER: &str = "meridian";
/// The settings an index was built with, inside its directory.
const SETTINGS_FILE: &str = "meridian.json";
const ALIASES_FILE: &str = "aliases.json";
/// Indexing memory of a writer (tantivy's minimum is 15 MB). A writer exists only while
/// a batch is written: a country's index holds no arena and no threads between writes, so
/// `meridian dev` holds all 249 countries' indexes in little memory.
const WRITER_MEMORY: usize = 20_000_000;

/// The engine: every index under one directory.
pub struct Engine {
    root: PathBuf,
    indexes: RwLock<HashMap<String, Arc<OpenIndex>>>,
    aliases: RwLock<BTreeMap<String, String>>,
    /// Serialises changes to the set of indexes and to `aliases.json`.
    changes: Mutex<()>,
}

/// One open index.
struct OpenIndex {
    settings: IndexSettings,
    fields: Fields,
    index: Index,
    reader: IndexReader,
    /// Held while a batch is written: one writer at a time per index, opened for the batch.
    writing: Mutex<()>,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    country_code: Field,
    given_name: Field,
    family_name: Field,
    specialty: Field,
    city: Field,
    specialty_key: Field,
    city_key: Field,
    languages: Field,
    active: Field,
    /// The whole document as JSON, what hits are read back from.
    source: Field,
}

impl Fields {
    fn text(&self) -> [(Field, f32); 4] {
        // A match in the specialty says most about what a patient looks for.
        [
            (self.specialty, 2.0),
            (self.family_name, 1.5),
            (self.given_name, 1.0),
            (self.city, 1.0),
        ]
    }
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let analysed = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: builder.add_text_field("id", STRING),
        country_code: builder.add_text_field("country_code", STRING),
        given_name: builder.add_text_field("given_name", analysed.clone()),
        family_name: builder.add_text_field("family_name", analysed.clone()),
        specialty: builder.add_text_field("specialty", analysed.clone()),
        city: builder.add_text_field("city", analysed),
        specialty_key: builder.add_text_field("specialty_key", STRING),
        city_key: builder.add_text_field("city_key", STRING),
        languages: builder.add_text_field("languages", STRING),
        active: builder.add_text_field("active", STRING),
        source: builder.add_text_field("source", STORED),
    };
    (builder.build(), fields)
}

fn engine_error(e: impl std::fmt::Display) -> SearchError {
    SearchError::Engine(e.to_string())
}

/// Keys for exact filters: trimmed, lower case.
fn key(value: &str) -> String {
    value.trim().to_lowercase()
}

impl OpenIndex {
    fn create(dir: &Path, settings: &IndexSettings) -> Result<Self, SearchError> {
        std::fs::create_dir_all(dir).map_err(engine_error)?;
        let (schema, fields) = schema();
        let index = match Index::open_in_dir(dir) {
            Ok(index) => index,
            Err(_) => Index::create_in_dir(dir, schema).map_err(engine_error)?,
        };
        // Written last: a directory without it is a creation that did not finish.
        let json = serde_json::to_vec_pretty(settings).map_err(engine_error)?;
        std::fs::write(dir.join(SETTINGS_FILE), json).map_err(engine_error)?;
        Self::with(index, fields, settings.clone())
    }

    fn reopen(dir: &Path) -> Result<Self, SearchError> {
        let json = std::fs::read(dir.join(SETTINGS_FILE)).map_err(engine_error)?;
        let settings: IndexSettings = serde_json::from_slice(&json).map_err(engine_error)?;
        let index = Index::open_in_dir(dir).map_err(engine_error)?;
        let (_, fields) = schema();
        Self::with(index, fields, settings)
    }

    fn with(index: Index, fields: Fields, settings: IndexSettings) -> Result<Self, SearchError> {
        index
            .tokenizers()
            .register(ANALYZER, crate::analysis::text_analyzer(&settings));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(engine_error)?;
        Ok(Self {
            settings,
            fields,
            index,
            reader,
            writing: Mutex::new(()),
        })
    }

    /// The stored version of practitioner `id`, if indexed.
    fn stored_version(&self, searcher: &tantivy::Searcher, id: &str) -> Result<Option<i64>, SearchError> {
        let query = TermQuery::new(Term::from_field_text(self.fields.id, id), IndexRecordOption::Basic);
        let found = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .map_err(engine_error)?;
        let Some((_, address)) = found.first() else {
            return Ok(None);
        };
        Ok(self.read(searcher, *address)?.map(|d| d.version))
    }

    fn read(
        &self,
        searcher: &tantivy::Searcher,
        address: tantivy::DocAddress,
    ) -> Result<Option<Document>, SearchError> {
        let stored: TantivyDocument = searcher.doc(address).map_err(engine_error)?;
        Ok(stored
            .get_first(self.fields.source)
            .and_then(|v| v.as_str())
            .and_then(|json| serde_json::from_str(json).ok()))
    }

    /// Writes the documents newer than what the index holds, and makes them searchable.
    fn write(&self, docs: &[Document]) -> Result<(), SearchError> {
        // Within a batch, the newest version of each practitioner.
        let mut newest: HashMap<uuid::Uuid, &Document> = HashMap::new();
        for doc in docs {
            let entry = newest.entry(doc.id).or_insert(doc);
            if doc.version > entry.version {
                *entry = doc;
            }
        }
        let _writing = self.writing.lock().expect("index writer lock");
        let searcher = self.reader.searcher();
        let mut fresh = Vec::new();
        for doc in newest.values() {
            // Written unless the index holds this version or a newer one.
            let stored = self.stored_version(&searcher, &doc.id.to_string())?;
            if stored.is_none_or(|v| v < doc.version) {
                fresh.push(*doc);
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        // Opened for this batch and closed after it (its threads ended, its arena freed).
        let mut writer: IndexWriter = self
            .index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(engine_error)?;
        for doc in fresh {
            writer.delete_term(Term::from_field_text(self.fields.id, &doc.id.to_string()));
            writer.add_document(self.document(doc)?).map_err(engine_error)?;
        }
        writer.commit().map_err(engine_error)?;
        writer.wait_merging_threads().map_err(engine_error)?;
        self.reader.reload().map_err(engine_error)?;
        Ok(())
    }

    /// Merges the index's segments into one. A version is built in batches, each leaving a
    /// segment, and every query pays a lookup per segment (for each word, an exact and a
    /// fuzzy one in four fields): a version goes live compacted.
    fn compact(&self) -> Result<(), SearchError> {
        let _writing = self.writing.lock().expect("index writer lock");
        let segments = self.index.searchable_segment_ids().map_err(engine_error)?;
        if segments.len() < 2 {
            return Ok(());
        }
        let mut writer: IndexWriter = self
            .index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(engine_error)?;
        writer.merge(&segments).wait().map_err(engine_error)?;
        writer.wait_merging_threads().map_err(engine_error)?;
        self.reader.reload().map_err(engine_error)?;
        Ok(())
    }

    fn document(&self, doc: &Document) -> Result<TantivyDocument, SearchError> {
        let f = self.fields;
        let mut out = TantivyDocument::default();
        out.add_text(f.id, doc.id.to_string());
        out.add_text(f.country_code, &doc.country_code);
        out.add_text(f.given_name, &doc.given_name);
        out.add_text(f.family_name, &doc.family_name);
        out.add_text(f.specialty, &doc.specialty);
        out.add_text(f.city, &doc.city);
        out.add_text(f.specialty_key, key(&doc.specialty));
        out.add_text(f.city_key, key(&doc.city));
        for language in &doc.languages {
            out.add_text(f.languages, key(language));
        }
        out.add_text(f.active, if doc.active { "true" } else { "false" });
        out.add_text(f.source, serde_json::to_string(doc).map_err(engine_error)?);
        Ok(out)
    }

    fn search(&self, country: &str, query: &Query) -> Result<Hits, SearchError> {
        let f = self.fields;
        let term = |field: Field, value: &str| -> Box<dyn TantivyQuery> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let mut must: Vec<(Occur, Box<dyn TantivyQuery>)> = vec![
            (Occur::Must, term(f.active, "true")),
            (Occur::Must, term(f.country_code, country)),
        ];
        if let Some(specialty) = &query.specialty {
            must.push((Occur::Must, term(f.specialty_key, &key(specialty))));
        }
        if let Some(city) = &query.city {
            must.push((Occur::Must, term(f.city_key, &key(city))));
        }
        if let Some(language) = &query.language {
            must.push((Occur::Must, term(f.languages, &key(language))));
        }
        let text = query.text.as_deref().unwrap_or_default();
        let mut analyzer = self
            .index
            .tokenizers()
            .get(ANALYZER)
            .ok_or_else(|| engine_error("analyzer not registered"))?;
        let mut stream = analyzer.token_stream(text);
        let mut words: Vec<String> = Vec::new();
        while let Some(token) = stream.next() {
            if !words.contains(&token.text) {
                words.push(token.text.clone());
            }
        }
        // Every word must match some field: exactly (scored higher) or within its typo
        // allowance.
        for word in &words {
            let distance = match word.chars().count() {
                0..=2 => 0,
                3..=5 => 1,
                _ => 2,
            };
            let mut either: Vec<(Occur, Box<dyn TantivyQuery>)> = Vec::new();
            for (field, boost) in f.text() {
                let exact = Term::from_field_text(field, word);
                either.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(TermQuery::new(exact.clone(), IndexRecordOption::WithFreqs)),
                        boost * 2.0,
                    )),
                ));
                if distance > 0 {
                    either.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(
                            Box::new(FuzzyTermQuery::new(exact, distance, true)),
                            boost,
                        )),
                    ));
                }
            }
            must.push((Occur::Must, Box::new(BooleanQuery::new(either))));
        }
        let searcher = self.reader.searcher();
        let limit = query.limit.clamp(1, 1000);
        let (total, top) = searcher
            .search(
                &BooleanQuery::new(must),
                &(
                    Count,
                    TopDocs::with_limit(limit).and_offset(query.offset).order_by_score(),
                ),
            )
            .map_err(engine_error)?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            if let Some(document) = self.read(&searcher, address)? {
                hits.push(Hit { score, document });
            }
        }
        Ok(Hits {
            total: total as u64,
            hits,
        })
    }
}

/// Counts the documents of each country code in every index under `root`, reading only:
/// it takes no writer lock, so it works beside a running `meridian dev`.
pub fn census(root: &Path) -> Result<Vec<Census>, SearchError> {
    let dir = root.join("indexes");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(SETTINGS_FILE).exists())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let (_, fields) = schema();
    for name in names {
        let index = Index::open_in_dir(dir.join(&name)).map_err(engine_error)?;
        let searcher = index.reader().map_err(engine_error)?.searcher();
        let mut codes = std::collections::BTreeSet::new();
        for segment in searcher.segment_readers() {
            let terms = segment.inverted_index(fields.country_code).map_err(engine_error)?;
            let mut stream = terms.terms().stream().map_err(engine_error)?;
            while stream.advance() {
                codes.insert(String::from_utf8_lossy(stream.key()).to_string());
            }
        }
        let mut countries = Vec::new();
        for code in codes {
            let query = TermQuery::new(
                Term::from_field_text(fields.country_code, &code),
                IndexRecordOption::Basic,
            );
            let live = searcher.search(&query, &Count).map_err(engine_error)? as u64;
            if live > 0 {
                countries.push((code, live));
            }
        }
        out.push(Census { index: name, countries });
    }
    Ok(out)
}

impl Engine {
    /// Opens (or starts) the engine in `root`, with every index and alias found there.
    pub fn open(root: &Path) -> Result<Self, SearchError> {
        let dir = root.join("indexes");
        std::fs::create_dir_all(&dir).map_err(engine_error)?;
        let mut indexes = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(engine_error)? {
            let entry = entry.map_err(engine_error)?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !entry.path().join(SETTINGS_FILE).exists() {
                // A creation that did not finish: nothing points at it.
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            indexes.insert(name, Arc::new(OpenIndex::reopen(&entry.path())?));
        }
        let aliases = match std::fs::read(root.join(ALIASES_FILE)) {
            Ok(json) => serde_json::from_slice(&json).map_err(engine_error)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(engine_error(e)),
        };
        Ok(Self {
            root: root.to_path_buf(),
            indexes: RwLock::new(indexes),
            aliases: RwLock::new(aliases),
            changes: Mutex::new(()),
        })
    }

    fn index(&self, name: &str) -> Result<Arc<OpenIndex>, SearchError> {
        self.indexes
            .read()
            .expect("indexes lock")
            .get(name)
            .cloned()
            .ok_or_else(|| SearchError::NoSuchIndex(name.to_string()))
    }

    fn behind(&self, alias: &str) -> Result<Arc<OpenIndex>, SearchError> {
        let name = self
            .aliases
            .read()
            .expect("aliases lock")
            .get(alias)
            .cloned()
            .ok_or_else(|| SearchError::NoSuchIndex(alias.to_string()))?;
        self.index(&name)
    }

    fn save_aliases(&self, aliases: &BTreeMap<String, String>) -> Result<(), SearchError> {
        let path = self.root.join(ALIASES_FILE);
        let temporary = self.root.join(format!("{ALIASES_FILE}.new"));
        std::fs::write(&temporary, serde_json::to_vec_pretty(aliases).map_err(engine_error)?).map_err(engine_error)?;
        std::fs::rename(&temporary, &path).map_err(engine_error)
    }

    pub async fn resolve(&self, alias: &str) -> Result<Option<Resolved>, SearchError> {
        let Some(index) = self.aliases.read().expect("aliases lock").get(alias).cloned() else {
            return Ok(None);
        };
        let open = self.index(&index)?;
        Ok(Some(Resolved {
            index,
            fingerprint: open.settings.fingerprint(),
        }))
    }

    pub async fn create_index(&self, index: &str, settings: &IndexSettings) -> Result<(), SearchError> {
        let _changing = self.changes.lock().expect("changes lock");
        if self.indexes.read().expect("indexes lock").contains_key(index) {
            return Ok(());
        }
        let open = OpenIndex::create(&self.root.join("indexes").join(index), settings)?;
        self.indexes
            .write()
            .expect("indexes lock")
            .insert(index.to_string(), Arc::new(open));
        Ok(())
    }

    pub async fn point_alias(&self, alias: &str, index: &str) -> Result<(), SearchError> {
        let open = self.index(index)?;
        tokio::task::spawn_blocking(move || open.compact())
            .await
            .map_err(engine_error)??;
        let _changing = self.changes.lock().expect("changes lock");
        let mut aliases = self.aliases.read().expect("aliases lock").clone();
        aliases.insert(alias.to_string(), index.to_string());
        self.save_aliases(&aliases)?;
        *self.aliases.write().expect("aliases lock") = aliases;
        Ok(())
    }

    pub async fn delete_index(&self, index: &str) -> Result<(), SearchError> {
        let _changing = self.changes.lock().expect("changes lock");
        let mut aliases = self.aliases.read().expect("aliases lock").clone();
        let before = aliases.len();
        aliases.retain(|_, target| target != index);
        if aliases.len() != before {
            self.save_aliases(&aliases)?;
            *self.aliases.write().expect("aliases lock") = aliases;
        }
        // Searches still holding the index keep reading it: its files stay readable until
        // the last one is dropped.
        self.indexes.write().expect("indexes lock").remove(index);
        match std::fs::remove_dir_all(self.root.join("indexes").join(index)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(engine_error(e)),
            _ => Ok(()),
        }
    }

    pub async fn versions(&self, alias: &str) -> Result<Vec<String>, SearchError> {
        let prefix = format!("{alias}_v");
        let mut found: Vec<(u32, String)> = self
            .indexes
            .read()
            .expect("indexes lock")
            .keys()
            .filter_map(|name| Some((name.strip_prefix(&prefix)?.parse().ok()?, name.clone())))
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, name)| name).collect())
    }

    pub async fn upsert(&self, alias: &str, docs: &[Document]) -> Result<(), SearchError> {
        let open = self.behind(alias)?;
        let docs = docs.to_vec();
        tokio::task::spawn_blocking(move || open.write(&docs))
            .await
            .map_err(engine_error)?
    }

    pub async fn fill(&self, index: &str, docs: &[Document]) -> Result<(), SearchError> {
        let open = self.index(index)?;
        let docs = docs.to_vec();
        tokio::task::spawn_blocking(move || open.write(&docs))
            .await
            .map_err(engine_error)?
    }

    pub async fn search(&self, alias: &str, query: &Query) -> Result<Hits, SearchError> {
        let open = self.behind(alias)?;
        let country = alias
            .strip_prefix("practitioners_")
            .map(str::to_ascii_uppercase)
            .ok_or_else(|| SearchError::BadQuery(format!("{alias} is not a practitioner index")))?;
        open.search(&country, query)
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;
    use crate::model::Language;

    fn doc(version: i64) -> Document {
        Document {
            id: uuid::Uuid::from_u128(7),
            country_code: "EG".into(),
            given_name: "Mona".into(),
            family_name: "Hassan".into(),
            specialty: "Cardiology".into(),
            city: "Cairo".into(),
            languages: vec!["ar".into()],
            active: true,
            version,
        }
    }

    /// Whether a writer of its own could be opened on the index now: only when the engine
    /// holds none (tantivy allows one writer per index).
    fn free(dir: &Path) -> bool {
        let index = Index::open_in_dir(dir.join("indexes/practitioners_eg_v1")).unwrap();
        index
            .writer_with_num_threads::<TantivyDocument>(1, WRITER_MEMORY)
            .is_ok()
    }

    /// An engine in a directory of its own, holding Egypt's empty index version 1.
    async fn egypt_v1() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let settings = IndexSettings {
            language: Language::Standard,
            synonyms: Vec::new(),
        };
        engine.create_index("practitioners_eg_v1", &settings).await.unwrap();
        (dir, engine)
    }

    /// Who the engine finds for "Hassan" in Egypt's index.
    async fn hassan(engine: &Engine) -> Hits {
        let query = Query {
            text: Some("Hassan".into()),
            limit: 10,
            ..Default::default()
        };
        engine.search("practitioners_eg", &query).await.unwrap()
    }

    #[tokio::test]
    async fn an_index_holds_no_writer_between_writes() {
        let (dir, engine) = egypt_v1().await;
        engine
            .point_alias("practitioners_eg", "practitioners_eg_v1")
            .await
            .unwrap();
        assert!(free(dir.path()), "none after creation");
        engine.upsert("practitioners_eg", &[doc(1)]).await.unwrap();
        assert!(free(dir.path()), "none after a write");
        engine.upsert("practitioners_eg", &[doc(2)]).await.unwrap();
        let hits = hassan(&engine).await;
        assert_eq!((hits.total, hits.hits[0].document.version), (1, 2));
    }

    #[tokio::test]
    async fn a_version_built_in_batches_goes_live_as_one_segment() {
        let (dir, engine) = egypt_v1().await;
        for n in 0..3u128 {
            let batch = Document {
                id: uuid::Uuid::from_u128(100 + n),
                ..doc(1)
            };
            engine.fill("practitioners_eg_v1", &[batch]).await.unwrap();
        }
        let segments = || {
            Index::open_in_dir(dir.path().join("indexes/practitioners_eg_v1"))
                .unwrap()
                .searchable_segment_ids()
                .unwrap()
                .len()
        };
        assert_eq!(segments(), 3, "a segment per batch");
        engine
            .point_alias("practitioners_eg", "practitioners_eg_v1")
            .await
            .unwrap();
        assert_eq!(segments(), 1, "merged before it went live");
        assert!(free(dir.path()), "no writer held after the merge");
        let hits = hassan(&engine).await;
        assert_eq!(hits.total, 3);
    }
}
