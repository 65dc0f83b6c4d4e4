//! The Elves agent.

pub mod exec;
