//! Connecting to SQLite with the settings every Elves database uses.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Sqlite, SqlitePool, Transaction};

use crate::Error;

/// How long a statement waits for another connection's lock before failing with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite has one writer at a time; a few connections are enough for concurrent readers.
const MAX_CONNECTIONS: u32 = 4;

/// Opens a pool on the database file at `path`, creating the directory and file if missing.
pub(crate) async fn connect(path: &Path) -> Result<SqlitePool, Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await.map_err(|e| {
            Error::open(&format!("cannot create directory {}", parent.display()), e)
        })?;
    }
    // No `journal_mode` here: WAL is a property of the file, set once by `enable_wal`. Setting it
    // on every new connection would race with a connection that is switching a new file into
    // WAL, and that switch's exclusive lock does not honour the busy timeout.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let cannot_open = |e| Error::open(&format!("cannot open {}", path.display()), e);
    let mode = enable_wal(&options).await.map_err(cannot_open)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network shares) cannot hold a WAL; SQLite then keeps its old mode.
        tracing::warn!(path = %path.display(), %mode, "SQLite is not in WAL mode; readers will wait for writers");
    }
    SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await
        .map_err(cannot_open)
}

/// Switches the database file into WAL mode (a no-op when it already is) and returns the
/// journal mode it ends up in. Retries while another connection holds a lock, up to the busy
/// timeout, because SQLite does not wait for the lock this switch needs.
async fn enable_wal(options: &SqliteConnectOptions) -> Result<String, sqlx::Error> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        let attempt = async {
            let mut conn = options.connect().await?;
            let mode = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(&mut conn)
                .await;
            conn.close().await?;
            mode
        };
        match attempt.await {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            result => return result,
        }
    }
}

/// Whether `e` is SQLite's "busy" or "locked", that is, worth retrying.
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Starts a transaction that takes the write lock at once, waiting up to the busy timeout.
/// Every write that reads before it writes goes through here.
pub(crate) async fn begin_immediate(
    pool: &SqlitePool,
) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pooled connection, not only the first, carries the per-connection settings.
    #[tokio::test]
    async fn every_connection_has_the_elves_settings() {
        let dir = tempfile::tempdir().unwrap();
        let pool = connect(&dir.path().join("a/b/elves.db")).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut conn = pool.acquire().await.unwrap();
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!((fk, sync, busy, mode.as_str()), (1, 1, 5000, "wal"));
            held.push(conn);
        }
        drop(held);
        pool.close().await;
    }

    #[tokio::test]
    async fn begin_immediate_holds_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let pool = connect(&dir.path().join("elves.db")).await.unwrap();
        let tx = begin_immediate(&pool).await.unwrap();
        // A second pool (another process, in effect) cannot take the lock while the first holds it.
        let other = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.path().join("elves.db"))
                    .busy_timeout(Duration::from_millis(50)),
            )
            .await
            .unwrap();
        let err = other.begin_with("BEGIN IMMEDIATE").await.unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
        tx.rollback().await.unwrap();
        other.begin_with("BEGIN IMMEDIATE").await.unwrap();
        other.close().await;
        pool.close().await;
    }
}
