//! Messages served by the supervisor module: keys and permissions for openapi, app and agent
//! information for the info routes, and every administration command.

use elves_types::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Message;

/// `openapi → supervisor`: the key behind an `auth_id` (api-v2 §3 step 6).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetKey {
    pub auth_id: String,
}

/// A key as openapi needs it to verify a signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The app the key belongs to.
    pub app: String,
    /// The key's secret (decrypted with the center secret).
    pub secret: String,
    pub disabled: bool,
    pub expires_at_ms: Option<i64>,
}

impl Message for GetKey {
    const MODULE: &'static str = crate::module::SUPERVISOR;
    const ACTION: &'static str = "getAuthKey";
    /// `[413.1]AuthId Not Found` for an unknown `auth_id`.
    type Response = Result<KeyInfo, ApiError>;
}

/// `openapi → supervisor`: the facts the permission check of api-v2 §4 needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessFacts {
    /// The request's `app` parameter, when present and not blank.
    pub app: Option<String>,
    /// The request's `ip` parameter, when present and not blank.
    pub ip: Option<String>,
    /// The app `ip` must be bound to (the key's app, or the queue's app for addtask).
    pub binding_app: String,
}

/// What the supervisor knows about an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Whether the `app` parameter names an existing app (true when there is none).
    pub app_exists: bool,
    /// Whether `ip` is bound to `binding_app` (true when there is no ip).
    pub ip_bound: bool,
}

impl Message for AccessFacts {
    const MODULE: &'static str = crate::module::SUPERVISOR;
    const ACTION: &'static str = "accessFacts";
    type Response = Result<Facts, ApiError>;
}

/// `openapi → supervisor`: `info/app` of the key's app.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppInfo {
    pub app: String,
}

impl Message for AppInfo {
    const MODULE: &'static str = crate::module::SUPERVISOR;
    const ACTION: &'static str = "appInfo";
    /// `{"app","app_name","app_ver","last_update_time"}`; `[413.2]` when the app is gone.
    type Response = Result<Value, ApiError>;
}

/// `openapi → supervisor`: `info/agents`, the ips bound to the key's app.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentList {
    pub app: String,
}

impl Message for AgentList {
    const MODULE: &'static str = crate::module::SUPERVISOR;
    const ACTION: &'static str = "agentList";
    type Response = Result<Vec<String>, ApiError>;
}

/// One administration command (admin API, `elves admin`, web UI).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminCommand {
    AppAdd {
        app: String,
        title: String,
        bind_url: Option<String>,
    },
    AppList,
    AppShow {
        app: String,
    },
    AppDelete {
        app: String,
    },
    /// Registers a version whose package is already in the package store.
    VersionAdd {
        app: String,
        version: String,
        sha256: String,
        size: i64,
        force: bool,
    },
    Activate {
        app: String,
        version: String,
    },
    Bind {
        app: String,
        ips: Vec<String>,
    },
    Unbind {
        app: String,
        ips: Vec<String>,
    },
    /// Fetches the app's bind URL now and, when the whole answer is valid, makes it the app's
    /// bindings; answers `{app, fetched, added, removed}`.
    AppSync {
        app: String,
    },
    /// Prints `auth_id` and `auth_key` (the only time the secret is shown).
    KeyAdd {
        app: String,
        name: String,
        expires_at_ms: Option<i64>,
    },
    KeyList {
        app: String,
    },
    KeyDisable {
        auth_id: String,
        disabled: bool,
    },
    KeyExpire {
        auth_id: String,
        expires_at_ms: Option<i64>,
    },
    KeyRm {
        auth_id: String,
    },
    UserAdd {
        email: String,
        password: String,
        role: String,
    },
    UserList,
    UserRm {
        email: String,
    },
    UserPassword {
        email: String,
        password: String,
    },
    /// Checks a password (web login); answers the user without its hash.
    Login {
        email: String,
        password: String,
    },
    Audit {
        limit: u32,
        before_id: Option<i64>,
    },
    /// Every agent the center knows: its registry record (if it ever said hello) and whether
    /// an enrollment credential is pinned to its ip.
    AgentList,
    /// Forgets the credential pinned to `ip`, so that a reinstalled host can enroll again.
    AgentRelease {
        ip: String,
    },
}

/// `web → supervisor`: run an administration command as `actor`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Admin {
    /// Who asks (an email, or `admin-token`), recorded in the audit log.
    pub actor: String,
    pub command: AdminCommand,
}

impl Message for Admin {
    const MODULE: &'static str = crate::module::SUPERVISOR;
    const ACTION: &'static str = "admin";
    type Response = Result<Value, AdminError>;
}

/// Why an administration command was refused: the admin API and the web UI map the kind to an
/// HTTP status without reading the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminErrorKind {
    /// The input is malformed (a bad name, ip, version, password, URL…).
    Invalid,
    /// No such app, version, key or user.
    NotFound,
    /// Refused by a rule of the data: a duplicate, a dependent, the last admin.
    Conflict,
    /// A login with a wrong email or password.
    Denied,
    /// A binding source (an app's bind URL) failed or answered something invalid.
    Upstream,
    /// The store failed, or something else unexpected; the message says no more than that.
    Internal,
}

/// A refused administration command: its kind and one line for a human.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    pub kind: AdminErrorKind,
    pub message: String,
}

impl AdminError {
    pub fn new(kind: AdminErrorKind, message: impl Into<String>) -> AdminError {
        AdminError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
