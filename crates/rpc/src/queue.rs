//! Messages served by the queue module (`openapi → queue`).

use elves_types::{ApiError, Id};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Message;

/// `queue/create`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateQueue {
    pub app: String,
    /// The `auth_id` that creates it (its owner).
    pub owner: String,
}

impl Message for CreateQueue {
    const MODULE: &'static str = crate::module::QUEUE;
    const ACTION: &'static str = "createQueue";
    type Response = Result<Id, ApiError>;
}

/// One task as `queue/addtask` describes it (already validated).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub ip: String,
    pub func: String,
    /// `NP` or `P`.
    pub mode: String,
    pub param: String,
    pub timeout: u32,
    pub proxy: String,
    /// Blank = a root task.
    pub depend_task_id: String,
}

/// `queue/addtask`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddTask {
    pub queue_id: String,
    pub task: TaskSpec,
}

impl Message for AddTask {
    const MODULE: &'static str = crate::module::QUEUE;
    const ACTION: &'static str = "addTask";
    type Response = Result<Id, ApiError>;
}

/// `queue/commit`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitQueue {
    pub queue_id: String,
}

impl Message for CommitQueue {
    const MODULE: &'static str = crate::module::QUEUE;
    const ACTION: &'static str = "commitQueue";
    type Response = Result<(), ApiError>;
}

/// `queue/stop`: answers `{TASK_ID: status}` after the stop.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StopQueue {
    pub queue_id: String,
}

impl Message for StopQueue {
    const MODULE: &'static str = crate::module::QUEUE;
    const ACTION: &'static str = "stopQueue";
    type Response = Result<Value, ApiError>;
}

/// `queue/result`: answers `{TASK_ID: {status, depend_task_id, flag, error, id, worker_flag,
/// worker_message, worker_costtime}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueResult {
    pub queue_id: String,
}

impl Message for QueueResult {
    const MODULE: &'static str = crate::module::QUEUE;
    const ACTION: &'static str = "queueResult";
    /// The JSON text of the answer (built as text: it may hold thousands of tasks).
    type Response = Result<Box<serde_json::value::RawValue>, ApiError>;
}

/// Who owns a queue (for the permission check of api-v2 §4): its app.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueOwner {
    pub queue_id: String,
}

impl Message for QueueOwner {
    const MODULE: &'static str = crate::module::QUEUE;
    const ACTION: &'static str = "queueOwner";
    /// `None` for an unknown queue.
    type Response = Result<Option<String>, ApiError>;
}

/// `gateway → queue` (cast): the agent at `ip` has just linked (or linked again). The queue
/// module offers that agent its running runs again at once (`redelivery`), instead of waiting
/// for its periodic reconciliation: the agent runs those it never got and re-sends the
/// results of the others.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentLinked {
    pub ip: String,
}

impl Message for AgentLinked {
    const MODULE: &'static str = crate::module::QUEUE;
    const ACTION: &'static str = "agentLinked";
    type Response = ();
}
