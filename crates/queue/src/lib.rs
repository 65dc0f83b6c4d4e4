//! The queue module: queues of tasks that depend on one another (api-v2 §6 "Queues").
//!
//! Contract: a queue is created `pendding`, takes tasks (each depending on at most one earlier
//! task of the same queue), and is committed once; every root task is then dispatched, and a
//! task is dispatched when its dependency finished with `worker_flag == 1`. A task whose
//! dependency did not succeed is `stopped`, and so is its subtree. `stop` stops what is
//! pending and cancels what runs on the agents.
//!
//! The contract lives in a pure state machine ([`machine`]): no I/O, no runtime, no clock.
//! The module ([`service`]) drives it: it persists the queue after each transition and only
//! then carries out the [`machine::Effect`]s the transition returned.

pub mod machine;
mod service;

pub use service::{MAX_TASKS, Options, Service};
