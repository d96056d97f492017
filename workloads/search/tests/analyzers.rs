//! One table per language analyzer, with real words of the language: written forms that
//! must find each other (inflections, diacritics, letter variants, elisions), words that
//! must not, and stop words. Each table runs twice: through the analyzer (the query's
//! terms must be among the document's) and through real tantivy indexes of the embedded
//! engine (the search must find, or not find, the document).
//!
//! Languages without a Snowball stemmer (Bengali, Bulgarian, Galician, Latvian, Persian,
//! Sorani, CJK, Thai, Standard) are tested for what their analyzer does: case, script
//! normalisation, segmentation or bigrams, stop words; not inflections.

use meridian_search::embedded::Engine;
use meridian_search::{Document, IndexSettings, Language, Query, alias, versioned};
use tantivy::tokenizer::TokenStream;
use uuid::Uuid;

struct Case {
    language: Language,
    /// A document's text (its specialty) and queries that must find it.
    finds: &'static [(&'static str, &'static [&'static str])],
    /// A document's text and a query that must not find it.
    misses: &'static [(&'static str, &'static str)],
    /// Words the analyzer drops.
    stop: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        language: Language::Standard,
        finds: &[("Cardiology", &["CARDIOLOGY", "cardiology"]), ("Zoë", &["Zoe", "ZOË"])],
        misses: &[("Cardiology", "cardiologist")],
        stop: &[],
    },
    Case {
        language: Language::Arabic,
        finds: &[
            // Hamza forms of alef.
            ("أحمد", &["احمد", "إحمد"]),
            ("إبراهيم", &["ابراهيم", "أبراهيم"]),
            // Teh marbuta and heh.
            ("فاطمة", &["فاطمه"]),
            // Diacritics (harakat, shadda) and tatweel.
            ("مُحَمَّد", &["محمد", "محـــمد"]),
            // Alef maqsura and yeh.
            ("مصطفى", &["مصطفي"]),
            // The definite article: heart diseases, "the heart".
            ("أمراض القلب", &["قلب", "امراض", "القلب"]),
            ("طبيب أطفال", &["الأطفال", "اطفال"]),
        ],
        misses: &[("جراحة", "أطفال"), ("أمراض القلب", "عيون")],
        stop: &["في", "من"],
    },
    Case {
        language: Language::Armenian,
        // Hospitals; in the hospital.
        finds: &[("հիվանդանոցներ", &["հիվանդանոցում"]), ("բժիշկ", &["Բժիշկ"])],
        misses: &[("սիրտ", "ատամ")],
        stop: &["և", "ու"],
    },
    Case {
        language: Language::Basque,
        finds: &[("medikuak", &["medikuari"]), ("ospitalean", &["ospitaleko"])],
        misses: &[("bihotza", "begia")],
        stop: &["eta"],
    },
    Case {
        language: Language::Bengali,
        // No stemmer: long and short vowel signs, nukta forms.
        finds: &[("রবীন্দ্রনাথ", &["রবিন্দ্রনাথ"]), ("হৃদরোগ বিশেষজ্ঞ", &["হৃদরোগ"])],
        misses: &[("হৃদরোগ", "চক্ষু")],
        stop: &["এবং"],
    },
    Case {
        language: Language::Brazilian,
        finds: &[
            ("médico", &["médicos", "MEDICO", "médica"]),
            ("clínica", &["clínicas", "CLINICA"]),
        ],
        misses: &[("pediatria", "dermatologia")],
        stop: &["de", "para"],
    },
    Case {
        language: Language::Bulgarian,
        // No stemmer: case only.
        finds: &[("Лекар", &["лекар", "ЛЕКАР"])],
        misses: &[("кардиология", "неврология")],
        stop: &["и"],
    },
    Case {
        language: Language::Catalan,
        finds: &[("l'hospital", &["hospital", "hospitals"]), ("metge", &["metges"])],
        misses: &[("cardiologia", "pediatria")],
        stop: &["amb"],
    },
    Case {
        language: Language::Cjk,
        finds: &[
            // Japanese: a name and a specialty (cardiology; internal medicine).
            ("山田太郎", &["山田", "太郎", "山田太郎"]),
            ("循環器内科", &["循環器", "内科"]),
            // Half-width katakana are the full-width ones (clinic).
            ("クリニック", &["ｸﾘﾆｯｸ"]),
            // Chinese: a name and a specialty (cardiology).
            ("张伟", &["张伟"]),
            ("心脏内科", &["心脏"]),
            // A lone character is a unigram.
            ("李", &["李"]),
            // Korean: Seoul National University Hospital.
            ("서울대학교병원", &["서울", "병원"]),
        ],
        misses: &[("眼科", "内科"), ("東京", "京都")],
        stop: &["the", "and"],
    },
    Case {
        language: Language::Czech,
        finds: &[
            ("nemocnice", &["nemocnici", "nemocnicí"]),
            ("lékař", &["lékaře", "lekar"]),
        ],
        misses: &[("kardiologie", "neurologie")],
        stop: &["a", "nebo"],
    },
    Case {
        language: Language::Danish,
        finds: &[("læge", &["lægen", "læger"])],
        misses: &[("hjerte", "øje")],
        stop: &["og"],
    },
    Case {
        language: Language::Dutch,
        finds: &[("arts", &["artsen"]), ("tandarts", &["tandartsen"])],
        misses: &[("cardiologie", "dermatologie")],
        stop: &["de", "en"],
    },
    Case {
        language: Language::English,
        finds: &[
            ("cardiologist", &["cardiologists", "Cardiologist's"]),
            ("children's hospital", &["children", "hospitals"]),
        ],
        misses: &[("cardiology", "neurology")],
        stop: &["the", "and"],
    },
    Case {
        language: Language::Estonian,
        finds: &[("arsti", &["arstid", "arstide", "arstiga"]), ("haigla", &["haiglas"])],
        misses: &[("süda", "silm")],
        stop: &["ja"],
    },
    Case {
        language: Language::Finnish,
        finds: &[("lääkäri", &["lääkärit", "lääkärin"]), ("sairaala", &["sairaalassa"])],
        misses: &[("sydän", "silmä")],
        stop: &["ja"],
    },
    Case {
        language: Language::French,
        finds: &[
            ("l'hôpital", &["hôpitaux", "Hopital"]),
            ("cardiologue", &["cardiologues"]),
        ],
        misses: &[("cardiologie", "pédiatrie")],
        stop: &["le", "et"],
    },
    Case {
        language: Language::Galician,
        // No stemmer: case and accents.
        finds: &[("Médico", &["médico", "MEDICO"])],
        misses: &[("cardioloxía", "pediatría")],
        stop: &["para"],
    },
    Case {
        language: Language::German,
        finds: &[
            ("Ärzte", &["Arzt", "Aerzte"]),
            ("Müller", &["Mueller", "Muller"]),
            ("Straße", &["Strasse"]),
        ],
        misses: &[("Kardiologie", "Neurologie")],
        stop: &["und", "der"],
    },
    Case {
        language: Language::Greek,
        finds: &[("γιατρός", &["γιατροί", "ΓΙΑΤΡΟΣ", "γιατρού"])],
        misses: &[("καρδιολογία", "οφθαλμολογία")],
        stop: &["και"],
    },
    Case {
        language: Language::Hindi,
        finds: &[("डॉक्टर", &["डॉक्टरों", "डोक्टर"]), ("ज़ुकाम", &["जुकाम"])],
        misses: &[("हृदय", "आँख")],
        stop: &["और"],
    },
    Case {
        language: Language::Hungarian,
        finds: &[("orvos", &["orvosok", "orvosnál"])],
        misses: &[("kardiológia", "szemészet")],
        stop: &["és", "a"],
    },
    Case {
        language: Language::Indonesian,
        finds: &[("dokter", &["dokternya"]), ("rumah sakit", &["rumahnya", "sakit"])],
        misses: &[("jantung", "paru")],
        stop: &["dan", "yang"],
    },
    Case {
        language: Language::Irish,
        finds: &[
            ("dochtúir", &["dhochtúir", "dochtuir"]),
            ("athair", &["nAthair", "n-athair"]),
        ],
        misses: &[("croí", "súil")],
        stop: &["agus"],
    },
    Case {
        language: Language::Italian,
        finds: &[("dell'ospedale", &["ospedali", "Ospedale"]), ("medico", &["medici"])],
        misses: &[("cardiologia", "pediatria")],
        stop: &["e", "il"],
    },
    Case {
        language: Language::Latvian,
        // No stemmer: case and diacritics.
        finds: &[("Ārsts", &["ārsts", "ĀRSTS", "arsts"])],
        misses: &[("kardioloģija", "pediatrija")],
        stop: &["un"],
    },
    Case {
        language: Language::Lithuanian,
        finds: &[("gydytojas", &["gydytojai", "gydytoją"])],
        misses: &[("širdis", "akis")],
        stop: &["ir"],
    },
    Case {
        language: Language::Norwegian,
        finds: &[("lege", &["legen", "leger"])],
        misses: &[("hjerte", "øye")],
        stop: &["og"],
    },
    Case {
        language: Language::Persian,
        // No stemmer: Persian and Arabic letter forms, zero-width non-joiner.
        finds: &[
            ("دکتر", &["دكتر"]),
            ("علی", &["علي"]),
            ("مهدی", &["مهدى"]),
            ("بیمارستان‌ها", &["بیمارستان"]),
        ],
        misses: &[("قلب", "چشم")],
        stop: &["و"],
    },
    Case {
        language: Language::Portuguese,
        finds: &[("médico", &["médicos", "médica"]), ("hospital", &["hospitalar"])],
        misses: &[("cardiologia", "pediatria")],
        stop: &["de", "e"],
    },
    Case {
        language: Language::Romanian,
        finds: &[("medic", &["medicul", "medici"])],
        misses: &[("cardiologie", "pediatrie")],
        stop: &["și"],
    },
    Case {
        language: Language::Russian,
        finds: &[("врач", &["врача", "врачи", "врачом", "ВРАЧ"])],
        misses: &[("кардиология", "неврология")],
        stop: &["и", "в"],
    },
    Case {
        language: Language::Sorani,
        // No stemmer: Arabic and Kurdish letter forms.
        finds: &[("دکتۆر", &["دكتۆر"]), ("کوردی", &["كوردي"])],
        misses: &[("دڵ", "چاو")],
        stop: &["و"],
    },
    Case {
        language: Language::Spanish,
        finds: &[("médico", &["médicos", "MEDICO"]), ("hospital", &["hospitales"])],
        misses: &[("cardiología", "pediatría")],
        stop: &["de", "y"],
    },
    Case {
        language: Language::Swedish,
        finds: &[("läkare", &["läkaren", "läkarna"])],
        misses: &[("hjärta", "öga")],
        stop: &["och"],
    },
    Case {
        language: Language::Turkish,
        finds: &[
            ("doktor", &["doktorlar", "doktorlara"]),
            ("Ankara'da", &["Ankara"]),
            ("İSTANBUL", &["istanbul"]),
        ],
        misses: &[("kardiyoloji", "nöroloji")],
        stop: &["ve"],
    },
    Case {
        language: Language::Thai,
        // No stemmer: words of a text written without spaces.
        finds: &[
            ("โรงพยาบาลกรุงเทพ", &["โรงพยาบาล", "กรุงเทพ"]),
            ("แพทย์ผู้เชี่ยวชาญโรคหัวใจ", &["แพทย์", "หัวใจ"]),
            ("สมชาย ใจดี", &["สมชาย"]),
        ],
        misses: &[("โรงพยาบาล", "ร้านอาหาร")],
        stop: &["และ"],
    },
];

fn settings(language: Language) -> IndexSettings {
    IndexSettings {
        language,
        synonyms: Vec::new(),
    }
}

fn terms(language: Language, text: &str) -> Vec<String> {
    let mut analyzer = meridian_search::analysis::text_analyzer(&settings(language));
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

#[test]
fn every_language_has_a_table() {
    let mut covered: Vec<&str> = CASES.iter().map(|c| c.language.name()).collect();
    let mut all: Vec<&str> = Language::all().map(Language::name).collect();
    covered.sort();
    all.sort();
    assert_eq!(covered, all);
}

#[test]
fn each_analyzer_reduces_the_written_forms_of_a_word_to_its_terms() {
    let mut failures = Vec::new();
    for case in CASES {
        let language = case.language;
        for (document, queries) in case.finds {
            let indexed = terms(language, document);
            if indexed.is_empty() {
                failures.push(format!("{language:?}: {document} has no terms"));
            }
            for query in *queries {
                let asked = terms(language, query);
                if asked.is_empty() || !asked.iter().all(|t| indexed.contains(t)) {
                    failures.push(format!(
                        "{language:?}: {query} {asked:?} should find {document} {indexed:?}"
                    ));
                }
            }
        }
        for (document, query) in case.misses {
            let (indexed, asked) = (terms(language, document), terms(language, query));
            if asked.iter().all(|t| indexed.contains(t)) {
                failures.push(format!(
                    "{language:?}: {query} {asked:?} should not find {document} {indexed:?}"
                ));
            }
        }
        for word in case.stop {
            let kept = terms(language, word);
            if !kept.is_empty() {
                failures.push(format!("{language:?}: stop word {word} kept as {kept:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn standard_keeps_every_word() {
    assert_eq!(terms(Language::Standard, "The Heart"), ["the", "heart"]);
}

#[test]
fn arabic_indic_digits_and_thai_digits_are_ascii() {
    assert_eq!(terms(Language::Arabic, "عيادة ١٢"), terms(Language::Arabic, "عيادة 12"));
    assert_eq!(terms(Language::Thai, "๑๒"), ["12"]);
}

#[test]
fn cjk_runs_become_overlapping_bigrams() {
    assert_eq!(terms(Language::Cjk, "循環器内科"), ["循環", "環器", "器内", "内科"]);
    assert_eq!(terms(Language::Cjk, "李"), ["李"]);
    // Latin text beside it is analysed as words, English stop words dropped.
    assert_eq!(terms(Language::Cjk, "Dr. 山田 and ＡＢＣ"), ["dr", "山田", "abc"]);
}

#[test]
fn synonyms_are_read_through_the_languages_normalisation() {
    let settings = IndexSettings {
        language: Language::Arabic,
        synonyms: vec!["دكتور => طبيب".into()],
    };
    let mut analyzer = meridian_search::analysis::text_analyzer(&settings);
    let mut read = |text: &str| {
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    };
    // With diacritics and tatweel, the rule still applies.
    assert_eq!(read("دُكتـور"), read("طبيب"));
}

fn code(n: usize) -> String {
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    format!("{}{}", letters[n / 26] as char, letters[n % 26] as char)
}

fn document(country: &str, n: usize, specialty: &str) -> Document {
    Document {
        id: Uuid::from_u128(n as u128 + 1),
        country_code: country.into(),
        given_name: String::new(),
        family_name: String::new(),
        specialty: specialty.into(),
        city: String::new(),
        languages: Vec::new(),
        active: true,
        version: 1,
    }
}

#[tokio::test]
async fn each_analyzer_finds_the_written_forms_in_a_real_index() {
    let mut failures = Vec::new();
    for (n, case) in CASES.iter().enumerate() {
        let language = case.language;
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let country = code(n);
        let index = versioned(&country, 1);
        engine.create_index(&index, &settings(language)).await.unwrap();
        engine.point_alias(&alias(&country), &index).await.unwrap();
        let texts: Vec<&str> = case
            .finds
            .iter()
            .map(|(document, _)| *document)
            .chain(case.misses.iter().map(|(document, _)| *document))
            .collect();
        let docs: Vec<Document> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| document(&country, i, text))
            .collect();
        engine.fill(&index, &docs).await.unwrap();
        let search = |text: &str| Query {
            text: Some(text.into()),
            limit: 50,
            ..Default::default()
        };
        for (i, (document, queries)) in case.finds.iter().enumerate() {
            for query in *queries {
                let hits = engine.search(&alias(&country), &search(query)).await.unwrap();
                if !hits.hits.iter().any(|h| h.document.id == docs[i].id) {
                    failures.push(format!("{language:?}: searching {query} did not find {document}"));
                }
            }
        }
        for (i, (document, query)) in case.misses.iter().enumerate() {
            let doc = &docs[case.finds.len() + i];
            let hits = engine.search(&alias(&country), &search(query)).await.unwrap();
            if hits.hits.iter().any(|h| h.document.id == doc.id) {
                failures.push(format!("{language:?}: searching {query} found {document}"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
