//! What both search backends index and answer: practitioner documents, the settings a
//! country's index is built with, queries and hits, and the index names.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The name searches and writes use for country `code`: `practitioners_de`. It is an alias
/// over a versioned index, so that a new version can be built and swapped in.
pub fn alias(code: &str) -> String {
    format!("practitioners_{}", code.to_ascii_lowercase())
}

/// The versioned index behind the alias: `practitioners_de_v3`.
pub fn versioned(code: &str, version: u32) -> String {
    format!("{}_v{version}", alias(code))
}

/// The version of a versioned index name of country `code`, e.g. 3 for `practitioners_de_v3`.
pub fn version_of(code: &str, index: &str) -> Option<u32> {
    index.strip_prefix(&format!("{}_v", alias(code)))?.parse().ok()
}

/// A language analyzer: tokens are lower-cased, folded to ASCII, stop words dropped and
/// words reduced to their stem in this language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Language {
    /// No stemming or stop words.
    Standard,
    English,
    German,
    French,
    Spanish,
    Italian,
    Dutch,
    Portuguese,
    Swedish,
    Danish,
    Norwegian,
    Finnish,
}

impl Language {
    /// The name OpenSearch's built-in stemmer and stop-word filters use, if any.
    pub fn opensearch_name(self) -> Option<&'static str> {
        Some(match self {
            Language::Standard => return None,
            Language::English => "english",
            Language::German => "german",
            Language::French => "french",
            Language::Spanish => "spanish",
            Language::Italian => "italian",
            Language::Dutch => "dutch",
            Language::Portuguese => "portuguese",
            Language::Swedish => "swedish",
            Language::Danish => "danish",
            Language::Norwegian => "norwegian",
            Language::Finnish => "finnish",
        })
    }
}

/// What a country's index is built with, from its Country `spec.search`. A change means a
/// new index version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexSettings {
    pub language: Language,
    /// Solr-format rules: `GP, Hausarzt => Allgemeinmedizin` (the left words are read as
    /// the right ones) or `Arzt, Doktor` (each finds the others).
    #[serde(default)]
    pub synonyms: Vec<String>,
}

impl IndexSettings {
    /// A short stable hash of the settings, stored with each index version so that a
    /// reconcile can tell whether the current version still matches the spec.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("settings serialize");
        let digest = Sha256::digest(&canonical);
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// A practitioner as the index holds them: the profile fields people search by, and the
/// practitioner's version, which makes writes idempotent (an older or equal version never
/// replaces a newer one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub id: Uuid,
    pub country_code: String,
    pub given_name: String,
    pub family_name: String,
    pub specialty: String,
    pub city: String,
    /// Languages spoken, as BCP 47 primary tags (`de`, `en`).
    pub languages: Vec<String>,
    /// Deactivated practitioners stay in the index (a newer version must still win over a
    /// replayed older event) but are never found.
    pub active: bool,
    pub version: i64,
}

/// A search within one country's index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    /// Free text over names, specialty and city: every word must match one of them, with
    /// typos tolerated (one edit in words of 3-5 letters, two in longer ones).
    pub text: Option<String>,
    /// Exact specialty, case-insensitive.
    pub specialty: Option<String>,
    /// Exact city, case-insensitive.
    pub city: Option<String>,
    /// A language the practitioner speaks (`de`).
    pub language: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

/// One page of results, best first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hits {
    /// How many documents match in all.
    pub total: u64,
    pub hits: Vec<Hit>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    pub score: f32,
    pub document: Document,
}

/// Documents per country code in one index, for the residency report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Census {
    pub index: String,
    /// `(country code, documents)`, in code order.
    pub countries: Vec<(String, u64)>,
}

/// The versioned index an alias points to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    pub index: String,
    /// [`IndexSettings::fingerprint`] of the settings it was built with.
    pub fingerprint: String,
}

/// Why a search backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("index {0} does not exist")]
    NoSuchIndex(String),
    #[error("the query is not valid: {0}")]
    BadQuery(String),
    #[error("search backend unreachable: {0}")]
    Unreachable(String),
    #[error("search backend refused {request}: {status} {body}")]
    Refused { request: String, status: u16, body: String },
    #[error("search engine error: {0}")]
    Engine(String),
}

/// Splits a synonym rule into (words read, words they stand for). `a, b => c` maps a and b
/// to c; `a, b, c` makes each equivalent to all (they map to the whole group).
pub fn parse_synonym(rule: &str) -> Option<(Vec<String>, Vec<String>)> {
    let words = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect()
    };
    match rule.split_once("=>") {
        Some((from, to)) => {
            let (from, to) = (words(from), words(to));
            (!from.is_empty() && !to.is_empty()).then_some((from, to))
        }
        None => {
            let group = words(rule);
            (group.len() > 1).then(|| (group.clone(), group))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert_eq!(alias("DE"), "practitioners_de");
        assert_eq!(versioned("de", 3), "practitioners_de_v3");
        assert_eq!(version_of("DE", "practitioners_de_v12"), Some(12));
        assert_eq!(version_of("DE", "practitioners_dk_v1"), None);
    }

    #[test]
    fn a_changed_analyzer_or_synonym_changes_the_fingerprint() {
        let de = IndexSettings {
            language: Language::German,
            synonyms: vec!["Hausarzt => Allgemeinmedizin".into()],
        };
        let mut other = de.clone();
        assert_eq!(de.fingerprint(), other.fingerprint());
        other.language = Language::Standard;
        assert_ne!(de.fingerprint(), other.fingerprint());
        assert_eq!(de.fingerprint().len(), 16);
    }

    #[test]
    fn synonym_rules() {
        assert_eq!(
            parse_synonym("Hausarzt, Allgemeinarzt => Allgemeinmedizin"),
            Some((
                vec!["hausarzt".into(), "allgemeinarzt".into()],
                vec!["allgemeinmedizin".into()]
            ))
        );
        assert_eq!(
            parse_synonym("GP, Hausarzt"),
            Some((
                vec!["gp".into(), "hausarzt".into()],
                vec!["gp".into(), "hausarzt".into()]
            ))
        );
        assert_eq!(parse_synonym("=> x"), None);
        assert_eq!(parse_synonym("alone"), None);
    }
}
