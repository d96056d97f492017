//! The vault's data keys. Each Region has one Secret, [`VAULT_KEYS_SECRET`], holding every
//! country's keys as entries `<CC>.<key id>` (32 random bytes, base64) and `<CC>.active`
//! (the key id new rows are sealed under). Rows record the key id they were sealed with, so
//! a rotation adds a key and makes it active, and rows move over one by one while the old
//! key still opens the rows not moved yet.
//!
//! The control plane adds a country's first key when it launches the country and never
//! replaces one; `meridian vault rotate` adds the next.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

/// Name of the Region's Secret holding the countries' data keys.
pub const VAULT_KEYS_SECRET: &str = "vault-keys";

/// One data key of a country.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey {
    /// `k1`, `k2`, ...: increasing with each rotation.
    pub id: String,
    pub key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A country's data keys: the active one seals, every one opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    pub country: String,
    pub active: String,
    pub keys: Vec<DataKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the vault keys hold no key for country {0}")]
    NoKeys(String),
    #[error("the vault keys of country {country}: entry {entry} is not 32 bytes of base64")]
    BadKey { country: String, entry: String },
    #[error("the vault keys of country {country} name active key {active}, which they do not hold")]
    NoActive { country: String, active: String },
}

impl Keyring {
    /// Country `country`'s keys from the Secret's entries.
    pub fn from_secret(data: &BTreeMap<String, String>, country: &str) -> Result<Self, KeyError> {
        let country = country.to_ascii_uppercase();
        let prefix = format!("{country}.");
        let mut keys = Vec::new();
        let mut active = None;
        for (entry, value) in data.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            let id = &entry[prefix.len()..];
            if id == "active" {
                active = Some(value.trim().to_string());
                continue;
            }
            let bytes = STANDARD.decode(value.trim()).ok().filter(|b| b.len() == 32);
            let key = bytes
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| KeyError::BadKey {
                    country: country.clone(),
                    entry: entry.clone(),
                })?;
            keys.push(DataKey {
                id: id.to_string(),
                key,
            });
        }
        let active = active.ok_or_else(|| KeyError::NoKeys(country.clone()))?;
        if !keys.iter().any(|k| k.id == active) {
            return Err(KeyError::NoActive { country, active });
        }
        keys.sort_by_key(|k| key_number(&k.id));
        Ok(Self { country, active, keys })
    }

    /// Every country's keys in the Secret; countries whose entries are broken are left out
    /// with the reason.
    pub fn all(data: &BTreeMap<String, String>) -> (BTreeMap<String, Keyring>, Vec<KeyError>) {
        let countries: std::collections::BTreeSet<&str> =
            data.keys().filter_map(|k| k.split_once('.')).map(|(c, _)| c).collect();
        let mut rings = BTreeMap::new();
        let mut errors = Vec::new();
        for country in countries {
            match Keyring::from_secret(data, country) {
                Ok(ring) => {
                    rings.insert(ring.country.clone(), ring);
                }
                Err(e) => errors.push(e),
            }
        }
        (rings, errors)
    }

    /// The key new rows are sealed under.
    pub fn active(&self) -> &DataKey {
        self.get(&self.active).expect("checked when read")
    }

    pub fn get(&self, id: &str) -> Option<&DataKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// `k12` → 12, for ordering key ids.
fn key_number(id: &str) -> u64 {
    id.trim_start_matches('k').parse().unwrap_or(0)
}

/// Adds country `country`'s first key to the Secret's entries unless it has keys already.
/// Returns whether it changed anything: an existing key is never replaced, or the rows
/// sealed under it could not be opened again.
pub fn ensure_country(data: &mut BTreeMap<String, String>, country: &str) -> bool {
    let country = country.to_ascii_uppercase();
    if data.contains_key(&format!("{country}.active")) {
        return false;
    }
    data.insert(format!("{country}.k1"), new_key());
    data.insert(format!("{country}.active"), "k1".into());
    true
}

/// Adds the next key of `country` and makes it active; returns its id. The older keys stay:
/// rows sealed under them are opened with them until they are moved over.
pub fn rotate(data: &mut BTreeMap<String, String>, country: &str) -> Result<String, KeyError> {
    let ring = Keyring::from_secret(data, country)?;
    let next = ring.keys.iter().map(|k| key_number(&k.id)).max().unwrap_or(0) + 1;
    let id = format!("k{next}");
    data.insert(format!("{}.{id}", ring.country), new_key());
    data.insert(format!("{}.active", ring.country), id.clone());
    Ok(id)
}

pub(crate) fn new_key() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_country_gets_one_first_key_and_keeps_it() {
        let mut data = BTreeMap::new();
        assert!(ensure_country(&mut data, "de"));
        let first = data["DE.k1"].clone();
        assert!(!ensure_country(&mut data, "DE"));
        assert_eq!(data["DE.k1"], first, "an existing key is never replaced");
        let ring = Keyring::from_secret(&data, "DE").unwrap();
        assert_eq!(ring.active().id, "k1");
        assert_eq!(
            Keyring::from_secret(&data, "FR").unwrap_err(),
            KeyError::NoKeys("FR".into())
        );
    }

    #[test]
    fn rotation_adds_the_next_key_and_keeps_the_old_ones() {
        let mut data = BTreeMap::new();
        ensure_country(&mut data, "DE");
        ensure_country(&mut data, "FR");
        assert_eq!(rotate(&mut data, "DE").unwrap(), "k2");
        let ring = Keyring::from_secret(&data, "DE").unwrap();
        assert_eq!(ring.active().id, "k2");
        assert!(ring.get("k1").is_some());
        assert_ne!(ring.get("k1").unwrap().key, ring.get("k2").unwrap().key);
        let (all, errors) = Keyring::all(&data);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["DE", "FR"]);
        assert!(errors.is_empty());
    }

    #[test]
    fn broken_entries_are_named_and_never_printed() {
        let mut data = BTreeMap::from([("DE.active".to_string(), "k1".to_string())]);
        data.insert("DE.k1".into(), "c2hvcnQ=".into());
        let err = Keyring::from_secret(&data, "DE").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the vault keys of country DE: entry DE.k1 is not 32 bytes of base64"
        );
        data.insert("DE.k1".into(), new_key());
        data.insert("DE.active".into(), "k9".into());
        assert!(matches!(
            Keyring::from_secret(&data, "DE"),
            Err(KeyError::NoActive { .. })
        ));
        let key = new_key();
        let ring = Keyring::from_secret(
            &BTreeMap::from([("DE.active".into(), "k1".into()), ("DE.k1".into(), key.clone())]),
            "DE",
        )
        .unwrap();
        let shown = format!("{ring:?}");
        assert!(
            !shown.contains(&key) && !shown.contains(&format!("{:?}", ring.keys[0].key)),
            "{shown}"
        );
    }
}
