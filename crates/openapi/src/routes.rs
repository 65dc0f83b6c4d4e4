//! The v2 routes: parameter validation in each route's documented order, then the bus.

use std::time::Duration;

use elves_bus::Bus;
use elves_rpc::queue::{AddTask, CommitQueue, CreateQueue, QueueResult, StopQueue, TaskSpec};
use elves_rpc::scheduler::{JobSpec, SyncJob};
use elves_sign::Params;
use elves_types::validate::{is_blank, is_ipv4, is_valid_param, parse_mode, parse_timeout};
use elves_types::{ApiError, ErrorCode};
use serde_json::{Value, json};

use crate::Modules;

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

fn trimmed(params: &Params, name: &str) -> String {
    params.get(name).unwrap_or_default().trim().to_owned()
}

/// The checks shared by rt/exec, qksqueue and cron/add: app, func, ip, param, timeout.
pub fn job_spec(params: &Params) -> Result<JobSpec, ErrorCode> {
    if is_blank(params.get("app")) {
        return Err(ErrorCode::AppIllegal);
    }
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
        app: trimmed(params, "app"),
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

pub async fn serve(
    route: Route,
    params: &Params,
    auth_id: &str,
    bus: &Bus,
) -> Result<Option<Value>, ApiError> {
    match route {
        Route::RtExec => rt_exec(params, bus).await,
        Route::Queue(action) => queue(action, params, auth_id, bus).await,
        // Routes of modules this build does not have yet are switched off by check_module.
        Route::Cron(_) | Route::Info(_) => Err(ApiError::internal(
            "this module is not available in this build",
        )),
    }
}

/// How long a queue-module call may take.
const MODULE_WAIT: Duration = Duration::from_secs(10);

async fn call<M: elves_rpc::Message<Response = Result<R, ApiError>>, R>(
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
    let mode = parse_mode(params.get("mode")).ok_or(ErrorCode::ModeIllegal)?;
    Ok(TaskSpec {
        ip: ip.to_owned(),
        func: trimmed(params, "func"),
        mode: mode.to_owned(),
        param: if is_blank(param) {
            String::new()
        } else {
            param.unwrap_or_default().to_owned()
        },
        timeout,
        proxy: trimmed(params, "proxy"),
        depend_task_id: trimmed(params, "depend_task_id"),
    })
}

async fn queue(
    action: &str,
    params: &Params,
    auth_id: &str,
    bus: &Bus,
) -> Result<Option<Value>, ApiError> {
    match action {
        "create" => {
            if is_blank(params.get("app")) {
                return Err(ErrorCode::AppIllegal.into());
            }
            let msg = CreateQueue {
                app: trimmed(params, "app"),
                owner: auth_id.to_owned(),
            };
            let id = call(bus, msg).await?;
            Ok(Some(json!({ "id": id })))
        }
        "addtask" => {
            let queue_id = queue_id(params)?;
            let task = task_spec(params)?;
            let id = call(bus, AddTask { queue_id, task }).await?;
            Ok(Some(json!({ "id": id })))
        }
        "commit" => {
            call(
                bus,
                CommitQueue {
                    queue_id: queue_id(params)?,
                },
            )
            .await?;
            Ok(None)
        }
        "stop" => Ok(Some(
            call(
                bus,
                StopQueue {
                    queue_id: queue_id(params)?,
                },
            )
            .await?,
        )),
        "result" => Ok(Some(
            call(
                bus,
                QueueResult {
                    queue_id: queue_id(params)?,
                },
            )
            .await?,
        )),
        "qksqueue" => {
            // The checks of rt/exec, then mode.
            let job = job_spec(params)?;
            let mode = parse_mode(params.get("mode")).ok_or(ErrorCode::ModeIllegal)?;
            let task = TaskSpec {
                ip: job.ip,
                func: job.func,
                mode: mode.to_owned(),
                param: job.param,
                timeout: job.timeout,
                proxy: job.proxy,
                depend_task_id: String::new(),
            };
            let queue_id = call(
                bus,
                CreateQueue {
                    app: job.app,
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
                Ok(task_id) => Ok(Some(json!({ "id": queue_id, "task_id": task_id }))),
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

async fn rt_exec(params: &Params, bus: &Bus) -> Result<Option<Value>, ApiError> {
    let job = job_spec(params)?;
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
