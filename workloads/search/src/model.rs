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

/// A language analyzer, named as OpenSearch names its built-in one: the language's
/// tokenisation, normalisation, stop words and stemmer (see [`crate::opensearch`] and
/// [`crate::embedded`] for what each backend does with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Language {
    /// No stemming or stop words.
    Standard,
    Arabic,
    Armenian,
    Basque,
    Bengali,
    /// Brazilian Portuguese.
    Brazilian,
    Bulgarian,
    Catalan,
    /// Chinese, Japanese and Korean: overlapping bigrams of their characters.
    Cjk,
    Czech,
    Danish,
    Dutch,
    English,
    Estonian,
    Finnish,
    French,
    Galician,
    German,
    Greek,
    Hindi,
    Hungarian,
    Indonesian,
    Irish,
    Italian,
    Latvian,
    Lithuanian,
    Norwegian,
    Persian,
    Portuguese,
    Romanian,
    Russian,
    /// Central Kurdish.
    Sorani,
    Spanish,
    Swedish,
    Turkish,
    Thai,
}

/// Every language with its analyzer name and the BCP 47 locales that choose it when a
/// Country has no `spec.search`: a `language-REGION` entry is matched before a bare
/// language.
const LANGUAGES: [(Language, &str, &[&str]); 36] = [
    (Language::Standard, "standard", &[]),
    (Language::Arabic, "arabic", &["ar"]),
    (Language::Armenian, "armenian", &["hy"]),
    (Language::Basque, "basque", &["eu"]),
    (Language::Bengali, "bengali", &["bn"]),
    (Language::Brazilian, "brazilian", &["pt-br"]),
    (Language::Bulgarian, "bulgarian", &["bg"]),
    (Language::Catalan, "catalan", &["ca"]),
    (Language::Cjk, "cjk", &["zh", "ja", "ko"]),
    (Language::Czech, "czech", &["cs"]),
    (Language::Danish, "danish", &["da"]),
    (Language::Dutch, "dutch", &["nl"]),
    (Language::English, "english", &["en"]),
    (Language::Estonian, "estonian", &["et"]),
    (Language::Finnish, "finnish", &["fi"]),
    (Language::French, "french", &["fr"]),
    (Language::Galician, "galician", &["gl"]),
    (Language::German, "german", &["de"]),
    (Language::Greek, "greek", &["el"]),
    (Language::Hindi, "hindi", &["hi"]),
    (Language::Hungarian, "hungarian", &["hu"]),
    (Language::Indonesian, "indonesian", &["id"]),
    (Language::Irish, "irish", &["ga"]),
    (Language::Italian, "italian", &["it"]),
    (Language::Latvian, "latvian", &["lv"]),
    (Language::Lithuanian, "lithuanian", &["lt"]),
    (Language::Norwegian, "norwegian", &["nb", "nn", "no"]),
    (Language::Persian, "persian", &["fa"]),
    (Language::Portuguese, "portuguese", &["pt"]),
    (Language::Romanian, "romanian", &["ro"]),
    (Language::Russian, "russian", &["ru"]),
    (Language::Sorani, "sorani", &["ckb"]),
    (Language::Spanish, "spanish", &["es"]),
    (Language::Swedish, "swedish", &["sv"]),
    (Language::Turkish, "turkish", &["tr"]),
    (Language::Thai, "thai", &["th"]),
];

impl Language {
    /// Every language, `Standard` first.
    pub fn all() -> impl Iterator<Item = Language> {
        LANGUAGES.iter().map(|(language, _, _)| *language)
    }

    /// The analyzer's name (`arabic`), as `spec.search.analyzer` and OpenSearch spell it.
    pub fn name(self) -> &'static str {
        LANGUAGES
            .iter()
            .find(|(language, _, _)| *language == self)
            .map(|(_, name, _)| *name)
            .expect("every language is in the table")
    }

    /// The language called `name` (`arabic`), if any.
    pub fn from_name(name: &str) -> Option<Language> {
        LANGUAGES
            .iter()
            .find(|(_, known, _)| *known == name)
            .map(|(language, _, _)| *language)
    }

    /// The analyzer a BCP 47 `locale` chooses: `ar-EG` is Arabic, `pt-BR` Brazilian,
    /// `pt-PT` Portuguese, `ja-JP` CJK; a language without an analyzer gets `Standard`.
    pub fn for_locale(locale: &str) -> Language {
        let mut subtags = locale.split(['-', '_']).map(str::to_ascii_lowercase);
        let primary = subtags.next().unwrap_or_default();
        // The region is the first two-letter (or three-digit) subtag after the language,
        // past any script or extended language subtag.
        let region = subtags.find(|s| s.len() == 2 || (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())));
        let with_region = region.map(|region| format!("{primary}-{region}"));
        let find = |wanted: &str| {
            LANGUAGES
                .iter()
                .find(|(_, _, locales)| locales.contains(&wanted))
                .map(|(language, _, _)| *language)
        };
        with_region
            .as_deref()
            .and_then(find)
            .or_else(|| find(&primary))
            .unwrap_or(Language::Standard)
    }
}

/// Changes whenever what an analyzer does to text changes (in either backend), so that an
/// index analysed the old way is rebuilt rather than searched with the new analysis.
const ANALYSIS_REVISION: u32 = 2;

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
    /// A short stable hash of the settings and of the analysis revision, stored with each
    /// index version so that a reconcile can tell whether the current version still
    /// matches the spec (and rebuilds indexes analysed by an older revision).
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(&(ANALYSIS_REVISION, self)).expect("settings serialize");
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
    fn every_language_has_one_name_the_same_as_its_serde_name() {
        let all: Vec<Language> = Language::all().collect();
        assert_eq!(all.len(), 36);
        for language in all {
            let name = language.name();
            assert_eq!(serde_json::to_value(language).unwrap(), serde_json::json!(name));
            assert_eq!(Language::from_name(name), Some(language));
        }
        assert_eq!(Language::from_name("klingon"), None);
    }

    #[test]
    fn the_locale_chooses_the_analyzer() {
        for (locale, language) in [
            ("ar-EG", Language::Arabic),
            ("ar", Language::Arabic),
            ("hy-AM", Language::Armenian),
            ("eu-ES", Language::Basque),
            ("bn-BD", Language::Bengali),
            ("pt-BR", Language::Brazilian),
            ("pt-br", Language::Brazilian),
            ("pt-PT", Language::Portuguese),
            ("pt", Language::Portuguese),
            ("bg-BG", Language::Bulgarian),
            ("ca-ES", Language::Catalan),
            ("zh-CN", Language::Cjk),
            ("zh-Hant-TW", Language::Cjk),
            ("ja-JP", Language::Cjk),
            ("ko-KR", Language::Cjk),
            ("cs-CZ", Language::Czech),
            ("da-DK", Language::Danish),
            ("nl-BE", Language::Dutch),
            ("en-GB", Language::English),
            ("et-EE", Language::Estonian),
            ("fi-FI", Language::Finnish),
            ("fr-CA", Language::French),
            ("gl-ES", Language::Galician),
            ("de-AT", Language::German),
            ("el-GR", Language::Greek),
            ("hi-IN", Language::Hindi),
            ("hu-HU", Language::Hungarian),
            ("id-ID", Language::Indonesian),
            ("ga-IE", Language::Irish),
            ("it-CH", Language::Italian),
            ("lv-LV", Language::Latvian),
            ("lt-LT", Language::Lithuanian),
            ("nb-NO", Language::Norwegian),
            ("nn-NO", Language::Norwegian),
            ("no", Language::Norwegian),
            ("fa-IR", Language::Persian),
            ("ro-RO", Language::Romanian),
            ("ru-RU", Language::Russian),
            ("ckb-IQ", Language::Sorani),
            ("es-419", Language::Spanish),
            ("sv-SE", Language::Swedish),
            ("tr-TR", Language::Turkish),
            ("th-TH", Language::Thai),
            ("sw-KE", Language::Standard),
            ("", Language::Standard),
        ] {
            assert_eq!(Language::for_locale(locale), language, "{locale}");
        }
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
