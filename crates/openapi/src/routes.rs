//! The v2 routes: parameter validation in each route's documented order, then the bus.

use std::time::Duration;

use elves_bus::Bus;
use elves_rpc::heartbeat::AgentInfo;
use elves_rpc::queue::{AddTask, CommitQueue, CreateQueue, QueueResult, StopQueue, TaskSpec};
use elves_rpc::scheduler::{JobSpec, SyncJob};
use elves_rpc::supervisor::{AgentList, AppInfo};
use elves_sign::Params;
use elves_types::validate::{is_blank, is_ipv4, is_valid_param, parse_mode, parse_timeout};
use elves_types::{ApiError, ErrorCode};
use serde_json::{Value, json};

use crate::Modules;
use crate::access::{Caller, Gate, Owned};

/// Extra time the API waits past a job's own timeout before giving up on the scheduler.
const SLACK: Duration = Duration::from_secs(30);
/// The wait for a job without a timeout.
const NO_LIMIT_WAIT: Duration = Duration::from_secs(86_400 + 180);

/// Every v2 route (api-v2 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    RtExec,
    Queue(&'static str),
    Cron(&'static str),
    Info(&'static str),
}

impl Route {
    pub fn parse(route: &str) -> Option<Route> {
        const QUEUE: &[&str] = &["create", "addtask", "commit", "stop", "result", "qksqueue"];
        const CRON: &[&str] = &["add", "start", "stop", "delete", "detail", "info", "list"];
        const INFO: &[&str] = &["app", "apps", "agents", "agents/detail"];
        let find = |list: &[&'static str], name: &str| list.iter().find(|r| **r == name).copied();
        if route == "rt/exec" {
            return Some(Route::RtExec);
        }
        if let Some(r) = route.strip_prefix("queue/") {
            return find(QUEUE, r).map(Route::Queue);
        }
        if let Some(r) = route.strip_prefix("cron/") {
            return find(CRON, r).map(Route::Cron);
        }
        if let Some(r) = route.strip_prefix("info/") {
            return find(INFO, r).map(Route::Info);
        }
        None
    }

    /// The route's full name (`queue/addtask`), for metric labels.
    pub fn label(self) -> &'static str {
        const ALL: &[&str] = &[
            "queue/create",
            "queue/addtask",
            "queue/commit",
            "queue/stop",
            "queue/result",
            "queue/qksqueue",
            "cron/add",
            "cron/start",
            "cron/stop",
            "cron/delete",
            "cron/detail",
            "cron/info",
            "cron/list",
            "info/app",
            "info/apps",
            "info/agents",
            "info/agents/detail",
        ];
        let (group, name) = match self {
            Route::RtExec => return "rt/exec",
            Route::Queue(n) => ("queue/", n),
            Route::Cron(n) => ("cron/", n),
            Route::Info(n) => ("info/", n),
        };
        ALL.iter()
            .find(|l| l.strip_prefix(group) == Some(name))
            .copied()
            .unwrap_or("other")
    }

    /// §5: a route whose module is off answers 402.x.
    pub fn check_module(self, m: &Modules) -> Result<(), ErrorCode> {
        match self {
            Route::RtExec => Ok(()),
            Route::Queue(_) if !m.queue => Err(ErrorCode::QueueDisabled),
            Route::Cron(_) if !m.cron => Err(ErrorCode::CronDisabled),
            Route::Info(_) if !m.supervisor => Err(ErrorCode::SupervisorDisabled),
            _ => Ok(()),
        }
    }
}

pub(crate) fn trimmed(params: &Params, name: &str) -> String {
    params.get(name).unwrap_or_default().trim().to_owned()
}

/// The checks shared by rt/exec, qksqueue and cron/add: app, func, ip, param, timeout.
pub fn job_spec(params: &Params) -> Result<JobSpec, ErrorCode> {
    if is_blank(params.get("app")) {
        return Err(ErrorCode::AppIllegal);
    }
    job_fields(params, trimmed(params, "app"))
}

/// func, ip, param, timeout, in that order (the tail of every job route's checks).
fn job_fields(params: &Params, app: String) -> Result<JobSpec, ErrorCode> {
    if is_blank(params.get("func")) {
        return Err(ErrorCode::FuncIllegal);
    }
    let ip = params.get("ip").unwrap_or_default();
    if !is_ipv4(ip) {
        return Err(ErrorCode::IpIllegal);
    }
    let param = params.get("param");
    if !is_valid_param(param) {
        return Err(ErrorCode::ParamIllegal);
    }
    let timeout = parse_timeout(params.get("timeout")).ok_or(ErrorCode::TimeoutIllegal)?;
    Ok(JobSpec {
        ip: ip.to_owned(),
        app,
        func: trimmed(params, "func"),
        param: if is_blank(param) {
            String::new()
        } else {
            param.unwrap_or_default().to_owned()
        },
        timeout,
        proxy: trimmed(params, "proxy"),
    })
}

/// What a route needs besides its parameters.
pub struct Ctx<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
    pub bus: &'a Bus,
    pub modules: &'a Modules,
}

impl Ctx<'_> {
    async fn permit(
        &self,
        app: Option<&str>,
        ip: Option<&str>,
        owned: Owned<'_>,
    ) -> Result<(), ApiError> {
        self.gate
            .permit(self.bus, self.caller, app, ip, owned)
            .await
    }
}

/// A route's answer, as JSON text.
pub type Reply = Box<serde_json::value::RawValue>;

pub async fn serve(
    route: Route,
    params: &Params,
    ctx: &Ctx<'_>,
) -> Result<Option<Reply>, ApiError> {
    let value = match route {
        Route::Queue(action) => return queue(action, params, ctx).await,
        Route::RtExec => rt_exec(params, ctx).await,
        Route::Info(action) => info(action, params, ctx).await,
        Route::Cron(action) => crate::cron::serve(action, params, ctx).await,
    };
    value.map(|v| v.as_ref().map(elves_types::raw))
}

async fn info(action: &str, params: &Params, ctx: &Ctx<'_>) -> Result<Option<Value>, ApiError> {
    // Info routes exist only in supervisor mode (check_module), where the caller has an app.
    let app = ctx.caller.app().unwrap_or_default().to_owned();
    match action {
        "app" | "apps" => Ok(Some(call(ctx.bus, AppInfo { app }).await?)),
        "agents" => Ok(Some(json!(call(ctx.bus, AgentList { app }).await?))),
        "agents/detail" => {
            let ip = params.get("ip").unwrap_or_default();
            if !is_ipv4(ip) {
                return Err(ErrorCode::IpIllegal.into());
            }
            let showcron = params.get("showcron").is_some_and(|v| v.trim() == "true");
            if showcron && !ctx.modules.cron {
                return Err(ErrorCode::CronDisabled.into());
            }
            ctx.permit(None, Some(ip), Owned::Nothing).await?;
            let mut v = call(ctx.bus, AgentInfo { ip: ip.to_owned() }).await?;
            if showcron {
                // The caller's app's crons on that agent (§4: a key sees its own app only).
                let crons = call(
                    ctx.bus,
                    elves_rpc::cron::CronList {
                        app: Some(app),
                        ip: Some(ip.to_owned()),
                    },
                )
                .await?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("cron_list".into(), json!(crons));
                }
            }
            Ok(Some(v))
        }
        _ => Err(ApiError::internal("unknown info route")),
    }
}

/// How long a call to a module (queue, cron, supervisor, heartbeat) may take.
const MODULE_WAIT: Duration = Duration::from_secs(10);

/// Calls a module; a bus failure becomes a short 500 naming the module.
pub(crate) async fn call<M: elves_rpc::Message<Response = Result<R, ApiError>>, R>(
    bus: &Bus,
    msg: M,
) -> Result<R, ApiError> {
    bus.call(msg, MODULE_WAIT).await.map_err(|e| {
        tracing::warn!(error = %e, module = M::MODULE, "module call failed");
        ApiError::internal(format!("the {} module did not answer", M::MODULE))
    })?
}

fn queue_id(params: &Params) -> Result<String, ErrorCode> {
    if is_blank(params.get("queue_id")) {
        return Err(ErrorCode::QueueIdIllegal);
    }
    Ok(trimmed(params, "queue_id"))
}

/// The task fields of `queue/addtask` and `queue/qksqueue` after their own leading checks:
/// func, ip, param, timeout, mode.
fn task_spec(params: &Params) -> Result<TaskSpec, ErrorCode> {
    let job = job_fields(params, String::new())?;
    let mode = parse_mode(params.get("mode")).ok_or(ErrorCode::ModeIllegal)?;
    Ok(into_task(job, mode, trimmed(params, "depend_task_id")))
}

fn into_task(job: JobSpec, mode: &str, depend_task_id: String) -> TaskSpec {
    TaskSpec {
        ip: job.ip,
        func: job.func,
        mode: mode.to_owned(),
        param: job.param,
        timeout: job.timeout,
        proxy: job.proxy,
        depend_task_id,
    }
}

async fn queue(action: &str, params: &Params, ctx: &Ctx<'_>) -> Result<Option<Reply>, ApiError> {
    let raw = |v: Value| Some(elves_types::raw(&v));
    let bus = ctx.bus;
    let auth_id = ctx.caller.auth_id();
    match action {
        "create" => {
            if is_blank(params.get("app")) {
                return Err(ErrorCode::AppIllegal.into());
            }
            let app = trimmed(params, "app");
            ctx.permit(Some(&app), None, Owned::Nothing).await?;
            let msg = CreateQueue {
                app,
                owner: auth_id.to_owned(),
            };
            let id = call(bus, msg).await?;
            Ok(raw(json!({ "id": id })))
        }
        "addtask" => {
            let queue_id = queue_id(params)?;
            let task = task_spec(params)?;
            // The task runs the queue's app: its ip must be bound to that app.
            ctx.permit(None, Some(&task.ip), Owned::Queue(&queue_id))
                .await?;
            let id = call(bus, AddTask { queue_id, task }).await?;
            Ok(raw(json!({ "id": id })))
        }
        "commit" | "stop" | "result" => {
            let queue_id = queue_id(params)?;
            ctx.permit(None, None, Owned::Queue(&queue_id)).await?;
            match action {
                "commit" => call(bus, CommitQueue { queue_id }).await.map(|()| None),
                "stop" => Ok(raw(call(bus, StopQueue { queue_id }).await?)),
                _ => Ok(Some(call(bus, QueueResult { queue_id }).await?)),
            }
        }
        "qksqueue" => {
            // The checks of rt/exec, then mode.
            let job = job_spec(params)?;
            let mode = parse_mode(params.get("mode")).ok_or(ErrorCode::ModeIllegal)?;
            ctx.permit(Some(&job.app), Some(&job.ip), Owned::Nothing)
                .await?;
            let app = job.app.clone();
            let task = into_task(job, mode, String::new());
            let queue_id = call(
                bus,
                CreateQueue {
                    app,
                    owner: auth_id.to_owned(),
                },
            )
            .await?;
            let qid = queue_id.to_string();
            let added = call(
                bus,
                AddTask {
                    queue_id: qid.clone(),
                    task,
                },
            )
            .await;
            let committed = match added {
                Ok(task_id) => call(
                    bus,
                    CommitQueue {
                        queue_id: qid.clone(),
                    },
                )
                .await
                .map(|()| task_id),
                Err(e) => Err(e),
            };
            match committed {
                Ok(task_id) => Ok(raw(json!({ "id": queue_id, "task_id": task_id }))),
                Err(e) => {
                    // Never leave an orphan pending queue behind.
                    let _ = call(bus, StopQueue { queue_id: qid }).await;
                    Err(e)
                }
            }
        }
        _ => Err(ApiError::internal("unknown queue route")),
    }
}

async fn rt_exec(params: &Params, ctx: &Ctx<'_>) -> Result<Option<Value>, ApiError> {
    let job = job_spec(params)?;
    ctx.permit(Some(&job.app), Some(&job.ip), Owned::Nothing)
        .await?;
    let bus = ctx.bus;
    let wait = if job.timeout == 0 {
        NO_LIMIT_WAIT
    } else {
        Duration::from_secs(job.timeout.into()) + SLACK
    };
    let r = bus.call(SyncJob { job }, wait).await.map_err(|e| {
        tracing::warn!(error = %e, "scheduler call failed");
        ApiError::internal("the scheduler did not answer")
    })??;
    Ok(Some(json!({
        "id": r.id,
        "worker_flag": r.worker_flag,
        "worker_message": r.worker_message,
        "worker_costtime": r.worker_costtime,
    })))
}
