//! Queues of the v2 API and their tasks, as rows the queue module maps to and from its state
//! machine (crate `elves-queue`).
//!
//! # Rules
//!
//! * A queue row carries a `version` for optimistic concurrency. [`Store::save_queue`] writes
//!   only when the stored version is the one the caller read, and then adds 1, so of two
//!   writers that read the same version exactly one wins; the loser re-reads and retries.
//! * A save writes the queue row and every given task row in one `BEGIN IMMEDIATE`
//!   transaction: either all of it lands or none of it does.
//! * Task rows are upserted by id: a new id inserts the row, a known id overwrites it with the
//!   given values. `seq` is the caller's (the task's index in its queue, that is the number of
//!   tasks it had when the task was added); tasks are read back ordered by it.
//! * A run id names at most one task across all queues, so a result finds its queue with
//!   [`Store::queue_of_run`]. Giving a second task the same run id is an [`Error::Conflict`].
//! * Statuses are the machine's spellings: `pendding`, `running`, `finish`, `stopped`; the
//!   schema refuses any other.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{Error, Store};

/// One queue, without its tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRow {
    /// 16 hex characters.
    pub id: String,
    pub app: String,
    /// The auth_id that created the queue.
    pub owner: String,
    /// `pendding`, `running`, `finish` or `stopped`.
    pub status: String,
    /// Optimistic concurrency: the stored value is 1 more after every successful save.
    pub version: i64,
    pub created_at_ms: i64,
    pub committed_at_ms: Option<i64>,
    /// Set when the queue became `finish` or `stopped`; retention purges by it.
    pub finished_at_ms: Option<i64>,
}

/// One task of a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub queue_id: String,
    /// Insertion order within the queue (0, 1, 2, …).
    pub seq: i64,
    pub ip: String,
    pub mode: String,
    pub func: String,
    pub param: String,
    pub timeout: i64,
    pub proxy: String,
    /// The id of the task of the same queue this one waits for.
    pub depend_on: Option<String>,
    /// `pendding`, `running`, `finish` or `stopped`.
    pub status: String,
    /// The id of the task's dispatch; unique across all queues.
    pub run_id: Option<String>,
    /// The machine's own error for the task, `""` when none.
    pub error: String,
    /// The result's flag; `None` while no result arrived.
    pub result_flag: Option<bool>,
    pub result_error: String,
    pub worker_flag: Option<i64>,
    pub worker_message: String,
    pub worker_costtime: Option<i64>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

// Column lists as macros, because sqlx takes only `&'static str` statements.
macro_rules! queue_columns {
    () => {
        "id, app, owner, status, version, created_at_ms, committed_at_ms, finished_at_ms"
    };
}
/// Task rows per statement when a queue is saved (20 bound values each, well under SQLite's
/// limit of 32,766 per statement).
const SAVE_CHUNK: usize = 500;

macro_rules! task_columns {
    () => {
        "id, queue_id, seq, ip, mode, func, param, timeout, proxy, depend_on, status, run_id, \
         error, result_flag, result_error, worker_flag, worker_message, worker_costtime, \
         created_at_ms, finished_at_ms"
    };
}

/// Reads a queue row SELECTed with `queue_columns!`.
fn queue_from_row(row: &SqliteRow) -> Result<QueueRow, sqlx::Error> {
    Ok(QueueRow {
        id: row.try_get(0)?,
        app: row.try_get(1)?,
        owner: row.try_get(2)?,
        status: row.try_get(3)?,
        version: row.try_get(4)?,
        created_at_ms: row.try_get(5)?,
        committed_at_ms: row.try_get(6)?,
        finished_at_ms: row.try_get(7)?,
    })
}

/// Reads a task row SELECTed with `task_columns!` (more columns than sqlx's tuples hold).
fn task_from_row(row: &SqliteRow) -> Result<TaskRow, sqlx::Error> {
    Ok(TaskRow {
        id: row.try_get(0)?,
        queue_id: row.try_get(1)?,
        seq: row.try_get(2)?,
        ip: row.try_get(3)?,
        mode: row.try_get(4)?,
        func: row.try_get(5)?,
        param: row.try_get(6)?,
        timeout: row.try_get(7)?,
        proxy: row.try_get(8)?,
        depend_on: row.try_get(9)?,
        status: row.try_get(10)?,
        run_id: row.try_get(11)?,
        error: row.try_get(12)?,
        result_flag: row.try_get(13)?,
        result_error: row.try_get(14)?,
        worker_flag: row.try_get(15)?,
        worker_message: row.try_get(16)?,
        worker_costtime: row.try_get(17)?,
        created_at_ms: row.try_get(18)?,
        finished_at_ms: row.try_get(19)?,
    })
}

/// Whether `e` is the unique index on `queue_tasks.run_id` refusing a row.
fn is_run_id_taken(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation() && d.message().contains("run_id"))
}

impl Store {
    /// Creates a queue row (its tasks come with [`Store::save_queue`]). The version is stored
    /// as given. Fails with [`Error::Conflict`] when a queue with that id exists.
    pub async fn create_queue(&self, q: &QueueRow) -> Result<(), Error> {
        let _t = elves_telemetry::store_op("queue_create");
        // One statement: the primary key decides the race.
        let done = sqlx::query(concat!(
            "INSERT INTO queues (",
            queue_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        ))
        .bind(&q.id)
        .bind(&q.app)
        .bind(&q.owner)
        .bind(&q.status)
        .bind(q.version)
        .bind(q.created_at_ms)
        .bind(q.committed_at_ms)
        .bind(q.finished_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::db("cannot create a queue", e))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(&format!("queue {} already exists", q.id)));
        }
        Ok(())
    }

    /// The queue with this id and its tasks ordered by `seq`, read from one snapshot; `None`
    /// when there is no such queue.
    pub async fn queue(&self, id: &str) -> Result<Option<(QueueRow, Vec<TaskRow>)>, Error> {
        let _t = elves_telemetry::store_op("queue_load");
        let what = "cannot read a queue";
        // A (deferred) read transaction: the queue and its tasks come from the same snapshot.
        let mut tx = self.pool.begin().await.map_err(|e| Error::db(what, e))?;
        let row = sqlx::query(concat!(
            "SELECT ",
            queue_columns!(),
            " FROM queues WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| Error::db(what, e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let queue = queue_from_row(&row).map_err(|e| Error::db(what, e))?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM queue_tasks WHERE queue_id = ? ORDER BY seq, rowid"
        ))
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| Error::db("cannot read a queue's tasks", e))?;
        tx.commit().await.map_err(|e| Error::db(what, e))?;
        let tasks = rows
            .iter()
            .map(task_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::db("cannot read a queue's tasks", e))?;
        Ok(Some((queue, tasks)))
    }

    /// Writes the queue row (status, `committed_at_ms`, `finished_at_ms`; the version becomes
    /// `expected_version + 1`, whatever `q.version` says; id, app, owner and `created_at_ms`
    /// never change) and upserts every given task row, in one `BEGIN IMMEDIATE` transaction,
    /// only if the stored version equals `expected_version`.
    ///
    /// Returns `Ok(false)` and writes nothing when the stored version differs (a concurrent
    /// writer won). Fails, writing nothing, with [`Error::NotFound`] when the queue does not
    /// exist, and with [`Error::Conflict`] when a task row's `queue_id` is not `q.id`, its id
    /// is a task of another queue, or its run id is another task's.
    pub async fn save_queue(
        &self,
        q: &QueueRow,
        tasks: &[TaskRow],
        expected_version: i64,
    ) -> Result<bool, Error> {
        let _t = elves_telemetry::store_op("queue_save");
        if let Some(t) = tasks.iter().find(|t| t.queue_id != q.id) {
            return Err(Error::conflict(&format!(
                "task {} belongs to queue {}, not to queue {}",
                t.id, t.queue_id, q.id
            )));
        }
        let mut tx = crate::sqlite::begin_immediate(&self.pool)
            .await
            .map_err(|e| Error::db("cannot begin to save a queue", e))?;
        let done = sqlx::query(
            "UPDATE queues
             SET status = ?, committed_at_ms = ?, finished_at_ms = ?, version = ? + 1
             WHERE id = ? AND version = ?",
        )
        .bind(&q.status)
        .bind(q.committed_at_ms)
        .bind(q.finished_at_ms)
        .bind(expected_version)
        .bind(&q.id)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db("cannot save a queue", e))?;
        if done.rows_affected() == 0 {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM queues WHERE id = ?")
                .bind(&q.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| Error::db("cannot read a queue", e))?;
            // Dropping the transaction rolls it back; nothing was written anyway.
            return match exists {
                Some(_) => Ok(false),
                None => Err(Error::not_found(&format!("queue {} not found", q.id))),
            };
        }
        // Many rows per statement: one round trip to the database thread per chunk, not per
        // task (a result batch or a commit touches many tasks at once).
        for chunk in tasks.chunks(SAVE_CHUNK) {
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!(
                "INSERT INTO queue_tasks (",
                task_columns!(),
                ") "
            ));
            qb.push_values(chunk, |mut b, t| {
                b.push_bind(&t.id)
                    .push_bind(&t.queue_id)
                    .push_bind(t.seq)
                    .push_bind(&t.ip)
                    .push_bind(&t.mode)
                    .push_bind(&t.func)
                    .push_bind(&t.param)
                    .push_bind(t.timeout)
                    .push_bind(&t.proxy)
                    .push_bind(&t.depend_on)
                    .push_bind(&t.status)
                    .push_bind(&t.run_id)
                    .push_bind(&t.error)
                    .push_bind(t.result_flag)
                    .push_bind(&t.result_error)
                    .push_bind(t.worker_flag)
                    .push_bind(&t.worker_message)
                    .push_bind(t.worker_costtime)
                    .push_bind(t.created_at_ms)
                    .push_bind(t.finished_at_ms);
            });
            qb.push(
                " ON CONFLICT (id) DO UPDATE SET
                     seq = excluded.seq,
                     ip = excluded.ip,
                     mode = excluded.mode,
                     func = excluded.func,
                     param = excluded.param,
                     timeout = excluded.timeout,
                     proxy = excluded.proxy,
                     depend_on = excluded.depend_on,
                     status = excluded.status,
                     run_id = excluded.run_id,
                     error = excluded.error,
                     result_flag = excluded.result_flag,
                     result_error = excluded.result_error,
                     worker_flag = excluded.worker_flag,
                     worker_message = excluded.worker_message,
                     worker_costtime = excluded.worker_costtime,
                     created_at_ms = excluded.created_at_ms,
                     finished_at_ms = excluded.finished_at_ms
                 WHERE queue_tasks.queue_id = excluded.queue_id",
            );
            let done = match qb.build().execute(&mut *tx).await {
                Ok(done) => done,
                Err(e) if is_run_id_taken(&e) => {
                    // Name the run id (SQLite keeps the transaction usable after a failed
                    // statement; it is rolled back when dropped).
                    let mut taken = String::new();
                    for t in chunk {
                        let Some(run) = t.run_id.as_deref() else {
                            continue;
                        };
                        let other: Option<String> = sqlx::query_scalar(
                            "SELECT id FROM queue_tasks WHERE run_id = ? AND id != ?",
                        )
                        .bind(run)
                        .bind(&t.id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(|e| Error::db("cannot read a queue's task", e))?;
                        if other.is_some() {
                            taken = run.to_owned();
                            break;
                        }
                    }
                    return Err(Error::conflict(&format!(
                        "run id {taken} is already another task's"
                    )));
                }
                Err(e) => return Err(Error::db("cannot save a queue's tasks", e)),
            };
            if done.rows_affected() < chunk.len() as u64 {
                // Some task of the chunk is another queue's (its update was skipped): name it.
                let mut other = String::new();
                for t in chunk {
                    let owner: Option<String> =
                        sqlx::query_scalar("SELECT queue_id FROM queue_tasks WHERE id = ?")
                            .bind(&t.id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(|e| Error::db("cannot read a queue's task", e))?;
                    if owner.is_some_and(|o| o != t.queue_id) {
                        other = t.id.clone();
                        break;
                    }
                }
                return Err(Error::conflict(&format!(
                    "task {other} belongs to another queue"
                )));
            }
        }
        tx.commit()
            .await
            .map_err(|e| Error::db("cannot commit: save a queue", e))?;
        Ok(true)
    }

    /// The queue row alone (no tasks), or `None` when there is no such queue.
    pub async fn queue_row(&self, id: &str) -> Result<Option<QueueRow>, Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            queue_columns!(),
            " FROM queues WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::db("cannot read a queue", e))?;
        row.as_ref()
            .map(queue_from_row)
            .transpose()
            .map_err(|e| Error::db("cannot read a queue", e))
    }

    /// The stored version of a queue (see [`Store::save_queue`]), or `None` when there is no
    /// such queue: one indexed read, so a cached copy can be checked before it is used.
    pub async fn queue_version(&self, id: &str) -> Result<Option<i64>, Error> {
        sqlx::query_scalar("SELECT version FROM queues WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::db("cannot read a queue's version", e))
    }

    /// The id of the queue owning a task with this run id (for routing results), or `None`.
    pub async fn queue_of_run(&self, run_id: &str) -> Result<Option<String>, Error> {
        let _t = elves_telemetry::store_op("queue_of_run");
        sqlx::query_scalar("SELECT queue_id FROM queue_tasks WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::db("cannot look up a run id", e))
    }

    /// The tasks in status `running` whose agent is `ip` (at most `limit`), by queue and
    /// insertion order.
    pub async fn running_tasks_on(&self, ip: &str, limit: i64) -> Result<Vec<TaskRow>, Error> {
        let what = "cannot list an agent's running tasks";
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM queue_tasks WHERE status = 'running' AND ip = ? ORDER BY queue_id, seq LIMIT ?"
        ))
        .bind(ip)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db(what, e))?;
        rows.iter()
            .map(task_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::db(what, e))
    }

    /// The agents (ips) that have a task in status `running`, sorted, each once.
    pub async fn running_task_ips(&self) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT ip FROM queue_tasks WHERE status = 'running' ORDER BY ip",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot list the agents of running tasks", e))
    }

    /// The ids of the queues that have a task in status `running` (recovery at start),
    /// sorted, each once.
    pub async fn queues_with_running_tasks(&self) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT queue_id FROM queue_tasks WHERE status = 'running' ORDER BY queue_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot list queues with running tasks", e))
    }

    /// Deletes at most `limit` queues in status `finish` or `stopped` whose `finished_at_ms`
    /// is before `before_ms`, oldest first, with their tasks. Returns how many queues went.
    /// A `limit` of 0 or less deletes nothing.
    pub async fn purge_queues(&self, before_ms: i64, limit: i64) -> Result<u64, Error> {
        if limit <= 0 {
            // SQLite reads a negative LIMIT as "no limit".
            return Ok(0);
        }
        // One statement, so atomic on its own; tasks go by ON DELETE CASCADE.
        let done = sqlx::query(
            "DELETE FROM queues WHERE id IN (
                 SELECT id FROM queues
                 WHERE status IN ('finish', 'stopped') AND finished_at_ms < ?
                 ORDER BY finished_at_ms, id
                 LIMIT ?
             )",
        )
        .bind(before_ms)
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::db("cannot purge queues", e))?;
        Ok(done.rows_affected())
    }
}
