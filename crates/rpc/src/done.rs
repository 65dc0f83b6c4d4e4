//! The results the scheduler hands back to the module that asked for an asynchronous run.

use elves_types::{ApiError, Id};
use serde::{Deserialize, Serialize};

use crate::gateway::WorkerOutcome;

/// One finished (or undeliverable) run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub run_id: Id,
    /// The job id (task id or cron id).
    pub id: Id,
    /// The worker's outcome, or why the run could not be delivered (`[410.1]`).
    pub outcome: Result<WorkerOutcome, ApiError>,
}

macro_rules! done_message {
    ($(#[$doc:meta])* $name:ident, $module:expr, $action:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name(pub Done);

        impl crate::Message for $name {
            const MODULE: &'static str = $module;
            const ACTION: &'static str = $action;
            /// `Ok` once the module has stored the result (then the agent may forget it).
            type Response = Result<(), ApiError>;
        }
    };
}

done_message!(
    /// `scheduler → queue`: a task's run finished or could not be delivered.
    TaskResult,
    crate::module::QUEUE,
    "taskResult"
);
done_message!(
    /// `scheduler → cron`: a fire's run finished or could not be delivered.
    CronResult,
    crate::module::CRON,
    "cronResult"
);
