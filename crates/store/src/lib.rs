//! Layer 1 of Elves: the persistent state of the center, behind one [`Store`].
//!
//! This is the only crate that knows SQL. Other crates see typed records and async methods;
//! table names, statements and dialect quirks stay in here.
//!
//! # What the store holds
//!
//! * Agent credentials ([`Credential`]): the SHA-256 of the secret an agent at a given IP
//!   address enrolled with. An address is pinned to one credential until an operator releases
//!   it; the plain secret is never stored.
//! * The agent registry ([`AgentRecord`]): each agent's asset name, version, installed apps,
//!   the gateway instance that holds its stream and when it was first and last heard from.
//! * The supervisor's data (`supervisor`): apps ([`App`]), their versions ([`Version`]) and
//!   bound agents, API keys ([`ApiKey`], with secrets the caller encrypted), admin users
//!   ([`User`], with argon2 hashes) and the append-only audit log ([`AuditEntry`]). Every change
//!   takes a [`Change`] and is audited in its own transaction.
//! * Uploaded packages ([`PackageStore`]): files named by their SHA-256 in a directory, written
//!   to a temporary file and renamed, so storing the same bytes twice is harmless.
//! * Queues of the v2 API (`queue`): one [`QueueRow`] per queue and its [`TaskRow`]s, saved
//!   together under optimistic concurrency (a version checked and bumped by every save), with
//!   a unique run id per dispatched task so results find their queue.
//! * Crons of the v2 API (`cron`): one [`CronRow`] per cron with its last result, its recent
//!   runs ([`CronRunRow`], recorded before they are dispatched, at most once per instant) and
//!   the firer lease with its fencing token.
//!
//! # Rules
//!
//! * [`Store::open`] takes a database URL. This build speaks SQLite only, as `sqlite://PATH`
//!   with a relative or absolute path; the parent directory and the file are created when
//!   missing. In-memory SQLite is refused because every pooled connection would get its own
//!   empty database.
//! * SQLite runs in WAL mode with `synchronous=NORMAL`, foreign keys on, a 5 second busy
//!   timeout and a small connection pool, so readers never wait for the writer.
//! * A write that reads before it writes runs in a `BEGIN IMMEDIATE` transaction, which takes
//!   the write lock up front. A deferred transaction would have to upgrade a read snapshot to
//!   a write lock, and SQLite answers that with `SQLITE_BUSY` without waiting. Writes that are
//!   a single statement (an upsert, an insert that does nothing on conflict) are atomic on
//!   their own and need no explicit transaction.
//! * Instants are stored as `i64` Unix milliseconds, the unit of `elves_types::Clock`.
//! * The schema is created by numbered migrations in `migrations/<dialect>/NNNN_name.sql`,
//!   embedded in the binary and applied on open, each in its own transaction and recorded in
//!   `schema_migrations`. Opening is idempotent. A database whose schema is newer than this
//!   build knows is refused rather than misread.
//! * Errors are one line, say what failed, and never contain secrets or connection strings.

mod agents;
mod cron;
mod dialect;
mod health;
mod migrate;
mod packages;
mod queue;
mod sqlite;
mod supervisor;

use sqlx::SqlitePool;

pub use agents::{AgentRecord, Credential};
pub use cron::{CronOutcome, CronRow, CronRunRow, NewCronFire};
pub use packages::{PackageStore, PackageWriter, is_sha256_hex};
pub use queue::{QueueRow, TaskRow};
pub use supervisor::{
    ApiKey, App, AuditEntry, BindingChange, Change, MAX_AUDIT_PAGE, NewKey, NewVersion, Role, User,
    Version,
};

/// Why a store operation failed. Messages are one line and never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query or transaction failed on an open store.
    #[error("store: {0}")]
    Db(String),
    /// The store could not be opened: a bad URL, an unreachable file, a schema from a newer build.
    #[error("store: {0}")]
    Open(String),
    /// The record a change is aimed at does not exist (an unknown app, key or user).
    #[error("store: {0}")]
    NotFound(String),
    /// The change would break a rule of the data: a duplicate name, deleting an app that
    /// still has versions, removing the last admin.
    #[error("store: {0}")]
    Conflict(String),
}

impl Error {
    /// Wraps a driver error, naming the operation that failed.
    pub(crate) fn db(what: &str, e: sqlx::Error) -> Error {
        Error::Db(one_line(&format!("{what}: {e}")))
    }

    /// Wraps a driver error met while opening the store.
    pub(crate) fn open(what: &str, e: impl std::fmt::Display) -> Error {
        Error::Open(one_line(&format!("{what}: {e}")))
    }

    /// A [`Error::NotFound`] with a one-line message.
    pub(crate) fn not_found(msg: &str) -> Error {
        Error::NotFound(one_line(msg))
    }

    /// A [`Error::Conflict`] with a one-line message.
    pub(crate) fn conflict(msg: &str) -> Error {
        Error::Conflict(one_line(msg))
    }
}

/// Collapses a message onto one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A handle to the database. Cloning is cheap: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating when missing) the database at `url` and brings its schema up to date.
    ///
    /// `url` is `sqlite://PATH`; see the crate documentation for what is refused.
    pub async fn open(url: &str) -> Result<Store, Error> {
        match dialect::Location::parse(url)? {
            dialect::Location::Sqlite(path) => {
                let pool = sqlite::connect(&path).await?;
                let clock = elves_types::SystemClock;
                if let Err(e) =
                    migrate::sqlite(&pool, dialect::Dialect::Sqlite.migrations(), &clock).await
                {
                    pool.close().await;
                    return Err(e);
                }
                Ok(Store { pool })
            }
        }
    }

    /// Closes every connection after in-flight queries finish. Clones of this store stop
    /// working too. Dropping the last clone also closes the pool, only less promptly.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
