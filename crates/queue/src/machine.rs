//! The queue state machine: commands and events in, new state and [`Effect`]s out.
//!
//! Nothing here performs I/O, reads a clock or draws randomness: task ids come from the
//! caller and run ids from an injected generator, so a test can drive a queue step by step
//! and compare the whole state after each step.
//!
//! # Driving it
//!
//! * Commands from the API: [`Queue::add_task`], [`Queue::commit`], [`Queue::stop`]. They may
//!   be refused with `[412.2]` or `[412.4]`; a refused command changes nothing.
//! * Events from the scheduler: [`Queue::on_result`], [`Queue::on_delivery_failed`],
//!   [`Queue::on_cancel_result`]. They are matched by run id and never fail: an event for an
//!   unknown run id, a duplicate, or a late event for a task that is no longer running
//!   changes nothing.
//!
//! A transition has already updated the queue when it returns its effects: a
//! [`Effect::Dispatch`] task is already `running` with that run id. The caller **persists the
//! queue first and carries out the effects second**, so a result can never arrive for a run
//! the store does not know yet (the original's race, reference §6.4).
//!
//! # Rules (api-v2 §6 "Queues")
//!
//! * Queue: `pendding` → (commit) `running` → `finish` once every task is terminal (`finish`
//!   or `stopped`); `stopped` after [`Queue::stop`]. A queue committed without tasks is
//!   `finish` at once. `finish` is final: stopping a finished queue changes nothing.
//! * Task: `pendding` → `running` (dispatched) → `finish` (any result, success or not);
//!   `pendding` → `stopped` (stop, or its dependency did not succeed); `running` → `stopped`
//!   (stop, once the agent confirmed the cancel).
//! * A dependant is dispatched only when its dependency finished with `flag` true and
//!   `worker_flag == 1`. Otherwise it is `stopped` with the error
//!   `dependency {ID} did not succeed`, and so is every task below it, each naming its own
//!   dependency.
//! * A task that cannot be delivered finishes with `flag` false,
//!   `[410.1]Send Job To Agent Fail` and `worker_flag` -1.
//! * A running task whose cancel failed keeps running and reports `[412.3]Stop Task Error`
//!   until its result arrives (then it reports its result) or a later stop cancels it.

use std::collections::HashMap;
use std::fmt;

use elves_types::{ErrorCode, Id};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            Pendding,
            Running,
            Finish,
            Stopped,
        }

        impl $name {
            /// The spelling v2 clients parse: `pendding`, `running`, `finish`, `stopped`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $name::Pendding => "pendding",
                    $name::Running => "running",
                    $name::Finish => "finish",
                    $name::Stopped => "stopped",
                }
            }

            /// The inverse of [`Self::as_str`] (exact spelling only).
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    "pendding" => Some($name::Pendding),
                    "running" => Some($name::Running),
                    "finish" => Some($name::Finish),
                    "stopped" => Some($name::Stopped),
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum! {
    /// A queue's status. Spelled as the original spelled it (`pendding`).
    QueueStatus
}

status_enum! {
    /// A task's status. Spelled as the original spelled it (`pendding`).
    TaskStatus
}

impl TaskStatus {
    /// `finish` or `stopped`: nothing will happen to the task any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Finish | TaskStatus::Stopped)
    }
}

/// What the scheduler reported for one run of a task. Times are added by the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskResult {
    /// The scheduler's flag (`"true"` / `"false"` on the wire).
    pub flag: bool,
    /// The scheduler's error, `""` when none.
    pub error: String,
    /// `1` success, `0` the worker reported failure, `-1` the agent could not run the worker.
    pub worker_flag: Option<i32>,
    pub worker_message: String,
    /// Milliseconds, when known.
    pub worker_costtime: Option<i64>,
}

impl TaskResult {
    /// The result of a run that never reached its agent.
    pub fn delivery_failed() -> TaskResult {
        TaskResult {
            flag: false,
            error: ErrorCode::SendJobFail.to_string(),
            worker_flag: Some(-1),
            worker_message: String::new(),
            worker_costtime: None,
        }
    }

    /// Whether the task's dependants may run: `flag` true and `worker_flag == 1`.
    pub fn succeeded(&self) -> bool {
        self.flag && self.worker_flag == Some(1)
    }
}

/// One task of a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub id: Id,
    /// The task of the same queue this one waits for.
    pub depend_on: Option<Id>,
    pub status: TaskStatus,
    /// The run id of the dispatch; set from the moment the task is `running`.
    pub run_id: Option<Id>,
    /// The machine's own error for the task (why it was stopped, or that its cancel failed);
    /// reported while the task has no result.
    pub error: String,
    /// The run's result, once it arrived.
    pub result: Option<TaskResult>,
}

impl Task {
    /// The error the API reports: the result's once there is one, else the machine's own.
    pub fn reported_error(&self) -> &str {
        match &self.result {
            Some(r) => &r.error,
            None => &self.error,
        }
    }
}

/// Something the caller must do after persisting the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send the task to its agent as run `run_id` (the task is already `running`).
    Dispatch { task: Id, run_id: Id },
    /// Ask the agent to cancel run `run_id`, then report with [`Queue::on_cancel_result`].
    Cancel { task: Id, run_id: Id },
}

/// A queue and its tasks, in the order they were added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    pub id: Id,
    pub app: String,
    pub status: QueueStatus,
    pub tasks: Vec<Task>,
}

impl Queue {
    /// A new, empty, `pendding` queue.
    pub fn new(id: Id, app: impl Into<String>) -> Queue {
        Queue {
            id,
            app: app.into(),
            status: QueueStatus::Pendding,
            tasks: Vec::new(),
        }
    }

    /// The task with this id.
    pub fn task(&self, id: Id) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// The task dispatched as run `run_id`, whatever its status now.
    pub fn task_by_run(&self, run_id: Id) -> Option<&Task> {
        self.tasks.iter().find(|t| t.run_id == Some(run_id))
    }

    /// Every task id with its status, in insertion order: the reply of `queue/stop`.
    pub fn statuses(&self) -> Vec<(Id, TaskStatus)> {
        self.tasks.iter().map(|t| (t.id, t.status)).collect()
    }

    /// Adds a `pendding` task with the fresh id `task`.
    ///
    /// `[412.2]` unless the queue is `pendding`; `[412.4]` when `depend_on` is not a task of
    /// this queue; `[500]` if `task` is already one of its ids (the caller draws fresh ids).
    pub fn add_task(&mut self, task: Id, depend_on: Option<Id>) -> Result<(), ErrorCode> {
        if self.status != QueueStatus::Pendding {
            return Err(ErrorCode::QueueStatusIncorrect);
        }
        if let Some(dep) = depend_on
            && self.task(dep).is_none()
        {
            return Err(ErrorCode::DependTaskNotFound);
        }
        if self.task(task).is_some() {
            return Err(ErrorCode::Internal);
        }
        self.tasks.push(Task {
            id: task,
            depend_on,
            status: TaskStatus::Pendding,
            run_id: None,
            error: String::new(),
            result: None,
        });
        Ok(())
    }

    /// Commits the queue: `running`, and every root task dispatched (insertion order).
    ///
    /// `[412.2]` unless the queue is `pendding`, so of two commits only the first dispatches.
    /// A queue without tasks is `finish` at once.
    pub fn commit(
        &mut self,
        next_run_id: &mut dyn FnMut() -> Id,
    ) -> Result<Vec<Effect>, ErrorCode> {
        if self.status != QueueStatus::Pendding {
            return Err(ErrorCode::QueueStatusIncorrect);
        }
        self.status = QueueStatus::Running;
        let mut effects = Vec::new();
        for i in 0..self.tasks.len() {
            if self.tasks[i].depend_on.is_none() && self.tasks[i].status == TaskStatus::Pendding {
                effects.push(self.dispatch(i, next_run_id));
            }
        }
        self.settle();
        Ok(effects)
    }

    /// The result of run `run_id`: its task finishes, and its dependants are dispatched (the
    /// result [succeeded](TaskResult::succeeded)) or stopped with their subtrees.
    ///
    /// Ignored unless a `running` task has that run id.
    pub fn on_result(
        &mut self,
        run_id: Id,
        result: TaskResult,
        next_run_id: &mut dyn FnMut() -> Id,
    ) -> Vec<Effect> {
        let Some(i) = self.running_index(run_id) else {
            return Vec::new();
        };
        let succeeded = result.succeeded();
        let task = &mut self.tasks[i];
        task.status = TaskStatus::Finish;
        task.result = Some(result);
        let mut effects = Vec::new();
        if succeeded {
            if self.status == QueueStatus::Running {
                let id = self.tasks[i].id;
                for j in 0..self.tasks.len() {
                    let t = &self.tasks[j];
                    if t.depend_on == Some(id) && t.status == TaskStatus::Pendding {
                        effects.push(self.dispatch(j, next_run_id));
                    }
                }
            }
        } else {
            self.stop_dependants(i);
        }
        self.settle();
        effects
    }

    /// Run `run_id` could not be delivered: its task finishes with
    /// `[410.1]Send Job To Agent Fail` and `worker_flag` -1; its subtree is stopped.
    ///
    /// Ignored unless a `running` task has that run id.
    pub fn on_delivery_failed(&mut self, run_id: Id) {
        // A failed result never dispatches, so no run id is ever drawn.
        let effects = self.on_result(run_id, TaskResult::delivery_failed(), &mut || {
            unreachable!("a failed result dispatches nothing")
        });
        debug_assert!(effects.is_empty());
    }

    /// Run `run_id`'s agent did not come back in time: its task finishes like a run that
    /// could not be delivered (`[410.1]Send Job To Agent Fail`, `worker_flag` -1) with `why`
    /// as its `worker_message`; its subtree is stopped. A result that arrives later changes
    /// nothing.
    ///
    /// Ignored unless a `running` task has that run id.
    pub fn on_given_up(&mut self, run_id: Id, why: &str) {
        let result = TaskResult {
            worker_message: why.to_owned(),
            ..TaskResult::delivery_failed()
        };
        let effects = self.on_result(run_id, result, &mut || {
            unreachable!("a failed result dispatches nothing")
        });
        debug_assert!(effects.is_empty());
    }

    /// Stops the queue: `pendding` tasks become `stopped`, each `running` task gets an
    /// [`Effect::Cancel`], `finish`ed tasks stay. The queue is `stopped`.
    ///
    /// Stopping a stopped queue again cancels whatever still runs (a retry of failed cancels).
    /// A `finish`ed queue is final: nothing changes and nothing is cancelled.
    pub fn stop(&mut self) -> Vec<Effect> {
        if self.status == QueueStatus::Finish {
            return Vec::new();
        }
        self.status = QueueStatus::Stopped;
        let mut effects = Vec::new();
        for t in &mut self.tasks {
            match (t.status, t.run_id) {
                (TaskStatus::Pendding, _) => t.status = TaskStatus::Stopped,
                (TaskStatus::Running, Some(run_id)) => {
                    effects.push(Effect::Cancel { task: t.id, run_id })
                }
                _ => {}
            }
        }
        effects
    }

    /// The agent's answer to an [`Effect::Cancel`]: `ok` → the task is `stopped`; otherwise
    /// it keeps running and reports `[412.3]Stop Task Error`.
    ///
    /// Ignored unless a `running` task has that run id (a result may have come first).
    pub fn on_cancel_result(&mut self, run_id: Id, ok: bool) {
        let Some(i) = self.running_index(run_id) else {
            return;
        };
        let task = &mut self.tasks[i];
        if ok {
            task.status = TaskStatus::Stopped;
            task.error.clear();
            // Normally a no-op: a stop already stopped everything pending.
            self.stop_dependants(i);
            self.settle();
        } else {
            task.error = ErrorCode::StopTaskError.to_string();
        }
    }

    fn running_index(&self, run_id: Id) -> Option<usize> {
        self.tasks
            .iter()
            .position(|t| t.status == TaskStatus::Running && t.run_id == Some(run_id))
    }

    /// Marks task `i` running under a fresh run id and returns the matching dispatch.
    fn dispatch(&mut self, i: usize, next_run_id: &mut dyn FnMut() -> Id) -> Effect {
        let run_id = next_run_id();
        let task = &mut self.tasks[i];
        task.status = TaskStatus::Running;
        task.run_id = Some(run_id);
        Effect::Dispatch {
            task: task.id,
            run_id,
        }
    }

    /// Stops every `pendding` task below task `i`, each naming its own dependency.
    fn stop_dependants(&mut self, i: usize) {
        let mut children: HashMap<Id, Vec<usize>> = HashMap::new();
        for (j, t) in self.tasks.iter().enumerate() {
            if let Some(dep) = t.depend_on {
                children.entry(dep).or_default().push(j);
            }
        }
        let mut todo = vec![i];
        while let Some(parent) = todo.pop() {
            let parent_id = self.tasks[parent].id;
            for &j in children
                .get(&parent_id)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let t = &mut self.tasks[j];
                if t.status == TaskStatus::Pendding {
                    t.status = TaskStatus::Stopped;
                    t.error = format!("dependency {parent_id} did not succeed");
                    todo.push(j);
                }
            }
        }
    }

    /// A running queue whose tasks are all terminal is `finish`.
    fn settle(&mut self) {
        if self.status == QueueStatus::Running && self.tasks.iter().all(|t| t.status.is_terminal())
        {
            self.status = QueueStatus::Finish;
        }
    }
}

/// The `result` of `queue/result`: `{TASK_ID: {status, depend_task_id, flag, error, id,
/// worker_flag, worker_message, worker_costtime}}`. Fields not yet known are `""`;
/// `worker_flag` and `worker_costtime` are numbers once known. Written as JSON text straight
/// from the queue, tasks by id and each task's fields by name (the order a JSON object map
/// gives), without building a tree of values first — a client polling a queue of thousands of
/// tasks costs the center one pass over them.
pub fn result_text(queue: &Queue) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
    serde_json::value::to_raw_value(&ResultView(queue))
}

/// The serialized form of [`result_text`].
struct ResultView<'a>(&'a Queue);

impl Serialize for ResultView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut tasks: Vec<&Task> = self.0.tasks.iter().collect();
        tasks.sort_unstable_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        let mut map = s.serialize_map(Some(tasks.len()))?;
        for t in tasks {
            map.serialize_entry(t.id.as_str(), &TaskView(t))?;
        }
        map.end()
    }
}

/// One task of [`ResultView`], its fields in name order (as a JSON object map sorts them).
struct TaskView<'a>(&'a Task);

impl Serialize for TaskView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        /// A number once known, else `""`.
        struct NumberOrBlank(Option<i64>);
        impl Serialize for NumberOrBlank {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    Some(n) => s.serialize_i64(n),
                    None => s.serialize_str(""),
                }
            }
        }
        let t = self.0;
        let r = t.result.as_ref();
        let mut st = s.serialize_struct("Task", 8)?;
        st.serialize_field(
            "depend_task_id",
            t.depend_on.as_ref().map_or("", Id::as_str),
        )?;
        st.serialize_field("error", t.reported_error())?;
        st.serialize_field(
            "flag",
            r.map_or("", |r| if r.flag { "true" } else { "false" }),
        )?;
        st.serialize_field("id", t.id.as_str())?;
        st.serialize_field("status", t.status.as_str())?;
        st.serialize_field(
            "worker_costtime",
            &NumberOrBlank(r.and_then(|r| r.worker_costtime)),
        )?;
        st.serialize_field(
            "worker_flag",
            &NumberOrBlank(r.and_then(|r| r.worker_flag).map(i64::from)),
        )?;
        st.serialize_field(
            "worker_message",
            r.map_or("", |r| r.worker_message.as_str()),
        )?;
        st.end()
    }
}

/// The `result` of `queue/stop`: `{TASK_ID: status}` (see [`Queue::statuses`]).
pub fn statuses_json(queue: &Queue) -> Value {
    Value::Object(
        queue
            .statuses()
            .into_iter()
            .map(|(id, s)| (id.to_string(), json!(s.as_str())))
            .collect(),
    )
}
