//! `elves-bench queue-throughput`: how many no-op queue tasks per second a center with its
//! agents carries end to end (first commit → every task seen `finish`), against how fast this
//! machine spawns the same worker at all with as many spawners as there are agents.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use clap::Args;
use elves_bench::{Runs, Tally, WorkerEvent, count_runs, plan_queues, tally};
use elves_sign::SignType;

use crate::harness::{
    APP, Cluster, CommonArgs, FUNC, JOB_TIMEOUT, Machine, RunStart, bare_std_parallel, loadavg,
    unix_us,
};

#[derive(Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Tasks per variant, spread evenly over the queues.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    tasks: u32,
    /// Queues the tasks are spread over (created, filled, then committed one after the other).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    queues: u32,
    /// Agents, with the identities 127.0.0.1, 127.0.0.2, …; task i of a queue runs on agent
    /// i mod agents.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    agents: u32,
    /// The second variant: chains of this many dependent tasks (0 or 1: flat variant only).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    chain_depth: u32,
    /// Rounds, each: the spawn baseline, the flat variant, the chained variant.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// How often each unfinished queue's `queue/result` is read, in milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(5..=1000))]
    poll_ms: u64,
}

const CREATE: &str = "/api/v2/queue/create";
const ADDTASK: &str = "/api/v2/queue/addtask";
const COMMIT: &str = "/api/v2/queue/commit";
const RESULT: &str = "/api/v2/queue/result";
/// The targets of the issue: this many tasks per second end to end, or this share of the
/// spawn rate measured in the same run.
const TARGET_RATE: f64 = 2000.0;
const TARGET_SHARE: f64 = 0.8;

// ---------------------------------------------------------------------------------------
// /proc figures of a process

fn clock_ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    elves_bench::proc_stat_cpu_ticks(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// VmHWM (peak resident set) of `pid`, in kB.
fn peak_rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    elves_bench::proc_status_kb(&status, "VmHWM")
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------------------
// One variant: create, fill, commit, poll

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Flat,
    Chains(usize),
}

impl Shape {
    fn name(self) -> String {
        match self {
            Shape::Flat => "flat (all roots)".into(),
            Shape::Chains(d) => format!("chains of {d}"),
        }
    }
}

struct Variant {
    round: u32,
    shape: Shape,
    tasks: usize,
    /// All `addtask` calls, one after the other.
    add_wall: Duration,
    /// First commit sent → the answer of the poll that saw every task settled.
    e2e: Duration,
    /// Unix µs when the first commit was sent.
    commit_unix_us: i64,
    polls: usize,
    center_ticks: u64,
    agent_ticks: u64,
    /// The whole machine's busy ticks over the same span (workers, the bench and anything
    /// else running included).
    machine_ticks: u64,
    tally: Tally,
    /// (task id, agent index) of every task added.
    ids: Vec<(String, usize)>,
    /// Filled from the agents' logs after the run.
    runs: Runs,
    /// First commit → the last "job finished" of the variant's tasks in the agents' logs.
    last_finish_us: Option<i64>,
}

impl Variant {
    fn rate(&self) -> f64 {
        self.tasks as f64 / self.e2e.as_secs_f64()
    }
}

/// The whole machine's busy ticks (all cores).
fn machine_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    elves_bench::machine_busy_ticks(&stat).context("parsing /proc/stat")
}

fn all_cpu(c: &Cluster) -> anyhow::Result<(u64, u64)> {
    let center = cpu_ticks(c.center.pid())?;
    let mut agents = 0;
    for a in &c.agents {
        agents += cpu_ticks(a.pid())?;
    }
    Ok((center, agents))
}

async fn run_variant(
    c: &mut Cluster,
    args: &QueueArgs,
    ips: &[String],
    round: u32,
    shape: Shape,
    deadline: Instant,
) -> anyhow::Result<Variant> {
    let depth = match shape {
        Shape::Flat => 0,
        Shape::Chains(d) => d,
    };
    let plan = plan_queues(args.tasks as usize, args.queues as usize, ips.len(), depth);
    ensure!(
        plan.iter().all(|q| q.len() <= 10_000),
        "a queue holds at most 10000 tasks: raise --queues"
    );

    // Create and fill (not timed in the end-to-end figure).
    let t_add = Instant::now();
    let mut queues: Vec<(String, Vec<String>)> = Vec::new();
    let mut ids = Vec::new();
    for q in &plan {
        c.check_alive()?;
        let r = c.api.call(CREATE, &[("app", APP.to_owned())]).await?;
        let qid = r["id"].as_str().context("queue/create: no id")?.to_owned();
        let mut task_ids: Vec<String> = Vec::with_capacity(q.len());
        for t in q {
            ensure!(
                Instant::now() < deadline,
                "the whole-run deadline passed while adding tasks"
            );
            let mut p = vec![
                ("queue_id", qid.clone()),
                ("ip", ips[t.agent].clone()),
                ("func", FUNC.to_owned()),
                ("timeout", JOB_TIMEOUT.to_owned()),
            ];
            if let Some(d) = t.depend {
                p.push(("depend_task_id", task_ids[d].clone()));
            }
            let r = c.api.call(ADDTASK, &p).await?;
            let tid = r["id"].as_str().context("queue/addtask: no id")?.to_owned();
            ids.push((tid.clone(), t.agent));
            task_ids.push(tid);
        }
        queues.push((qid, task_ids));
    }
    let add_wall = t_add.elapsed();

    // Commit every queue, then poll until every task is settled.
    let (center0, agents0) = all_cpu(c)?;
    let machine0 = machine_ticks()?;
    let commit_unix_us = unix_us(SystemTime::now());
    let t0 = Instant::now();
    for (qid, _) in &queues {
        c.api.call(COMMIT, &[("queue_id", qid.clone())]).await?;
    }
    let mut settled: Vec<Option<Tally>> = vec![None; queues.len()];
    let mut polls = 0;
    let e2e = loop {
        for (i, (qid, task_ids)) in queues.iter().enumerate() {
            if settled[i].is_some() {
                continue;
            }
            let r = c.api.call(RESULT, &[("queue_id", qid.clone())]).await?;
            polls += 1;
            let t = tally(task_ids, &r);
            if t.settled() {
                settled[i] = Some(t);
            }
        }
        if settled.iter().all(Option::is_some) {
            break t0.elapsed();
        }
        c.check_alive()?;
        if Instant::now() >= deadline {
            bail!(
                "the whole-run deadline passed with {} of {} queues of the {} variant unfinished",
                settled.iter().filter(|s| s.is_none()).count(),
                queues.len(),
                shape.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    };
    let (center1, agents1) = all_cpu(c)?;
    let machine = machine_ticks()?.saturating_sub(machine0);
    let mut total = Tally::default();
    for t in settled.iter().flatten() {
        total.add(t);
    }
    Ok(Variant {
        round,
        shape,
        tasks: ids.len(),
        add_wall,
        e2e,
        commit_unix_us,
        polls,
        center_ticks: center1.saturating_sub(center0),
        agent_ticks: agents1.saturating_sub(agents0),
        machine_ticks: machine,
        tally: total,
        ids,
        runs: Runs::default(),
        last_finish_us: None,
    })
}

// ---------------------------------------------------------------------------------------
// The run

struct Baseline {
    round: u32,
    wall: Duration,
    tasks: usize,
    /// The whole machine's busy ticks while it ran.
    machine_ticks: u64,
}

impl Baseline {
    fn rate(&self) -> f64 {
        self.tasks as f64 / self.wall.as_secs_f64()
    }
}

pub fn queue_throughput(args: QueueArgs) -> anyhow::Result<()> {
    let RunStart {
        started,
        deadline,
        machine: m,
        load_start,
        sign_type,
    } = args.common.begin()?;
    // The agents run at their default level (info): their "job finished" lines name every
    // run's task and are how runs are counted.
    let (ips, mut cluster) = args.common.cluster(sign_type, args.agents, "info")?;
    let mut shapes = vec![Shape::Flat];
    if args.chain_depth > 1 {
        shapes.push(Shape::Chains(args.chain_depth as usize));
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let measured = rt.block_on(async {
        cluster.ready(&ips).await?;
        eprintln!(
            "elves-bench: center and {} agents ready after {:.1} s; {} round(s) of {} tasks",
            ips.len(),
            started.elapsed().as_secs_f64(),
            args.rounds,
            args.tasks
        );
        let mut baselines = Vec::new();
        let mut variants = Vec::new();
        for round in 1..=args.rounds {
            ensure!(
                Instant::now() < deadline,
                "the whole-run deadline passed before round {round}"
            );
            let machine0 = machine_ticks()?;
            let wall = bare_std_parallel(
                &cluster.entry,
                &cluster.app_dir,
                args.tasks as usize,
                ips.len(),
            )?;
            let b = Baseline {
                round,
                wall,
                tasks: args.tasks as usize,
                machine_ticks: machine_ticks()?.saturating_sub(machine0),
            };
            eprintln!(
                "elves-bench: round {round}: bare spawn {:.0} tasks/s",
                b.rate()
            );
            baselines.push(b);
            for &shape in &shapes {
                let v = run_variant(&mut cluster, &args, &ips, round, shape, deadline).await?;
                eprintln!(
                    "elves-bench: round {round}: {}: {:.0} tasks/s end to end ({:.2} s)",
                    shape.name(),
                    v.rate(),
                    v.e2e.as_secs_f64()
                );
                variants.push(v);
            }
        }
        anyhow::Ok((baselines, variants))
    });
    drop(rt);
    let center_hwm = peak_rss_kb(cluster.center.pid()).ok();
    let agent_hwm: Vec<Option<u64>> = cluster
        .agents
        .iter()
        .map(|a| peak_rss_kb(a.pid()).ok())
        .collect();
    cluster.stop();
    let logs: Vec<String> = cluster
        .agents
        .iter()
        .map(|a| std::fs::read_to_string(&a.stderr).unwrap_or_default())
        .collect();
    let kept = args.common.keep(&mut cluster);
    drop(cluster);
    let (baselines, mut variants) = measured?;
    let load_end = loadavg();

    // Runs per task, from the agents' "job finished" lines (info level, one per run: the
    // agents log at their default level, as in production); the last of them.
    let mut started_on: Vec<Vec<String>> = Vec::new();
    let mut finished_at: std::collections::HashMap<String, i64> = Default::default();
    for log in &logs {
        let mut started = Vec::new();
        for line in log.lines() {
            if let Some((WorkerEvent::Done, task, ts)) = elves_bench::worker_log_event(line) {
                finished_at.insert(task.clone(), ts);
                started.push(task);
            }
        }
        started_on.push(started);
    }
    for v in &mut variants {
        v.runs = count_runs(&v.ids, &started_on);
        let commit = elves_bench::unix_micros_of_day(v.commit_unix_us);
        v.last_finish_us = v
            .ids
            .iter()
            .filter_map(|(id, _)| finished_at.get(id))
            .map(|&ts| elves_bench::tod_diff(ts, commit))
            .max();
    }

    let report = render(&Report {
        m: &m,
        args: &args,
        ips: &ips,
        sign_type,
        load_start,
        load_end,
        baselines: &baselines,
        variants: &variants,
        center_hwm,
        agent_hwm,
        wall: started.elapsed(),
    })?;
    args.common.publish(&report, kept)?;
    let bad = variants
        .iter()
        .any(|v| !v.tally.all_ok() || v.runs.duplicated + v.runs.never + v.runs.wrong_agent > 0);
    ensure!(
        !bad,
        "some task did not finish exactly once with worker_flag 1 (see the report)"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report

struct Report<'a> {
    m: &'a Machine,
    args: &'a QueueArgs,
    ips: &'a [String],
    sign_type: SignType,
    load_start: String,
    load_end: String,
    baselines: &'a [Baseline],
    variants: &'a [Variant],
    center_hwm: Option<u64>,
    agent_hwm: Vec<Option<u64>>,
    wall: Duration,
}

impl Report<'_> {
    /// The baseline measured in the variant's round.
    fn baseline_of(&self, v: &Variant) -> anyhow::Result<&Baseline> {
        self.baselines
            .iter()
            .find(|b| b.round == v.round)
            .context("a round without a baseline")
    }
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or_else(|| "?".into(), |kb| format!("{:.1}", kb as f64 / 1024.0))
}

fn render(r: &Report) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let a = r.args;
    let tick_ms = 1000.0 / clock_ticks_per_sec();
    let mut o = String::new();
    let w = &mut o;
    writeln!(w, "### elves-bench queue-throughput\n")?;
    write!(w, "{}", r.m.lines())?;
    writeln!(
        w,
        "- load average (1/5/15 min): {} at start, {} at end; wall time {:.1} s",
        r.load_start,
        r.load_end,
        r.wall.as_secs_f64()
    )?;
    writeln!(
        w,
        "- one `elves center` (memory bus, SQLite store) and {} `elves agent`s ({}), each with \
         {} as app `noop`; child processes of the bench on loopback",
        r.ips.len(),
        r.ips.join(", "),
        a.common.worker.describe()
    )?;
    writeln!(
        w,
        "- per variant: {} tasks in {} queue(s) (`queue/create app=noop`, then `queue/addtask \
         queue_id ip func=run timeout={JOB_TIMEOUT}`, task i on agent i mod {}), then \
         `queue/commit` of each queue and `queue/result` of each unfinished queue every {} ms \
         until every task is terminal; calls signed {}, one keep-alive HTTP/1.1 connection",
        a.tasks,
        a.queues,
        r.ips.len(),
        a.poll_ms,
        r.sign_type.name()
    )?;
    writeln!(
        w,
        "- **end to end** = first commit sent → answer of the poll that saw every task settled \
         (so up to one poll interval late); \"last worker finished\" = the agents' own log time \
         of the last run's `job finished` line, a lower bound of the same span; the agents log \
         at their default level (info)"
    )?;
    writeln!(
        w,
        "- **baseline**: the same worker spawned bare (`std::process`, set up as the agent \
         does: cwd, env allow-list, pipes, own process group), {} spawners at once (one per \
         agent), each one after the other, {} spawns in all, measured in each round right \
         before the variants",
        r.ips.len(),
        a.tasks
    )?;
    writeln!(
        w,
        "- CPU: utime + stime from /proc/PID/stat over commit → last poll (clock tick {tick_ms} \
         ms); the agents' figure excludes their workers (children count only once reaped, into \
         cutime). **Machine CPU**: busy time of all cores from /proc/stat (everything but idle \
         and iowait: workers, center, agents, this bench and anything else running) over the \
         same span, per task, and over the baseline's spawns, per spawn; on an otherwise idle \
         machine their quotient is about the ratio to baseline when both runs keep the cores \
         busy\n"
    )?;

    writeln!(
        w,
        "| round | variant | tasks | end to end (s) | **tasks/s end to end** | commit → last \
         worker finished (s) | baseline spawn (tasks/s) | ratio to baseline | center CPU \
         (ms/task) | agents' CPU (ms/task) | machine CPU (ms/task) | baseline machine CPU \
         (ms/spawn) | polls | addtask phase (tasks/s) |"
    )?;
    writeln!(
        w,
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    )?;
    for v in r.variants {
        let base = r.baseline_of(v)?;
        writeln!(
            w,
            "| {} | {} | {} | {:.3} | **{:.0}** | {} | {:.0} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.0} |",
            v.round,
            v.shape.name(),
            v.tasks,
            v.e2e.as_secs_f64(),
            v.rate(),
            v.last_finish_us
                .map_or_else(|| "?".into(), |us| format!("{:.3}", us as f64 / 1e6)),
            base.rate(),
            v.rate() / base.rate(),
            v.center_ticks as f64 * tick_ms / v.tasks as f64,
            v.agent_ticks as f64 * tick_ms / v.tasks as f64,
            v.machine_ticks as f64 * tick_ms / v.tasks as f64,
            base.machine_ticks as f64 * tick_ms / base.tasks as f64,
            v.polls,
            v.tasks as f64 / v.add_wall.as_secs_f64(),
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "Peak RSS (VmHWM, whole run): center {} MiB; agents {} MiB.\n",
        mib(r.center_hwm),
        r.agent_hwm
            .iter()
            .map(|h| mib(*h))
            .collect::<Vec<_>>()
            .join(" / ")
    )?;

    writeln!(
        w,
        "Exactly once: every task must end `finish` with `worker_flag` 1 in `queue/result` and \
         be run once, on its own agent, per the agents' `job finished` lines.\n"
    )?;
    writeln!(
        w,
        "| round | variant | finish, worker_flag 1 | finish otherwise | stopped | unfinished | \
         missing | unexpected | runs started | tasks run twice or more | never run | on the \
         wrong agent |"
    )?;
    writeln!(w, "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")?;
    for v in r.variants {
        let t = &v.tally;
        let u = &v.runs;
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            v.round,
            v.shape.name(),
            t.ok,
            t.failed,
            t.stopped,
            t.unfinished,
            t.missing,
            t.unexpected,
            u.started,
            u.duplicated,
            u.never,
            u.wrong_agent
        )?;
    }
    writeln!(w)?;

    writeln!(
        w,
        "| target (issue) | variant, round | measured | target | |\n|---|---|--:|--:|---|"
    )?;
    let met = |ok: bool| if ok { "**met**" } else { "**missed**" };
    for v in r.variants {
        let base = r.baseline_of(v)?;
        let name = format!("{}, round {}", v.shape.name(), v.round);
        writeln!(
            w,
            "| tasks/s end to end | {name} | {:.0} | ≥ {TARGET_RATE:.0} | {} |",
            v.rate(),
            met(v.rate() >= TARGET_RATE)
        )?;
        writeln!(
            w,
            "| or: share of the baseline spawn rate | {name} | {:.0} % | ≥ {:.0} % | {} |",
            100.0 * v.rate() / base.rate(),
            100.0 * TARGET_SHARE,
            met(v.rate() >= TARGET_SHARE * base.rate())
        )?;
    }
    Ok(o)
}
