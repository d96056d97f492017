//! The request paths' connection pool against a real PostgreSQL server: connections come
//! back without a round trip when clean, and are finished or dropped when not.

use std::time::Duration;

use meridian_localpg::TempCluster;
use meridian_shared::pool::{ACQUIRE_TIMEOUT, Pool};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

async fn server() -> (TempCluster, PgConnectOptions, PgConnection) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let options: PgConnectOptions = pg.url().parse().unwrap();
    let mut admin = PgConnection::connect_with(&options).await.unwrap();
    sqlx::query("CREATE TABLE notes (id int PRIMARY KEY)")
        .execute(&mut admin)
        .await
        .unwrap();
    (pg, options, admin)
}

async fn backend(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await
}

/// Waits until the pool holds `n` idle connections (one handed back with work left to
/// finish goes back once that is done, off the caller's path).
async fn idle(pool: &Pool, n: usize) {
    for _ in 0..200 {
        if pool.idle() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool holds {} idle connections, not {n}", pool.idle());
}

/// Writes note `id` (autocommit, unless `conn` is inside a transaction).
async fn note(conn: &mut PgConnection, id: i32) {
    sqlx::query("INSERT INTO notes VALUES ($1)")
        .bind(id)
        .execute(conn)
        .await
        .unwrap();
}

/// Notes committed, as `conn` sees them.
async fn notes(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Has the server end session `pid`, as a restart or an administrator does.
async fn terminate(admin: &mut PgConnection, pid: i32) {
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(admin)
        .await
        .unwrap();
}

/// Sends `signal` to the server process of session `pid`.
fn signal(pid: i32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Sessions of the pool's role other than `admin`'s, by state.
async fn sessions(admin: &mut PgConnection, state: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND state = $1",
    )
    .bind(state)
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_clean_connection_comes_back_at_once_and_is_used_again() {
    let (_pg, options, _admin) = server().await;
    let pool = Pool::new(options, 4);
    let first = backend(&mut pool.acquire().await.unwrap()).await.unwrap();
    // Back as the lease was dropped: no task, no round trip in between.
    assert_eq!(pool.idle(), 1);
    for _ in 0..10 {
        let mut conn = pool.acquire().await.unwrap();
        assert_eq!(backend(&mut conn).await.unwrap(), first);
    }
    assert_eq!(pool.idle(), 1, "one connection did all the work");
}

#[tokio::test]
async fn a_transaction_dropped_without_commit_is_rolled_back_before_the_connection_is_reused() {
    let (_pg, options, mut admin) = server().await;
    let pool = Pool::new(options, 1);
    {
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        note(&mut tx, 1).await;
        // A handler that fails here drops both.
    }
    idle(&pool, 1).await;
    assert_eq!(sessions(&mut admin, "idle in transaction").await, 0);
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(notes(&mut conn).await, 0, "the insert was rolled back");
    // The connection is out of the transaction: what it writes now commits on its own.
    note(&mut conn, 2).await;
    assert_eq!(notes(&mut admin).await, 1);
}

#[tokio::test]
async fn a_connection_being_finished_still_counts_against_the_pools_size() {
    let (_pg, options, mut admin) = server().await;
    let pool = Pool::new(options, 1);
    let pid = {
        let mut conn = pool.acquire().await.unwrap();
        let pid = backend(&mut conn).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        note(&mut tx, 1).await;
        pid
    };
    // At once, while its ROLLBACK may still be on its way: the pool waits for that
    // connection rather than open a second one.
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(backend(&mut conn).await.unwrap(), pid);
    assert_eq!(sessions(&mut admin, "idle in transaction").await, 0);
}

#[tokio::test]
async fn a_transaction_cancelled_while_it_begins_is_not_handed_on() {
    let (_pg, options, mut admin) = server().await;
    let pool = Pool::new(options, 1);
    {
        let mut conn = pool.acquire().await.unwrap();
        let pid = backend(&mut conn).await.unwrap();
        // The server holds BEGIN's answer back (its process stopped), and the request is
        // cancelled meanwhile.
        signal(pid, "-STOP");
        let cut = tokio::time::timeout(Duration::from_millis(100), conn.begin()).await;
        assert!(cut.is_err());
        drop(cut);
        drop(conn);
        signal(pid, "-CONT");
    }
    // The next request's write commits on its own, rather than inside that transaction.
    let mut conn = pool.acquire().await.unwrap();
    note(&mut conn, 3).await;
    drop(conn);
    assert_eq!(notes(&mut admin).await, 1);
    assert_eq!(sessions(&mut admin, "idle in transaction").await, 0);
}

/// The same cancellation on sqlx's own pool, through [`meridian_shared::pool::begin`].
#[tokio::test]
async fn a_transaction_begun_on_an_sqlx_pool_and_cancelled_while_it_begins_is_rolled_back() {
    let (_pg, options, mut admin) = server().await;
    // As the workloads' pools are: a connection used moments ago is handed out unchecked,
    // so the BEGIN is what meets the stopped server.
    let pool = meridian_shared::serve::pool_options(1)
        .connect_with(options)
        .await
        .unwrap();
    let pid = backend(&mut pool.acquire().await.unwrap()).await.unwrap();
    // sqlx checks the connection on its way back, in a task: let that finish first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    signal(pid, "-STOP");
    let cut = tokio::time::timeout(Duration::from_millis(100), meridian_shared::pool::begin(&pool)).await;
    assert!(cut.is_err());
    signal(pid, "-CONT");
    // Time for BEGIN to be answered and the connection to go back to the pool.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sessions(&mut admin, "idle in transaction").await,
        0,
        "the pool holds the connection inside the cancelled transaction"
    );
    sqlx::query("INSERT INTO notes VALUES (4)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(notes(&mut admin).await, 1, "the next statement committed on its own");
    assert_eq!(sessions(&mut admin, "idle in transaction").await, 0);
}

#[tokio::test]
async fn a_closed_pool_hands_out_nothing_and_keeps_nothing() {
    let (_pg, options, _admin) = server().await;
    let pool = Pool::new(options, 2);
    let mut held = pool.acquire().await.unwrap();
    backend(&mut held).await.unwrap();
    pool.close().await;
    assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolClosed)));
    drop(held);
    assert_eq!(pool.idle(), 0);
}

#[tokio::test]
async fn a_statement_cut_short_has_its_answer_read_before_the_connection_is_reused() {
    let (_pg, options, _admin) = server().await;
    let pool = Pool::new(options, 1);
    {
        let mut conn = pool.acquire().await.unwrap();
        // A request cancelled (its client went away) while its statement runs.
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            sqlx::query_scalar::<_, i32>("SELECT 41 FROM pg_sleep(0.3)").fetch_one(&mut *conn),
        )
        .await;
        assert!(cut.is_err());
    }
    idle(&pool, 1).await;
    let mut conn = pool.acquire().await.unwrap();
    let answer: i32 = sqlx::query_scalar("SELECT 42").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(answer, 42, "the next user gets its own answer, not the one left behind");
}

#[tokio::test]
async fn a_connection_broken_in_use_is_dropped_on_its_way_back() {
    let (_pg, options, mut admin) = server().await;
    let pool = Pool::new(options, 2);
    {
        let mut conn = pool.acquire().await.unwrap();
        let pid = backend(&mut conn).await.unwrap();
        terminate(&mut admin, pid).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(backend(&mut conn).await.is_err(), "the request that had it fails");
    }
    idle(&pool, 0).await;
    // The next request gets a new connection, and succeeds.
    let mut conn = pool.acquire().await.unwrap();
    backend(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_connection_broken_while_idle_is_checked_once_it_sat_unused_for_half_a_second() {
    let (_pg, options, mut admin) = server().await;
    let pool = Pool::new(options, 2);
    let pid = backend(&mut pool.acquire().await.unwrap()).await.unwrap();
    terminate(&mut admin, pid).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut conn = pool.acquire().await.unwrap();
    let fresh = backend(&mut conn).await.expect("a checked, working connection");
    assert_ne!(fresh, pid);
}

#[tokio::test]
async fn a_connection_broken_while_idle_fails_at_most_the_one_request_that_finds_it() {
    let (_pg, options, mut admin) = server().await;
    let pool = Pool::new(options, 2);
    let pid = backend(&mut pool.acquire().await.unwrap()).await.unwrap();
    terminate(&mut admin, pid).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Used moments ago, so handed out unchecked: this request fails...
    assert!(backend(&mut pool.acquire().await.unwrap()).await.is_err());
    // ...and the connection with it; none after it does.
    for _ in 0..5 {
        backend(&mut pool.acquire().await.unwrap()).await.unwrap();
    }
}

#[tokio::test]
async fn no_more_connections_than_the_pool_may_open() {
    let (_pg, options, mut admin) = server().await;
    let pool = Pool::new(options, 2);
    let (mut a, mut b) = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
    backend(&mut a).await.unwrap();
    backend(&mut b).await.unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolTimedOut)));
    assert!(started.elapsed() >= ACQUIRE_TIMEOUT);
    assert_eq!(sessions(&mut admin, "idle").await, 2);
    // One handed back is the next one's.
    let pid = backend(&mut a).await.unwrap();
    drop(a);
    assert_eq!(backend(&mut pool.acquire().await.unwrap()).await.unwrap(), pid);
    drop(b);
    pool.close().await;
    assert_eq!(pool.idle(), 0);
}
