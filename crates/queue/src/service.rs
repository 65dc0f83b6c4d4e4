//! The queue module: persists each transition of the [`machine`](crate::machine), then
//! carries out its effects through the scheduler.
//!
//! * Every transition runs under the queue's lock on the module's copy of the queue: apply →
//!   save **only the tasks the transition changed** (with the queue's version, so a concurrent
//!   writer in another process makes this one reload and retry) → effects. A task is `running`
//!   with its run id in the store before it is sent. The copy is taken out of its slot while a
//!   transition runs and put back only once the save succeeded, so a failed or abandoned save
//!   leaves no copy that differs from the store: the next transition reloads. Queues are kept
//!   in memory while they are pending or running (at most [`MAX_SLOTS`] slots; idle ones beyond
//!   that are dropped and reloaded when needed); the store stays the source of truth.
//! * Results come back as [`TaskResult`] calls; answering `Ok` tells the agent it may forget
//!   its spooled copy, so a result is acknowledged only once it is stored. A result for an
//!   unknown or already settled run changes nothing (de-duplication by run id). Results of
//!   one queue that arrive while its previous transition is being saved wait in the queue's
//!   inbox and are then stored together, in one transition and one transaction (group
//!   commit), each answered only after that save.
//! * Reconciliation: at start and then periodically, every task still `running` is offered to
//!   its agent again under the same run id (`redelivery`); the agent runs it only if it never
//!   got it, and otherwise re-sends its spooled result. Nothing is dispatched twice and
//!   nothing is forgotten.
//! * Reconnection: when an agent links (again), the gateway casts [`AgentLinked`] and that
//!   agent's running tasks are offered to it again at once, the same way.
//! * Give-up: a running task whose agent has not been heard of for [`Options::give_up`]
//!   (its registry entry's last heartbeat or link is older) finishes with
//!   `[410.1]Send Job To Agent Fail`, `worker_flag` -1 and a `worker_message` saying so; its
//!   dependants are stopped. Checked at each maintenance pass.
//! * Retention: finished and stopped queues are purged after [`Options::retention`], in
//!   bounded batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elves_bus::Bus;
use elves_rpc::done::{Done, TaskResult as TaskDone};
use elves_rpc::gateway::Instruct;
use elves_rpc::queue::{
    AddTask, AgentLinked, CommitQueue, CreateQueue, QueueOwner, QueueResult, StopQueue, TaskSpec,
};
use elves_rpc::scheduler::{AsyncJob, CancelRun};
use elves_store::{QueueRow, Store, TaskRow};
use elves_types::{ApiError, Clock, ErrorCode, Id, SystemClock};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::machine::{
    Effect, Queue, QueueStatus, Task, TaskResult, TaskStatus, result_text, statuses_json,
};

/// How often a transition is retried when another writer saved the queue first.
const SAVE_RETRIES: usize = 8;
/// How long a cancel may take.
const CANCEL_WAIT: Duration = Duration::from_secs(6);
/// How many running tasks of one agent are offered again at once when it links.
const RELINK_BATCH: i64 = 10_000;
/// How many queues one purge pass deletes at most.
const PURGE_BATCH: i64 = 500;
/// The most tasks one queue may hold.
pub const MAX_TASKS: usize = 10_000;
/// How many queues the module keeps a slot (lock and in-memory copy) for before idle ones are
/// dropped.
pub const MAX_SLOTS: usize = 1024;
/// How many run id → queue id entries are remembered; beyond, a result finds its queue
/// through the store's run-id index.
const MAX_RUNS: usize = 200_000;

/// A queue's lock and, while it is pending or running, the module's copy of it.
type Slot = Arc<tokio::sync::Mutex<Option<Loaded>>>;

/// What a transition can change in a task, compared before and after it (cheap to copy, so a
/// transition costs no clone of the queue).
type Mark = (TaskStatus, Option<Id>, bool, usize);

fn mark(t: &Task) -> Mark {
    (t.status, t.run_id, t.result.is_some(), t.error.len())
}

/// An effect of a transition with what is needed to carry it out.
struct Planned {
    effect: Effect,
    instruct: Option<Instruct>,
}

/// The queue module's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long finished queues are kept (default 7 days).
    pub retention: Duration,
    /// How often running tasks are reconciled with their agents and old queues purged.
    pub maintenance_every: Duration,
    /// A running task whose agent has not been heard of (no link, no heartbeat) for this long
    /// is given up: it finishes with `[410.1]` and `worker_flag` -1, and its dependants are
    /// stopped (default 1 hour).
    pub give_up: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention: Duration::from_secs(7 * 86_400),
            maintenance_every: Duration::from_secs(60),
            give_up: Duration::from_secs(3600),
        }
    }
}

/// The running queue module.
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    opts: Options,
    bus: Bus,
    store: Store,
    clock: Arc<dyn Clock>,
    /// When the module started: an agent is not given up before `give_up` has passed since
    /// (the center's own downtime does not count against it).
    started_ms: i64,
    slots: Mutex<HashMap<Id, Slot>>,
    /// Run id → queue id of the runs dispatched by this process.
    runs: Mutex<HashMap<Id, Id>>,
    /// Per queue, the results waiting to be stored (see [`Inner::store_results`]).
    inbox: Mutex<HashMap<Id, Vec<Arrived>>>,
}

/// A result waiting in its queue's inbox, and where to answer once it is stored.
struct Arrived {
    run_id: Id,
    /// `None`: the run could not be delivered.
    result: Option<TaskResult>,
    done: tokio::sync::oneshot::Sender<Result<(), ApiError>>,
}

fn store_err(e: elves_store::Error) -> ApiError {
    tracing::error!(error = %e, "queue store failure");
    ApiError::internal("queue store failure")
}

/// Whether the module keeps its copy of the queue after a transition: pending, running, or
/// stopped with a task still running (a cancel that failed).
fn is_live(q: &Queue) -> bool {
    match q.status {
        QueueStatus::Pendding | QueueStatus::Running => true,
        QueueStatus::Finish => false,
        QueueStatus::Stopped => q.tasks.iter().any(|t| t.status == TaskStatus::Running),
    }
}

/// A task's job, as stored beside its machine state.
#[derive(Clone)]
struct Job {
    spec: TaskSpec,
    seq: i64,
    created_at_ms: i64,
    finished_at_ms: Option<i64>,
}

/// A queue loaded from the store.
struct Loaded {
    row: QueueRow,
    queue: Queue,
    jobs: HashMap<Id, Job>,
}

fn parse_id(s: &str) -> Option<Id> {
    Id::parse(s)
}

fn to_machine(row: &QueueRow, tasks: &[TaskRow]) -> Result<Loaded, ApiError> {
    let bad = || ApiError::internal("a stored queue is malformed");
    let id = parse_id(&row.id).ok_or_else(bad)?;
    let mut queue = Queue::new(id, row.app.clone());
    queue.status = QueueStatus::parse(&row.status).ok_or_else(bad)?;
    let mut jobs = HashMap::new();
    for t in tasks {
        let tid = parse_id(&t.id).ok_or_else(bad)?;
        let result = t.result_flag.map(|flag| TaskResult {
            flag,
            error: t.result_error.clone(),
            worker_flag: t.worker_flag.map(|f| f as i32),
            worker_message: t.worker_message.clone(),
            worker_costtime: t.worker_costtime,
        });
        queue.tasks.push(Task {
            id: tid,
            depend_on: t.depend_on.as_deref().and_then(parse_id),
            status: TaskStatus::parse(&t.status).ok_or_else(bad)?,
            run_id: t.run_id.as_deref().and_then(parse_id),
            error: t.error.clone(),
            result,
        });
        let spec = TaskSpec {
            ip: t.ip.clone(),
            func: t.func.clone(),
            mode: t.mode.clone(),
            param: t.param.clone(),
            timeout: t.timeout as u32,
            proxy: t.proxy.clone(),
            depend_task_id: t.depend_on.clone().unwrap_or_default(),
        };
        jobs.insert(
            tid,
            Job {
                spec,
                seq: t.seq,
                created_at_ms: t.created_at_ms,
                finished_at_ms: t.finished_at_ms,
            },
        );
    }
    Ok(Loaded {
        row: row.clone(),
        queue,
        jobs,
    })
}

fn to_row(queue_id: Id, t: &Task, job: &Job) -> TaskRow {
    let r = t.result.as_ref();
    TaskRow {
        id: t.id.to_string(),
        queue_id: queue_id.to_string(),
        seq: job.seq,
        ip: job.spec.ip.clone(),
        mode: job.spec.mode.clone(),
        func: job.spec.func.clone(),
        param: job.spec.param.clone(),
        timeout: i64::from(job.spec.timeout),
        proxy: job.spec.proxy.clone(),
        depend_on: t.depend_on.map(|d| d.to_string()),
        status: t.status.as_str().to_owned(),
        run_id: t.run_id.map(|r| r.to_string()),
        error: t.error.clone(),
        result_flag: r.map(|r| r.flag),
        result_error: r.map(|r| r.error.clone()).unwrap_or_default(),
        worker_flag: r.and_then(|r| r.worker_flag).map(i64::from),
        worker_message: r.map(|r| r.worker_message.clone()).unwrap_or_default(),
        worker_costtime: r.and_then(|r| r.worker_costtime),
        created_at_ms: job.created_at_ms,
        finished_at_ms: job.finished_at_ms,
    }
}

impl Service {
    /// Offers the queue messages on `bus` and starts the maintenance loop (reconciliation,
    /// retention) until `cancel` fires.
    pub fn start(opts: Options, bus: &Bus, store: Store, cancel: CancellationToken) -> Service {
        let inner = Arc::new(Inner {
            opts,
            bus: bus.for_module(elves_rpc::module::QUEUE),
            store,
            clock: Arc::new(SystemClock),
            started_ms: SystemClock.now_ms(),
            slots: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
            inbox: Mutex::new(HashMap::new()),
        });
        elves_bus::serve_methods!(inner.bus, inner;
            CreateQueue => create,
            AddTask => add_task,
            CommitQueue => commit,
            StopQueue => stop,
            QueueResult => result,
            QueueOwner => owner,
            TaskDone => on_done,
            AgentLinked => on_agent_linked,
        );
        let me = inner.clone();
        tokio::spawn(async move { me.maintain(cancel).await });
        Service { inner }
    }

    /// Reconciles running tasks with their agents once (also done periodically).
    pub async fn reconcile(&self) {
        self.inner.reconcile().await;
    }
}

impl Inner {
    fn slot_of(&self, id: Id) -> Slot {
        let mut slots = self.slots.lock().expect("queue slots poisoned");
        if slots.len() >= MAX_SLOTS && !slots.contains_key(&id) {
            // First the idle slots without a live queue, then, if that is not enough, every idle
            // slot (its queue is reloaded from the store when needed).
            slots.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.try_lock()
                        .map(|g| g.as_ref().is_some_and(|l| is_live(&l.queue)))
                        .unwrap_or(true)
            });
            if slots.len() >= MAX_SLOTS {
                slots.retain(|_, s| Arc::strong_count(s) > 1);
            }
        }
        slots.entry(id).or_default().clone()
    }

    fn remember_runs(&self, qid: Id, planned: &[Planned]) {
        let mut runs = self.runs.lock().expect("queue runs poisoned");
        for p in planned {
            if let Effect::Dispatch { run_id, .. } = p.effect {
                if runs.len() >= MAX_RUNS {
                    runs.clear();
                }
                runs.insert(run_id, qid);
            }
        }
    }

    async fn load(&self, id: Id) -> Result<Option<Loaded>, ApiError> {
        match self.store.queue(id.as_str()).await.map_err(store_err)? {
            Some((row, tasks)) => Ok(Some(to_machine(&row, &tasks)?)),
            None => Ok(None),
        }
    }

    /// Runs one transition on the module's copy of the queue (loaded when there is none):
    /// apply `f`, save the queue row and the tasks `f` changed, return `f`'s value and the
    /// effects with what is needed to carry them out.
    async fn transact<R>(
        &self,
        id: Id,
        f: impl FnMut(&mut Loaded, i64) -> Result<(R, Vec<Effect>), ApiError>,
    ) -> Result<(R, Vec<Planned>), ApiError> {
        let slot = self.slot_of(id);
        let mut guard = slot.lock().await;
        self.transact_locked(id, &mut guard, f).await
    }

    /// [`Inner::transact`] with the queue's slot already locked.
    async fn transact_locked<R>(
        &self,
        id: Id,
        guard: &mut Option<Loaded>,
        mut f: impl FnMut(&mut Loaded, i64) -> Result<(R, Vec<Effect>), ApiError>,
    ) -> Result<(R, Vec<Planned>), ApiError> {
        for attempt in 0..SAVE_RETRIES {
            // Taken out: put back only after a successful save (or a refused command, which
            // changes nothing).
            let cached = if attempt == 0 { guard.take() } else { None };
            let mut loaded = match cached {
                Some(l) => l,
                None => self.load(id).await?.ok_or(ErrorCode::QueueNotFound)?,
            };
            let before_status = loaded.queue.status;
            let marks: Vec<Mark> = loaded.queue.tasks.iter().map(mark).collect();
            let now = self.clock.now_ms();
            let (value, effects) = match f(&mut loaded, now) {
                Ok(v) => v,
                Err(e) => {
                    *guard = Some(loaded);
                    return Err(e);
                }
            };
            let changed: Vec<usize> = (0..loaded.queue.tasks.len())
                .filter(|&i| marks.get(i) != Some(&mark(&loaded.queue.tasks[i])))
                .collect();
            if changed.is_empty() && loaded.queue.status == before_status {
                let planned = self.plan(&loaded, effects);
                *guard = Some(loaded);
                return Ok((value, planned));
            }
            // Record times of what the transition settled.
            for &i in &changed {
                let t = &loaded.queue.tasks[i];
                if t.status.is_terminal()
                    && marks.get(i).map(|m| m.0) != Some(t.status)
                    && let Some(j) = loaded.jobs.get_mut(&t.id)
                {
                    j.finished_at_ms = Some(now);
                }
            }
            let mut row = loaded.row.clone();
            row.status = loaded.queue.status.as_str().to_owned();
            if before_status == QueueStatus::Pendding
                && loaded.queue.status != QueueStatus::Pendding
            {
                row.committed_at_ms = Some(now);
            }
            if matches!(
                loaded.queue.status,
                QueueStatus::Finish | QueueStatus::Stopped
            ) && row.finished_at_ms.is_none()
            {
                row.finished_at_ms = Some(now);
            }
            let rows: Vec<TaskRow> = changed
                .iter()
                .map(|&i| &loaded.queue.tasks[i])
                .filter_map(|t| loaded.jobs.get(&t.id).map(|j| to_row(id, t, j)))
                .collect();
            let saved = self
                .store
                .save_queue(&row, &rows, loaded.row.version)
                .await
                .map_err(store_err)?;
            if saved {
                row.version = loaded.row.version + 1;
                loaded.row = row;
                let planned = self.plan(&loaded, effects);
                self.remember_runs(id, &planned);
                if is_live(&loaded.queue) {
                    *guard = Some(loaded);
                }
                return Ok((value, planned));
            }
            tracing::debug!(queue = %id, "queue saved concurrently; reloading and retrying the transition");
        }
        Err(ApiError::internal("the queue is too busy; try again"))
    }

    fn plan(&self, loaded: &Loaded, effects: Vec<Effect>) -> Vec<Planned> {
        effects
            .into_iter()
            .map(|effect| {
                let task = match effect {
                    Effect::Dispatch { task, .. } | Effect::Cancel { task, .. } => task,
                };
                Planned {
                    effect,
                    instruct: self.instruct(loaded, task),
                }
            })
            .collect()
    }

    fn instruct(&self, loaded: &Loaded, task: Id) -> Option<Instruct> {
        let job = loaded.jobs.get(&task)?;
        Some(Instruct {
            id: task,
            ip: job.spec.ip.clone(),
            kind: "queue".into(),
            mode: job.spec.mode.clone(),
            app: loaded.queue.app.clone(),
            func: job.spec.func.clone(),
            param: job.spec.param.clone(),
            timeout: job.spec.timeout,
            proxy: job.spec.proxy.clone(),
        })
    }

    /// Carries out dispatches (casts); cancels are handled by `stop`.
    fn dispatch(&self, planned: Vec<Planned>) {
        for p in planned {
            if let (Effect::Dispatch { run_id, .. }, Some(instruct)) = (p.effect, p.instruct)
                && let Err(err) = self.bus.cast(AsyncJob {
                    run_id,
                    instruct,
                    redelivery: false,
                })
            {
                // Stays `running`; reconciliation offers it again.
                tracing::error!(%run_id, error = %err, "dispatch not sent");
            }
        }
    }

    async fn create(&self, m: CreateQueue) -> Result<Id, ApiError> {
        let id = Id::random();
        let row = QueueRow {
            id: id.to_string(),
            app: m.app,
            owner: m.owner,
            status: QueueStatus::Pendding.as_str().into(),
            version: 0,
            created_at_ms: self.clock.now_ms(),
            committed_at_ms: None,
            finished_at_ms: None,
        };
        self.store.create_queue(&row).await.map_err(store_err)?;
        Ok(id)
    }

    async fn add_task(&self, m: AddTask) -> Result<Id, ApiError> {
        let qid = parse_id(&m.queue_id).ok_or(ErrorCode::QueueNotFound)?;
        let depend = if m.task.depend_task_id.trim().is_empty() {
            None
        } else {
            Some(parse_id(m.task.depend_task_id.trim()).ok_or(ErrorCode::DependTaskNotFound)?)
        };
        let task_id = Id::random();
        let spec = m.task;
        let (id, _) = self
            .transact(qid, |l, now| {
                if l.queue.tasks.len() >= MAX_TASKS && l.queue.status == QueueStatus::Pendding {
                    return Err(ApiError::internal(format!(
                        "a queue holds at most {MAX_TASKS} tasks"
                    )));
                }
                l.queue.add_task(task_id, depend)?;
                let seq = l.queue.tasks.len() as i64;
                l.jobs.insert(
                    task_id,
                    Job {
                        spec: spec.clone(),
                        seq,
                        created_at_ms: now,
                        finished_at_ms: None,
                    },
                );
                Ok((task_id, Vec::new()))
            })
            .await?;
        Ok(id)
    }

    async fn commit(&self, m: CommitQueue) -> Result<(), ApiError> {
        let qid = parse_id(&m.queue_id).ok_or(ErrorCode::QueueNotFound)?;
        let (_, planned) = self
            .transact(qid, |l, _| {
                let effects = l.queue.commit(&mut Id::random)?;
                Ok(((), effects))
            })
            .await?;
        self.dispatch(planned);
        Ok(())
    }

    async fn stop(&self, m: StopQueue) -> Result<Value, ApiError> {
        let qid = parse_id(&m.queue_id).ok_or(ErrorCode::QueueNotFound)?;
        let (reply, planned) = self
            .transact(qid, |l, _| {
                let effects = l.queue.stop();
                Ok((statuses_json(&l.queue), effects))
            })
            .await?;
        // Cancel the running tasks on their agents, all at once, each bounded.
        let cancels = planned.into_iter().filter_map(|p| match p.effect {
            Effect::Cancel { run_id, .. } => {
                let ip = p.instruct?.ip;
                Some(async move {
                    let ok = matches!(
                        self.bus.call(CancelRun { run_id, ip }, CANCEL_WAIT).await,
                        Ok(Ok(true))
                    );
                    (run_id, ok)
                })
            }
            Effect::Dispatch { .. } => None,
        });
        let answers = futures::future::join_all(cancels).await;
        if answers.is_empty() {
            return Ok(reply);
        }
        let (reply, _) = self
            .transact(qid, |l, _| {
                for (run_id, ok) in &answers {
                    l.queue.on_cancel_result(*run_id, *ok);
                }
                Ok((statuses_json(&l.queue), Vec::new()))
            })
            .await?;
        Ok(reply)
    }

    async fn result(&self, m: QueueResult) -> Result<Box<RawValue>, ApiError> {
        let text = |q: &Queue| {
            result_text(q).map_err(|e| ApiError::internal(format!("queue result: {e}")))
        };
        let qid = parse_id(&m.queue_id).ok_or(ErrorCode::QueueNotFound)?;
        let slot = self.slot_of(qid);
        let guard = slot.lock().await;
        if let Some(l) = guard.as_ref() {
            // The copy is used only while it is the stored version (another process may
            // have saved the queue since).
            match self
                .store
                .queue_version(qid.as_str())
                .await
                .map_err(store_err)?
            {
                Some(v) if v == l.row.version => return text(&l.queue),
                None => return Err(ErrorCode::QueueNotFound.into()),
                Some(_) => {}
            }
        }
        drop(guard);
        let loaded = self.load(qid).await?.ok_or(ErrorCode::QueueNotFound)?;
        text(&loaded.queue)
    }

    async fn owner(&self, m: QueueOwner) -> Result<Option<String>, ApiError> {
        let Some(qid) = parse_id(&m.queue_id) else {
            return Ok(None);
        };
        Ok(self
            .store
            .queue_row(qid.as_str())
            .await
            .map_err(store_err)?
            .map(|row| row.app))
    }

    async fn on_done(&self, m: TaskDone) -> Result<(), ApiError> {
        let Done {
            run_id, outcome, ..
        } = m.0;
        let known = self
            .runs
            .lock()
            .expect("queue runs poisoned")
            .get(&run_id)
            .copied();
        let qid = match known {
            Some(q) => q,
            None => {
                let Some(q) = self
                    .store
                    .queue_of_run(run_id.as_str())
                    .await
                    .map_err(store_err)?
                    .as_deref()
                    .and_then(parse_id)
                else {
                    tracing::debug!(%run_id, "result for an unknown run ignored");
                    return Ok(());
                };
                q
            }
        };
        let result = match outcome {
            Ok(o) => Some(TaskResult {
                flag: true,
                error: String::new(),
                worker_flag: Some(o.flag),
                worker_message: o.message,
                worker_costtime: Some(o.costtime_ms),
            }),
            Err(_) => None,
        };
        // Into the queue's inbox; whoever holds the queue next stores every result waiting
        // there in one transaction (group commit) and answers each. Each entry is a bus call
        // still waiting for its answer, so the inbox is bounded by the bus's handler
        // concurrency (`elves_bus::MAX_IN_FLIGHT`).
        let (done, stored) = tokio::sync::oneshot::channel();
        self.inbox
            .lock()
            .expect("queue inbox poisoned")
            .entry(qid)
            .or_default()
            .push(Arrived {
                run_id,
                result,
                done,
            });
        self.store_results(qid).await;
        stored
            .await
            .unwrap_or_else(|_| Err(ApiError::internal("the result was not stored")))
    }

    /// Stores the results waiting in the queue's inbox in one transaction, then answers each
    /// (`Ok` once stored) and dispatches what they unblocked. Nothing to do when another call
    /// took them first.
    async fn store_results(&self, qid: Id) {
        let slot = self.slot_of(qid);
        let mut guard = slot.lock().await;
        let batch = self
            .inbox
            .lock()
            .expect("queue inbox poisoned")
            .remove(&qid)
            .unwrap_or_default();
        if batch.is_empty() {
            return;
        }
        let saved = self
            .transact_locked(qid, &mut guard, |l, _| {
                let mut effects = Vec::new();
                for a in &batch {
                    match &a.result {
                        Some(r) => {
                            effects.extend(l.queue.on_result(a.run_id, r.clone(), &mut Id::random))
                        }
                        None => l.queue.on_delivery_failed(a.run_id),
                    }
                }
                Ok(((), effects))
            })
            .await;
        drop(guard);
        match saved {
            Ok(((), planned)) => {
                {
                    let mut runs = self.runs.lock().expect("queue runs poisoned");
                    for a in &batch {
                        runs.remove(&a.run_id);
                    }
                }
                for a in batch {
                    let _ = a.done.send(Ok(()));
                }
                self.dispatch(planned);
            }
            Err(e) => {
                for a in batch {
                    let _ = a.done.send(Err(e.clone()));
                }
            }
        }
    }

    /// An agent linked: offer it its running tasks again at once.
    async fn on_agent_linked(&self, m: AgentLinked) {
        let rows = match self.store.running_tasks_on(&m.ip, RELINK_BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                return tracing::warn!(ip = %m.ip, error = %e, "reconciliation on link skipped");
            }
        };
        let mut apps: HashMap<String, Option<String>> = HashMap::new();
        for t in rows {
            if !apps.contains_key(&t.queue_id) {
                let app = match self.store.queue_row(&t.queue_id).await {
                    Ok(row) => row.map(|r| r.app),
                    Err(e) => {
                        tracing::warn!(queue = %t.queue_id, error = %e, "reconciliation on link: queue unreadable");
                        None
                    }
                };
                apps.insert(t.queue_id.clone(), app);
            }
            let (Some(Some(app)), Some(run_id), Some(id)) = (
                apps.get(&t.queue_id),
                t.run_id.as_deref().and_then(parse_id),
                parse_id(&t.id),
            ) else {
                continue;
            };
            let instruct = Instruct {
                id,
                ip: t.ip,
                kind: "queue".into(),
                mode: t.mode,
                app: app.clone(),
                func: t.func,
                param: t.param,
                timeout: u32::try_from(t.timeout).unwrap_or(0),
                proxy: t.proxy,
            };
            tracing::debug!(%run_id, ip = %m.ip, "running task offered again to its relinked agent");
            let _ = self.bus.cast(AsyncJob {
                run_id,
                instruct,
                redelivery: true,
            });
        }
    }

    /// Gives up the running tasks of agents not heard of for [`Options::give_up`].
    async fn give_up(&self) {
        let ips = match self.store.running_task_ips().await {
            Ok(ips) => ips,
            Err(e) => return tracing::warn!(error = %e, "give-up pass skipped"),
        };
        let now = self.clock.now_ms();
        let limit_ms = i64::try_from(self.opts.give_up.as_millis()).unwrap_or(i64::MAX);
        for ip in ips {
            let last = match self.store.agent(&ip).await {
                Ok(a) => a.map_or(0, |a| a.last_heartbeat_ms).max(self.started_ms),
                Err(e) => {
                    tracing::warn!(%ip, error = %e, "give-up: agent unreadable");
                    continue;
                }
            };
            if now.saturating_sub(last) < limit_ms {
                continue;
            }
            let why = format!(
                "given up: agent {ip} not heard of for {} s (queue.give_up_secs)",
                self.opts.give_up.as_secs()
            );
            let rows = match self.store.running_tasks_on(&ip, RELINK_BATCH).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(%ip, error = %e, "give-up: tasks unreadable");
                    continue;
                }
            };
            for t in rows {
                let (Some(qid), Some(run_id)) = (
                    parse_id(&t.queue_id),
                    t.run_id.as_deref().and_then(parse_id),
                ) else {
                    continue;
                };
                tracing::warn!(%run_id, %ip, "running task given up: its agent did not come back");
                let done = self
                    .transact(qid, |l, _| {
                        l.queue.on_given_up(run_id, &why);
                        Ok(((), Vec::new()))
                    })
                    .await;
                if let Err(e) = done {
                    tracing::warn!(%run_id, error = %e, "give-up not recorded");
                }
            }
        }
    }

    /// Offers every running task to its agent again under the same run id.
    async fn reconcile(&self) {
        let ids = match self.store.queues_with_running_tasks().await {
            Ok(ids) => ids,
            Err(e) => return tracing::warn!(error = %e, "reconciliation skipped"),
        };
        for id in ids.iter().filter_map(|i| parse_id(i)) {
            let Ok(Some(loaded)) = self.load(id).await else {
                continue;
            };
            for t in loaded
                .queue
                .tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Running)
            {
                let (Some(run_id), Some(instruct)) = (t.run_id, self.instruct(&loaded, t.id))
                else {
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

    async fn maintain(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.opts.maintenance_every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            self.reconcile().await;
            self.give_up().await;
            let before = self.clock.now_ms() - self.opts.retention.as_millis() as i64;
            loop {
                match self.store.purge_queues(before, PURGE_BATCH).await {
                    Ok(n) if n as i64 == PURGE_BATCH => tokio::task::yield_now().await,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "purging old queues failed");
                        break;
                    }
                }
            }
        }
    }
}
