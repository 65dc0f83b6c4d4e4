//! Messages served by the cron module (`openapi → cron`).

use elves_types::{ApiError, Id};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Message;

/// `cron/add`, already validated by openapi (the rule is checked again by the module).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddCron {
    pub ip: String,
    pub app: String,
    pub func: String,
    /// `NP` or `P`.
    pub mode: String,
    pub param: String,
    pub timeout: u32,
    pub proxy: String,
    /// The Quartz rule.
    pub rule: String,
    /// IANA zone; blank = the module's default zone.
    pub tz: String,
    /// `fire_once`, `skip`, or blank (= `fire_once`).
    pub misfire: String,
    /// The `auth_id` that creates it (its owner).
    pub owner: String,
}

impl Message for AddCron {
    const MODULE: &'static str = crate::module::CRON;
    const ACTION: &'static str = "createCron";
    /// The new cron's id (started); `[403.5]` for a rule that is invalid or never fires.
    type Response = Result<Id, ApiError>;
}

/// `cron/start`, `cron/stop`, `cron/delete`: `[411.1]` for an unknown cron.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CronAction {
    Start,
    Stop,
    Delete,
}

/// One operation on a cron.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperateCron {
    pub cron_id: String,
    pub action: CronAction,
}

impl Message for OperateCron {
    const MODULE: &'static str = crate::module::CRON;
    const ACTION: &'static str = "operateCron";
    type Response = Result<(), ApiError>;
}

/// `cron/detail`: the v2 detail object (api-v2 §6 "Crons").
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CronDetail {
    pub cron_id: String,
}

impl Message for CronDetail {
    const MODULE: &'static str = crate::module::CRON;
    const ACTION: &'static str = "cronDetail";
    type Response = Result<Value, ApiError>;
}

/// `cron/list`: the ids of the crons of `app` (every cron when `None`, as in simple mode), on
/// `ip` when given, newest first. A cron belongs to the app that created it, not to the key:
/// every key of the app sees it (api-v2 §4).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CronList {
    pub app: Option<String>,
    pub ip: Option<String>,
}

impl Message for CronList {
    const MODULE: &'static str = crate::module::CRON;
    const ACTION: &'static str = "cronList";
    type Response = Result<Vec<Id>, ApiError>;
}

/// Who owns a cron (for the permission check of api-v2 §4): `(auth_id, app)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CronOwner {
    pub cron_id: String,
}

impl Message for CronOwner {
    const MODULE: &'static str = crate::module::CRON;
    const ACTION: &'static str = "cronOwner";
    /// `None` for an unknown cron.
    type Response = Result<Option<(String, String)>, ApiError>;
}
