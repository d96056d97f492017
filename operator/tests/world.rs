//! `examples/world/`: a Country manifest for every ISO 3166-1 country, on shared local
//! Regions. Each one passes the generated CRD schema (unknown fields refused) and meridian's
//! own validation, its time zone is one chrono-tz knows, and the codes are exactly the
//! ISO 3166-1 alpha-2 set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use meridian_crds::{Country, Isolation, Region, RegionProvider, Residency};
use meridian_operator::{schema, validate};
use serde::Deserialize;
use serde_json::Value;

/// ISO 3166-1 alpha-2, all 249 officially assigned codes.
const ISO_3166_1: &str = "
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE
    BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD
    CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF
    GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU
    ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
    MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI
    SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK
    TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW";

fn world() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/world")
}

/// Every document under `dir/sub`, by file.
fn documents(sub: &str) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(world().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        assert_eq!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml"),
            "{}",
            file.display()
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).unwrap())
            .filter(|doc| !doc.is_null())
            .collect();
        assert_eq!(docs.len(), 1, "{}: one manifest per file", file.display());
        out.push((file, docs.into_iter().next().unwrap()));
    }
    out
}

fn regions() -> BTreeMap<String, Region> {
    documents("regions")
        .into_iter()
        .map(|(file, doc)| {
            assert_eq!(schema::check(&doc).unwrap(), [], "{}", file.display());
            let region: Region = serde_json::from_value(doc).unwrap();
            assert_eq!(validate::region(&region), [], "{}", file.display());
            (region.metadata.name.clone().unwrap(), region)
        })
        .collect()
}

#[test]
fn the_regions_are_shared_and_local() {
    let regions = regions();
    assert!(regions.len() >= 5, "one per continent: {:?}", regions.keys());
    for (name, region) in &regions {
        assert_eq!(region.spec.provider, RegionProvider::Local, "{name}");
        assert_eq!(region.spec.isolation, Isolation::Shared, "{name}");
    }
}

#[test]
fn every_iso_3166_country_has_a_valid_manifest() {
    let regions = regions();
    let iso: BTreeSet<&str> = ISO_3166_1.split_whitespace().collect();
    assert_eq!(iso.len(), 249);
    let mut codes = BTreeSet::new();
    let mut with_id = 0;
    for (file, doc) in documents("countries") {
        let errors = schema::check(&doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(errors, [], "{} would be refused", file.display());
        let country: Country = serde_json::from_value(doc).unwrap();
        assert_eq!(validate::country(&country), [], "{}", file.display());
        let spec = &country.spec;
        let name = country.metadata.name.clone().unwrap();
        assert_eq!(name, spec.code.to_lowercase(), "{}", file.display());
        assert_eq!(
            file.file_name().unwrap().to_str().unwrap(),
            format!("{name}.yaml"),
            "named after its code"
        );
        assert!(codes.insert(spec.code.clone()), "{} twice", spec.code);
        spec.timezone
            .parse::<chrono_tz::Tz>()
            .unwrap_or_else(|e| panic!("{}: timezone {}: {e}", spec.code, spec.timezone));
        // The locale is the country's (`ar-EG`), or CLDR's world English where CLDR has no
        // locale of an official language of the territory; its language comes first.
        let (language, territory) = spec.locale.split_once('-').unwrap();
        assert!(
            territory == spec.code || spec.locale == "en-001",
            "{}: locale {}",
            spec.code,
            spec.locale
        );
        assert_eq!(spec.languages[0], language, "{}", spec.code);
        assert!(
            regions.contains_key(&spec.region),
            "{}: Region {}",
            spec.code,
            spec.region
        );
        assert_eq!(spec.residency, Residency::Shared, "{}", spec.code);
        assert!(spec.search.is_none(), "{}: the analyzer follows the locale", spec.code);
        // A pattern comes with its name, and compiles (validate::country checked).
        assert_eq!(
            spec.regulatory.national_id_name.is_some(),
            spec.regulatory.national_id_pattern.is_some(),
            "{}",
            spec.code
        );
        if spec.regulatory.national_id_pattern.is_some() {
            with_id += 1;
        }
    }
    let codes: BTreeSet<&str> = codes.iter().map(String::as_str).collect();
    assert_eq!(
        codes.difference(&iso).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "not ISO 3166-1"
    );
    assert_eq!(
        iso.difference(&codes).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "missing"
    );
    assert!(with_id >= 50, "{with_id} national ID schemes");
}

#[test]
fn national_id_patterns_accept_real_shapes_and_refuse_others() {
    let patterns: BTreeMap<String, regex::Regex> = documents("countries")
        .into_iter()
        .filter_map(|(_, doc)| {
            let country: Country = serde_json::from_value(doc).unwrap();
            let pattern = country.spec.regulatory.national_id_pattern?;
            Some((country.spec.code, regex::Regex::new(&pattern).unwrap()))
        })
        .collect();
    // Published specimen numbers and formats of each scheme.
    for (code, good, bad) in [
        ("EG", "29001011234567", "19001011234567"),
        ("US", "078-05-1120", "078-05-112"),
        ("SE", "19121212-1212", "1212121-212"),
        ("FI", "131052-308T", "131052Z308T"),
        ("CN", "11010519491231002X", "11010519491231002Y"),
        ("IN", "2345 6789 0123", "1234 5678 9012"),
        ("BR", "123.456.789-09", "123.456.78-09"),
        ("JP", "123456789012", "12345678901"),
        ("TH", "1-2345-67890-12-3", "1-2345-67890-12"),
        ("CH", "756.1234.5678.97", "757.1234.5678.97"),
        ("NZ", "ZAC5361", "ZIC5361"),
        ("MX", "GODE561231HDFRRN09", "GODE561231ZDFRRN09"),
        ("TR", "10000000146", "01000000146"),
        ("SG", "S1234567D", "X1234567D"),
    ] {
        let re = &patterns[code];
        assert!(re.is_match(good), "{code}: {good}");
        assert!(!re.is_match(bad), "{code}: {bad}");
    }
}
