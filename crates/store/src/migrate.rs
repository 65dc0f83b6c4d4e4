//! The migrator: brings a database's schema up to the newest migration this build embeds.
//!
//! Applied migrations are recorded in `schema_migrations(version, name, applied_at_ms)`. Each
//! pending migration runs in its own `BEGIN IMMEDIATE` transaction together with the row that
//! records it, so a crash leaves the schema at a whole version, and two processes opening the
//! same new database at once apply each migration exactly once.

use elves_types::Clock;
use sqlx::SqlitePool;

use crate::Error;
use crate::dialect::Migration;

/// Applies the pending `migrations` (oldest first) to a SQLite database.
pub(crate) async fn sqlite(
    pool: &SqlitePool,
    migrations: &[Migration],
    clock: &dyn Clock,
) -> Result<(), Error> {
    let fail = |what: &str, e: sqlx::Error| Error::open(what, e);
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version       INTEGER PRIMARY KEY NOT NULL,
             name          TEXT    NOT NULL,
             applied_at_ms INTEGER NOT NULL
         )",
    )
    .execute(pool)
    .await
    .map_err(|e| fail("cannot create schema_migrations", e))?;

    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await
        .map_err(|e| fail("cannot read schema_migrations", e))?;
    let known = migrations.last().map_or(0, |m| m.version);
    if let Some(newest) = applied.iter().copied().max().filter(|v| *v > known) {
        return Err(Error::Open(format!(
            "the database schema is at version {newest} but this build knows versions up to \
             {known}; it was written by a newer Elves, so upgrade Elves rather than downgrade \
             the database"
        )));
    }

    for m in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        let mut tx = crate::sqlite::begin_immediate(pool)
            .await
            .map_err(|e| fail("cannot begin a migration", e))?;
        // Another process may have applied it since the read above.
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| fail("cannot read schema_migrations", e))?;
        if done.is_some() {
            continue;
        }
        let what = format!("migration {:04}_{}", m.version, m.name);
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(&what, e))?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(clock.now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| fail(&what, e))?;
        tx.commit().await.map_err(|e| fail(&what, e))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied store migration"
        );
    }
    Ok(())
}
