//! Moving a country's vault rows onto its active data key, after `meridian vault rotate`
//! added a key ([`crate::keys::rotate`]). Every row of `vault.patients` and
//! `vault.patient_history` sealed under an older key is opened with it, sealed again under
//! the active key (and, for the current versions, its search hashes recomputed under the
//! active key's index key), and written back only once the new ciphertext was opened again.
//!
//! The rows move in batches, each in its own transaction, in client-ID order, locked while
//! they move; a batch leaves one audit record (actor [`ACTOR`], action [`ACTION`]) naming
//! the client IDs it moved and nothing else. A crash loses at most the batch in flight,
//! which rolls back whole: running again moves what is left, and moves nothing when nothing
//! is left. A row that does not open (changed, or sealed under a key the ring no longer
//! holds) is reported and left as it is.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::keys::Keyring;
use crate::vault;

/// Who the rotation's audit records name.
pub const ACTOR: &str = "system:vault-rotation";
/// What they say was done.
pub const ACTION: &str = "vault.rekey";

/// A vault row left under its old key, and why. Names the row, never its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmoved {
    /// `vault.patients` or `vault.patient_history`.
    pub table: &'static str,
    pub client_id: Uuid,
    pub version: i64,
    pub key_id: String,
    pub reason: String,
}

impl std::fmt::Display for Unmoved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} version {} (key {}): {}",
            self.table, self.client_id, self.version, self.key_id, self.reason
        )
    }
}

/// What a [`rekey`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rekeyed {
    pub country: String,
    /// The key the rows were moved onto.
    pub active: String,
    /// Current versions (`vault.patients` rows) moved.
    pub patients: u64,
    /// History versions (`vault.patient_history` rows) moved.
    pub history: u64,
    /// Old key id to how many rows (of either table) moved off it.
    pub from: BTreeMap<String, u64>,
    /// Rows that did not open, left as they were.
    pub unmoved: Vec<Unmoved>,
    /// Rows of the country still not under the active key after the run: the unmoved, and
    /// rows a service still on the old key wrote meanwhile (a rerun moves those).
    pub left: u64,
    /// Batches committed (one audit record each).
    pub batches: u64,
    /// The correlation ID of the run's audit records.
    pub correlation_id: Uuid,
}

impl Rekeyed {
    /// `DE: key k2 is active; 3 patients and 5 history versions moved from k1, 0 left`.
    pub fn summary(&self) -> String {
        let from = if self.from.is_empty() {
            String::new()
        } else {
            format!(" from {}", self.from.keys().cloned().collect::<Vec<_>>().join(", "))
        };
        format!(
            "{}: key {} is active; {} patients and {} history versions moved{from}, {} left",
            self.country, self.active, self.patients, self.history, self.left
        )
    }
}

/// Moves every row of `ring`'s country not sealed under its active key onto it, `batch` rows
/// per transaction. Fails only when the database does; rows that do not open are in
/// [`Rekeyed::unmoved`].
pub async fn rekey(pool: &PgPool, ring: &Keyring, batch: i64) -> Result<Rekeyed, sqlx::Error> {
    let batch = batch.max(1);
    let mut done = Rekeyed {
        country: ring.country.clone(),
        active: ring.active.clone(),
        correlation_id: Uuid::new_v4(),
        ..Default::default()
    };
    // Current versions, by client ID; the cursor passes rows that did not open.
    let mut after = Uuid::nil();
    loop {
        let mut tx = pool.begin().await?;
        let Some(last) = patients_batch(&mut tx, ring, after, batch, &mut done).await? else {
            tx.rollback().await?;
            break;
        };
        tx.commit().await?;
        after = last;
    }
    let mut after = (Uuid::nil(), 0i64);
    loop {
        let mut tx = pool.begin().await?;
        let Some(last) = history_batch(&mut tx, ring, after, batch, &mut done).await? else {
            tx.rollback().await?;
            break;
        };
        tx.commit().await?;
        after = last;
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM vault.patients WHERE country_code = $1 AND key_id <> $2)
              + (SELECT count(*) FROM vault.patient_history
                  WHERE country_code = $1 AND key_id IS NOT NULL AND key_id <> $2)",
    )
    .bind(&ring.country)
    .bind(&ring.active)
    .fetch_one(pool)
    .await?;
    done.left = u64::try_from(left).unwrap_or(0);
    Ok(done)
}

/// A current version as read for moving: client ID, version, deleted, key id, sealed.
type PatientRow = (Uuid, i64, bool, String, Vec<u8>);
/// A history version as read for moving: client ID, version, key id, sealed.
type HistoryRow = (Uuid, i64, String, Vec<u8>);

/// Moves the next batch of current versions after client ID `after`; answers the last
/// client ID it looked at, None when there were no more rows.
async fn patients_batch(
    conn: &mut PgConnection,
    ring: &Keyring,
    after: Uuid,
    batch: i64,
    done: &mut Rekeyed,
) -> Result<Option<Uuid>, sqlx::Error> {
    let rows: Vec<PatientRow> = sqlx::query_as(
        "SELECT client_id, version, deleted_at IS NOT NULL, key_id, sealed FROM vault.patients
          WHERE country_code = $1 AND key_id <> $2 AND client_id > $3
          ORDER BY client_id LIMIT $4 FOR UPDATE",
    )
    .bind(&ring.country)
    .bind(&ring.active)
    .bind(after)
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    let Some(last) = rows.last().map(|r| r.0) else {
        return Ok(None);
    };
    let mut moved = Vec::new();
    for (client_id, version, deleted, key_id, sealed) in rows {
        // A deleted Patient keeps the sealed body of its last live version.
        let sealed_version = if deleted { version - 1 } else { version };
        let (body, new_key, resealed) = match reseal(ring, client_id, sealed_version, &key_id, &sealed) {
            Ok(moved) => moved,
            Err(reason) => {
                done.unmoved
                    .push(unmoved("vault.patients", client_id, version, &key_id, reason));
                continue;
            }
        };
        let terms = match crate::validate::stored_patient_terms(&body) {
            Ok(terms) => terms,
            Err(e) => {
                let reason = format!("the opened Patient does not read as one: {e}");
                done.unmoved
                    .push(unmoved("vault.patients", client_id, version, &key_id, reason));
                continue;
            }
        };
        let search = vault::index(ring, &terms);
        let updated = sqlx::query(
            "UPDATE vault.patients SET key_id = $5, sealed = $6, search = $7
              WHERE country_code = $1 AND client_id = $2 AND version = $3 AND key_id = $4",
        )
        .bind(&ring.country)
        .bind(client_id)
        .bind(version)
        .bind(&key_id)
        .bind(&new_key)
        .bind(&resealed)
        .bind(&search)
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() == 1 {
            done.patients += 1;
            *done.from.entry(key_id).or_default() += 1;
            moved.push(client_id);
        }
    }
    audit_batch(conn, ring, "vault.patients", &moved, done).await?;
    Ok(Some(last))
}

/// Moves the next batch of history versions after `after` (client ID, version).
async fn history_batch(
    conn: &mut PgConnection,
    ring: &Keyring,
    after: (Uuid, i64),
    batch: i64,
    done: &mut Rekeyed,
) -> Result<Option<(Uuid, i64)>, sqlx::Error> {
    let rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT client_id, version, key_id, sealed FROM vault.patient_history
          WHERE country_code = $1 AND key_id IS NOT NULL AND sealed IS NOT NULL AND key_id <> $2
            AND (client_id, version) > ($3, $4)
          ORDER BY client_id, version LIMIT $5 FOR UPDATE",
    )
    .bind(&ring.country)
    .bind(&ring.active)
    .bind(after.0)
    .bind(after.1)
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    let Some(last) = rows.last().map(|r| (r.0, r.1)) else {
        return Ok(None);
    };
    let mut moved = Vec::new();
    for (client_id, version, key_id, sealed) in rows {
        let (_, new_key, resealed) = match reseal(ring, client_id, version, &key_id, &sealed) {
            Ok(moved) => moved,
            Err(reason) => {
                done.unmoved
                    .push(unmoved("vault.patient_history", client_id, version, &key_id, reason));
                continue;
            }
        };
        let updated = sqlx::query(
            "UPDATE vault.patient_history SET key_id = $5, sealed = $6
              WHERE country_code = $1 AND client_id = $2 AND version = $3 AND key_id = $4",
        )
        .bind(&ring.country)
        .bind(client_id)
        .bind(version)
        .bind(&key_id)
        .bind(&new_key)
        .bind(&resealed)
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() == 1 {
            done.history += 1;
            *done.from.entry(key_id).or_default() += 1;
            if moved.last() != Some(&client_id) {
                moved.push(client_id);
            }
        }
    }
    audit_batch(conn, ring, "vault.patient_history", &moved, done).await?;
    Ok(Some(last))
}

fn unmoved(table: &'static str, client_id: Uuid, version: i64, key_id: &str, reason: String) -> Unmoved {
    let unmoved = Unmoved {
        table,
        client_id,
        version,
        key_id: key_id.to_string(),
        reason,
    };
    tracing::warn!(row = %unmoved, "a vault row does not open and stays under its key");
    unmoved
}

/// Opens version `version` of Patient `client_id` as sealed under `key_id`, seals it under
/// the active key and opens the result again: the resource, the new key id and ciphertext
/// (only when it opens to the same bytes), or why the row stays under its key.
fn reseal(
    ring: &Keyring,
    client_id: Uuid,
    version: i64,
    key_id: &str,
    sealed: &[u8],
) -> Result<(serde_json::Value, String, Vec<u8>), String> {
    let (plaintext, body) =
        crate::store::open_row(ring, client_id, version, key_id, sealed).map_err(|e| e.to_string())?;
    let (new_key, resealed) = vault::seal(ring, client_id, &plaintext);
    match vault::open(ring, client_id, &new_key, &resealed) {
        Ok(reopened) if reopened == plaintext => Ok((body, new_key, resealed)),
        _ => Err("sealed again, it did not open: left under its key".to_string()),
    }
}

/// The batch's audit record, in its transaction: which client IDs moved in which table.
async fn audit_batch(
    conn: &mut PgConnection,
    ring: &Keyring,
    table: &str,
    moved: &[Uuid],
    done: &mut Rekeyed,
) -> Result<(), sqlx::Error> {
    if moved.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = moved.iter().map(Uuid::to_string).collect();
    let resource = format!("{table}/{}", ids.join(","));
    let record = meridian_shared::audit::Record {
        country_code: &ring.country,
        actor: ACTOR,
        action: ACTION,
        resource: &resource,
        correlation_id: done.correlation_id,
    };
    meridian_shared::audit::append(conn, &record).await?;
    done.batches += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_counts_and_keys_only() {
        let mut r = Rekeyed {
            country: "DE".into(),
            active: "k2".into(),
            patients: 1234,
            history: 2345,
            ..Default::default()
        };
        r.from.insert("k1".into(), 3579);
        assert_eq!(
            r.summary(),
            "DE: key k2 is active; 1234 patients and 2345 history versions moved from k1, 0 left"
        );
        r.from.clear();
        r.patients = 0;
        r.history = 0;
        assert_eq!(
            r.summary(),
            "DE: key k2 is active; 0 patients and 0 history versions moved, 0 left"
        );
    }
}
