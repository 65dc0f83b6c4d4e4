//! Messages served by the heartbeat module (the agent registry).

use elves_types::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Message;

/// `openapi → heartbeat`: `info/agents/detail`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentInfo {
    pub ip: String,
}

impl Message for AgentInfo {
    const MODULE: &'static str = crate::module::HEARTBEAT;
    const ACTION: &'static str = "agentInfo";
    /// `{"ip","asset","last_hb_time"}` of an online agent; `[414.1]Agent Info Not Found` when
    /// it is offline or unknown.
    type Response = Result<Value, ApiError>;
}
