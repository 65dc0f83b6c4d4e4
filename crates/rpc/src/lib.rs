//! The messages center modules exchange over the bus.
//!
//! Each message type implements [`Message`]: it names the module that serves it, its action
//! (the third word of the wire `mqkey`, as in the original's `openapi.scheduler.syncJob`) and
//! the type of its response. A `cast` ignores the response type. Every message crosses the
//! bus as serialized JSON, whether the bus is in-process or a broker, so no module can come
//! to rely on sharing memory with another.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod cron;
pub mod done;
pub mod gateway;
pub mod heartbeat;
pub mod queue;
pub mod scheduler;
pub mod supervisor;

/// A bus message: where it goes and what it answers.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// The module that serves this message, e.g. `"scheduler"`.
    const MODULE: &'static str;
    /// The action name, e.g. `"syncJob"`.
    const ACTION: &'static str;
    /// What a `call` returns.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// The module names used as bus addresses.
pub mod module {
    pub const OPENAPI: &str = "openapi";
    pub const SCHEDULER: &str = "scheduler";
    pub const GATEWAY: &str = "gateway";
    pub const QUEUE: &str = "queue";
    pub const CRON: &str = "cron";
    pub const HEARTBEAT: &str = "heartbeat";
    pub const SUPERVISOR: &str = "supervisor";
}
