//! Messages served by the scheduler module.

use elves_types::{ApiError, Id};

use crate::gateway::{Instruct, WorkerOutcome};
use serde::{Deserialize, Serialize};

use crate::Message;

/// What the API caller asked to run (the fields of `rt/exec`, already validated).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub ip: String,
    pub app: String,
    pub func: String,
    pub param: String,
    /// Seconds; 0 = no limit on the agent.
    pub timeout: u32,
    pub proxy: String,
}

/// `openapi → scheduler`: run a job now and wait for its answer (rt/exec).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncJob {
    pub job: JobSpec,
}

/// The `rt/exec` result (api-v2 §6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtResult {
    pub id: Id,
    pub worker_flag: i32,
    pub worker_message: String,
    pub worker_costtime: i64,
}

impl Message for SyncJob {
    const MODULE: &'static str = crate::module::SCHEDULER;
    const ACTION: &'static str = "syncJob";
    type Response = Result<RtResult, ApiError>;
}

/// `queue|cron → scheduler` (cast): run a job asynchronously. Its result, or its delivery
/// failure (`[410.1]`), comes back to the module named by `instruct.kind` as a
/// [`crate::queue::TaskResult`] or [`crate::cron::CronResult`] call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AsyncJob {
    pub run_id: Id,
    pub instruct: Instruct,
    /// A run sent again to reconcile after a restart: the agent runs it only if it never got
    /// it, and a delivery failure is not reported (the agent may just be reconnecting).
    #[serde(default)]
    pub redelivery: bool,
}

impl Message for AsyncJob {
    const MODULE: &'static str = crate::module::SCHEDULER;
    const ACTION: &'static str = "asyncJob";
    type Response = ();
}

/// `cron → scheduler` (cast): the [`AsyncJob`]s of one cron instant in one message, so the
/// firer hands a thousand fires over in one cast; the scheduler handles each as if cast alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AsyncJobs {
    pub jobs: Vec<AsyncJob>,
}

impl Message for AsyncJobs {
    const MODULE: &'static str = crate::module::SCHEDULER;
    const ACTION: &'static str = "asyncJobs";
    type Response = ();
}

/// `gateway → scheduler`: an agent reported the result of an asynchronous run. `Ok` means the
/// module that asked for the run has stored it, so the gateway may acknowledge it to the agent
/// (which then forgets its spooled copy).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub run_id: Id,
    /// The job id (task id or cron id).
    pub id: Id,
    /// `queue` or `cron`.
    pub kind: String,
    /// The agent that reported it.
    pub ip: String,
    pub outcome: WorkerOutcome,
}

impl Message for RunResult {
    const MODULE: &'static str = crate::module::SCHEDULER;
    const ACTION: &'static str = "runResult";
    type Response = Result<(), ApiError>;
}

/// `queue → scheduler`: cancel a run on its agent (queue stop). `Ok(true)` when the agent had
/// the run and killed its worker's process group, `Ok(false)` when it did not have it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CancelRun {
    pub run_id: Id,
    pub ip: String,
}

impl Message for CancelRun {
    const MODULE: &'static str = crate::module::SCHEDULER;
    const ACTION: &'static str = "cancelRun";
    type Response = Result<bool, ApiError>;
}
