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
//! * `rt-throughput` runs 64 concurrent clients of `rt/exec` over two agents against the same
//!   bare spawn rate; `api` runs signed `info/agents/detail` requests on keep-alive connections
//!   against `/healthz` (over `elves up`); `footprint` reads idle RSS, binary size and start-up
//!   time; `callgrind` runs one hot pure path N times for `scripts/callgrind.sh`.
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

mod agents;
mod cron;
mod harness;
mod queue;
mod rt;
// Observability issue: throughput, api and footprint scenarios, instruction counts.
mod api;
mod callgrind;
mod footprint;
mod load;
mod rt_throughput;
// Side by side with Salt (issue 8).
mod peers;

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
    /// rt/exec calls per second with 64 concurrent clients over two agents vs bare spawns.
    RtThroughput(rt_throughput::RtThroughputArgs),
    /// Signed info/agents/detail requests per second vs /healthz (elves up, supervisor mode).
    Api(api::ApiArgs),
    /// Idle RSS of center and agent, elves-agent size, center start-up time.
    Footprint(footprint::FootprintArgs),
    /// Runs one hot pure path N times (for instruction counts: scripts/callgrind.sh).
    Callgrind(callgrind::CallgrindArgs),
    /// The phases of ../shared/peers/salt/bench.py on a center and 10 agents (scripts/bench-salt.sh).
    SaltPeer(peers::SaltPeerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::RtLatency(args) => rt::rt_latency(args),
        Cmd::QueueThroughput(args) => queue::queue_throughput(args),
        Cmd::CronLag(args) => cron::cron_lag(args),
        Cmd::AgentScale(args) => agents::agent_scale(args),
        Cmd::RtThroughput(args) => rt_throughput::rt_throughput(args),
        Cmd::Api(args) => api::api(args),
        Cmd::Footprint(args) => footprint::footprint(args),
        Cmd::Callgrind(args) => callgrind::callgrind(args),
        Cmd::SaltPeer(args) => peers::salt_peer(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elves-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
