//! `elves-bench rt-latency`: rt/exec latency over loopback against a bare spawn of the same
//! no-op worker, round by round.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use clap::Args;
use elves_bench::{Summary, TABLE_HEAD, WorkerEvent, ms, row};
use elves_sign::SignType;

use crate::harness::{
    AGENT_TRACE_FILTER, Cluster, ClusterOpts, CommonArgs, JOB_TIMEOUT, Machine, RT_PATH, RunStart,
    bare_std, bare_tokio, envelope_result, loadavg, rt_params, unix_us, us,
};

#[derive(Args)]
pub struct RtArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Measured rounds (each: one bare std spawn, one bare tokio spawn, one rt/exec).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    n: u32,
    /// Rounds run first and thrown away.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    warmup: u32,
    /// Run the agent with debug logs of its executor and split each rt/exec into the way
    /// down (client to worker spawn), the worker run and the way back, from log timestamps.
    #[arg(long)]
    agent_trace: bool,
}

struct RtSample {
    took: Duration,
    sent_us: i64,
    recv_us: i64,
    id: String,
    costtime_ms: i64,
}

/// One rt/exec of the no-op worker on 127.0.0.1, signed before the timer starts, timed
/// until the whole answer is read and checked (`flag` `true`, `worker_flag` 1).
async fn exec(c: &Cluster) -> anyhow::Result<RtSample> {
    let body = c.api.sign(RT_PATH, &rt_params("127.0.0.1"));
    let sent = SystemTime::now();
    let t0 = Instant::now();
    let text = c.api.send(RT_PATH, body).await?;
    let took = t0.elapsed();
    let recv = SystemTime::now();
    let r = envelope_result(RT_PATH, &text)?;
    ensure!(r["worker_flag"] == 1, "rt/exec did not succeed: {text}");
    let id = match &r["id"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(RtSample {
        took,
        sent_us: unix_us(sent),
        recv_us: unix_us(recv),
        id,
        costtime_ms: r["worker_costtime"].as_i64().unwrap_or(-1),
    })
}

// ---------------------------------------------------------------------------------------
// The run

struct Series {
    bare_std: Vec<f64>,
    bare_tokio: Vec<f64>,
    rt: Vec<RtSample>,
}

pub fn rt_latency(args: RtArgs) -> anyhow::Result<()> {
    let RunStart {
        started,
        deadline,
        machine: m,
        load_start,
        sign_type,
    } = args.common.begin()?;
    let ips = ["127.0.0.1".to_owned()];
    let mut cluster = Cluster::start(&ClusterOpts {
        bin_dir: args.common.bin_dir.as_deref(),
        agent_ips: &ips,
        agent_filter: if args.agent_trace {
            AGENT_TRACE_FILTER
        } else {
            "info"
        },
        sign_type,
        lean_agent: false,
        worker: args.common.worker,
    })?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let measured = rt.block_on(async {
        cluster.ready(&ips).await?;
        eprintln!(
            "elves-bench: center and agent ready after {:.1} s; {} warm-up + {} measured rounds",
            started.elapsed().as_secs_f64(),
            args.warmup,
            args.n
        );

        // Interleaved rounds so drift and neighbours' load hit every series alike.
        let mut s = Series {
            bare_std: Vec::new(),
            bare_tokio: Vec::new(),
            rt: Vec::new(),
        };
        let mut partial = false;
        let total = u64::from(args.warmup) + u64::from(args.n);
        for round in 0..total {
            if Instant::now() >= deadline {
                partial = true;
                break;
            }
            let a = bare_std(&cluster.entry, &cluster.app_dir, round)?;
            let b = bare_tokio(&cluster.entry, &cluster.app_dir, round).await?;
            let c = exec(&cluster).await?;
            if round >= u64::from(args.warmup) {
                s.bare_std.push(us(a));
                s.bare_tokio.push(us(b));
                s.rt.push(c);
            }
        }
        anyhow::Ok((s, partial))
    });
    drop(rt);
    let kept = args.common.keep(&mut cluster);
    let agent_log = cluster.agents[0].stderr.clone();
    drop(cluster);
    let (series, partial) = measured?;
    let load_end = loadavg();

    let trace = if args.agent_trace {
        Some(agent_trace(&agent_log, &series.rt)?)
    } else {
        None
    };
    let report = render(&Report {
        m: &m,
        args: &args,
        sign_type,
        load_start,
        load_end,
        series: &series,
        partial,
        trace,
        wall: started.elapsed(),
    })?;
    args.common.publish(&report, kept)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Agent-side split, from the agent's debug log

struct Trace {
    down: Vec<f64>,
    exec: Vec<f64>,
    up: Vec<f64>,
    matched: usize,
}

/// Lines up the agent's "starting worker" / "worker finished" log lines (by task id) with
/// the client's send and receive times. Same machine, same wall clock.
fn agent_trace(log: &Path, rt: &[RtSample]) -> anyhow::Result<Trace> {
    use std::collections::HashMap;
    let text = std::fs::read_to_string(log).context("reading the agent's log")?;
    let mut start: HashMap<String, i64> = HashMap::new();
    let mut end: HashMap<String, i64> = HashMap::new();
    for line in text.lines() {
        match elves_bench::worker_log_event(line) {
            Some((WorkerEvent::Start, task, ts)) => start.insert(task, ts),
            Some((WorkerEvent::Finish, task, ts)) => end.insert(task, ts),
            Some((WorkerEvent::Done, ..)) | None => None,
        };
    }
    let mut t = Trace {
        down: Vec::new(),
        exec: Vec::new(),
        up: Vec::new(),
        matched: 0,
    };
    for s in rt {
        let (Some(&a), Some(&b)) = (start.get(&s.id), end.get(&s.id)) else {
            continue;
        };
        let sent = elves_bench::unix_micros_of_day(s.sent_us);
        let recv = elves_bench::unix_micros_of_day(s.recv_us);
        t.down.push(elves_bench::tod_diff(a, sent) as f64);
        t.exec.push(elves_bench::tod_diff(b, a) as f64);
        t.up.push(elves_bench::tod_diff(recv, b) as f64);
        t.matched += 1;
    }
    ensure!(
        t.matched > 0,
        "no rt/exec matched the agent's log lines (is the executor's debug log on?)"
    );
    Ok(t)
}

// ---------------------------------------------------------------------------------------
// Report

struct Report<'a> {
    m: &'a Machine,
    args: &'a RtArgs,
    sign_type: SignType,
    load_start: String,
    load_end: String,
    series: &'a Series,
    partial: bool,
    trace: Option<Trace>,
    wall: Duration,
}

const TARGET_P50_US: f64 = 1000.0;
const TARGET_P99_US: f64 = 5000.0;

fn render(r: &Report) -> anyhow::Result<String> {
    let s = r.series;
    let bare = Summary::of(&s.bare_std).context("no samples were measured")?;
    let bare_t = Summary::of(&s.bare_tokio).context("no samples")?;
    let rt_us: Vec<f64> = s.rt.iter().map(|x| us(x.took)).collect();
    let rt = Summary::of(&rt_us).context("no samples")?;
    let cost: Vec<f64> =
        s.rt.iter()
            .filter(|x| x.costtime_ms >= 0)
            .map(|x| x.costtime_ms as f64 * 1000.0)
            .collect();
    let paired: Vec<f64> = rt_us
        .iter()
        .zip(&s.bare_std)
        .map(|(rt, bare)| rt - bare)
        .collect();
    let paired = Summary::of(&paired).context("no samples")?;

    let mut o = String::new();
    let w = &mut o;
    use std::fmt::Write as _;
    writeln!(w, "### elves-bench rt-latency\n")?;
    write!(w, "{}", r.m.lines())?;
    writeln!(
        w,
        "- load average (1/5/15 min): {} at start, {} at end",
        r.load_start, r.load_end
    )?;
    writeln!(
        w,
        "- {} measured rounds after {} warm-up rounds{}, wall time {:.1} s; each round runs, \
         one after the other, a bare std spawn, a bare tokio spawn and one rt/exec",
        rt.n,
        r.args.warmup,
        if r.partial {
            " (**stopped by the whole-run deadline: partial**)"
        } else {
            ""
        },
        r.wall.as_secs_f64()
    )?;
    writeln!(
        w,
        "- worker: native no-op (`elves-noop-worker` as `apps/noop/app-worker`), argv \
         `noop run \"\"`, env_clear + allow-list + ELVES_* (as the agent does), stdout/stderr \
         piped, own process group"
    )?;
    writeln!(
        w,
        "- rt/exec: POST {RT_PATH} ip=127.0.0.1 app=noop func=run timeout={JOB_TIMEOUT}, \
         signed {} (signing outside the timer), one keep-alive HTTP/1.1 connection (reqwest); \
         center and agent are `elves center` / `elves agent` child processes, memory bus, SQLite store\n",
        r.sign_type.name()
    )?;
    writeln!(w, "{TABLE_HEAD}")?;
    writeln!(
        w,
        "{}",
        row("bare spawn, std::process (**baseline**)", &bare)
    )?;
    writeln!(w, "{}", row("bare spawn, tokio::process", &bare_t))?;
    writeln!(w, "{}", row("rt/exec over loopback", &rt))?;
    writeln!(w, "{}", row("rt/exec − bare, paired per round", &paired))?;
    if let Some(c) = Summary::of(&cost) {
        writeln!(
            w,
            "{}",
            row("`worker_costtime` reported by the agent (whole ms)", &c)
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "Ratio rt/exec ÷ baseline: p50 {:.2}×, p90 {:.2}×, p99 {:.2}×, mean {:.2}×.\n",
        rt.p50 / bare.p50,
        rt.p90 / bare.p90,
        rt.p99 / bare.p99,
        rt.mean / bare.mean
    )?;
    let o50 = rt.p50 - bare.p50;
    let o99 = rt.p99 - bare.p99;
    let met = |ok: bool| if ok { "**met**" } else { "**missed**" };
    writeln!(
        w,
        "| overhead = rt/exec − baseline | measured (ms) | target (ms) | |"
    )?;
    writeln!(w, "|---|--:|--:|---|")?;
    writeln!(
        w,
        "| at p50 | {} | ≤ {} | {} |",
        ms(o50),
        ms(TARGET_P50_US),
        met(o50 <= TARGET_P50_US)
    )?;
    writeln!(
        w,
        "| at p99 | {} | ≤ {} | {} |",
        ms(o99),
        ms(TARGET_P99_US),
        met(o99 <= TARGET_P99_US)
    )?;
    if let Some(t) = &r.trace {
        writeln!(w)?;
        writeln!(
            w,
            "Where an rt/exec spends its time ({} of {} calls matched in the agent's debug \
             log; wall-clock timestamps of client and agent, same machine):\n",
            t.matched, rt.n
        )?;
        writeln!(w, "{TABLE_HEAD}")?;
        for (name, v) in [
            (
                "down: client send → agent \"starting worker\" (HTTP, auth, bus, scheduler, gateway, gRPC)",
                &t.down,
            ),
            (
                "agent: \"starting worker\" → \"worker finished\" (spawn, pipes, wait)",
                &t.exec,
            ),
            (
                "up: \"worker finished\" → client has the answer (gRPC, gateway, bus, HTTP)",
                &t.up,
            ),
        ] {
            if let Some(s) = Summary::of(v) {
                writeln!(w, "{}", row(name, &s))?;
            }
        }
    }
    Ok(o)
}
