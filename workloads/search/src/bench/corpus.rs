//! What `meridian bench search` indexes and asks: German practitioner profiles (names,
//! specialties as patients look for them, cities) and a fixed set of queries, each with
//! the profile fields it is meant to find, so that every method's recall is counted against
//! the same known answers.

use crate::Document;

pub(crate) const GIVEN: &[&str] = &[
    "Anna", "Lena", "Marie", "Sophie", "Laura", "Julia", "Sarah", "Lea", "Hannah", "Mia", "Jonas", "Lukas", "Leon",
    "Finn", "Paul", "Felix", "Max", "Elias", "Noah", "Ben", "Thomas", "Stefan", "Andreas", "Michael", "Sabine",
];

pub(crate) const FAMILY: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Bauer",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Schmitt",
    "Werner",
    "Krause",
    "Meier",
    "Lehmann",
    "Schmid",
];

/// Specialties the way German booking sites list practitioners (and patients search).
pub(crate) const SPECIALTIES: &[&str] = &[
    "Allgemeinmediziner",
    "Hausarzt",
    "Internist",
    "Kardiologe",
    "Hautarzt",
    "Kinderarzt",
    "Frauenarzt",
    "Augenarzt",
    "Orthopäde",
    "Neurologe",
    "Zahnarzt",
    "Psychotherapeut",
    "Urologe",
    "Chirurg",
];

pub(crate) const CITIES: &[&str] = &[
    "Berlin",
    "Hamburg",
    "München",
    "Köln",
    "Frankfurt",
    "Stuttgart",
    "Düsseldorf",
    "Leipzig",
    "Dortmund",
    "Essen",
    "Bremen",
    "Dresden",
];

/// What a query is meant to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The words as the profiles spell them.
    Exact,
    /// Inflected or derived forms: plurals, the city's adjective (`Kölner`).
    WordForm,
    /// One edit (a letter left out, added or replaced) in one of the words.
    Typo,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Exact, Kind::WordForm, Kind::Typo];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::WordForm => "word forms",
            Kind::Typo => "typos",
        }
    }

    /// The suffix of its `key=value` keys.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::WordForm => "forms",
            Kind::Typo => "typos",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Given,
    Family,
    Specialty,
    City,
}

/// One query and the practitioners it is meant to find: those whose fields hold every
/// wanted value (each query word stands for one of them).
#[derive(Debug)]
pub(crate) struct Case {
    pub kind: Kind,
    pub text: &'static str,
    pub wants: &'static [(Field, &'static str)],
}

impl Case {
    pub fn expects(&self, doc: &Document) -> bool {
        self.wants.iter().all(|(field, value)| {
            let held = match field {
                Field::Given => &doc.given_name,
                Field::Family => &doc.family_name,
                Field::Specialty => &doc.specialty,
                Field::City => &doc.city,
            };
            held == value
        })
    }
}

use Field::{City, Family, Given, Specialty};

const fn case(kind: Kind, text: &'static str, wants: &'static [(Field, &'static str)]) -> Case {
    Case { kind, text, wants }
}

/// The queries, twelve of each kind.
pub(crate) const CASES: &[Case] = &[
    case(Kind::Exact, "Kardiologe", &[(Specialty, "Kardiologe")]),
    case(
        Kind::Exact,
        "Hautarzt Berlin",
        &[(Specialty, "Hautarzt"), (City, "Berlin")],
    ),
    case(Kind::Exact, "Schmidt", &[(Family, "Schmidt")]),
    case(Kind::Exact, "Anna Müller", &[(Given, "Anna"), (Family, "Müller")]),
    case(Kind::Exact, "Zahnarzt Köln", &[(Specialty, "Zahnarzt"), (City, "Köln")]),
    case(
        Kind::Exact,
        "Neurologe München",
        &[(Specialty, "Neurologe"), (City, "München")],
    ),
    case(Kind::Exact, "Weber Hamburg", &[(Family, "Weber"), (City, "Hamburg")]),
    case(
        Kind::Exact,
        "Orthopäde Düsseldorf",
        &[(Specialty, "Orthopäde"), (City, "Düsseldorf")],
    ),
    case(
        Kind::Exact,
        "Fischer Kinderarzt",
        &[(Family, "Fischer"), (Specialty, "Kinderarzt")],
    ),
    case(Kind::Exact, "Leipzig", &[(City, "Leipzig")]),
    case(
        Kind::Exact,
        "Psychotherapeut Dresden",
        &[(Specialty, "Psychotherapeut"), (City, "Dresden")],
    ),
    case(
        Kind::Exact,
        "Hoffmann Frankfurt",
        &[(Family, "Hoffmann"), (City, "Frankfurt")],
    ),
    // Plurals and the cities' adjectives, the way patients write them.
    case(
        Kind::WordForm,
        "Kardiologen Berlin",
        &[(Specialty, "Kardiologe"), (City, "Berlin")],
    ),
    case(
        Kind::WordForm,
        "Hautärzte Hamburg",
        &[(Specialty, "Hautarzt"), (City, "Hamburg")],
    ),
    case(Kind::WordForm, "Kinderärzte", &[(Specialty, "Kinderarzt")]),
    case(
        Kind::WordForm,
        "Berliner Zahnärzte",
        &[(City, "Berlin"), (Specialty, "Zahnarzt")],
    ),
    case(
        Kind::WordForm,
        "Kölner Orthopäden",
        &[(City, "Köln"), (Specialty, "Orthopäde")],
    ),
    case(
        Kind::WordForm,
        "Münchner Neurologen",
        &[(City, "München"), (Specialty, "Neurologe")],
    ),
    case(
        Kind::WordForm,
        "Frankfurter Augenarzt",
        &[(City, "Frankfurt"), (Specialty, "Augenarzt")],
    ),
    case(
        Kind::WordForm,
        "Leipziger Urologen",
        &[(City, "Leipzig"), (Specialty, "Urologe")],
    ),
    case(
        Kind::WordForm,
        "Dresdner Frauenärzte",
        &[(City, "Dresden"), (Specialty, "Frauenarzt")],
    ),
    case(
        Kind::WordForm,
        "Hamburger Psychotherapeuten",
        &[(City, "Hamburg"), (Specialty, "Psychotherapeut")],
    ),
    case(
        Kind::WordForm,
        "Stuttgarter Hausarzt",
        &[(City, "Stuttgart"), (Specialty, "Hausarzt")],
    ),
    case(
        Kind::WordForm,
        "Bremer Kardiologen",
        &[(City, "Bremen"), (Specialty, "Kardiologe")],
    ),
    // One edit each (checked by a unit test below).
    case(
        Kind::Typo,
        "Kardiolge Berlin",
        &[(Specialty, "Kardiologe"), (City, "Berlin")],
    ),
    case(
        Kind::Typo,
        "Hautazt Hamburg",
        &[(Specialty, "Hautarzt"), (City, "Hamburg")],
    ),
    case(
        Kind::Typo,
        "Kinderarst München",
        &[(Specialty, "Kinderarzt"), (City, "München")],
    ),
    case(Kind::Typo, "Zahnarzr Köln", &[(Specialty, "Zahnarzt"), (City, "Köln")]),
    case(
        Kind::Typo,
        "Orthopede Frankfurt",
        &[(Specialty, "Orthopäde"), (City, "Frankfurt")],
    ),
    case(
        Kind::Typo,
        "Neurologe Lepzig",
        &[(Specialty, "Neurologe"), (City, "Leipzig")],
    ),
    case(
        Kind::Typo,
        "Augenarzt Düseldorf",
        &[(Specialty, "Augenarzt"), (City, "Düsseldorf")],
    ),
    case(Kind::Typo, "Anna Müler", &[(Given, "Anna"), (Family, "Müller")]),
    case(
        Kind::Typo,
        "Schneidr Stuttgart",
        &[(Family, "Schneider"), (City, "Stuttgart")],
    ),
    case(
        Kind::Typo,
        "Zimmerman Dortmund",
        &[(Family, "Zimmermann"), (City, "Dortmund")],
    ),
    case(
        Kind::Typo,
        "Psychoterapeut Bremen",
        &[(Specialty, "Psychotherapeut"), (City, "Bremen")],
    ),
    case(
        Kind::Typo,
        "Urologe Dresen",
        &[(Specialty, "Urologe"), (City, "Dresden")],
    ),
];

/// A profile's fields: the case `i` when `i` is a case's number (so that each query has
/// at least one expected match whatever the number of documents), drawn at random otherwise.
pub(crate) fn profile(i: usize, draw: &mut impl FnMut(usize) -> usize) -> [&'static str; 4] {
    let mut fields = [
        GIVEN[draw(GIVEN.len())],
        FAMILY[draw(FAMILY.len())],
        SPECIALTIES[draw(SPECIALTIES.len())],
        CITIES[draw(CITIES.len())],
    ];
    if let Some(case) = CASES.get(i) {
        for (field, value) in case.wants {
            fields[*field as usize] = value;
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut diagonal = row[0];
            row[0] = i;
            for j in 1..=b.len() {
                let above = row[j];
                row[j] = (above + 1)
                    .min(row[j - 1] + 1)
                    .min(diagonal + usize::from(a[i - 1] != b[j - 1]));
                diagonal = above;
            }
        }
        row[b.len()]
    }

    fn list(field: Field) -> &'static [&'static str] {
        match field {
            Field::Given => GIVEN,
            Field::Family => FAMILY,
            Field::Specialty => SPECIALTIES,
            Field::City => CITIES,
        }
    }

    #[test]
    fn every_case_wants_values_the_profiles_hold_one_per_word() {
        for case in CASES {
            let words: Vec<&str> = case.text.split_whitespace().collect();
            assert_eq!(words.len(), case.wants.len(), "{case:?}");
            for (word, (field, value)) in words.iter().zip(case.wants) {
                assert!(list(*field).contains(value), "{case:?}");
                let distance = edits(&word.to_lowercase(), &value.to_lowercase());
                match case.kind {
                    Kind::Exact => assert_eq!(distance, 0, "{case:?}"),
                    // Forms differ from the profile's word, but not as a whole new word.
                    Kind::WordForm => assert!(distance <= 3, "{case:?}"),
                    Kind::Typo => {}
                }
            }
            if case.kind == Kind::Typo {
                let total: usize = words
                    .iter()
                    .zip(case.wants)
                    .map(|(w, (_, v))| edits(&w.to_lowercase(), &v.to_lowercase()))
                    .sum();
                assert_eq!(total, 1, "{case:?} has exactly one edit");
            }
            if case.kind == Kind::WordForm {
                assert!(
                    words.iter().zip(case.wants).any(|(w, (_, v))| w != v),
                    "{case:?} has a word form"
                );
            }
        }
        for kind in Kind::ALL {
            assert_eq!(CASES.iter().filter(|c| c.kind == kind).count(), 12);
        }
    }

    #[test]
    fn the_first_profiles_are_the_cases() {
        let mut next = 0;
        let mut draw = |n: usize| {
            next += 1;
            next % n
        };
        for (i, case) in CASES.iter().enumerate() {
            let [given, family, specialty, city] = profile(i, &mut draw);
            let doc = Document {
                id: uuid::Uuid::nil(),
                country_code: "DE".into(),
                given_name: given.into(),
                family_name: family.into(),
                specialty: specialty.into(),
                city: city.into(),
                languages: vec![],
                active: true,
                version: 1,
            };
            assert!(case.expects(&doc), "{case:?}");
        }
    }
}
