//! Messages served by the scheduler module.

use elves_types::{ApiError, Id};
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
