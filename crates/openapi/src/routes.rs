//! The v2 routes: parameter validation in each route's documented order, then the bus.

use std::time::Duration;

use elves_bus::Bus;
use elves_rpc::scheduler::{JobSpec, SyncJob};
use elves_sign::Params;
use elves_types::validate::{is_blank, is_ipv4, is_valid_param, parse_timeout};
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

pub async fn serve(route: Route, params: &Params, bus: &Bus) -> Result<Option<Value>, ApiError> {
    match route {
        Route::RtExec => rt_exec(params, bus).await,
        // Routes of modules this build does not have yet are switched off by check_module.
        Route::Queue(_) | Route::Cron(_) | Route::Info(_) => Err(ApiError::internal(
            "this module is not available in this build",
        )),
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
