//! National identifiers (a Patient's `identifier` in the country's national system, e.g. the
//! German Krankenversichertennummer): normalised, then checked against the Country's
//! `regulatory.nationalIdPattern`, anchored at both ends.
//!
//! Messages never repeat the identifier itself: they end up in OperationOutcomes and logs,
//! and a national ID is personal data.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;

/// The form a national ID is stored and compared in: surrounding white space trimmed, the
/// spaces, dashes and dots people type between groups of characters dropped, letters in
/// upper case (`" a123-456.789 "` → `"A123456789"`).
pub fn normalise(value: &str) -> String {
    value
        .trim()
        .chars()
        .filter(|c| !(c.is_whitespace() || *c == '-' || *c == '.'))
        .flat_map(char::to_uppercase)
        .collect()
}

/// Checks a national ID against the Country's `regulatory.nationalIdPattern` and returns its
/// normalised form. The pattern must match the whole normalised value (`^(?:pattern)$`).
/// A pattern that is not a valid regular expression is an error, never a panic.
pub fn check(pattern: &str, value: &str) -> Result<String, String> {
    check_named(None, pattern, value)
}

/// [`check`], with the Country's `regulatory.nationalIdName` (e.g. `Krankenversichertennummer`)
/// in the messages when it has one.
pub fn check_named(name: Option<&str>, pattern: &str, value: &str) -> Result<String, String> {
    let what = match name {
        Some(name) if !name.trim().is_empty() => format!("the national ID ({})", name.trim()),
        _ => "the national ID".to_string(),
    };
    let regex = anchored(pattern).map_err(|e| {
        format!("{what} cannot be checked: the Country's regulatory.nationalIdPattern {pattern:?} is not a valid regular expression: {e}")
    })?;
    let normalised = normalise(value);
    if normalised.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if regex.is_match(&normalised) {
        Ok(normalised)
    } else {
        Err(format!(
            "{what} does not match the Country's regulatory.nationalIdPattern {pattern:?} \
             (checked in upper case, without spaces, dashes or dots: {} characters)",
            normalised.chars().count()
        ))
    }
}

/// Patterns a process holds compiled; a few per Country, so this stays small.
const CACHE_LIMIT: usize = 256;

/// The anchored regex of a pattern, compiled once per pattern. The error is the regex crate's
/// reason, on one line.
fn anchored(pattern: &str) -> Result<Regex, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Result<Regex, String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked while holding it; the map itself is
    // always consistent (one insert at a time), so keep using it.
    let mut cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(compiled) = cache.get(pattern) {
        return compiled.clone();
    }
    let compiled = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        // The crate's message spans several lines (the pattern, a caret, the reason).
        e.to_string().lines().last().unwrap_or_default().trim().to_string()
    });
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(pattern.to_string(), compiled.clone());
    compiled
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `regulatory.nationalIdName` and `regulatory.nationalIdPattern` of an example Country
    /// (`examples/countries/{code}.yaml`), as the operator reads them.
    fn example(code: &str) -> (Option<String>, String) {
        let path = format!("{}/../../examples/countries/{code}.yaml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let country: meridian_crds::Country = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let regulatory = country.spec.regulatory;
        let pattern = regulatory
            .national_id_pattern
            .unwrap_or_else(|| panic!("{path} has no nationalIdPattern"));
        (regulatory.national_id_name, pattern)
    }

    #[test]
    fn normalise_drops_separators_and_upper_cases() {
        assert_eq!(normalise(" a123-456.789 "), "A123456789");
        assert_eq!(normalise("485 777 3456"), "4857773456");
        assert_eq!(normalise("\t1-8505-02345-12-3\n"), "1850502345123");
        assert_eq!(normalise("x1234567l"), "X1234567L");
        assert_eq!(normalise("  "), "");
        // Other characters are kept, so that the pattern refuses them.
        assert_eq!(normalise("A12/345"), "A12/345");
    }

    /// A country, valid IDs as people type them with their normalised form, invalid IDs.
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );

    #[test]
    fn the_example_countries_national_ids() {
        let cases: [Case; 8] = [
            (
                "de",
                &[("A123456780", "A123456780"), ("a 123 456 780", "A123456780")],
                &["1234567890", "A12345678", "A1234567801", "AB23456780", "Ä123456780"],
            ),
            (
                "gb",
                &[("485 777 3456", "4857773456"), ("485-777-3456", "4857773456")],
                &["485 777 345", "48577734567", "AB 777 3456"],
            ),
            (
                "fr",
                &[
                    ("1 85 05 78 006 084 36", "185057800608436"),
                    ("2 94 03 2A 004 005 12", "294032A00400512"),
                ],
                &["3 85 05 78 006 084 36", "1 85 13 78 006 084 36", "1 85 05 78 006 084"],
            ),
            (
                "it",
                &[("rssmra85t10a562s", "RSSMRA85T10A562S")],
                &["RSSMRA85T10A562", "RSSMRA85Z10A562S", "1SSMRA85T10A562S"],
            ),
            (
                "es",
                &[("12345678-Z", "12345678Z"), ("x1234567l", "X1234567L")],
                &["1234567Z", "A1234567L", "123456789"],
            ),
            (
                "jp",
                &[("1234 5678 9012", "123456789012")],
                &["12345678901", "1234567890123", "12345678901A"],
            ),
            (
                "th",
                &[("1-1037-00123-45-6", "1103700123456")],
                &["110370012345", "11037001234567"],
            ),
            (
                "eg",
                &[("29001011234567", "29001011234567")],
                &["19001011234567", "2900101123456"],
            ),
        ];
        for (code, valid, invalid) in cases {
            let (name, pattern) = example(code);
            for (typed, normalised) in valid {
                assert_eq!(
                    check_named(name.as_deref(), &pattern, typed).as_deref(),
                    Ok(*normalised),
                    "{code}: {typed:?} against {pattern}"
                );
                assert_eq!(check(&pattern, typed).as_deref(), Ok(*normalised));
            }
            for typed in invalid {
                let message = check_named(name.as_deref(), &pattern, typed)
                    .expect_err(&format!("{code}: {typed:?} matches {pattern}"));
                assert!(message.contains(&pattern), "{message}");
                assert!(message.contains("nationalIdPattern"), "{message}");
                if let Some(name) = &name {
                    assert!(message.contains(name.as_str()), "{message}");
                }
                // The message never repeats the ID.
                assert!(!message.contains(&normalise(typed)), "{message}");
            }
        }
    }

    #[test]
    fn the_de_message_names_the_krankenversichertennummer() {
        let (name, pattern) = example("de");
        let message = check_named(name.as_deref(), &pattern, "12345").unwrap_err();
        assert_eq!(
            message,
            "the national ID (Krankenversichertennummer) does not match the Country's \
             regulatory.nationalIdPattern \"^[A-Z][0-9]{9}$\" (checked in upper case, without \
             spaces, dashes or dots: 5 characters)"
        );
    }

    #[test]
    fn the_pattern_is_anchored_even_without_anchors() {
        assert_eq!(check("[0-9]{3}", "123").as_deref(), Ok("123"));
        assert!(check("[0-9]{3}", "1234").is_err());
        assert!(check("[0-9]{3}", "X123").is_err());
        // A top-level alternation is anchored as a whole, not only its first and last branch.
        assert!(check("A[0-9]|[0-9]{2}B", "A1").is_ok());
        assert!(check("A[0-9]|[0-9]{2}B", "A1X").is_err());
        assert!(check("A[0-9]|[0-9]{2}B", "X12B").is_err());
    }

    #[test]
    fn an_invalid_pattern_is_an_error_not_a_panic() {
        for pattern in ["[A-Z", "(", "a{2,1}", "\\p{NoSuchClass}", "(?<n>a)(?<n>b)"] {
            let message = check(pattern, "A123456780").unwrap_err();
            assert!(message.contains("is not a valid regular expression"), "{message}");
            assert!(message.contains(pattern), "{message}");
            assert!(!message.contains('\n'), "{message}");
            // Cached: the second answer is the same.
            assert_eq!(check(pattern, "A123456780").unwrap_err(), message);
        }
    }

    #[test]
    fn an_empty_id_is_refused() {
        assert_eq!(check(".*", " - . ").unwrap_err(), "the national ID is empty");
    }
}
