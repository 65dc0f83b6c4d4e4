//! Messages served by the gateway, the module that holds the agents' streams.

use elves_types::{ApiError, Id};
use serde::{Deserialize, Serialize};

use crate::Message;

/// One instruction for an agent (the original's Thrift `Instruct`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruct {
    /// The job id the API caller sees (rt id, task id or cron id).
    pub id: Id,
    pub ip: String,
    /// `rt`, `queue` or `cron`.
    pub kind: String,
    /// `NP` or `P`.
    pub mode: String,
    pub app: String,
    pub func: String,
    pub param: String,
    pub timeout: u32,
    pub proxy: String,
}

/// What the agent reports after running a worker (agent-protocol §4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerOutcome {
    pub flag: i32,
    pub message: String,
    pub costtime_ms: i64,
}

/// `scheduler → gateway`: deliver a job to the agent that holds `instruct.ip` and, for a
/// synchronous job, wait for its outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dispatch {
    /// Unique per delivery attempt; results are matched and de-duplicated by it.
    pub run_id: Id,
    pub instruct: Instruct,
    /// Wait for the outcome (rt) or return once delivered (queue, cron).
    pub sync: bool,
}

impl Message for Dispatch {
    const MODULE: &'static str = crate::module::GATEWAY;
    const ACTION: &'static str = "dispatch";
    /// `Some(outcome)` for a synchronous job, `None` once an asynchronous one is delivered;
    /// `[410.1]` when the agent is not connected or the delivery fails.
    type Response = Result<Option<WorkerOutcome>, ApiError>;
}

/// `scheduler → gateway`: ask the agent holding `ip` to cancel a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cancel {
    pub run_id: Id,
    pub ip: String,
}

impl Message for Cancel {
    const MODULE: &'static str = crate::module::GATEWAY;
    const ACTION: &'static str = "cancel";
    /// Whether the agent had the run; `[410.1]` when the agent is not connected or does not
    /// answer.
    type Response = Result<bool, ApiError>;
}

/// `supervisor → gateway` (cast): the apps some agents should run changed (an activation or a
/// bindings change). The gateway recomputes them (`heartbeat.desiredApps`) and sends them down
/// each affected agent's link at once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppsChanged {
    /// The agents concerned; `None` for every linked agent.
    pub ips: Option<Vec<String>>,
}

impl Message for AppsChanged {
    const MODULE: &'static str = crate::module::GATEWAY;
    const ACTION: &'static str = "appsChanged";
    type Response = ();
}
