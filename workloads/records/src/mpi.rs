//! The records services' side of the Master Patient Index: national IDs checked, normalised
//! and hashed with the index's versioned HMAC keys, and the index's entries registered,
//! looked up and retired with those hashes. The keys live in the PatientIndex's Secret,
//! mounted into the records services only; the index's store (`mpi.entries`, see
//! [`meridian_shared::schema::mpi`]) sees hashes and pointers, never a key or a raw ID.
//!
//! An entry's hash is `HMAC-SHA-256(key k<n>, "<country>|<scheme>|<normalised ID>")`.
//! Lookups try the active key, then the one before it, so that entries made before a
//! rotation are found until `meridian mpi rekey` has registered them again under the new
//! key; then the old version is retired.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use crate::national_id;
use crate::validate::Rules;

/// The Secret entry naming the active key version.
const ACTIVE: &str = "active";

/// The Secret through which the operator hands a Region's records service what it needs of
/// the PatientIndex: the keys (as in the index's key Secret), the index role's connection
/// URL (`url`, with `ca` when the server's CA is not a public one), the index's Region
/// (`region`) and every linked country (`countries`, comma-separated). No entry but
/// `countries` (empty) once the Region holds no linked country or the index is gone.
pub const LINK_SECRET: &str = "patient-index";
const LINK_URL: &str = "url";
const LINK_CA: &str = "ca";
const LINK_REGION: &str = "region";
const LINK_COUNTRIES: &str = "countries";

/// What a records service knows of the PatientIndex (see [`LINK_SECRET`]).
#[derive(Clone)]
pub struct Link {
    pub keys: IndexKeys,
    /// The index role's connection URL (credentials inside: never logged).
    url: String,
    pub ca: Option<String>,
    /// The Region whose database holds the index.
    pub region: String,
    /// Countries whose patients are indexed and who may look patients up.
    pub countries: Vec<String>,
}

impl std::fmt::Debug for Link {
    // Never the URL: it carries the index role's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("keys", &self.keys)
            .field("region", &self.region)
            .field("countries", &self.countries)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// [`LINK_SECRET`]'s entries for a Region: `keys` (the index's key Secret), the index
    /// role's `url` and `ca`, the index's `region` and every linked country.
    pub fn secret_data(
        keys: &BTreeMap<String, String>,
        url: &str,
        ca: Option<&str>,
        region: &str,
        countries: &[String],
    ) -> BTreeMap<String, String> {
        let mut data = key_entries(keys);
        data.insert(LINK_URL.into(), url.into());
        if let Some(ca) = ca {
            data.insert(LINK_CA.into(), ca.into());
        }
        data.insert(LINK_REGION.into(), region.into());
        data.insert(LINK_COUNTRIES.into(), countries.join(","));
        data
    }

    /// Puts the keys of `keys` (the index's key Secret) into `link` (a Region's
    /// [`LINK_SECRET`] entries) in place of those it holds, keeping its connection and
    /// countries; a link without a connection stays as it is. Answers whether it changed.
    pub fn replace_keys(link: &mut BTreeMap<String, String>, keys: &BTreeMap<String, String>) -> bool {
        if !link.contains_key(LINK_URL) {
            return false;
        }
        let before = link.clone();
        link.retain(|k, _| !is_key_entry(k));
        link.extend(key_entries(keys));
        *link != before
    }

    /// [`LINK_SECRET`]'s entries for a Region that no longer holds a linked country (or
    /// once the index is gone): no keys, no connection.
    pub fn unlinked() -> BTreeMap<String, String> {
        BTreeMap::from([(LINK_COUNTRIES.to_string(), String::new())])
    }

    /// The link a [`LINK_SECRET`] holds; `Ok(None)` when it links no country.
    pub fn from_secret(data: &BTreeMap<String, String>) -> Result<Option<Self>, IndexKeyError> {
        let countries: Vec<String> = data
            .get(LINK_COUNTRIES)
            .map(|c| {
                c.split(',')
                    .map(|c| c.trim().to_ascii_uppercase())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let (Some(url), Some(region)) = (data.get(LINK_URL), data.get(LINK_REGION)) else {
            return Ok(None);
        };
        if countries.is_empty() {
            return Ok(None);
        }
        let keys = key_entries(data);
        Ok(Some(Self {
            keys: IndexKeys::from_secret(&keys)?,
            url: url.clone(),
            ca: data.get(LINK_CA).cloned(),
            region: region.clone(),
            countries,
        }))
    }

    /// The index role's connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether country `code` is linked.
    pub fn links(&self, code: &str) -> bool {
        self.countries.iter().any(|c| c.eq_ignore_ascii_case(code))
    }
}

/// The index's HMAC keys, by version (`k1`, `k2`, ...), oldest first.
#[derive(Clone)]
pub struct IndexKeys {
    active: String,
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for IndexKeys {
    // Never the keys themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions: Vec<&str> = self.keys.iter().map(|(v, _)| v.as_str()).collect();
        f.debug_struct("IndexKeys")
            .field("active", &self.active)
            .field("versions", &versions)
            .finish()
    }
}

/// A PatientIndex key Secret that cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexKeyError {
    #[error("the PatientIndex key Secret has no `active` entry")]
    NoActive,
    #[error("the PatientIndex key Secret's active version {0:?} has no key")]
    ActiveMissing(String),
    #[error("the PatientIndex key Secret's entry {0:?} is not a key version (k1, k2, ...) holding 32 bytes in base64")]
    BadEntry(String),
}

/// `k12` → 12; None for anything else.
fn version_number(version: &str) -> Option<u64> {
    version
        .strip_prefix('k')
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
}

impl IndexKeys {
    /// The keys of the Secret's entries: `k<n>` (32 bytes, base64) and `active`.
    pub fn from_secret(data: &BTreeMap<String, String>) -> Result<Self, IndexKeyError> {
        let mut keys = Vec::new();
        let mut active = None;
        for (entry, value) in data {
            if entry == ACTIVE {
                active = Some(value.trim().to_string());
                continue;
            }
            let key = version_number(entry)
                .and_then(|_| STANDARD.decode(value.trim()).ok())
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| IndexKeyError::BadEntry(entry.clone()))?;
            keys.push((entry.clone(), key));
        }
        let active = active.ok_or(IndexKeyError::NoActive)?;
        if !keys.iter().any(|(v, _)| *v == active) {
            return Err(IndexKeyError::ActiveMissing(active));
        }
        keys.sort_by_key(|(v, _)| version_number(v));
        Ok(Self { active, keys })
    }

    /// The version new entries are hashed with.
    pub fn active_version(&self) -> &str {
        &self.active
    }

    /// Every version held, oldest first.
    pub fn versions(&self) -> Vec<&str> {
        self.keys.iter().map(|(v, _)| v.as_str()).collect()
    }

    /// The versions lookups try: the active one, then the one before it (if any).
    fn lookup_versions(&self) -> Vec<&(String, [u8; 32])> {
        let at = self
            .keys
            .iter()
            .position(|(v, _)| *v == self.active)
            .expect("checked when read");
        let mut versions = vec![&self.keys[at]];
        if at > 0 {
            versions.push(&self.keys[at - 1]);
        }
        versions
    }
}

/// Adds the first key to a PatientIndex key Secret's entries unless it has one; returns
/// whether it changed anything (an existing key is never replaced).
pub fn ensure_first_key(data: &mut BTreeMap<String, String>) -> bool {
    if data.contains_key(ACTIVE) {
        return false;
    }
    data.insert("k1".into(), crate::keys::new_key());
    data.insert(ACTIVE.into(), "k1".into());
    true
}

/// Whether Secret entry `entry` is a key (`k<n>`) or names the active one (`active`).
fn is_key_entry(entry: &str) -> bool {
    entry == ACTIVE || version_number(entry).is_some()
}

/// The key entries of a Secret's `data` (see [`is_key_entry`]).
fn key_entries(data: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    data.iter()
        .filter(|(k, _)| is_key_entry(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Removes every key version but the active one from a key Secret's entries (once no entry
/// of the index is hashed with them); answers the versions removed.
pub fn retire_older(data: &mut BTreeMap<String, String>) -> Vec<String> {
    let active = data.get(ACTIVE).cloned().unwrap_or_default();
    let gone: Vec<String> = data
        .keys()
        .filter(|k| version_number(k).is_some() && **k != active)
        .cloned()
        .collect();
    for k in &gone {
        data.remove(k);
    }
    gone
}

/// Adds the next key version and makes it active; returns it. Older versions stay until
/// they are retired: entries hashed with them are still found meanwhile.
pub fn rotate(data: &mut BTreeMap<String, String>) -> Result<String, IndexKeyError> {
    let keys = IndexKeys::from_secret(data)?;
    let next = keys
        .keys
        .iter()
        .filter_map(|(v, _)| version_number(v))
        .max()
        .unwrap_or(0)
        + 1;
    let version = format!("k{next}");
    data.insert(version.clone(), crate::keys::new_key());
    data.insert(ACTIVE.into(), version.clone());
    Ok(version)
}

/// A national ID as the index hashes it: its country, its scheme (the identifier system
/// URI) and its normalised value, checked against the Country's `nationalIdPattern`.
#[derive(Clone, PartialEq, Eq)]
pub struct NationalId {
    country: String,
    scheme: String,
    normalised: String,
}

impl std::fmt::Debug for NationalId {
    // A national ID is personal data: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NationalId")
            .field("country", &self.country)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl NationalId {
    /// `value` in `scheme`, a national ID of the Country whose rules are `rules`: refused
    /// (with a message that does not repeat it) when the Country has no national-ID pattern
    /// or the value does not match it.
    pub fn checked(rules: &Rules, scheme: &str, value: &str) -> Result<Self, String> {
        let Some(pattern) = &rules.national_id_pattern else {
            return Err(format!(
                "country {} has no regulatory.nationalIdPattern: its IDs are not indexed",
                rules.code
            ));
        };
        if scheme.trim().is_empty() {
            return Err("a national ID needs its system".into());
        }
        let normalised = national_id::check_named(rules.national_id_name.as_deref(), pattern, value)?;
        Ok(Self {
            country: rules.code.to_ascii_uppercase(),
            scheme: scheme.trim().to_string(),
            normalised,
        })
    }

    pub fn country(&self) -> &str {
        &self.country
    }

    /// `HMAC-SHA-256(key, "country|scheme|normalised")`.
    fn hash(&self, key: &[u8; 32]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(format!("{}|{}|{}", self.country, self.scheme, self.normalised).as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// Where a patient's records live, as the index says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub home_country: String,
    pub home_region: String,
    pub client_id: Uuid,
    /// The key version the entry was hashed with.
    pub key_version: String,
}

/// Makes the index hold exactly `ids` for client `client_id` of country `country`, whose
/// records live in Region `home_region`: each ID's entry under the active key is added, or
/// moved to this patient (the newest registration of an ID wins: a merged duplicate); every
/// other entry pointing to this patient (an ID removed or changed, an older key's hash) is
/// removed, unless `keep_older` keeps the entries hashed with older keys (a re-key, while
/// records services that have not taken the new key yet still look them up). With no IDs,
/// the patient leaves the index. Safe to repeat. Answers how many entries were removed.
pub async fn register(
    index: &PgPool,
    keys: &IndexKeys,
    country: &str,
    home_region: &str,
    client_id: Uuid,
    ids: &[NationalId],
    keep_older: bool,
) -> Result<u64, sqlx::Error> {
    let (active, key) = keys
        .keys
        .iter()
        .find(|(v, _)| *v == keys.active)
        .expect("checked when read");
    let country = country.to_ascii_uppercase();
    let hashes: Vec<Vec<u8>> = ids
        .iter()
        .filter(|id| id.country == country)
        .map(|id| id.hash(key))
        .collect();
    let removed: i64 = sqlx::query_scalar(
        "WITH gone AS (
             DELETE FROM mpi.entries
              WHERE home_country = $3 AND client_id = $5 AND NOT (hash = ANY($1))
                AND (NOT $6 OR key_version = $2)
              RETURNING 1
         ), added AS (
             INSERT INTO mpi.entries (hash, key_version, home_country, home_region, client_id)
             SELECT h, $2, $3, $4, $5 FROM unnest($1::bytea[]) AS h
             ON CONFLICT (hash) DO UPDATE
                SET key_version = EXCLUDED.key_version, home_country = EXCLUDED.home_country,
                    home_region = EXCLUDED.home_region, client_id = EXCLUDED.client_id, updated_at = now()
              WHERE (mpi.entries.key_version, mpi.entries.home_country, mpi.entries.home_region, mpi.entries.client_id)
                    IS DISTINCT FROM (EXCLUDED.key_version, EXCLUDED.home_country, EXCLUDED.home_region, EXCLUDED.client_id)
         )
         SELECT count(*) FROM gone",
    )
    .bind(&hashes)
    .bind(active)
    .bind(&country)
    .bind(home_region)
    .bind(client_id)
    .bind(keep_older)
    .fetch_one(index)
    .await?;
    Ok(removed as u64)
}

/// Where the patient with national ID `id` lives, if the index knows: the entry under the
/// active key, else under the one before it.
pub async fn lookup(index: &PgPool, keys: &IndexKeys, id: &NationalId) -> Result<Option<Entry>, sqlx::Error> {
    let versions = keys.lookup_versions();
    let hashes: Vec<Vec<u8>> = versions.iter().map(|(_, k)| id.hash(k)).collect();
    let rows: Vec<(String, String, String, Uuid)> = sqlx::query_as(
        "SELECT key_version, home_country, home_region, client_id FROM mpi.entries WHERE hash = ANY($1)",
    )
    .bind(&hashes)
    .fetch_all(index)
    .await?;
    let mut entries: Vec<Entry> = rows
        .into_iter()
        .map(|(key_version, home_country, home_region, client_id)| Entry {
            home_country,
            home_region,
            client_id,
            key_version,
        })
        .collect();
    // The active version's entry first.
    entries.sort_by_key(|e| versions.iter().position(|(v, _)| *v == e.key_version));
    Ok(entries.into_iter().next())
}

/// Entries per key version, oldest version first: what a re-key has left to move.
pub async fn entries_by_version(index: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT key_version, count(*) FROM mpi.entries GROUP BY key_version")
            .fetch_all(index)
            .await?;
    rows.sort_by_key(|(v, _)| version_number(v));
    Ok(rows)
}

/// Removes the entries still hashed with `version`, which must not be the active one (they
/// could not be found again otherwise); returns how many there were.
pub async fn retire(index: &PgPool, keys: &IndexKeys, version: &str) -> Result<u64, sqlx::Error> {
    if version == keys.active {
        return Err(sqlx::Error::Protocol(format!(
            "key version {version} is the active one and cannot be retired"
        )));
    }
    let removed = sqlx::query("DELETE FROM mpi.entries WHERE key_version = $1")
        .bind(version)
        .execute(index)
        .await?;
    Ok(removed.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pattern: Option<&str>) -> Rules {
        Rules {
            code: "DE".into(),
            retention_years: 10,
            minimum_age: 16,
            national_id_name: Some("Krankenversichertennummer".into()),
            national_id_pattern: pattern.map(String::from),
            national_id_system: Some("http://fhir.de/sid/gkv/kvid-10".into()),
            record_sharing: true,
        }
    }

    #[test]
    fn ids_are_normalised_before_hashing_and_checked_against_the_pattern() {
        let mut data = BTreeMap::new();
        ensure_first_key(&mut data);
        let keys = IndexKeys::from_secret(&data).unwrap();
        let key = &keys.keys[0].1;
        let r = rules(Some("[A-Z][0-9]{9}"));
        let a = NationalId::checked(&r, "http://fhir.de/sid/gkv/kvid-10", " a123-456.789 ").unwrap();
        let b = NationalId::checked(&r, "http://fhir.de/sid/gkv/kvid-10", "A123456789").unwrap();
        assert_eq!(a.hash(key), b.hash(key));
        let other_scheme = NationalId::checked(&r, "urn:other", "A123456789").unwrap();
        assert_ne!(a.hash(key), other_scheme.hash(key));
        let refused = NationalId::checked(&r, "http://fhir.de/sid/gkv/kvid-10", "123").unwrap_err();
        assert!(
            !refused.contains("123\""),
            "the message does not repeat the ID: {refused}"
        );
        assert!(NationalId::checked(&rules(None), "s", "A123456789").is_err());
        assert!(!format!("{a:?}").contains("A123456789"));
    }

    #[test]
    fn rotation_keeps_the_previous_version_for_lookups() {
        let mut data = BTreeMap::new();
        assert!(ensure_first_key(&mut data));
        assert!(!ensure_first_key(&mut data));
        assert_eq!(rotate(&mut data).unwrap(), "k2");
        assert_eq!(rotate(&mut data).unwrap(), "k3");
        let keys = IndexKeys::from_secret(&data).unwrap();
        assert_eq!(keys.active_version(), "k3");
        let tried: Vec<&str> = keys.lookup_versions().iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(tried, ["k3", "k2"]);
        assert!(!format!("{keys:?}").contains(&data["k1"]));

        // A Region's link takes the keys and keeps its connection; an empty link stays empty.
        let mut link = Link::secret_data(&data, "postgres://index", None, "eu-central-1", &["DE".into()]);
        let mut unlinked = Link::unlinked();
        assert_eq!(retire_older(&mut data), ["k1", "k2"]);
        assert_eq!(data.keys().collect::<Vec<_>>(), ["active", "k3"]);
        assert!(Link::replace_keys(&mut link, &data));
        assert!(!Link::replace_keys(&mut link, &data), "nothing left to change");
        assert!(!link.contains_key("k1") && link["url"] == "postgres://index");
        assert!(!Link::replace_keys(&mut unlinked, &data));
        assert_eq!(unlinked, Link::unlinked());
    }

    #[test]
    fn broken_secrets_are_named() {
        let mut data = BTreeMap::new();
        assert_eq!(IndexKeys::from_secret(&data).unwrap_err(), IndexKeyError::NoActive);
        data.insert("active".into(), "k1".into());
        assert_eq!(
            IndexKeys::from_secret(&data).unwrap_err(),
            IndexKeyError::ActiveMissing("k1".into())
        );
        data.insert("k1".into(), "too short".into());
        assert_eq!(
            IndexKeys::from_secret(&data).unwrap_err(),
            IndexKeyError::BadEntry("k1".into())
        );
    }
}
