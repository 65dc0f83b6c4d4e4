//! The queue module: persists each transition of the [`machine`](crate::machine), then
//! carries out its effects through the scheduler.
//!
//! * Every transition runs under the queue's lock: load → apply → save (with the queue's
//!   version, so a concurrent writer in another process makes this one retry) → effects. A task
//!   is `running` with its run id in the store before it is sent.
//! * Results come back as [`TaskResult`] calls; answering `Ok` tells the agent it may forget
//!   its spooled copy, so a result is acknowledged only once it is stored. A result for an
//!   unknown or already settled run changes nothing (de-duplication by run id).
//! * Reconciliation: at start and then periodically, every task still `running` is offered to
//!   its agent again under the same run id (`redelivery`); the agent runs it only if it never
//!   got it, and otherwise re-sends its spooled result. Nothing is dispatched twice and
//!   nothing is forgotten.
//! * Retention: finished and stopped queues are purged after [`Options::retention`], in
//!   bounded batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elves_bus::Bus;
use elves_rpc::done::{Done, TaskResult as TaskDone};
use elves_rpc::gateway::Instruct;
use elves_rpc::queue::{
    AddTask, CommitQueue, CreateQueue, QueueOwner, QueueResult, StopQueue, TaskSpec,
};
use elves_rpc::scheduler::{AsyncJob, CancelRun};
use elves_store::{QueueRow, Store, TaskRow};
use elves_types::{ApiError, Clock, ErrorCode, Id, SystemClock};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::machine::{
    Effect, Queue, QueueStatus, Task, TaskResult, TaskStatus, result_json, statuses_json,
};

/// How often a transition is retried when another writer saved the queue first.
const SAVE_RETRIES: usize = 8;
/// How long a cancel may take.
const CANCEL_WAIT: Duration = Duration::from_secs(6);
/// How many queues one purge pass deletes at most.
const PURGE_BATCH: i64 = 500;
/// The most tasks one queue may hold.
pub const MAX_TASKS: usize = 10_000;

/// The queue module's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long finished queues are kept (default 7 days).
    pub retention: Duration,
    /// How often running tasks are reconciled with their agents and old queues purged.
    pub maintenance_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention: Duration::from_secs(7 * 86_400),
            maintenance_every: Duration::from_secs(60),
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
    locks: Mutex<HashMap<Id, Arc<tokio::sync::Mutex<()>>>>,
}

fn store_err(e: elves_store::Error) -> ApiError {
    tracing::error!(error = %e, "queue store failure");
    ApiError::internal("queue store failure")
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
            locks: Mutex::new(HashMap::new()),
        });
        macro_rules! serve {
            ($msg:ty, $method:ident) => {{
                let me = inner.clone();
                inner.bus.serve(move |m: $msg| {
                    let me = me.clone();
                    async move { me.$method(m).await }
                });
            }};
        }
        serve!(CreateQueue, create);
        serve!(AddTask, add_task);
        serve!(CommitQueue, commit);
        serve!(StopQueue, stop);
        serve!(QueueResult, result);
        serve!(QueueOwner, owner);
        serve!(TaskDone, on_done);
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
    fn lock_of(&self, id: Id) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("queue locks poisoned");
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(id).or_default().clone()
    }

    async fn load(&self, id: Id) -> Result<Option<Loaded>, ApiError> {
        match self.store.queue(id.as_str()).await.map_err(store_err)? {
            Some((row, tasks)) => Ok(Some(to_machine(&row, &tasks)?)),
            None => Ok(None),
        }
    }

    /// Runs one transition: load, apply `f`, save what changed, return `f`'s value and effects.
    async fn transact<R>(
        &self,
        id: Id,
        mut f: impl FnMut(&mut Loaded, i64) -> Result<(R, Vec<Effect>), ApiError>,
    ) -> Result<(R, Vec<Effect>, Loaded), ApiError> {
        let lock = self.lock_of(id);
        let _guard = lock.lock().await;
        for _ in 0..SAVE_RETRIES {
            let Some(mut loaded) = self.load(id).await? else {
                return Err(ErrorCode::QueueNotFound.into());
            };
            let before = loaded.queue.clone();
            let now = self.clock.now_ms();
            let (value, effects) = f(&mut loaded, now)?;
            if loaded.queue == before {
                return Ok((value, effects, loaded));
            }
            // Tasks are only ever appended, so the same position holds the same task before
            // and after a transition (a linear diff, not a search per task).
            // Record times of what the transition settled.
            for (i, t) in loaded.queue.tasks.iter().enumerate() {
                let was = before.tasks.get(i).map(|b| b.status);
                if t.status.is_terminal()
                    && was != Some(t.status)
                    && let Some(j) = loaded.jobs.get_mut(&t.id)
                {
                    j.finished_at_ms = Some(now);
                }
            }
            let mut row = loaded.row.clone();
            row.status = loaded.queue.status.as_str().to_owned();
            if before.status == QueueStatus::Pendding
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
            let changed: Vec<TaskRow> = loaded
                .queue
                .tasks
                .iter()
                .enumerate()
                .filter(|(i, t)| before.tasks.get(*i) != Some(*t))
                .map(|(_, t)| t)
                .filter_map(|t| loaded.jobs.get(&t.id).map(|j| to_row(id, t, j)))
                .collect();
            if self
                .store
                .save_queue(&row, &changed, loaded.row.version)
                .await
                .map_err(store_err)?
            {
                row.version = loaded.row.version + 1;
                loaded.row = row;
                return Ok((value, effects, loaded));
            }
            tracing::debug!(queue = %id, "queue saved concurrently; retrying the transition");
        }
        Err(ApiError::internal("the queue is too busy; try again"))
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
    fn dispatch(&self, loaded: &Loaded, effects: &[Effect]) {
        for e in effects {
            if let Effect::Dispatch { task, run_id } = *e {
                let Some(instruct) = self.instruct(loaded, task) else {
                    continue;
                };
                if let Err(err) = self.bus.cast(AsyncJob {
                    run_id,
                    instruct,
                    redelivery: false,
                }) {
                    // Stays `running`; reconciliation offers it again.
                    tracing::error!(%run_id, error = %err, "dispatch not sent");
                }
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
        let (id, _, _) = self
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
        let (_, effects, loaded) = self
            .transact(qid, |l, _| {
                let effects = l.queue.commit(&mut Id::random)?;
                Ok(((), effects))
            })
            .await?;
        self.dispatch(&loaded, &effects);
        Ok(())
    }

    async fn stop(&self, m: StopQueue) -> Result<Value, ApiError> {
        let qid = parse_id(&m.queue_id).ok_or(ErrorCode::QueueNotFound)?;
        let (_, effects, loaded) = self.transact(qid, |l, _| Ok(((), l.queue.stop()))).await?;
        // Cancel the running tasks on their agents, all at once, each bounded.
        let cancels = effects.iter().filter_map(|e| match *e {
            Effect::Cancel { task, run_id } => {
                let ip = loaded.jobs.get(&task)?.spec.ip.clone();
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
        let (_, _, loaded) = if answers.is_empty() {
            ((), Vec::new(), loaded)
        } else {
            self.transact(qid, |l, _| {
                for (run_id, ok) in &answers {
                    l.queue.on_cancel_result(*run_id, *ok);
                }
                Ok(((), Vec::new()))
            })
            .await?
        };
        Ok(statuses_json(&loaded.queue))
    }

    async fn result(&self, m: QueueResult) -> Result<Value, ApiError> {
        let qid = parse_id(&m.queue_id).ok_or(ErrorCode::QueueNotFound)?;
        let loaded = self.load(qid).await?.ok_or(ErrorCode::QueueNotFound)?;
        Ok(result_json(&loaded.queue))
    }

    async fn owner(&self, m: QueueOwner) -> Result<Option<String>, ApiError> {
        let Some(qid) = parse_id(&m.queue_id) else {
            return Ok(None);
        };
        Ok(self
            .store
            .queue(qid.as_str())
            .await
            .map_err(store_err)?
            .map(|(row, _)| row.app))
    }

    async fn on_done(&self, m: TaskDone) -> Result<(), ApiError> {
        let Done {
            run_id, outcome, ..
        } = m.0;
        let Some(qid) = self
            .store
            .queue_of_run(run_id.as_str())
            .await
            .map_err(store_err)?
        else {
            tracing::debug!(%run_id, "result for an unknown run ignored");
            return Ok(());
        };
        let Some(qid) = parse_id(&qid) else {
            return Ok(());
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
        let (_, effects, loaded) = self
            .transact(qid, |l, _| match &result {
                Some(r) => Ok(((), l.queue.on_result(run_id, r.clone(), &mut Id::random))),
                None => {
                    l.queue.on_delivery_failed(run_id);
                    Ok(((), Vec::new()))
                }
            })
            .await?;
        self.dispatch(&loaded, &effects);
        Ok(())
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
