//! A pool of PostgreSQL connections for request paths, where a connection is borrowed for
//! one request and handed back at its end, thousands of times a second.
//!
//! sqlx's own pool checks every connection handed back with a round trip to the server
//! (and cannot be told not to, in 0.9), so a request that needs one statement costs the
//! service and PostgreSQL two. This pool keeps sqlx's connections and drops that check: a
//! connection comes back clean when nothing is left unsent and no answer is still due, which
//! it can tell without asking the server (sqlx's [`sqlx::Connection::flush`] finishes at once
//! then). Otherwise it is finished first, off the request's path: a transaction dropped
//! without commit has its `ROLLBACK` sent and answered, a statement cut short by a
//! cancelled request has its answer read. A connection that fails there is dropped, and
//! since the connection of a statement that failed in transit still waits for its answer,
//! a connection broken mid-request (a database restart) is dropped on its way back, as
//! sqlx's check would. One that broke while idle is caught when it is handed out: it is
//! checked first if it sat unused for [`TRUSTED_IDLE`] or longer.
//!
//! Neither this rule nor sqlx's check sees a transaction sqlx does not know it opened: a
//! request cancelled while its `BEGIN` is on the wire leaves the session inside a
//! transaction with nothing queued to end it (sqlx 0.9's `begin` counts the transaction only
//! once `BEGIN` is answered: github.com/transact-rs/sqlx/issues/4393), and the next
//! borrower's writes would run in it and be lost with it. [`Lease::begin`] notes the `BEGIN`
//! in flight, and a lease dropped with one is closed, which ends the transaction on the
//! server. Where the other workloads begin transactions on sqlx's own pools, [`begin`] keeps
//! them clear of the same flaw.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Error};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request waits for a database connection before it is answered `503`: short,
/// so that while the Region's database is down (or restarting) requests fail at once instead
/// of hanging, and the service recovers by itself when it is back.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a pooled connection may sit unused and still be handed out without a check.
/// One handed back that recently was alive a moment ago (it had its answers); a database
/// restart breaks connections while they sit idle, which takes longer than this (HikariCP
/// skips its check the same way, for 500 ms).
const TRUSTED_IDLE: Duration = Duration::from_millis(500);

/// A connection is closed and replaced after this long, so that none lives for ever
/// (server-side memory, a proxy's or a load balancer's view of the server): sqlx's default.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Checks `conn` (a round trip) when it sat unused for [`TRUSTED_IDLE`] or longer.
pub(crate) async fn check_if_idle(conn: &mut PgConnection, idle_for: Duration) -> Result<(), Error> {
    if idle_for >= TRUSTED_IDLE {
        conn.ping().await?;
    }
    Ok(())
}

/// Up to `max_connections` connections to one database as one role, opened when first
/// needed. Cloning shares the pool.
#[derive(Clone)]
pub struct Pool(Arc<Shared>);

struct Shared {
    connect: PgConnectOptions,
    /// A permit per connection in use (or being finished); idle ones hold none.
    in_use: Arc<Semaphore>,
    /// The last handed back on top: the connection most recently used is the likeliest
    /// to be warm, and the ones at the bottom age into their check.
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: PgConnection,
    opened: Instant,
    since: Instant,
}

impl Pool {
    /// A pool that opens connections with `connect` when first needed, at most
    /// `max_connections` at a time.
    pub fn new(connect: PgConnectOptions, max_connections: u32) -> Self {
        Self(Arc::new(Shared {
            connect,
            in_use: Arc::new(Semaphore::new(max_connections.max(1) as usize)),
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// A pool connecting as `pool` does (server, database, role, TLS), as large.
    pub fn like(pool: &sqlx::PgPool) -> Self {
        Self::new(
            pool.connect_options().as_ref().clone(),
            pool.options().get_max_connections(),
        )
    }

    /// How connections are opened: the server, database and role.
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.0.connect
    }

    /// A connection, within [`ACQUIRE_TIMEOUT`] (else [`Error::PoolTimedOut`]).
    pub async fn acquire(&self) -> Result<Lease, Error> {
        tokio::time::timeout(ACQUIRE_TIMEOUT, self.lease())
            .await
            .map_err(|_| Error::PoolTimedOut)?
    }

    async fn lease(&self) -> Result<Lease, Error> {
        let permit = self
            .0
            .in_use
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::PoolClosed)?;
        loop {
            let Some(idle) = self.0.idle.lock().expect("pool lock").pop() else {
                break;
            };
            let Idle {
                mut conn,
                opened,
                since,
            } = idle;
            if opened.elapsed() >= MAX_LIFETIME {
                // Here, under this lease's permit, so that it counts until it is gone.
                let _ = conn.close().await;
                continue;
            }
            // A broken one is dropped (closing its socket) and the next tried.
            if check_if_idle(&mut conn, since.elapsed()).await.is_ok() {
                return Ok(self.leased(conn, opened, permit));
            }
        }
        let conn = PgConnection::connect_with(&self.0.connect).await?;
        Ok(self.leased(conn, Instant::now(), permit))
    }

    fn leased(&self, conn: PgConnection, opened: Instant, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            conn: Some(conn),
            opened,
            permit: Some(permit),
            pool: self.0.clone(),
            beginning: false,
        }
    }

    /// Closes the pool: no more connections are handed out ([`Error::PoolClosed`]), idle
    /// ones are closed now and those in use as they come back; for an orderly end, so that
    /// the server sees a goodbye.
    pub async fn close(&self) {
        self.0.in_use.close();
        let idle = std::mem::take(&mut *self.0.idle.lock().expect("pool lock"));
        for Idle { conn, .. } in idle {
            let _ = conn.close().await;
        }
    }

    /// Connections open and not in use.
    pub fn idle(&self) -> usize {
        self.0.idle.lock().expect("pool lock").len()
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("idle", &self.idle()).finish()
    }
}

/// A connection borrowed from a [`Pool`]; it goes back when dropped.
pub struct Lease {
    conn: Option<PgConnection>,
    opened: Instant,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Shared>,
    /// A `BEGIN` sent and not yet answered (see the module's documentation).
    beginning: bool,
}

impl Lease {
    /// Starts a transaction, rolled back if it is dropped without commit. Use this rather
    /// than sqlx's `Connection::begin` on the connection: a lease dropped while this waits
    /// for `BEGIN`'s answer closes its connection instead of handing it on inside a
    /// transaction nobody will end.
    pub async fn begin(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, Error> {
        self.beginning = true;
        let conn = self.conn.as_mut().expect("a lease holds its connection until dropped");
        // On an error the flag stays: whatever state the session is in, it is not handed on.
        let tx = conn.begin().await?;
        self.beginning = false;
        Ok(tx)
    }
}

impl std::ops::Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("a lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        if self.beginning || self.pool.in_use.is_closed() {
            // Closing the socket ends the session, and with it any transaction.
            return;
        }
        let (pool, opened) = (self.pool.clone(), self.opened);
        // Clean (nothing unsent, no answer due): finishes at once, without I/O.
        match conn.flush().now_or_never() {
            Some(Ok(())) => give_back(&pool, conn, opened, permit),
            // Broken: dropped, which closes it, and its permit freed for a new one.
            Some(Err(_)) => {}
            // A rollback to send or an answer to read first: the permit stays taken until
            // then, so the pool never has more connections open than it may.
            None => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Ok(Ok(())) = tokio::time::timeout(ACQUIRE_TIMEOUT, conn.flush()).await {
                            give_back(&pool, conn, opened, permit);
                        }
                    });
                }
            }
        }
    }
}

/// `pool.begin()` for sqlx's own pools, safe to cancel: the `BEGIN` runs to its answer in a
/// task of its own, so that a request cancelled meanwhile leaves a transaction sqlx counted,
/// which it rolls back when the transaction is dropped unclaimed, rather than one it did not
/// (see [`Lease::begin`] for this pool's answer to the same flaw).
pub async fn begin(pool: &sqlx::PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| Error::Protocol(format!("beginning a transaction: {e}")))?
}

fn give_back(pool: &Shared, conn: PgConnection, opened: Instant, permit: OwnedSemaphorePermit) {
    pool.idle.lock().expect("pool lock").push(Idle {
        conn,
        opened,
        since: Instant::now(),
    });
    // Only now: whoever gets the permit next finds the connection idle.
    drop(permit);
}
