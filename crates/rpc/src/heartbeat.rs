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

/// One app an agent should run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredApp {
    pub version: String,
    /// The package's SHA-256 (lower-case hex), when the center has a package for this version.
    /// `None` in simple mode for a version that is not in the store: the agent must already
    /// have it pre-installed.
    pub sha256: Option<String>,
    /// The package's size in bytes (0 without a package).
    pub size: u64,
}

/// `gateway → heartbeat`: the apps the agent at `ip` should run, app → version and package.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DesiredApps {
    pub ip: String,
}

impl Message for DesiredApps {
    const MODULE: &'static str = crate::module::HEARTBEAT;
    const ACTION: &'static str = "desiredApps";
    /// Supervisor mode: the active version of every app bound to `ip` (apps without an active
    /// version are left out). Simple mode: the center's `[apps]` table, the same for every
    /// agent.
    type Response = Result<std::collections::BTreeMap<String, DesiredApp>, ApiError>;
}

/// `web → heartbeat`: every agent the registry knows, online or not (the web UI's agents
/// page and its bind picker).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListAgents;

/// One agent as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub ip: String,
    pub asset: String,
    /// The agent's own version.
    pub version: String,
    pub online: bool,
    pub last_heartbeat_ms: i64,
    /// Installed apps: app → version.
    pub apps: std::collections::BTreeMap<String, String>,
}

impl Message for ListAgents {
    const MODULE: &'static str = crate::module::HEARTBEAT;
    const ACTION: &'static str = "listAgents";
    /// Sorted by ip.
    type Response = Result<Vec<AgentSummary>, ApiError>;
}
