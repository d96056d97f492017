//! Check digits of coded concepts: a LOINC code or a SNOMED CT identifier that was mistyped
//! or cut short when copied is refused before it reaches a record.
//!
//! - LOINC term codes (`8867-4`) end in a Mod 10 check digit, computed as the LOINC Users'
//!   Guide describes it (section "Calculating Mod 10 Check Digits").
//! - SNOMED CT identifiers (SCTIDs, `38341003`) end in a Verhoeff (dihedral group D5) check
//!   digit, and the two digits before it are the partition identifier (SNOMED CT Release File
//!   Specification, "SCTID Representation" and "Check-digit").

/// The FHIR system URI of LOINC.
pub const LOINC_SYSTEM: &str = "http://loinc.org";
/// The FHIR system URI of SNOMED CT.
pub const SNOMED_SYSTEM: &str = "http://snomed.info/sct";

/// The 14 LOINC terms that the Users' Guide lists as carrying an invalid check digit (a known
/// issue: they are real, deprecated codes, so a record may still hold them).
const LOINC_KNOWN_INVALID_CHECK_DIGIT: [&str; 14] = [
    "11491-6", "11501-6", "5895-7", "5896-5", "5897-3", "5928-1", "6028-3", "6415-5", "6580-7", "6645-7", "6646-5",
    "6647-3", "6648-1", "6649-9",
];

/// Splits a LOINC term code into its digits and its check digit: 1 to 7 digits (no leading
/// zero), a dash, one digit. `None` for anything else (including LOINC part `LP…` and answer
/// `LA…` codes, which are not term codes).
fn loinc_parts(code: &str) -> Option<(&str, u8)> {
    let (body, check) = code.split_once('-')?;
    let valid_body =
        (1..=7).contains(&body.len()) && body.bytes().all(|b| b.is_ascii_digit()) && !body.starts_with('0');
    let check = match check.as_bytes() {
        [c] if c.is_ascii_digit() => c - b'0',
        _ => return None,
    };
    valid_body.then_some((body, check))
}

/// The Mod 10 check digit of the digits of a LOINC code (before the dash).
///
/// The Users' Guide takes the digits in odd positions counted from the right, reads them as a
/// number and doubles it, prepends the digits in even positions, sums all those digits, and
/// takes the distance to the next multiple of ten. Doubling a number never carries more than
/// one into the next digit (2 × 9 = 18), so the digit sum of the doubled number is the sum of
/// the digit sums of each doubled digit: the same as doubling each odd-position digit on its
/// own, which is what this does (Luhn's formulation of the same check).
fn loinc_mod10(body: &str) -> u8 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(position, b)| {
            let digit = u32::from(b - b'0');
            if position % 2 == 0 {
                // 1st, 3rd, 5th… from the right: doubled, then its digits summed.
                let doubled = digit * 2;
                doubled / 10 + doubled % 10
            } else {
                digit
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Whether `code` is a LOINC term code (`NNNNN-C`) whose check digit is right.
pub fn loinc_check_digit_ok(code: &str) -> bool {
    match loinc_parts(code) {
        Some((body, check)) => loinc_mod10(body) == check || LOINC_KNOWN_INVALID_CHECK_DIGIT.contains(&code),
        None => false,
    }
}

/// Verhoeff's multiplication table of the dihedral group D5.
const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// Verhoeff's position permutations: row `i` is the permutation (1 5 8 9 4 2 7 0)(3 6)
/// applied `i` times; it repeats after eight positions.
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// The inverse of each element of D5.
const VERHOEFF_INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// Runs Verhoeff's check over ASCII digits; `first_position` is the position (from the right,
/// from 0) of the last digit given: 0 to check a number that carries its check digit, 1 to
/// compute the check digit of a number that does not yet.
fn verhoeff_fold(digits: &str, first_position: usize) -> u8 {
    digits.bytes().rev().enumerate().fold(0u8, |c, (i, b)| {
        let permuted = VERHOEFF_P[(i + first_position) % 8][usize::from(b - b'0')];
        VERHOEFF_D[usize::from(c)][usize::from(permuted)]
    })
}

/// The Verhoeff check digit for the given digits (which must all be ASCII digits).
fn verhoeff_check_digit(digits: &str) -> u8 {
    VERHOEFF_INV[usize::from(verhoeff_fold(digits, 1))]
}

/// Partition identifiers of SNOMED CT components: short format (the component comes from the
/// International Release) 00 concept, 01 description, 02 relationship; long format (it comes
/// from an extension and carries a 7-digit namespace) 10, 11, 12.
const SNOMED_PARTITIONS: [&str; 6] = ["00", "01", "02", "10", "11", "12"];

/// Why a string is not a SNOMED CT identifier, or `None` when it is one.
fn snomed_problem(code: &str) -> Option<String> {
    if !code.bytes().all(|b| b.is_ascii_digit()) || code.is_empty() {
        return Some("an SCTID is made of digits only".to_string());
    }
    if !(6..=18).contains(&code.len()) {
        return Some(format!("an SCTID has 6 to 18 digits, this has {}", code.len()));
    }
    if code.starts_with('0') {
        return Some("an SCTID does not start with 0".to_string());
    }
    let partition = &code[code.len() - 3..code.len() - 1];
    if !SNOMED_PARTITIONS.contains(&partition) {
        return Some(format!(
            "its partition identifier {partition} (the two digits before the check digit) is none of {}",
            SNOMED_PARTITIONS.join(", ")
        ));
    }
    // A long-format SCTID holds at least one digit of item identifier, the 7-digit namespace,
    // the partition and the check digit.
    if partition.starts_with('1') && code.len() < 11 {
        return Some(format!(
            "its partition identifier {partition} is a long-format one, which needs a 7-digit namespace: at least 11 digits"
        ));
    }
    let (body, check) = code.split_at(code.len() - 1);
    if verhoeff_fold(code, 0) != 0 {
        let expected = verhoeff_check_digit(body);
        return Some(format!("its check digit should be {expected}, not {check}"));
    }
    None
}

/// Whether `code` is a SNOMED CT identifier: 6 to 18 digits, no leading zero, a valid
/// partition identifier in the two digits before the last one, and a right Verhoeff check
/// digit.
pub fn snomed_check_digit_ok(code: &str) -> bool {
    snomed_problem(code).is_none()
}

/// Checks a coding's code against its system: LOINC and SNOMED CT codes must carry a right
/// check digit; codes of other systems are not checked here. The error is a sentence for an
/// OperationOutcome, e.g. "8867-5 is not a valid LOINC code: its check digit should be 4".
pub fn check_coding(system: &str, code: &str) -> Result<(), String> {
    match system {
        LOINC_SYSTEM => match loinc_parts(code) {
            None => Err(format!(
                "{code} is not a valid LOINC code: a LOINC code is 1 to 7 digits, a dash and a check digit (e.g. 8867-4)"
            )),
            Some((body, _)) if !loinc_check_digit_ok(code) => Err(format!(
                "{code} is not a valid LOINC code: its check digit should be {}",
                loinc_mod10(body)
            )),
            Some(_) => Ok(()),
        },
        SNOMED_SYSTEM => match snomed_problem(code) {
            Some(problem) => Err(format!("{code} is not a valid SNOMED CT code: {problem}")),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real LOINC codes (vital signs and common laboratory tests).
    const LOINC_REAL: [&str; 12] = [
        "8867-4",  // Heart rate
        "29463-7", // Body weight
        "8480-6",  // Systolic blood pressure
        "8462-4",  // Diastolic blood pressure
        "2339-0",  // Glucose [Mass/volume] in Blood
        "718-7",   // Hemoglobin [Mass/volume] in Blood
        "4548-4",  // Hemoglobin A1c/Hemoglobin.total in Blood
        "8310-5",  // Body temperature
        "8302-2",  // Body height
        "39156-5", // Body mass index
        "59408-5", // Oxygen saturation by pulse oximetry
        "85354-9", // Blood pressure panel
    ];

    #[test]
    fn the_users_guide_example() {
        // "Thus, 5 is the Mod 10 check digit for 12345."
        assert_eq!(loinc_mod10("12345"), 5);
        assert!(loinc_check_digit_ok("12345-5"));
    }

    #[test]
    fn real_loinc_codes_pass() {
        for code in LOINC_REAL {
            assert!(loinc_check_digit_ok(code), "{code}");
            assert_eq!(check_coding(LOINC_SYSTEM, code), Ok(()), "{code}");
        }
    }

    #[test]
    fn every_wrong_loinc_digit_fails() {
        for code in LOINC_REAL {
            let (body, check) = code.split_once('-').unwrap();
            for digit in (0..10).filter(|d| d.to_string() != check) {
                let wrong = format!("{body}-{digit}");
                assert!(!loinc_check_digit_ok(&wrong), "{wrong}");
            }
        }
    }

    #[test]
    fn a_mistyped_loinc_digit_or_swap_fails() {
        // One digit mistyped, two adjacent digits swapped, a digit dropped.
        for wrong in ["8857-4", "8687-4", "867-4", "29436-7", "2946-7", "4584-4"] {
            assert!(!loinc_check_digit_ok(wrong), "{wrong}");
        }
    }

    #[test]
    fn malformed_loinc_codes_fail() {
        for wrong in [
            "",
            "-",
            "8867",
            "8867-",
            "-4",
            "8867-44",
            "8867–4",
            "88 67-4",
            "12345678-0",
            "0718-7",
            "LA6576-8",
            "LP7839-6",
            "8867-a",
            " 8867-4",
            "8867-4 ",
            "+867-4",
        ] {
            assert!(!loinc_check_digit_ok(wrong), "{wrong:?}");
            assert!(check_coding(LOINC_SYSTEM, wrong).is_err(), "{wrong:?}");
        }
        // Seven digits is the most LOINC allows, and one the least.
        assert!(loinc_check_digit_ok(&format!("1234567-{}", loinc_mod10("1234567"))));
        assert!(loinc_check_digit_ok(&format!("7-{}", loinc_mod10("7"))));
    }

    #[test]
    fn loinc_terms_known_to_carry_a_wrong_digit_are_accepted() {
        // The Users' Guide lists them; the computed digit of 11491 is 8, not 6.
        assert_eq!(loinc_mod10("11491"), 8);
        assert!(loinc_check_digit_ok("11491-6"));
        assert!(loinc_check_digit_ok("6649-9"));
        assert!(!loinc_check_digit_ok("11491-5"));
    }

    /// Real SNOMED CT concept identifiers.
    const SNOMED_REAL: [&str; 10] = [
        "38341003",           // Hypertensive disorder
        "44054006",           // Diabetes mellitus type 2
        "22298006",           // Myocardial infarction
        "271649006",          // Systolic blood pressure
        "386661006",          // Fever
        "73211009",           // Diabetes mellitus
        "195967001",          // Asthma
        "404684003",          // Clinical finding
        "138875005",          // SNOMED CT Concept (root)
        "900000000000207008", // SNOMED CT core module (18 digits)
    ];

    #[test]
    fn verhoeffs_own_example() {
        // Verhoeff's check digit of 236 is 3; 2363 checks.
        assert_eq!(verhoeff_check_digit("236"), 3);
        assert_eq!(verhoeff_fold("2363", 0), 0);
    }

    #[test]
    fn real_sctids_pass() {
        for code in SNOMED_REAL {
            assert!(snomed_check_digit_ok(code), "{code}: {:?}", snomed_problem(code));
            assert_eq!(check_coding(SNOMED_SYSTEM, code), Ok(()), "{code}");
        }
        // Long format: the SNOMED CT UK extension's module (namespace 1000000, partition 10).
        assert!(snomed_check_digit_ok("999000011000000103"));
        // "Fully specified name", a concept of the core metadata.
        assert!(snomed_check_digit_ok("900000000000003001"));
        // Description (01) and relationship (02) partitions, with their Verhoeff digit.
        assert!(snomed_check_digit_ok(&format!(
            "10000001{}",
            verhoeff_check_digit("10000001")
        )));
        assert!(snomed_check_digit_ok(&format!(
            "10000002{}",
            verhoeff_check_digit("10000002")
        )));
    }

    #[test]
    fn every_wrong_snomed_digit_fails() {
        for code in SNOMED_REAL {
            let (body, check) = code.split_at(code.len() - 1);
            for digit in (0..10).filter(|d| d.to_string() != check) {
                let wrong = format!("{body}{digit}");
                assert!(!snomed_check_digit_ok(&wrong), "{wrong}");
            }
        }
    }

    #[test]
    fn a_swapped_or_mistyped_sctid_fails() {
        for wrong in ["38431003", "83341003", "44054060", "22298060", "271694006", "386661066"] {
            assert!(!snomed_check_digit_ok(wrong), "{wrong}");
        }
    }

    #[test]
    fn sctids_with_a_bad_partition_length_or_form_fail() {
        // Valid Verhoeff digits but partitions 03, 20 and 05: not components.
        for body in ["1234503", "1234520", "1234505"] {
            let code = format!("{body}{}", verhoeff_check_digit(body));
            assert!(!snomed_check_digit_ok(&code), "{code}");
            let message = check_coding(SNOMED_SYSTEM, &code).unwrap_err();
            assert!(message.contains("partition identifier"), "{message}");
        }
        // A long-format partition in an identifier too short to hold a namespace.
        let short_long = format!("1234510{}", verhoeff_check_digit("1234510"));
        assert!(!snomed_check_digit_ok(&short_long));
        // Too short, too long, a leading zero, not digits.
        let too_short = format!("1200{}", verhoeff_check_digit("1200"));
        let too_long = format!("1234567890123456700{}", verhoeff_check_digit("1234567890123456700"));
        let leading_zero = format!("0383410{}", verhoeff_check_digit("0383410"));
        for wrong in [
            too_short.as_str(),
            too_long.as_str(),
            leading_zero.as_str(),
            "",
            "38341OO3",
            "-38341003",
            " 38341003",
            "3834100３",
        ] {
            assert!(!snomed_check_digit_ok(wrong), "{wrong:?}");
            assert!(check_coding(SNOMED_SYSTEM, wrong).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn check_coding_says_what_is_wrong() {
        assert_eq!(
            check_coding(LOINC_SYSTEM, "8867-5"),
            Err("8867-5 is not a valid LOINC code: its check digit should be 4".to_string())
        );
        assert_eq!(
            check_coding(SNOMED_SYSTEM, "38341004"),
            Err("38341004 is not a valid SNOMED CT code: its check digit should be 3, not 4".to_string())
        );
        let message = check_coding(LOINC_SYSTEM, "LA6576-8").unwrap_err();
        assert!(message.contains("1 to 7 digits, a dash and a check digit"), "{message}");
        // Other systems are not checked here, whatever their code looks like.
        assert_eq!(check_coding("http://unitsofmeasure.org", "8867-5"), Ok(()));
        assert_eq!(check_coding("urn:oid:1.2.3", "38341004"), Ok(()));
        // The system must match exactly (FHIR system URIs are case-sensitive).
        assert_eq!(check_coding("http://loinc.org/", "8867-5"), Ok(()));
    }
}
