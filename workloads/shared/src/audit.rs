//! The audit trail: one append-only, hash-chained record for every read or write of
//! personal data, with a correlation ID that ties it to the request.
//!
//! A record's hash is `sha256(previous hash || payload)`, where the payload is the record's
//! fields as a JSON array; the first record of a chain hashes its payload alone. A country's
//! records of writes are spread over [`CHAINS`] chains by resource, so appends to different
//! resources do not wait for each other, and commit with the write they describe. Records
//! of reads go to chains of their own from [`READS_CHAIN`] on, in batches ([`ReadLog`]): a read changes
//! nothing for its record to commit with, and one transaction for many reads is what lets
//! reads that are all audited run at the speed of reads. Each chain verifies on its own.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

/// Chains per country.
pub const CHAINS: i16 = 64;

/// One audit record, before it is chained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub country_code: &'a str,
    /// Who: the token's subject, or `system:<component>`.
    pub actor: &'a str,
    /// What: `appointment.book`, `patient.read`, ...
    pub action: &'a str,
    /// On what: `appointment/<id>`, `patient/<id>`.
    pub resource: &'a str,
    pub correlation_id: Uuid,
}

/// The chain a resource's records go to.
pub fn chain_of(resource: &str) -> i16 {
    i16::from(Sha256::digest(resource.as_bytes())[0]) % CHAINS
}

/// The bytes a record's hash covers.
fn payload(at: DateTime<Utc>, actor: &str, action: &str, resource: &str, correlation_id: Uuid) -> Vec<u8> {
    let at = at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    serde_json::to_vec(&(at, actor, action, resource, correlation_id)).expect("strings serialize")
}

/// A record ready to chain: its time, chain and the bytes its hash covers.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub at: DateTime<Utc>,
    pub chain: i16,
    pub payload: Vec<u8>,
}

/// Stamps `record` with the current time and computes what its hash will cover.
pub fn prepare(record: &Record<'_>) -> Prepared {
    // Microseconds: what timestamptz keeps, so verification rebuilds the same payload.
    let at = Utc::now().trunc_subsecs(6);
    let payload = payload(at, record.actor, record.action, record.resource, record.correlation_id);
    Prepared {
        at,
        chain: chain_of(record.resource),
        payload,
    }
}

/// The SQL that chains a record, as two common table expressions `{head}` and `{trail}`
/// for a larger statement: `$country`, `$chain`, `$payload`, `$at`, `$actor`, `$action`,
/// `$resource` and `$correlation` stand for the placeholders the caller binds, and `from`
/// is a relation that yields one row when the record should be written (and none when not).
pub fn chain_ctes(from: &str, p: [&str; 8]) -> String {
    let [country, chain, payload, at, actor, action, resource, correlation] = p;
    format!(
        "audit_head AS (
             INSERT INTO audit_heads AS h (country_code, chain, prev_hash, hash)
             SELECT {country}, {chain}, NULL, sha256({payload}) FROM {from}
             ON CONFLICT (country_code, chain) DO UPDATE SET prev_hash = h.hash, hash = sha256(h.hash || {payload})
             RETURNING prev_hash, hash
         ),
         audit_trail AS (
             INSERT INTO audit (country_code, chain, at, actor, action, resource, correlation_id, prev_hash, hash)
             SELECT {country}, {chain}, {at}, {actor}, {action}, {resource}, {correlation}, prev_hash, hash FROM audit_head
         )"
    )
}

/// Appends `record` to its chain, inside the caller's transaction: the record commits or
/// rolls back with the change it describes. One round trip.
pub async fn append(conn: &mut PgConnection, record: &Record<'_>) -> Result<(), sqlx::Error> {
    let prepared = prepare(record);
    let ctes = chain_ctes("(SELECT 1) AS one", ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"]);
    sqlx::query(sqlx::AssertSqlSafe(format!("WITH {ctes} SELECT 1")))
        .bind(record.country_code)
        .bind(prepared.chain)
        .bind(&prepared.payload)
        .bind(prepared.at)
        .bind(record.actor)
        .bind(record.action)
        .bind(record.resource)
        .bind(record.correlation_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The first chain of the records a [`ReadLog`] writes, in every country; its writers use
/// [`READ_WRITERS`] chains from this one on. Reads are appended in batches, and one batch
/// holds the one head it extends.
pub const READS_CHAIN: i16 = 1000;

/// Batches of reads written at the same time, each to a chain of its own (a process's
/// writers have chains of their own; writers of several processes share them).
const READ_WRITERS: i16 = 2;

/// A record as the [`ReadLog`] keeps it until it is written.
struct Queued {
    country_code: String,
    prepared: Prepared,
    actor: String,
    action: String,
    resource: String,
    correlation_id: Uuid,
    written: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// The audit records of reads, written in batches: every record a request hands over while
/// the previous batch is being written goes into the next one, so that many concurrent
/// reads cost one transaction between them instead of one each. [`ReadLog::append`] returns
/// once its record has committed, so that nothing is served before its audit record is
/// durable. Records of writes do not come here: they commit with the write they describe.
#[derive(Clone)]
pub struct ReadLog {
    queue: tokio::sync::mpsc::UnboundedSender<Queued>,
}

/// Records written in one transaction at most.
const BATCH: usize = 512;

impl ReadLog {
    /// Starts the task that writes the batches, on a connection of its own to the database
    /// and as the role `connect` names (so that a request holding one of its pool's connections
    /// while it waits for its record cannot starve the log); it ends when the last handle
    /// is dropped.
    pub fn start(connect: &sqlx::postgres::PgConnectOptions) -> Self {
        // A connection handed back after a batch must not cost a round trip that the reads
        // waiting for the next batch would wait for too: the request paths' pool.
        let pool = crate::pool::Pool::new(connect.clone(), READ_WRITERS as u32);
        let (queue, waiting) = tokio::sync::mpsc::unbounded_channel::<Queued>();
        let waiting = std::sync::Arc::new(tokio::sync::Mutex::new(waiting));
        for writer in 0..READ_WRITERS {
            let (pool, waiting) = (pool.clone(), waiting.clone());
            tokio::spawn(async move {
                let chain = READS_CHAIN + writer;
                let mut batch = Vec::with_capacity(BATCH);
                // The head of this chain in each country, as this writer last wrote it.
                let mut heads = BTreeMap::new();
                // While one writer writes its batch, the other gathers the next.
                while waiting.lock().await.recv_many(&mut batch, BATCH).await > 0 {
                    // One country at a time: each batch extends one head.
                    batch.sort_by(|a, b| a.country_code.cmp(&b.country_code));
                    while !batch.is_empty() {
                        let country = batch[0].country_code.clone();
                        let split = batch
                            .iter()
                            .position(|q| q.country_code != country)
                            .unwrap_or(batch.len());
                        let rest = batch.split_off(split);
                        let result = match pool.acquire().await {
                            Ok(mut conn) => write_batch(&mut conn, &country, chain, &mut heads, &batch).await,
                            Err(e) => Err(e),
                        };
                        let result = result.map_err(|e| e.to_string());
                        for queued in batch.drain(..) {
                            let _ = queued.written.send(result.clone());
                        }
                        batch = rest;
                    }
                }
            });
        }
        Self { queue }
    }

    /// Appends `record` to one of its country's reads chains; returns once it has committed.
    pub async fn append(&self, record: &Record<'_>) -> Result<(), sqlx::Error> {
        let prepared = prepare(record);
        let (written, done) = tokio::sync::oneshot::channel();
        let queued = Queued {
            country_code: record.country_code.into(),
            prepared,
            actor: record.actor.into(),
            action: record.action.into(),
            resource: record.resource.into(),
            correlation_id: record.correlation_id,
            written,
        };
        let failed = |why: String| sqlx::Error::Protocol(format!("the audit record was not written: {why}"));
        self.queue
            .send(queued)
            .map_err(|_| failed("the audit log has stopped".into()))?;
        done.await
            .map_err(|_| failed("the audit log has stopped".into()))?
            .map_err(failed)
    }
}

/// Appends `batch` (records of `country`) to the country's reads chain `chain`. The fast
/// path is one statement that moves the chain's head from the hash this writer last wrote
/// (kept in `heads`) and inserts the records only if it did. When another process moved
/// the head in between, that statement writes nothing, and the batch is chained anew under
/// the head's row lock: retrying without the lock could lose to a busy writer of the
/// other process again and again.
async fn write_batch(
    conn: &mut PgConnection,
    country: &str,
    chain: i16,
    heads: &mut BTreeMap<String, Vec<u8>>,
    batch: &[Queued],
) -> Result<(), sqlx::Error> {
    if let Some(previous) = heads.remove(country)
        && let Some(last) = extend_chain(&mut *conn, country, chain, Some(previous), batch).await?
    {
        heads.insert(country.to_string(), last);
        return Ok(());
    }
    // Twice at most: the lock holds the head still, unless there was no head to lock and
    // another process wrote the chain's first one at the same time.
    for _ in 0..2 {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let previous: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM audit_heads WHERE country_code = $1 AND chain = $2 FOR UPDATE")
                .bind(country)
                .bind(chain)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(last) = extend_chain(&mut *tx, country, chain, previous, batch).await? {
            tx.commit().await?;
            heads.insert(country.to_string(), last);
            return Ok(());
        }
    }
    Err(sqlx::Error::Protocol(format!(
        "audit chain {chain} of {country} kept moving under this writer"
    )))
}

/// Chains `batch` after `previous` (None: the chain has no record yet) in one statement
/// that moves the head first (its row lock orders the chain) and inserts the records only
/// if the head still was `previous`. Returns the new head, or None when it was not.
async fn extend_chain(
    executor: impl sqlx::PgExecutor<'_>,
    country: &str,
    chain: i16,
    previous: Option<Vec<u8>>,
    batch: &[Queued],
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let mut last = previous.clone();
    let (mut prev_hashes, mut hashes) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
    for queued in batch {
        let mut hasher = Sha256::new();
        if let Some(last) = &last {
            hasher.update(last);
        }
        hasher.update(&queued.prepared.payload);
        let hash = hasher.finalize().to_vec();
        prev_hashes.push(last.replace(hash.clone()));
        hashes.push(hash);
    }
    let column = |f: fn(&Queued) -> &str| batch.iter().map(f).collect::<Vec<&str>>();
    let moved: i64 = sqlx::query_scalar(
        "WITH moved_head AS (
             UPDATE audit_heads SET prev_hash = $10, hash = $11
              WHERE country_code = $1 AND chain = $2 AND hash = $12
             RETURNING 1
         ),
         first_head AS (
             INSERT INTO audit_heads (country_code, chain, prev_hash, hash)
             SELECT $1, $2, $10, $11 WHERE $12::bytea IS NULL
             ON CONFLICT (country_code, chain) DO NOTHING
             RETURNING 1
         ),
         moved AS (SELECT 1 FROM moved_head UNION ALL SELECT 1 FROM first_head),
         records AS (
             INSERT INTO audit (country_code, chain, at, actor, action, resource, correlation_id, prev_hash, hash)
             SELECT $1, $2, at, actor, action, resource, correlation_id, prev_hash, hash
               FROM unnest($3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::bytea[], $9::bytea[])
                    WITH ORDINALITY AS r(at, actor, action, resource, correlation_id, prev_hash, hash, n)
              WHERE EXISTS (SELECT 1 FROM moved)
              ORDER BY n
         )
         SELECT count(*) FROM moved",
    )
    .bind(country)
    .bind(chain)
    .bind(batch.iter().map(|q| q.prepared.at).collect::<Vec<_>>())
    .bind(column(|q| &q.actor))
    .bind(column(|q| &q.action))
    .bind(column(|q| &q.resource))
    .bind(batch.iter().map(|q| q.correlation_id).collect::<Vec<_>>())
    .bind(&prev_hashes)
    .bind(&hashes)
    .bind(prev_hashes.last().cloned().flatten())
    .bind(hashes.last())
    .bind(&previous)
    .fetch_one(executor)
    .await?;
    Ok((moved == 1).then_some(last).flatten())
}

/// A chain whose records do not add up.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit chain {chain} of {country_code} is broken at record {seq}")]
pub struct Broken {
    pub country_code: String,
    pub chain: i16,
    pub seq: i64,
}

/// Recomputes every chain of `country_code`; returns how many records it checked, or the
/// first record (in chain order) that does not add up. Removing the newest records of a
/// chain is caught by its head, which still names the removed record's hash.
pub async fn verify(conn: &mut PgConnection, country_code: &str) -> Result<Result<u64, Broken>, sqlx::Error> {
    type Row = (
        i16,
        i64,
        DateTime<Utc>,
        String,
        String,
        String,
        Uuid,
        Option<Vec<u8>>,
        Vec<u8>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT chain, seq, at, actor, action, resource, correlation_id, prev_hash, hash
           FROM audit WHERE country_code = $1 ORDER BY chain, seq",
    )
    .bind(country_code)
    .fetch_all(&mut *conn)
    .await?;
    let heads: BTreeMap<i16, Vec<u8>> = sqlx::query_as("SELECT chain, hash FROM audit_heads WHERE country_code = $1")
        .bind(country_code)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let broken = |chain, seq| {
        Err(Broken {
            country_code: country_code.into(),
            chain,
            seq,
        })
    };
    // The newest hash and record number seen in each chain.
    let mut tails: BTreeMap<i16, (i64, Vec<u8>)> = BTreeMap::new();
    for (chain, seq, at, actor, action, resource, correlation_id, prev_hash, hash) in &rows {
        let previous = tails.get(chain).map(|(_, h)| h);
        let mut hasher = Sha256::new();
        if let Some(previous) = previous {
            hasher.update(previous);
        }
        hasher.update(payload(*at, actor, action, resource, *correlation_id));
        if prev_hash.as_ref() != previous || hasher.finalize()[..] != hash[..] {
            return Ok(broken(*chain, *seq));
        }
        tails.insert(*chain, (*seq, hash.clone()));
    }
    for (chain, head) in &heads {
        match tails.get(chain) {
            Some((_, tail)) if tail == head => {}
            Some((seq, _)) => return Ok(broken(*chain, *seq)),
            None => return Ok(broken(*chain, 0)),
        }
    }
    Ok(Ok(rows.len() as u64))
}
