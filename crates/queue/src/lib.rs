//! The queue module: queues of tasks that depend on one another (api-v2 §6 "Queues").
//!
//! Contract: a queue is created `pendding`, takes tasks (each depending on at most one earlier
//! task of the same queue), and is committed once; every root task is then dispatched, and a
//! task is dispatched when its dependency finished with `worker_flag == 1`. A task whose
//! dependency did not succeed is `stopped`, and so is its subtree. `stop` stops what is
//! pending and cancels what runs on the agents.
//!
//! Today this crate holds only that contract as a pure state machine ([`machine`]): no I/O,
//! no runtime, no clock. The module wiring (store, bus messages, run ids, times) comes later
//! and drives the machine: it persists the queue after each transition and only then carries
//! out the [`machine::Effect`]s the transition returned.

pub mod machine;
