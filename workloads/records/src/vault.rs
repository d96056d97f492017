//! The PII vault's cryptography. A Patient is stored whole, sealed with AES-256-GCM under
//! its country's active data key; the nonce is random per write and the associated data
//! binds the ciphertext to its country and client ID, so a sealed row copied onto another
//! patient does not open. Search needs no decryption: each value Patient search matches
//! on is stored as a keyed hash (HMAC-SHA-256 under a key derived from the data key), so
//! the table holds no plaintext and equal values are found by equal hashes.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use uuid::Uuid;

use crate::keys::{DataKey, Keyring};
use crate::validate::PatientTerms;

const NONCE: usize = 12;
/// Longest prefix of a name that is hashed for starts-with search.
const PREFIX_CHARS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the vault row of {country}/{client_id} is sealed under key {key_id}, which the vault keys do not hold")]
    UnknownKey {
        country: String,
        client_id: Uuid,
        key_id: String,
    },
    #[error("the vault row of {country}/{client_id} does not open under key {key_id}: it was changed or moved")]
    Tampered {
        country: String,
        client_id: Uuid,
        key_id: String,
    },
}

/// What the ciphertext is bound to.
fn associated(country: &str, client_id: Uuid) -> String {
    format!("meridian-vault/{country}/{client_id}")
}

/// Seals `plaintext` for `client_id` under the ring's active key: `(key id, nonce ‖ ciphertext)`.
pub fn seal(ring: &Keyring, client_id: Uuid, plaintext: &[u8]) -> (String, Vec<u8>) {
    let key = ring.active();
    let cipher = Aes256Gcm::new_from_slice(&key.key).expect("32-byte key");
    let mut nonce = [0u8; NONCE];
    rand::rng().fill_bytes(&mut nonce);
    let aad = associated(&ring.country, client_id);
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: aad.as_bytes(),
            },
        )
        .expect("AES-GCM encrypts any message this size");
    let mut out = Vec::with_capacity(NONCE + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    (key.id.clone(), out)
}

/// Opens what [`seal`] sealed.
pub fn open(ring: &Keyring, client_id: Uuid, key_id: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    let key = ring.get(key_id).ok_or_else(|| VaultError::UnknownKey {
        country: ring.country.clone(),
        client_id,
        key_id: key_id.into(),
    })?;
    let tampered = || VaultError::Tampered {
        country: ring.country.clone(),
        client_id,
        key_id: key_id.into(),
    };
    let Some(nonce) = sealed.get(..NONCE).and_then(|n| <[u8; NONCE]>::try_from(n).ok()) else {
        return Err(tampered());
    };
    let cipher = Aes256Gcm::new_from_slice(&key.key).expect("32-byte key");
    let aad = associated(&ring.country, client_id);
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &sealed[NONCE..],
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| tampered())
}

/// The search hash key of a data key: never the data key itself.
fn index_key(key: &DataKey) -> Hmac<Sha256> {
    let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&key.key).expect("any key length");
    derive.update(b"meridian-vault/search-index/v1");
    let derived = derive.finalize().into_bytes();
    <Hmac<Sha256> as Mac>::new_from_slice(&derived).expect("any key length")
}

/// Case- and accent-insensitive form of a string, as FHIR string search compares.
pub fn fold(value: &str) -> String {
    value
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The hash of `kind` = `value` under `key`, as stored and searched.
fn token(mac: &Hmac<Sha256>, kind: &str, value: &str) -> String {
    let mut mac = mac.clone();
    mac.update(kind.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    let bytes = mac.finalize().into_bytes();
    bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The (kind, value) pairs a Patient is found by: every prefix of each name part (FHIR's
/// string search matches the start), the birth date at each precision, gender, and each
/// identifier with and without its system.
pub fn terms(terms: &PatientTerms) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let prefixes = |kind: &'static str, values: &[String], out: &mut Vec<(&'static str, String)>| {
        for value in values {
            let folded = fold(value);
            let chars: Vec<char> = folded.chars().collect();
            for n in 1..=chars.len().min(PREFIX_CHARS) {
                out.push((kind, chars[..n].iter().collect()));
            }
        }
    };
    prefixes("family", &terms.family, &mut out);
    prefixes("given", &terms.given, &mut out);
    prefixes("name", &terms.name, &mut out);
    if let Some(birth) = &terms.birthdate {
        for n in [4, 7, 10] {
            if birth.len() >= n {
                out.push(("birthdate", birth[..n].to_string()));
            }
        }
    }
    if let Some(gender) = &terms.gender {
        out.push(("gender", gender.clone()));
    }
    for (system, value) in &terms.identifiers {
        out.push(("identifier", format!("{system}|{value}")));
        out.push(("identifier", value.clone()));
    }
    out.sort();
    out.dedup();
    out
}

/// The search hashes stored with a Patient sealed under the ring's active key.
pub fn index(ring: &Keyring, patient: &PatientTerms) -> Vec<String> {
    let mac = index_key(ring.active());
    terms(patient).iter().map(|(k, v)| token(&mac, k, v)).collect()
}

/// The hashes a search for `kind` = `value` looks for: one under each key of the ring, so
/// rows not yet moved to a new key are still found.
pub fn lookup(ring: &Keyring, kind: &str, value: &str) -> Vec<String> {
    ring.keys
        .iter()
        .map(|key| token(&index_key(key), kind, value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ring() -> Keyring {
        let mut data = BTreeMap::new();
        crate::keys::ensure_country(&mut data, "DE");
        Keyring::from_secret(&data, "DE").unwrap()
    }

    #[test]
    fn sealed_data_opens_only_for_its_patient_and_key() {
        let ring = ring();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (key_id, sealed) = seal(&ring, a, b"{\"family\":\"M\xc3\xbcller\"}");
        assert!(!sealed.windows(6).any(|w| w == b"family"));
        assert_eq!(
            open(&ring, a, &key_id, &sealed).unwrap(),
            b"{\"family\":\"M\xc3\xbcller\"}"
        );
        assert!(matches!(
            open(&ring, b, &key_id, &sealed),
            Err(VaultError::Tampered { .. })
        ));
        assert!(matches!(
            open(&ring, a, "k7", &sealed),
            Err(VaultError::UnknownKey { .. })
        ));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(open(&ring, a, &key_id, &flipped).is_err());
    }

    #[test]
    fn names_are_found_by_any_start_without_case_or_accents() {
        let ring = ring();
        let patient = PatientTerms {
            family: vec!["Müller".into()],
            ..Default::default()
        };
        let stored = index(&ring, &patient);
        for query in ["mu", "MÜLL", "muller"] {
            let wanted = lookup(&ring, "family", &fold(query));
            assert!(wanted.iter().any(|w| stored.contains(w)), "{query}");
        }
        assert!(!lookup(&ring, "family", "mulx").iter().any(|w| stored.contains(w)));
        assert!(
            !lookup(&ring, "given", "mu").iter().any(|w| stored.contains(w)),
            "kinds are apart"
        );
    }
}
