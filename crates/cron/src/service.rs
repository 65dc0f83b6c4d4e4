//! The cron module on the bus: the API's operations, results from the scheduler, and the
//! firing loop (see the crate documentation).

use std::sync::Arc;
use std::time::Duration;

use elves_bus::Bus;
use elves_cron_expr::Schedule;
use elves_cron_expr::jiff::Timestamp;
use elves_cron_expr::jiff::tz::TimeZone;
use elves_rpc::cron::{AddCron, CronAction, CronDetail, CronList, CronOwner, OperateCron};
use elves_rpc::done::{CronResult, Done};
use elves_rpc::gateway::Instruct;
use elves_rpc::scheduler::{AsyncJob, AsyncJobs};
use elves_store::{CronOutcome, CronRow, Store};
use elves_types::{ApiError, Clock, ErrorCode, Id};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::firer::{Limits, Misfire};
use crate::firing::{self, Command, Dispatch, Dispatcher, FiringOptions};
use crate::gate::{Change, Gate};

/// How many unfinished runs are offered to their agents again at start.
const REDELIVER_LIMIT: i64 = 10_000;
/// How far back unfinished runs are offered again.
const REDELIVER_WITHIN_MS: i64 = 86_400_000 + 120_000;

/// The cron module's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Runs kept per cron (default 50).
    pub history: u32,
    /// The zone of crons created without `tz` (default: the host's zone).
    pub default_tz: TimeZone,
    /// The zone of `yyyy-MM-dd HH:mm:ss` times in results (the center's zone).
    pub display_tz: TimeZone,
    /// A fire at most this late is on time (default 2 s).
    pub late_grace: Duration,
    /// `fire_once` catches up a missed fire at most this old (default 60 s).
    pub misfire_window: Duration,
    pub lease_ttl: Duration,
    pub renew_every: Duration,
    /// This process's name in the firer lease (default: random).
    pub holder: String,
    /// Run the firing loop on a thread of its own (default), or as a task of the caller's
    /// runtime (tests on paused time).
    pub firer_thread: bool,
}

impl Default for Options {
    fn default() -> Self {
        let f = FiringOptions::default();
        Options {
            history: 50,
            default_tz: TimeZone::system(),
            display_tz: TimeZone::system(),
            late_grace: Duration::from_secs(2),
            misfire_window: Duration::from_secs(60),
            lease_ttl: f.lease_ttl,
            renew_every: f.renew_every,
            holder: f.holder,
            firer_thread: true,
        }
    }
}

/// The running cron module.
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    opts: Options,
    bus: Bus,
    store: Store,
    clock: Arc<dyn Clock>,
    commands: mpsc::Sender<Command>,
    results: mpsc::Sender<PendingResult>,
    /// Tells the firer, before `start`/`stop`/`delete` answer, that a cron changed (see
    /// [`crate::gate`]).
    gate: Arc<Gate>,
    /// One start/stop/delete at a time, so the gate learns changes in their store order.
    operating: tokio::sync::Mutex<()>,
}

/// How many results wait for the result writer at most (the scheduler waits beyond that).
const RESULTS_WAITING: usize = 10_000;
/// How many results the writer stores in one transaction at most.
const RESULTS_PER_WRITE: usize = 2_000;
/// How often a failed result write is tried again, and the pause between tries.
const RESULT_WRITE_TRIES: u32 = 3;
const RESULT_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A result waiting to be stored, and who waits for it to be.
type PendingResult = (CronOutcome, oneshot::Sender<Result<(), ApiError>>);

/// Stores results as they arrive, all that are waiting in one transaction (a thousand crons
/// answering every second cost a few commits, not a thousand, and leave the write lock to the
/// firer most of the time). Each caller is answered once its result is stored, so the
/// scheduler acknowledges a result to its agent only when it is durable.
async fn write_results(store: Store, mut rx: mpsc::Receiver<PendingResult>) {
    let mut batch: Vec<PendingResult> = Vec::with_capacity(RESULTS_PER_WRITE);
    while rx.recv_many(&mut batch, RESULTS_PER_WRITE).await > 0 {
        let (outcomes, waiting): (Vec<CronOutcome>, Vec<_>) = batch.drain(..).unzip();
        let mut tries = 0;
        let answer = loop {
            tries += 1;
            match store.record_cron_results(&outcomes).await {
                Ok(stored) => {
                    let ignored = stored.iter().filter(|s| !**s).count();
                    if ignored > 0 {
                        tracing::debug!(
                            ignored,
                            "cron results for unknown or settled runs ignored"
                        );
                    }
                    break Ok(());
                }
                Err(e) if tries < RESULT_WRITE_TRIES => {
                    tracing::warn!(error = %e, results = outcomes.len(), "cron results not stored; trying again");
                    tokio::time::sleep(RESULT_RETRY_PAUSE).await;
                }
                // Not acknowledged, the results stay with their agents, which send them again.
                Err(e) => break Err(store_err(e)),
            }
        };
        for w in waiting {
            let _ = w.send(answer.clone());
        }
    }
}

fn store_err(e: elves_store::Error) -> ApiError {
    tracing::error!(error = %e, "cron store failure");
    ApiError::internal("cron store failure")
}

/// The name stored for a zone: its IANA name, or `UTC` for a zone without one.
fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("UTC").to_owned()
}

/// `yyyy-MM-dd HH:mm:ss` in `tz`.
pub fn format_time(ms: i64, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

fn instruct(row: &CronRow) -> Option<Instruct> {
    Some(Instruct {
        id: Id::parse(&row.id)?,
        ip: row.ip.clone(),
        kind: "cron".into(),
        mode: row.mode.clone(),
        app: row.app.clone(),
        func: row.func.clone(),
        param: row.param.clone(),
        timeout: u32::try_from(row.timeout).unwrap_or(0),
        proxy: row.proxy.clone(),
    })
}

/// Hands an instant's fires to the scheduler in one `AsyncJobs` message, encoded when they
/// are recorded (ahead of their instant).
struct ToScheduler {
    bus: Bus,
}

impl Dispatcher for ToScheduler {
    /// The number of jobs, and their message.
    type Prepared = (
        usize,
        Result<elves_bus::Prepared<AsyncJobs>, elves_bus::Error>,
    );

    fn prepare(&self, fires: &[Dispatch]) -> Self::Prepared {
        let jobs: Vec<AsyncJob> = fires
            .iter()
            .filter_map(|d| {
                Some(AsyncJob {
                    run_id: d.run_id,
                    instruct: instruct(&d.cron)?,
                    redelivery: false,
                })
            })
            .collect();
        (jobs.len(), self.bus.prepare_cast(&AsyncJobs { jobs }))
    }

    fn send(&self, (n, message): Self::Prepared) {
        if let Err(e) = message.and_then(|m| self.bus.cast_prepared(m)) {
            tracing::error!(fires = n, error = %e, "cron fires not sent");
        }
    }
}

impl Service {
    /// Offers the cron messages on `bus` and starts the firing loop until `cancel` fires (on
    /// its own thread unless [`Options::firer_thread`] is off). Must be called within a tokio
    /// runtime (the center's); fails only if the firer's thread cannot be started.
    pub fn start(
        opts: Options,
        bus: &Bus,
        store: Store,
        clock: Arc<dyn Clock>,
        cancel: CancellationToken,
    ) -> std::io::Result<Service> {
        let (tx, rx) = mpsc::channel(1024);
        let (results, results_rx) = mpsc::channel(RESULTS_WAITING);
        tokio::spawn(write_results(store.clone(), results_rx));
        let inner = Arc::new(Inner {
            opts,
            bus: bus.for_module(elves_rpc::module::CRON),
            store,
            clock,
            commands: tx,
            results,
            gate: Arc::new(Gate::new()),
            operating: tokio::sync::Mutex::new(()),
        });
        elves_bus::serve_methods!(inner.bus, inner;
            AddCron => add,
            OperateCron => operate,
            CronDetail => detail,
            CronList => list,
            CronOwner => owner,
            CronResult => on_done,
        );

        let o = &inner.opts;
        let fopts = FiringOptions {
            holder: o.holder.clone(),
            lease_ttl: o.lease_ttl,
            renew_every: o.renew_every,
            limits: Limits {
                late_grace_ms: o.late_grace.as_millis() as i64,
                misfire_window_ms: o.misfire_window.as_millis() as i64,
            },
            history: i64::from(o.history.max(1)),
            default_tz: o.default_tz.clone(),
            ..FiringOptions::default()
        };
        let dispatch = ToScheduler {
            bus: inner.bus.clone(),
        };
        let ledger = Arc::new(inner.store.clone());
        let (clock, gate) = (inner.clock.clone(), inner.gate.clone());
        if inner.opts.firer_thread {
            let runtime = tokio::runtime::Handle::current();
            firing::spawn_thread(runtime, fopts, ledger, clock, gate, rx, dispatch, cancel)?;
        } else {
            tokio::spawn(firing::run(
                fopts, ledger, clock, gate, rx, dispatch, cancel,
            ));
        }
        let me = inner.clone();
        tokio::spawn(async move { me.redeliver().await });
        Ok(Service { inner })
    }

    /// This process's name in the firer lease.
    pub fn holder(&self) -> &str {
        &self.inner.opts.holder
    }
}

impl Inner {
    fn tell(&self, c: Command) {
        // A full channel only delays the change until the firer's next re-read.
        let _ = self.commands.try_send(c);
    }

    async fn add(&self, m: AddCron) -> Result<Id, ApiError> {
        let schedule =
            Schedule::parse_quartz(m.rule.trim()).map_err(|_| ErrorCode::CronRuleIllegal)?;
        let tz = if m.tz.trim().is_empty() {
            self.opts.default_tz.clone()
        } else {
            TimeZone::get(m.tz.trim()).map_err(|_| ErrorCode::CronRuleIllegal)?
        };
        let misfire = Misfire::parse(&m.misfire).ok_or(ErrorCode::CronRuleIllegal)?;
        let now = self.clock.now_ms();
        let from = Timestamp::from_millisecond(now).map_err(ApiError::internal)?;
        if schedule.next_after(from, &tz).is_none() {
            return Err(ErrorCode::CronRuleIllegal.into());
        }
        let id = Id::random();
        let row = CronRow {
            id: id.to_string(),
            app: m.app,
            owner: m.owner,
            ip: m.ip,
            func: m.func,
            mode: m.mode,
            param: m.param,
            timeout: i64::from(m.timeout),
            proxy: m.proxy,
            rule: m.rule.trim().to_owned(),
            tz: zone_name(&tz),
            misfire: misfire.as_str().to_owned(),
            started: true,
            started_at_ms: now,
            last_fire_at_ms: None,
            created_at_ms: now,
            last: None,
        };
        self.store.create_cron(&row).await.map_err(store_err)?;
        self.tell(Command::Arm(Box::new(row)));
        Ok(id)
    }

    async fn operate(&self, m: OperateCron) -> Result<(), ApiError> {
        let id = Id::parse(m.cron_id.trim()).ok_or(ErrorCode::CronNotFound)?;
        let key = id.to_string();
        let _one_at_a_time = self.operating.lock().await;
        match m.action {
            CronAction::Start | CronAction::Stop => {
                let start = m.action == CronAction::Start;
                let now = self.clock.now_ms();
                let changed = self
                    .store
                    .set_cron_started(&key, start, now)
                    .await
                    .map_err(store_err)?
                    .ok_or(ErrorCode::CronNotFound)?;
                if changed {
                    let change = if start {
                        Change::Started { at_ms: now }
                    } else {
                        Change::Stopped
                    };
                    self.gate.changed(id, change);
                    if start {
                        if let Some(row) = self.store.cron(&key).await.map_err(store_err)? {
                            self.tell(Command::Arm(Box::new(row)));
                        }
                    } else {
                        self.tell(Command::Disarm(id));
                    }
                }
                Ok(())
            }
            CronAction::Delete => {
                if !self.store.delete_cron(&key).await.map_err(store_err)? {
                    return Err(ErrorCode::CronNotFound.into());
                }
                self.gate.changed(id, Change::Stopped);
                self.tell(Command::Disarm(id));
                Ok(())
            }
        }
    }

    async fn detail(&self, m: CronDetail) -> Result<Value, ApiError> {
        let id = Id::parse(m.cron_id.trim()).ok_or(ErrorCode::CronNotFound)?;
        let row = self
            .store
            .cron(id.as_str())
            .await
            .map_err(store_err)?
            .ok_or(ErrorCode::CronNotFound)?;
        Ok(self.detail_json(&row))
    }

    fn detail_json(&self, row: &CronRow) -> Value {
        let show = |ms: i64| format_time(ms, &self.opts.display_tz);
        let next = if row.started {
            let tz = TimeZone::get(&row.tz).unwrap_or_else(|_| self.opts.default_tz.clone());
            let now = self.clock.now_ms();
            // Never before the newest recorded fire nor the start.
            let after = row
                .last_fire_at_ms
                .unwrap_or(i64::MIN)
                .max(row.started_at_ms)
                .max(now);
            Schedule::parse_quartz(&row.rule)
                .ok()
                .zip(Timestamp::from_millisecond(after).ok())
                .and_then(|(s, t)| s.next_after(t, &tz))
                .map(|t| show(t.as_millisecond()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let (last_time, last_result) = match &row.last {
            Some(l) => (
                show(l.at_ms),
                json!({
                    "flag": if l.flag { "true" } else { "false" },
                    "error": l.error,
                    "result": {
                        "worker_flag": l.worker_flag,
                        "worker_message": l.worker_message,
                        "worker_costtime": l.worker_costtime,
                    }
                }),
            ),
            None => (String::new(), json!({})),
        };
        json!({
            "ip": row.ip,
            "app": row.app,
            "func": row.func,
            "param": row.param,
            "mode": row.mode,
            "proxy": row.proxy,
            "timeout": row.timeout,
            "rule": row.rule,
            "cron_flag": i32::from(row.started),
            "create_time": show(row.created_at_ms),
            "last_exec_time": last_time,
            "last_exec_result": last_result,
            "tz": row.tz,
            "misfire": row.misfire,
            "next_fire_time": next,
        })
    }

    async fn list(&self, m: CronList) -> Result<Vec<Id>, ApiError> {
        let ids = self
            .store
            .crons_of(m.app.as_deref(), m.ip.as_deref())
            .await
            .map_err(store_err)?;
        Ok(ids.iter().filter_map(|i| Id::parse(i)).collect())
    }

    async fn owner(&self, m: CronOwner) -> Result<Option<(String, String)>, ApiError> {
        let Some(id) = Id::parse(m.cron_id.trim()) else {
            return Ok(None);
        };
        Ok(self
            .store
            .cron(id.as_str())
            .await
            .map_err(store_err)?
            .map(|r| (r.owner, r.app)))
    }

    async fn on_done(&self, m: CronResult) -> Result<(), ApiError> {
        let Done {
            run_id, outcome, ..
        } = m.0;
        let at_ms = self.clock.now_ms();
        let out = match outcome {
            Ok(o) => CronOutcome {
                run_id: run_id.to_string(),
                at_ms,
                flag: true,
                error: String::new(),
                worker_flag: i64::from(o.flag),
                worker_message: o.message,
                worker_costtime: o.costtime_ms,
            },
            Err(e) => CronOutcome {
                run_id: run_id.to_string(),
                at_ms,
                flag: false,
                error: e.to_string(),
                worker_flag: -1,
                worker_message: String::new(),
                worker_costtime: 0,
            },
        };
        let stopped = || ApiError::internal("the cron result writer stopped");
        let (tx, rx) = oneshot::channel();
        self.results.send((out, tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Offers every recent run that was dispatched but has no result to its agent again under
    /// the same run id (the agent may have lost it, or its result, over a restart). Runs
    /// recorded but never dispatched are the firer's to judge (its take-over).
    async fn redeliver(&self) {
        let since = self.clock.now_ms() - REDELIVER_WITHIN_MS;
        let runs = match self
            .store
            .unfinished_cron_runs(since, REDELIVER_LIMIT)
            .await
        {
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %e, "cron redelivery skipped"),
        };
        for run in runs {
            let (Some(run_id), Ok(Some(row))) =
                (Id::parse(&run.run_id), self.store.cron(&run.cron_id).await)
            else {
                continue;
            };
            let Some(instruct) = instruct(&row) else {
                continue;
            };
            let _ = self.bus.cast(AsyncJob {
                run_id,
                instruct,
                redelivery: true,
            });
        }
    }
}
