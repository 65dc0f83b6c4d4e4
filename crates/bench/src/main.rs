//! `elves-bench`: reproducible benchmarks of a running Elves, against baselines measured in
//! the same run.
//!
//! Every scenario starts a real center and real agents (the `elves` binary) on loopback in a
//! temporary directory and installs the native no-op worker as app `noop`:
//!
//! * `rt-latency` compares, round by round, a bare spawn of that worker with a signed
//!   `rt/exec` of it;
//! * `queue-throughput` runs queues of no-op tasks over two agents, end to end, against the
//!   rate at which the machine spawns the worker bare with one spawner per agent.
//! * `cron-lag` fires every-second crons and reads back from the center's records how late
//!   each fire was handed to the scheduler, and whether any instant was missed or fired twice,
//!   against a bare timer's lateness in the same window.
//!
//! Build first, into the same target directory:
//!
//! ```text
//! cargo build --release -p elves-cli -p elves-bench
//! target/release/elves-bench rt-latency --n 2000 --warmup 200 --out rt-latency.md
//! target/release/elves-bench queue-throughput --tasks 1000 --out queue-throughput.md
//! target/release/elves-bench cron-lag --crons 1000 --secs 60 --out cron-lag.md
//! ```
//!
//! Every run is bounded: sample counts are capped, readiness, each request and each spawn
//! have a limit, a whole-run deadline stops the measure, and 30 s past it a watchdog kills the
//! center, the agents and the bench whatever they are doing. Method, figures and findings:
//! `BENCHMARKS.md` at the repository root.

mod cron;
mod agents;
mod harness;
mod queue;
mod rt;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "elves-bench",
    about = "Benchmarks of Elves against same-run baselines"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// rt/exec latency over loopback versus a bare spawn of the same no-op worker.
    RtLatency(rt::RtArgs),
    /// Queue tasks per second end to end over two agents versus the bare spawn rate.
    QueueThroughput(queue::QueueArgs),
    /// Fire lag and exactly-once of 1000 every-second crons on a real center and agents.
    CronLag(cron::CronArgs),
    /// N simulated agents (real agent protocol) heartbeating against one center.
    AgentScale(agents::AgentScaleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::RtLatency(args) => rt::rt_latency(args),
        Cmd::QueueThroughput(args) => queue::queue_throughput(args),
        Cmd::CronLag(args) => cron::cron_lag(args),
        Cmd::AgentScale(args) => agents::agent_scale(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elves-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
