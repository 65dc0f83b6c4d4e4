//! Crons of the v2 API, their recent runs and the firer lease (crate `elves-cron`).
//!
//! # Rules
//!
//! * A fire is recorded ([`Store::record_cron_fires`]) before it is dispatched, in one
//!   `BEGIN IMMEDIATE` transaction that first checks the firer lease: the caller's token must
//!   be the current one and the lease must not have expired. A firer that lost its lease
//!   records nothing, so it cannot fire.
//! * A fire is recorded only while its cron is started, only after the instant the cron was
//!   last started, and only after the newest fire already recorded for it: fires are recorded
//!   in increasing order and an instant is never fired twice, even after old runs are pruned.
//!   (`(cron_id, fire_at_ms)` is also unique.)
//! * Each recording keeps only the newest `keep` runs of the crons it fired.
//! * [`Store::cron_lease`] acquires or renews the lease. An acquisition (a new holder, or a
//!   holder whose lease had expired) adds 1 to the token; a renewal keeps it.
//! * A result is stored once ([`Store::record_cron_result`]): a second result for the same
//!   run, or one for a run that is gone, changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{Error, Store};

/// One cron.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronRow {
    /// 16 hex characters.
    pub id: String,
    pub app: String,
    /// The auth_id that created it.
    pub owner: String,
    pub ip: String,
    pub func: String,
    /// `NP` or `P`.
    pub mode: String,
    pub param: String,
    pub timeout: i64,
    pub proxy: String,
    /// The Quartz rule.
    pub rule: String,
    /// The IANA zone the rule is read in.
    pub tz: String,
    /// `fire_once` or `skip`.
    pub misfire: String,
    pub started: bool,
    /// When it was last started; nothing fires at or before it.
    pub started_at_ms: i64,
    /// The newest fire recorded.
    pub last_fire_at_ms: Option<i64>,
    pub created_at_ms: i64,
    /// The last result received (`None` while none arrived).
    pub last: Option<CronOutcome>,
}

/// A result (or a delivery failure) of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronOutcome {
    pub run_id: String,
    /// When it was received.
    pub at_ms: i64,
    pub flag: bool,
    pub error: String,
    pub worker_flag: i64,
    pub worker_message: String,
    pub worker_costtime: i64,
}

/// One fire to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCronFire {
    pub cron_id: String,
    pub run_id: String,
    pub fire_at_ms: i64,
    /// A late fire made up for by the misfire policy.
    pub catch_up: bool,
}

/// One recorded run of a cron.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronRunRow {
    pub run_id: String,
    pub cron_id: String,
    pub fire_at_ms: i64,
    pub recorded_at_ms: i64,
    pub catch_up: bool,
    /// When it was handed to the scheduler; `None` until [`Store::cron_fires_dispatched`].
    pub dispatched_at_ms: Option<i64>,
    /// `None` while no result arrived.
    pub result: Option<CronOutcome>,
}

macro_rules! cron_columns {
    () => {
        "id, app, owner, ip, func, mode, param, timeout, proxy, rule, tz, misfire, started, \
         started_at_ms, last_fire_at_ms, created_at_ms, last_run_id, last_exec_at_ms, last_flag, \
         last_error, last_worker_flag, last_worker_message, last_worker_costtime"
    };
}
macro_rules! run_columns {
    () => {
        "run_id, cron_id, fire_at_ms, recorded_at_ms, catch_up, finished_at_ms, result_flag, \
         result_error, worker_flag, worker_message, worker_costtime, dispatched_at_ms"
    };
}

/// How many fires (or results) one statement carries, as one JSON array parameter.
pub const FIRES_PER_STATEMENT: usize = 2_000;

/// A JSON array parameter (read in SQL with `json_each`).
fn json<T: serde::Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).expect("plain rows serialize")
}

/// A result as the JSON row the result statements read.
fn outcome_json(r: &CronOutcome) -> (&str, i64, i64, &str, i64, &str, i64) {
    (
        r.run_id.as_str(),
        r.at_ms,
        i64::from(r.flag),
        r.error.as_str(),
        r.worker_flag,
        r.worker_message.as_str(),
        r.worker_costtime,
    )
}

fn cron_from_row(row: &SqliteRow) -> Result<CronRow, sqlx::Error> {
    let last_run_id: Option<String> = row.try_get(16)?;
    let last_at: Option<i64> = row.try_get(17)?;
    let last = match (last_run_id, last_at) {
        (Some(run_id), Some(at_ms)) => Some(CronOutcome {
            run_id,
            at_ms,
            flag: row.try_get::<Option<bool>, _>(18)?.unwrap_or(false),
            error: row.try_get(19)?,
            worker_flag: row.try_get::<Option<i64>, _>(20)?.unwrap_or(-1),
            worker_message: row.try_get(21)?,
            worker_costtime: row.try_get::<Option<i64>, _>(22)?.unwrap_or(0),
        }),
        _ => None,
    };
    Ok(CronRow {
        id: row.try_get(0)?,
        app: row.try_get(1)?,
        owner: row.try_get(2)?,
        ip: row.try_get(3)?,
        func: row.try_get(4)?,
        mode: row.try_get(5)?,
        param: row.try_get(6)?,
        timeout: row.try_get(7)?,
        proxy: row.try_get(8)?,
        rule: row.try_get(9)?,
        tz: row.try_get(10)?,
        misfire: row.try_get(11)?,
        started: row.try_get(12)?,
        started_at_ms: row.try_get(13)?,
        last_fire_at_ms: row.try_get(14)?,
        created_at_ms: row.try_get(15)?,
        last,
    })
}

/// Decodes fetched `cron_runs` rows; a failed fetch or row is `what` failing.
fn runs_of(
    fetched: Result<Vec<SqliteRow>, sqlx::Error>,
    what: &str,
) -> Result<Vec<CronRunRow>, Error> {
    fetched
        .and_then(|rows| rows.iter().map(run_from_row).collect())
        .map_err(|e| Error::db(what, e))
}

fn run_from_row(row: &SqliteRow) -> Result<CronRunRow, sqlx::Error> {
    let run_id: String = row.try_get(0)?;
    let finished: Option<i64> = row.try_get(5)?;
    let result = match finished {
        Some(at_ms) => Some(CronOutcome {
            run_id: run_id.clone(),
            at_ms,
            flag: row.try_get::<Option<bool>, _>(6)?.unwrap_or(false),
            error: row.try_get(7)?,
            worker_flag: row.try_get::<Option<i64>, _>(8)?.unwrap_or(-1),
            worker_message: row.try_get(9)?,
            worker_costtime: row.try_get::<Option<i64>, _>(10)?.unwrap_or(0),
        }),
        None => None,
    };
    Ok(CronRunRow {
        run_id,
        cron_id: row.try_get(1)?,
        fire_at_ms: row.try_get(2)?,
        recorded_at_ms: row.try_get(3)?,
        catch_up: row.try_get(4)?,
        dispatched_at_ms: row.try_get(11)?,
        result,
    })
}

impl Store {
    /// Creates a cron (its `last_*` fields are ignored). [`Error::Conflict`] when the id exists.
    pub async fn create_cron(&self, c: &CronRow) -> Result<(), Error> {
        let done = sqlx::query(
            "INSERT INTO crons (id, app, owner, ip, func, mode, param, timeout, proxy, rule, tz, \
             misfire, started, started_at_ms, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&c.id)
        .bind(&c.app)
        .bind(&c.owner)
        .bind(&c.ip)
        .bind(&c.func)
        .bind(&c.mode)
        .bind(&c.param)
        .bind(c.timeout)
        .bind(&c.proxy)
        .bind(&c.rule)
        .bind(&c.tz)
        .bind(&c.misfire)
        .bind(c.started)
        .bind(c.started_at_ms)
        .bind(c.created_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::db("cannot create a cron", e))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(&format!("cron {} already exists", c.id)));
        }
        Ok(())
    }

    /// The cron with this id, or `None`.
    pub async fn cron(&self, id: &str) -> Result<Option<CronRow>, Error> {
        let what = "cannot read a cron";
        let row = sqlx::query(concat!(
            "SELECT ",
            cron_columns!(),
            " FROM crons WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::db(what, e))?;
        row.as_ref()
            .map(cron_from_row)
            .transpose()
            .map_err(|e| Error::db(what, e))
    }

    /// Every started cron, by id.
    pub async fn started_crons(&self) -> Result<Vec<CronRow>, Error> {
        let _t = elves_telemetry::store_op("cron_started");
        let what = "cannot list started crons";
        let rows = sqlx::query(concat!(
            "SELECT ",
            cron_columns!(),
            " FROM crons WHERE started = 1 ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db(what, e))?;
        rows.iter()
            .map(cron_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| Error::db(what, e))
    }

    /// The ids of the crons of `app` (of every app when `None`; on `ip` only, when given),
    /// newest first.
    pub async fn crons_of(
        &self,
        app: Option<&str>,
        ip: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT id FROM crons WHERE (? IS NULL OR app = ?) AND (? IS NULL OR ip = ?)
             ORDER BY created_at_ms DESC, rowid DESC",
        )
        .bind(app)
        .bind(app)
        .bind(ip)
        .bind(ip)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot list crons", e))
    }

    /// Starts (`true`) or stops a cron. Starting a stopped cron sets `started_at_ms` to
    /// `now_ms`; starting a started one, or stopping a stopped one, changes nothing. Returns
    /// `None` for an unknown cron, else whether anything changed.
    pub async fn set_cron_started(
        &self,
        id: &str,
        started: bool,
        now_ms: i64,
    ) -> Result<Option<bool>, Error> {
        let what = "cannot start or stop a cron";
        let done = sqlx::query(
            "UPDATE crons SET started = ?,
                 started_at_ms = CASE WHEN ? = 1 THEN ? ELSE started_at_ms END
             WHERE id = ? AND started <> ?",
        )
        .bind(started)
        .bind(started)
        .bind(now_ms)
        .bind(id)
        .bind(started)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::db(what, e))?;
        if done.rows_affected() == 1 {
            return Ok(Some(true));
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM crons WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::db(what, e))?;
        Ok(exists.map(|_| false))
    }

    /// Deletes a cron and its runs; whether it existed.
    pub async fn delete_cron(&self, id: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM crons WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db("cannot delete a cron", e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Acquires or renews the firer lease for `holder` until `now_ms + ttl_ms`. Returns the
    /// fencing token while `holder` holds the lease, `None` while another holder's lease runs.
    pub async fn cron_lease(
        &self,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<i64>, Error> {
        let what = "cannot take the cron lease";
        let mut tx = crate::sqlite::begin_immediate(&self.pool)
            .await
            .map_err(|e| Error::db(what, e))?;
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT holder, token, expires_at_ms FROM cron_lease WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| Error::db(what, e))?;
        let token = match row {
            None => 1,
            Some((h, token, expires)) if h == holder && expires > now_ms => token,
            Some((_, token, expires)) if expires <= now_ms => token + 1,
            Some(_) => return Ok(None),
        };
        sqlx::query(
            "INSERT INTO cron_lease (id, holder, token, expires_at_ms) VALUES (1, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, token = excluded.token,
                 expires_at_ms = excluded.expires_at_ms",
        )
        .bind(holder)
        .bind(token)
        .bind(now_ms + ttl_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db(what, e))?;
        tx.commit().await.map_err(|e| Error::db(what, e))?;
        Ok(Some(token))
    }

    /// Records fires under the lease `token` of `holder`. Returns `None` (recording nothing)
    /// when the token is not the current one or the lease has expired at `now_ms`; otherwise,
    /// per fire, whether it was recorded (it is not when its cron is gone or stopped, or the
    /// instant is not after the cron's start and newest fire).
    ///
    /// One transaction whatever the number of fires, a few statements per
    /// [`FIRES_PER_STATEMENT`] fires: the fires of one instant (a thousand crons firing every
    /// second) cost one commit, not a round trip per fire.
    pub async fn record_cron_fires(
        &self,
        holder: &str,
        token: i64,
        now_ms: i64,
        fires: &[NewCronFire],
    ) -> Result<Option<Vec<bool>>, Error> {
        let _t = elves_telemetry::store_op("cron_record_fires");
        let what = "cannot record cron fires";
        let mut tx = crate::sqlite::begin_immediate(&self.pool)
            .await
            .map_err(|e| Error::db(what, e))?;
        let lease: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT holder, token, expires_at_ms FROM cron_lease WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| Error::db(what, e))?;
        if !matches!(lease, Some((h, t, exp)) if h == holder && t == token && exp > now_ms) {
            return Ok(None);
        }
        let mut recorded = vec![false; fires.len()];
        let mut start = 0;
        while start < fires.len() {
            // A chunk names each cron once, so one statement can judge all its fires; a cron
            // named again starts the next chunk, judged after this one is applied.
            let mut names = HashSet::new();
            let mut end = start;
            while end < fires.len()
                && end - start < FIRES_PER_STATEMENT
                && names.insert(fires[end].cron_id.as_str())
            {
                end += 1;
            }
            let chunk = &fires[start..end];
            // One statement per instant (a batch is usually one instant): the crons are
            // found by id from the JSON list (`+started` keeps SQLite off the `started`
            // index, which would scan every started cron and probe the list for each).
            let mut by_instant: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
            for f in chunk {
                by_instant
                    .entry(f.fire_at_ms)
                    .or_default()
                    .push(f.cron_id.as_str());
            }
            let mut advanced = Vec::with_capacity(chunk.len());
            for (at, crons) in &by_instant {
                let done: Vec<String> = sqlx::query_scalar(
                    "UPDATE crons SET last_fire_at_ms = ?
                     WHERE id IN (SELECT value FROM json_each(?)) AND +started = 1
                       AND started_at_ms < ? AND (last_fire_at_ms IS NULL OR last_fire_at_ms < ?)
                     RETURNING id",
                )
                .bind(at)
                .bind(json(crons))
                .bind(at)
                .bind(at)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| Error::db(what, e))?;
                advanced.extend(done);
            }
            let advanced: HashSet<String> = advanced.into_iter().collect();
            let mut runs = Vec::with_capacity(advanced.len());
            for (i, f) in chunk.iter().enumerate() {
                if advanced.contains(&f.cron_id) {
                    recorded[start + i] = true;
                    runs.push((
                        f.run_id.as_str(),
                        f.cron_id.as_str(),
                        f.fire_at_ms,
                        i64::from(f.catch_up),
                    ));
                }
            }
            if !runs.is_empty() {
                sqlx::query(
                    "INSERT INTO cron_runs (run_id, cron_id, fire_at_ms, recorded_at_ms, catch_up)
                     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                            json_extract(value, '$[2]'), ?, json_extract(value, '$[3]')
                     FROM json_each(?)",
                )
                .bind(now_ms)
                .bind(json(&runs))
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::db(what, e))?;
            }
            start = end;
        }
        tx.commit().await.map_err(|e| Error::db(what, e))?;
        Ok(Some(recorded))
    }

    /// Stamps recorded runs as handed to the scheduler at `at_ms` and keeps only the newest
    /// `keep` runs of their crons. One transaction, off the firing path (after the dispatch).
    pub async fn cron_fires_dispatched(
        &self,
        fires: &[NewCronFire],
        at_ms: i64,
        keep: i64,
    ) -> Result<(), Error> {
        let what = "cannot stamp dispatched cron fires";
        let mut tx = crate::sqlite::begin_immediate(&self.pool)
            .await
            .map_err(|e| Error::db(what, e))?;
        for chunk in fires.chunks(FIRES_PER_STATEMENT) {
            let runs: Vec<&str> = chunk.iter().map(|f| f.run_id.as_str()).collect();
            sqlx::query(
                "UPDATE cron_runs SET dispatched_at_ms = ?
                 WHERE run_id IN (SELECT value FROM json_each(?))",
            )
            .bind(at_ms)
            .bind(json(&runs))
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db(what, e))?;
            let crons: HashSet<&str> = chunk.iter().map(|f| f.cron_id.as_str()).collect();
            // Per cron, the instant of its newest run beyond `keep`; everything up to it goes.
            sqlx::query(
                "WITH c (id) AS (SELECT value FROM json_each(?)),
                 cut (id, at) AS MATERIALIZED (
                     SELECT c.id, (SELECT x.fire_at_ms FROM cron_runs x WHERE x.cron_id = c.id
                                   ORDER BY x.fire_at_ms DESC LIMIT 1 OFFSET ?)
                     FROM c)
                 DELETE FROM cron_runs WHERE rowid IN (
                     SELECT r.rowid FROM cut JOIN cron_runs r
                         ON r.cron_id = cut.id AND r.fire_at_ms <= cut.at)",
            )
            .bind(json(&crons))
            .bind(keep.max(1))
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db(what, e))?;
        }
        tx.commit().await.map_err(|e| Error::db(what, e))?;
        Ok(())
    }

    /// Stores the result of a run and makes it its cron's last result. Returns `false`, changing
    /// nothing, when the run is unknown (pruned, or its cron deleted) or already has a result.
    pub async fn record_cron_result(&self, r: &CronOutcome) -> Result<bool, Error> {
        let done = self.record_cron_results(std::slice::from_ref(r)).await?;
        Ok(done[0])
    }

    /// Stores results of runs (in the order they arrived) in one transaction; each stored one
    /// becomes its cron's last result, so of two results of one cron the later in `results`
    /// is the last. Per result, whether it was stored (see [`Store::record_cron_result`]).
    pub async fn record_cron_results(&self, results: &[CronOutcome]) -> Result<Vec<bool>, Error> {
        let what = "cannot record cron results";
        let mut stored = vec![false; results.len()];
        if results.is_empty() {
            return Ok(stored);
        }
        let mut tx = crate::sqlite::begin_immediate(&self.pool)
            .await
            .map_err(|e| Error::db(what, e))?;
        let mut start = 0;
        while start < results.len() {
            // A chunk names each run once (a repeated result is judged in the next chunk).
            let mut names = HashSet::new();
            let mut end = start;
            while end < results.len()
                && end - start < FIRES_PER_STATEMENT
                && names.insert(results[end].run_id.as_str())
            {
                end += 1;
            }
            let chunk = &results[start..end];
            let rows: Vec<_> = chunk.iter().map(outcome_json).collect();
            let done: Vec<(String, String)> = sqlx::query_as(
                "WITH r (run_id, at, flag, error, wf, wm, wc) AS (
                     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                            json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                            json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                            json_extract(value, '$[6]')
                     FROM json_each(?))
                 UPDATE cron_runs SET finished_at_ms = r.at, result_flag = r.flag,
                     result_error = r.error, worker_flag = r.wf, worker_message = r.wm,
                     worker_costtime = r.wc
                 FROM r
                 WHERE cron_runs.run_id = r.run_id AND cron_runs.finished_at_ms IS NULL
                 RETURNING cron_runs.run_id, cron_runs.cron_id",
            )
            .bind(json(&rows))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| Error::db(what, e))?;
            let cron_of: HashMap<String, String> = done.into_iter().collect();
            // The last stored result of each cron in this chunk becomes its last result.
            let mut last: HashMap<&str, usize> = HashMap::new();
            for (i, r) in chunk.iter().enumerate() {
                if let Some(cron) = cron_of.get(&r.run_id) {
                    stored[start + i] = true;
                    last.insert(cron.as_str(), i);
                }
            }
            if !last.is_empty() {
                let lasts: Vec<_> = last
                    .iter()
                    .map(|(cron, &i)| (*cron, outcome_json(&chunk[i])))
                    .collect();
                sqlx::query(
                    "WITH r (cron_id, run_id, at, flag, error, wf, wm, wc) AS (
                         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1][0]'),
                                json_extract(value, '$[1][1]'), json_extract(value, '$[1][2]'),
                                json_extract(value, '$[1][3]'), json_extract(value, '$[1][4]'),
                                json_extract(value, '$[1][5]'), json_extract(value, '$[1][6]')
                         FROM json_each(?))
                     UPDATE crons SET last_run_id = r.run_id, last_exec_at_ms = r.at,
                         last_flag = r.flag, last_error = r.error, last_worker_flag = r.wf,
                         last_worker_message = r.wm, last_worker_costtime = r.wc
                     FROM r WHERE crons.id = r.cron_id",
                )
                .bind(json(&lasts))
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::db(what, e))?;
            }
            start = end;
        }
        tx.commit().await.map_err(|e| Error::db(what, e))?;
        Ok(stored)
    }

    /// The kept runs of a cron, newest first.
    pub async fn cron_runs(&self, cron_id: &str) -> Result<Vec<CronRunRow>, Error> {
        let fetched = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM cron_runs WHERE cron_id = ? ORDER BY fire_at_ms DESC"
        ))
        .bind(cron_id)
        .fetch_all(&self.pool)
        .await;
        runs_of(fetched, "cannot read cron runs")
    }

    /// Runs recorded but not (known to be) handed to the scheduler: no dispatch stamp and no
    /// result, by instant, at most `limit`. The firer records an instant's fires ahead of it,
    /// so after a restart or a takeover these are runs recorded for an instant that the
    /// previous firer may not have reached; the new firer dispatches each once (same run id)
    /// or withdraws it by its misfire policy.
    pub async fn pending_cron_runs(&self, limit: i64) -> Result<Vec<CronRunRow>, Error> {
        let fetched = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM cron_runs WHERE dispatched_at_ms IS NULL AND finished_at_ms IS NULL
              ORDER BY fire_at_ms, run_id LIMIT ?"
        ))
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await;
        runs_of(fetched, "cannot list pending cron runs")
    }

    /// Deletes recorded runs that were never handed to the scheduler (a stop or delete came
    /// between their recording and their instant, or the misfire policy dropped them after a
    /// restart); a run stamped as dispatched or with a result stays. The cron's newest fire
    /// (`last_fire_at_ms`) stays too, so the withdrawn instant is never recorded again.
    /// Returns how many were deleted.
    pub async fn withdraw_cron_runs(&self, run_ids: &[String]) -> Result<u64, Error> {
        let what = "cannot withdraw cron runs";
        let mut n = 0;
        for chunk in run_ids.chunks(FIRES_PER_STATEMENT) {
            let done = sqlx::query(
                "DELETE FROM cron_runs WHERE run_id IN (SELECT value FROM json_each(?))
                   AND dispatched_at_ms IS NULL AND finished_at_ms IS NULL",
            )
            .bind(json(&chunk))
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db(what, e))?;
            n += done.rows_affected();
        }
        Ok(n)
    }

    /// Runs handed to the scheduler at or after `since_ms` that have no result yet, oldest
    /// first, at most `limit` (redelivery after a restart). Runs never stamped as dispatched
    /// are the firer's ([`Store::pending_cron_runs`]).
    pub async fn unfinished_cron_runs(
        &self,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<CronRunRow>, Error> {
        let fetched = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM cron_runs WHERE finished_at_ms IS NULL AND recorded_at_ms >= ?
                AND dispatched_at_ms IS NOT NULL
              ORDER BY recorded_at_ms LIMIT ?"
        ))
        .bind(since_ms)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await;
        runs_of(fetched, "cannot list unfinished cron runs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("elves.db").display());
        let s = Store::open(&url).await.unwrap();
        (dir, s)
    }

    fn cron(id: &str, owner: &str, ip: &str, created: i64) -> CronRow {
        CronRow {
            id: id.into(),
            app: "apptest".into(),
            owner: owner.into(),
            ip: ip.into(),
            func: "echo".into(),
            mode: "NP".into(),
            param: String::new(),
            timeout: 90,
            proxy: String::new(),
            rule: "* * * * * ?".into(),
            tz: "UTC".into(),
            misfire: "fire_once".into(),
            started: true,
            started_at_ms: created,
            last_fire_at_ms: None,
            created_at_ms: created,
            last: None,
        }
    }

    fn fire(cron: &str, run: &str, at: i64) -> NewCronFire {
        NewCronFire {
            cron_id: cron.into(),
            run_id: run.into(),
            fire_at_ms: at,
            catch_up: false,
        }
    }

    #[tokio::test]
    async fn create_read_list_start_stop_delete() {
        let (_d, s) = store().await;
        s.create_cron(&cron("C1", "A", "10.0.0.1", 1))
            .await
            .unwrap();
        s.create_cron(&cron("C2", "A", "10.0.0.2", 2))
            .await
            .unwrap();
        s.create_cron(&cron("C3", "B", "10.0.0.1", 3))
            .await
            .unwrap();
        assert!(matches!(
            s.create_cron(&cron("C1", "A", "10.0.0.1", 1)).await,
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            s.cron("C1").await.unwrap(),
            Some(cron("C1", "A", "10.0.0.1", 1))
        );
        assert_eq!(
            s.set_cron_started("C1", true, 50).await.unwrap(),
            Some(false)
        );
        assert_eq!(
            s.set_cron_started("C1", false, 50).await.unwrap(),
            Some(true)
        );
        assert_eq!(
            s.set_cron_started("C1", false, 60).await.unwrap(),
            Some(false)
        );
        assert_eq!(
            s.set_cron_started("C1", true, 70).await.unwrap(),
            Some(true)
        );
        assert_eq!(s.cron("C1").await.unwrap().unwrap().started_at_ms, 70);
        assert_eq!(s.set_cron_started("XX", true, 70).await.unwrap(), None);
        let started: Vec<_> = s
            .started_crons()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(started, ["C1", "C2", "C3"]);
        assert!(s.delete_cron("C3").await.unwrap());
        assert!(!s.delete_cron("C3").await.unwrap());
    }

    #[tokio::test]
    async fn lease_tokens_grow_on_acquisition_and_fence_stale_firers() {
        let (_d, s) = store().await;
        assert_eq!(s.cron_lease("a", 0, 100).await.unwrap(), Some(1));
        // Renewal keeps the token; another holder waits while the lease runs.
        assert_eq!(s.cron_lease("a", 50, 100).await.unwrap(), Some(1));
        assert_eq!(s.cron_lease("b", 100, 100).await.unwrap(), None);
        // Expired: b takes it with a new token.
        assert_eq!(s.cron_lease("b", 150, 100).await.unwrap(), Some(2));
        s.create_cron(&cron("C1", "A", "10.0.0.1", 0))
            .await
            .unwrap();
        // a's token is stale, so a records nothing.
        let f = [fire("C1", "R1", 1000)];
        assert_eq!(s.record_cron_fires("a", 1, 160, &f).await.unwrap(), None);
        // A right token on an expired lease records nothing either.
        assert_eq!(s.record_cron_fires("b", 2, 250, &f).await.unwrap(), None);
        assert_eq!(
            s.record_cron_fires("b", 2, 160, &f).await.unwrap(),
            Some(vec![true])
        );
        // a re-acquires after b's lease expired: token 3.
        assert_eq!(s.cron_lease("a", 300, 100).await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn fires_are_recorded_once_in_order_while_started_and_history_is_bounded() {
        let (_d, s) = store().await;
        s.create_cron(&cron("C1", "A", "10.0.0.1", 0))
            .await
            .unwrap();
        let t = s.cron_lease("f", 0, i64::MAX / 2).await.unwrap().unwrap();
        let rec = |f: Vec<NewCronFire>| {
            let s = s.clone();
            async move {
                let done = s.record_cron_fires("f", t, 1, &f).await.unwrap().unwrap();
                let recorded: Vec<NewCronFire> = f
                    .iter()
                    .zip(&done)
                    .filter(|(_, r)| **r)
                    .map(|(f, _)| f.clone())
                    .collect();
                s.cron_fires_dispatched(&recorded, 2, 3).await.unwrap();
                done
            }
        };
        assert_eq!(
            rec(vec![fire("C1", "R1", 1000), fire("C1", "R1b", 1000)]).await,
            [true, false]
        );
        // Not after the newest fire: refused.
        assert_eq!(rec(vec![fire("C1", "R0", 500)]).await, [false]);
        for (i, at) in [2000, 3000, 4000, 5000].iter().enumerate() {
            assert_eq!(
                rec(vec![fire("C1", &format!("R{}", i + 2), *at)]).await,
                [true]
            );
        }
        let runs = s.cron_runs("C1").await.unwrap();
        let ats: Vec<_> = runs.iter().map(|r| r.fire_at_ms).collect();
        assert_eq!(ats, [5000, 4000, 3000]);
        assert!(runs.iter().all(|r| r.dispatched_at_ms == Some(2)));
        // Stopped, or started again later: nothing at or before the start fires.
        s.set_cron_started("C1", false, 5500).await.unwrap();
        assert_eq!(rec(vec![fire("C1", "R9", 6000)]).await, [false]);
        s.set_cron_started("C1", true, 7000).await.unwrap();
        assert_eq!(rec(vec![fire("C1", "R9", 7000)]).await, [false]);
        assert_eq!(rec(vec![fire("C1", "R9", 8000)]).await, [true]);
        assert_eq!(rec(vec![fire("XX", "R10", 9000)]).await, [false]);
    }

    #[tokio::test]
    async fn results_are_stored_once_and_become_the_last_result() {
        let (_d, s) = store().await;
        s.create_cron(&cron("C1", "A", "10.0.0.1", 0))
            .await
            .unwrap();
        let t = s.cron_lease("f", 0, i64::MAX / 2).await.unwrap().unwrap();
        s.record_cron_fires("f", t, 1, &[fire("C1", "R1", 1000)])
            .await
            .unwrap();
        // Recorded, not yet dispatched: the firer's, not the redelivery's.
        assert_eq!(s.pending_cron_runs(10).await.unwrap().len(), 1);
        assert!(s.unfinished_cron_runs(0, 10).await.unwrap().is_empty());
        s.cron_fires_dispatched(&[fire("C1", "R1", 1000)], 1000, 10)
            .await
            .unwrap();
        assert!(s.pending_cron_runs(10).await.unwrap().is_empty());
        assert_eq!(s.unfinished_cron_runs(0, 10).await.unwrap().len(), 1);
        let out = CronOutcome {
            run_id: "R1".into(),
            at_ms: 1500,
            flag: false,
            error: "[410.1]Send Job To Agent Fail".into(),
            worker_flag: -1,
            worker_message: String::new(),
            worker_costtime: 0,
        };
        assert!(s.record_cron_result(&out).await.unwrap());
        assert!(!s.record_cron_result(&out).await.unwrap());
        let unknown = CronOutcome {
            run_id: "NOPE".into(),
            ..out.clone()
        };
        assert!(!s.record_cron_result(&unknown).await.unwrap());
        assert_eq!(s.cron("C1").await.unwrap().unwrap().last, Some(out.clone()));
        assert_eq!(s.cron_runs("C1").await.unwrap()[0].result, Some(out));
        assert!(s.unfinished_cron_runs(0, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn only_runs_never_dispatched_are_pending_and_withdrawn() {
        let (_d, s) = store().await;
        s.create_cron(&cron("C1", "A", "10.0.0.1", 0))
            .await
            .unwrap();
        let t = s.cron_lease("f", 0, i64::MAX / 2).await.unwrap().unwrap();
        let fires = [
            fire("C1", "R1", 1000),
            fire("C1", "R2", 2000),
            fire("C1", "R3", 3000),
        ];
        for f in &fires {
            s.record_cron_fires("f", t, 1, std::slice::from_ref(f))
                .await
                .unwrap();
        }
        // R1 dispatched, R2 answered (a lost stamp), R3 recorded ahead of its instant.
        s.cron_fires_dispatched(&fires[..1], 1000, 10)
            .await
            .unwrap();
        let answered = CronOutcome {
            run_id: "R2".into(),
            at_ms: 2100,
            flag: true,
            error: String::new(),
            worker_flag: 1,
            worker_message: String::new(),
            worker_costtime: 1,
        };
        assert!(s.record_cron_result(&answered).await.unwrap());
        let pending: Vec<_> = s
            .pending_cron_runs(10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.run_id, r.fire_at_ms))
            .collect();
        assert_eq!(pending, [("R3".to_string(), 3000)]);
        // Withdrawing touches only never-dispatched, unanswered runs.
        let ids: Vec<String> = ["R1", "R2", "R3", "NOPE"].map(String::from).to_vec();
        assert_eq!(s.withdraw_cron_runs(&ids).await.unwrap(), 1);
        let left: Vec<_> = s
            .cron_runs("C1")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(left, ["R2", "R1"]);
        // The withdrawn instant is never recorded again.
        assert_eq!(
            s.record_cron_fires("f", t, 1, &[fire("C1", "R3b", 3000)])
                .await
                .unwrap(),
            Some(vec![false])
        );
    }

    #[tokio::test]
    async fn crons_are_listed_by_app_whoever_created_them() {
        let (_d, s) = store().await;
        // (id, app, owner key, ip): two keys of apptest (a rotation), one key of other.
        let rows = [
            ("C1", "apptest", "K1", "10.0.0.1"),
            ("C2", "apptest", "K2", "10.0.0.2"),
            ("C3", "other", "K3", "10.0.0.1"),
            ("C4", "apptest", "K1", "10.0.0.1"),
        ];
        for (i, (id, app, owner, ip)) in rows.iter().enumerate() {
            let mut c = cron(id, owner, ip, i as i64);
            c.app = (*app).into();
            s.create_cron(&c).await.unwrap();
        }
        // (app, ip, ids newest first)
        let cases: &[(Option<&str>, Option<&str>, &[&str])] = &[
            (Some("apptest"), None, &["C4", "C2", "C1"]),
            (Some("apptest"), Some("10.0.0.1"), &["C4", "C1"]),
            (Some("apptest"), Some("10.0.0.9"), &[]),
            (Some("other"), None, &["C3"]),
            (Some("K1"), None, &[]),
            (Some("nope"), None, &[]),
            (None, None, &["C4", "C3", "C2", "C1"]),
            (None, Some("10.0.0.1"), &["C4", "C3", "C1"]),
        ];
        for (app, ip, want) in cases {
            assert_eq!(
                s.crons_of(*app, *ip).await.unwrap(),
                *want,
                "{app:?} {ip:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_fires_of_many_crons_and_their_results_are_recorded_in_bulk() {
        let (_d, s) = store().await;
        // More crons than one statement carries, plus a stopped one.
        let n = FIRES_PER_STATEMENT + 300;
        let ids: Vec<String> = (0..n).map(|i| format!("C{i:05}")).collect();
        for id in &ids {
            s.create_cron(&cron(id, "A", "10.0.0.1", 0)).await.unwrap();
        }
        s.create_cron(&cron("STOPPED", "A", "10.0.0.1", 0))
            .await
            .unwrap();
        s.set_cron_started("STOPPED", false, 10).await.unwrap();
        let t = s.cron_lease("f", 0, i64::MAX / 2).await.unwrap().unwrap();
        let mut fires: Vec<NewCronFire> = ids
            .iter()
            .map(|id| fire(id, &format!("R-{id}"), 1000))
            .collect();
        // (fire, recorded): a stopped cron; a cron named again, later (recorded, in order)
        // and at the same instant (refused); an unknown cron.
        let extra = [
            (fire("STOPPED", "R-S", 1000), false),
            (fire("C00000", "R-again", 2000), true),
            (fire("C00001", "R-same", 1000), false),
            (fire("NOPE", "R-nope", 1000), false),
        ];
        fires.extend(extra.iter().map(|(f, _)| f.clone()));
        let want: Vec<bool> = std::iter::repeat_n(true, n)
            .chain(extra.iter().map(|(_, r)| *r))
            .collect();
        assert_eq!(
            s.record_cron_fires("f", t, 1, &fires).await.unwrap(),
            Some(want)
        );
        assert_eq!(
            s.cron("C00000").await.unwrap().unwrap().last_fire_at_ms,
            Some(2000)
        );
        assert_eq!(
            s.cron(&ids[n - 1]).await.unwrap().unwrap().last_fire_at_ms,
            Some(1000)
        );
        assert_eq!(s.cron_runs(&ids[n - 1]).await.unwrap().len(), 1);
        assert!(s.cron_runs("STOPPED").await.unwrap().is_empty());

        let outcome = |run: &str, at_ms: i64, msg: &str| CronOutcome {
            run_id: run.into(),
            at_ms,
            flag: true,
            error: String::new(),
            worker_flag: 1,
            worker_message: msg.into(),
            worker_costtime: 3,
        };
        let mut results: Vec<CronOutcome> = ids
            .iter()
            .map(|id| outcome(&format!("R-{id}"), 1500, id))
            .collect();
        // (result, stored): two runs of one cron (the later arrival becomes the last result),
        // a run answered twice, an unknown run.
        let extra = [
            (outcome("R-again", 2500, "again"), true),
            (outcome("R-C00002", 1600, "twice"), false),
            (outcome("R-nope", 1600, "nope"), false),
        ];
        results.extend(extra.iter().map(|(r, _)| r.clone()));
        let want: Vec<bool> = std::iter::repeat_n(true, n)
            .chain(extra.iter().map(|(_, r)| *r))
            .collect();
        assert_eq!(s.record_cron_results(&results).await.unwrap(), want);
        let last = |id: &str| {
            let s = s.clone();
            let id = id.to_owned();
            async move { s.cron(&id).await.unwrap().unwrap().last.unwrap() }
        };
        assert_eq!(last("C00000").await, outcome("R-again", 2500, "again"));
        assert_eq!(last("C00002").await, outcome("R-C00002", 1500, "C00002"));
        assert_eq!(last(&ids[n - 1]).await.worker_message, ids[n - 1]);
        assert!(s.unfinished_cron_runs(0, 10).await.unwrap().is_empty());
    }
}
