//! `elves-bench salt-peer`: the phases of `../shared/peers/salt/bench.py` (a SaltStack master
//! and N minions measured with Salt's own API) run against one center and N agents on
//! loopback, with the same counts and the same statistics, so that `scripts/bench-salt.sh`
//! can print each measure as a ratio Elves/Salt from one run.
//!
//! * **a** sequential `rt/exec` on the first agent (Salt: `cmd.run true` on m1);
//! * **b** fan-out: one `rt/exec` per agent, all in parallel, latency until every one answered
//!   (Salt: `cmd.run true` to `*`; v2 has no fan-out route, so N calls at once);
//! * **c** a flood of `queue/qksqueue` tasks to the first agent, submitted as fast as they are
//!   accepted, jobs/s to the last completion (Salt: `cmd_async` × M); **c2** the same with at
//!   most `--window` in flight (the sustainable rate);
//! * idle memory of the center and the first agent (VmRSS, VmHWM, PSS, summed over each
//!   process tree) and, per phase, the CPU of the center and the agents (their reaped children,
//!   the workers, included: `cutime + cstime`), of this bench, and of the whole machine, so
//!   that CPU taken by unrelated work on the same host shows.
//!
//! The worker (`--worker true`, the default) is a `/bin/sh` script that runs `/bin/true` and
//! answers its status: a process per call and a second one for the command, as Salt's minion
//! forks a job process that runs `/bin/sh -c true` (remote `cmd.run` defaults to
//! `python_shell=True`). `--worker noop` keeps the native no-op worker (one process per call).
//!
//! Completion of async tasks is seen by polling `queue/result` (v2 has no push of results to
//! a client), so every async figure includes up to one poll sweep of lag; Salt's are the
//! master's own event stamps.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::harness::{
    APP, Api, CommonArgs, FUNC, JOB_TIMEOUT, RT_PATH, RunStart, STEP_LIMIT, loadavg, rt_params,
};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Worker {
    /// A `/bin/sh` script running `/bin/true` (what Salt's `cmd.run true` does).
    True,
    /// The native no-op worker (one process, no command).
    Noop,
}

#[derive(Args)]
pub struct SaltPeerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Agents (127.0.0.1, 127.0.0.2, …), like bench.py's minions m1..mN.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=50))]
    agents: u32,
    /// The worker every call runs.
    #[arg(long, value_enum, default_value_t = Worker::True)]
    worker: Worker,
    /// Warm-up rounds (each: one call on the first agent and one fan-out), not measured.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=1000))]
    warmup: u32,
    /// Phase a: sequential calls.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sync_calls: u32,
    /// Phase b: fan-out repetitions.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    fanout_reps: u32,
    /// Phase c: tasks in the flood.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    async_jobs: u32,
    /// Phase c: returns seen within this many seconds of the first submit make the headline.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    async_timeout: u64,
    /// Phase c: keep watching this many more seconds (reported as "eventual").
    #[arg(long, default_value_t = 240, value_parser = clap::value_parser!(u64).range(0..=3600))]
    async_grace: u64,
    /// Phase c2: tasks in the closed loop (0: skip).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    window_jobs: u32,
    /// Phase c2: most tasks in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    window: u32,
    /// Pause between two sweeps of `queue/result` over the unfinished tasks, milliseconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    poll_ms: u64,
    /// Idle seconds (after every agent ran one job) before the idle memory sample.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    settle_secs: u64,
    /// Also write the summary as JSON to this file (read by scripts/bench-salt.sh).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const QKSQUEUE: &str = "/api/v2/queue/qksqueue";
const RESULT: &str = "/api/v2/queue/result";

/// The worker of `--worker true`: runs `/bin/true`, answers `true` with an empty result when
/// it exits 0 (Salt's check: retcode 0 and ret ""), `false` with its status otherwise.
const TRUE_WORKER: &str = "#!/bin/sh\n\
# elves-bench salt-peer: the equivalent of Salt's `cmd.run true`.\n\
/bin/true\n\
rc=$?\n\
if [ \"$rc\" -eq 0 ]; then\n\
  printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult></ElvesWResult>'\n\
else\n\
  printf '<ElvesWFlag>false</ElvesWFlag><ElvesWResult>/bin/true exited %s</ElvesWResult>' \"$rc\"\n\
fi\n";

// ---------------------------------------------------------------------------------------
// Pure: bench.py's statistics

/// bench.py's `pctl`: the percentile with linear interpolation between closest ranks
/// (numpy's default) of `sorted` (ascending); `None` when empty.
fn pctl(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let k = (n - 1) as f64 * p / 100.0;
    let lo = k.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64))
}

/// bench.py's `summ`: n, min, p50, p90, p99, max, mean of milliseconds, rounded to 2 places.
fn summ(ms: &[f64]) -> Value {
    if ms.is_empty() {
        return json!({ "n": 0 });
    }
    let mut s = ms.to_vec();
    s.sort_by(f64::total_cmp);
    let r = |v: f64| (v * 100.0).round() / 100.0;
    let p = |q: f64| r(pctl(&s, q).unwrap_or(f64::NAN));
    json!({
        "n": s.len(),
        "min": r(s[0]),
        "p50": p(50.0),
        "p90": p(90.0),
        "p99": p(99.0),
        "max": r(s[s.len() - 1]),
        "mean": r(s.iter().sum::<f64>() / s.len() as f64),
    })
}

/// bench.py's headline of the flood: every task back within the limit → n ÷ (last return −
/// first submit); otherwise → the returns within the limit ÷ the limit. With the basis.
fn flood_rate(submitted: usize, returns_s: &[f64], limit_s: f64) -> (f64, &'static str) {
    let in_limit: Vec<f64> = returns_s
        .iter()
        .copied()
        .filter(|&t| t <= limit_s)
        .collect();
    let last = in_limit.iter().copied().fold(0.0, f64::max);
    if submitted > 0 && in_limit.len() == submitted && last > 0.0 {
        (submitted as f64 / last, "n/(last_return-first_submit)")
    } else {
        (
            in_limit.len() as f64 / limit_s,
            "returned_within_limit/limit",
        )
    }
}

/// The process and its descendants, from `(pid, ppid)` pairs (bench.py's `tree`).
fn tree_of(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    // Bounded: each pass adds only pids not yet in `out`, at most every pid once.
    while i < out.len() && out.len() <= parents.len() + 1 {
        let p = out[i];
        for &(c, pp) in parents {
            if pp == p && !out.contains(&c) {
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

/// `(state, ppid, utime + stime + cutime + cstime)` of a process.
type Stat = (char, u32, u64);

/// The [`Stat`] of a process from the text of its `/proc/PID/stat`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let mut ticks = 0u64;
    for i in 11..=14 {
        ticks += f.get(i)?.parse::<i64>().ok()?.max(0) as u64;
    }
    Some((state, ppid, ticks))
}

// ---------------------------------------------------------------------------------------
// /proc

fn clk_tck() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

fn all_parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, ppid, _) = parse_stat(&stat)?;
        Some((pid, ppid))
    })
    .collect()
}

/// utime + stime + cutime + cstime of the live processes of the trees of `roots`, seconds.
fn trees_cpu_s(roots: &[u32]) -> f64 {
    let parents = all_parents();
    let mut ticks = 0;
    for &r in roots {
        for p in tree_of(r, &parents) {
            if let Some((_, _, t)) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
            {
                ticks += t;
            }
        }
    }
    ticks as f64 / clk_tck()
}

/// (total, busy) CPU-seconds of the whole machine from `/proc/stat`.
fn machine_cpu_s() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0.0, 0.0);
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    (
        total as f64 / clk_tck(),
        (total - idle.min(total)) as f64 / clk_tck(),
    )
}

fn self_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0.0, |(_, _, t)| t as f64 / clk_tck())
}

/// CPU of one phase, bench.py's `Cpu`.
struct Cpu {
    roots: Vec<u32>,
    at: (Instant, f64, f64, f64, f64),
}

impl Cpu {
    fn snap(roots: &[u32]) -> (Instant, f64, f64, f64, f64) {
        let (tot, busy) = machine_cpu_s();
        (Instant::now(), trees_cpu_s(roots), self_cpu_s(), tot, busy)
    }

    fn start(roots: &[u32]) -> Cpu {
        Cpu {
            roots: roots.to_vec(),
            at: Cpu::snap(roots),
        }
    }

    fn result(&self) -> Value {
        let b = Cpu::snap(&self.roots);
        let a = &self.at;
        let (ours, bench, busy) = (b.1 - a.1, b.2 - a.2, b.4 - a.4);
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        json!({
            "wall_s": r((b.0 - a.0).as_secs_f64()),
            "elves_daemons_cpu_s": r(ours),
            "bench_client_cpu_s": r(bench),
            "machine_busy_cpu_s": r(busy),
            "machine_capacity_cpu_s": r(b.3 - a.3),
            "other_processes_cpu_s": r((busy - ours - bench).max(0.0)),
        })
    }
}

/// bench.py's `mem_report`: the main process's VmRSS and VmHWM, and over its tree the sums of
/// VmRSS, VmHWM and PSS (kB).
fn mem_report(pid: u32) -> Value {
    let parents = all_parents();
    let t = tree_of(pid, &parents);
    let status = |p: u32, key: &str| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| elves_bench::proc_status_kb(&s, key))
    };
    let pss = |p: u32| {
        std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .ok()
            .and_then(|s| elves_bench::proc_status_kb(&s, "Pss"))
            .unwrap_or(0)
    };
    let (mut rss, mut hwm, mut pss_sum) = (0, 0, 0);
    for &p in &t {
        rss += status(p, "VmRSS").unwrap_or(0);
        hwm += status(p, "VmHWM").unwrap_or(0);
        pss_sum += pss(p);
    }
    json!({
        "pid": pid,
        "main_vmrss_kb": status(pid, "VmRSS"),
        "main_vmhwm_kb": status(pid, "VmHWM"),
        "tree_procs": t.len(),
        "tree_vmrss_kb_sum": rss,
        "tree_vmhwm_kb_sum": hwm,
        "tree_pss_kb_sum": pss_sum,
    })
}

// ---------------------------------------------------------------------------------------
// Calls

/// One `rt/exec` on `ip`: Ok(ms) when it answered `worker_flag` 1 with an empty result.
async fn rt_once(api: &Api, ip: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let r = api.call(RT_PATH, &rt_params(ip)).await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    ensure!(r["worker_flag"] == 1, "{ip}: worker_flag is not 1: {r}");
    Ok(ms)
}

/// Phase a: `calls` sequential calls on `ip`, bounded by `limit`.
async fn phase_sync(api: &Api, ip: &str, calls: u32, limit: Instant) -> Value {
    let (mut lat, mut fails, mut errs) = (Vec::new(), 0, Vec::<String>::new());
    for _ in 0..calls {
        if Instant::now() > limit {
            break;
        }
        match rt_once(api, ip).await {
            Ok(ms) => lat.push(ms),
            Err(e) => {
                fails += 1;
                if errs.len() < 3 {
                    errs.push(format!("{e:#}").chars().take(200).collect());
                }
            }
        }
    }
    let mut v = summ(&lat);
    v["failed"] = json!(fails);
    v["errors"] = json!(errs);
    v
}

/// Phase b: `reps` times one call per agent, all at once; latency until the last answered.
async fn phase_fanout(api: &Api, ips: &[String], reps: u32, limit: Instant) -> Value {
    let (mut lat, mut fails, mut partial, mut errs) = (Vec::new(), 0, Vec::new(), Vec::new());
    for _ in 0..reps {
        if Instant::now() > limit {
            break;
        }
        let t = Instant::now();
        let answers = futures::future::join_all(ips.iter().map(|ip| rt_once(api, ip))).await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let ok = answers.iter().filter(|a| a.is_ok()).count();
        if ok == ips.len() {
            lat.push(ms);
        } else {
            fails += 1;
            partial.push(ok);
            if let Some(Err(e)) = answers.into_iter().find(|a| a.is_err())
                && errs.len() < 3
            {
                errs.push(format!("{e:#}").chars().take(200).collect::<String>());
            }
        }
    }
    let mut v = summ(&lat);
    v["failed"] = json!(fails);
    v["returns_in_failed_reps"] = json!(partial.iter().take(5).collect::<Vec<_>>());
    v["errors"] = json!(errs);
    v
}

/// One submitted async task.
struct Job {
    queue_id: String,
    task_id: String,
    submitted: Instant,
    /// When a sweep saw it settled, and whether it finished with `worker_flag` 1.
    done: Option<(Instant, bool)>,
}

async fn submit(api: &Api, ip: &str) -> anyhow::Result<Job> {
    let submitted = Instant::now();
    let r = api
        .call(
            QKSQUEUE,
            &[
                ("ip", ip.to_owned()),
                ("app", APP.to_owned()),
                ("func", FUNC.to_owned()),
                ("timeout", JOB_TIMEOUT.to_owned()),
            ],
        )
        .await?;
    let field = |k: &str| {
        r[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("queue/qksqueue: no {k} in {r}"))
    };
    Ok(Job {
        queue_id: field("id")?,
        task_id: field("task_id")?,
        submitted,
        done: None,
    })
}

/// Reads `queue/result` of every unfinished job once; marks the settled ones. Returns how many
/// calls failed.
async fn sweep(api: &Api, jobs: &mut [Job]) -> usize {
    let mut errors = 0;
    for j in jobs.iter_mut().filter(|j| j.done.is_none()) {
        match api.call(RESULT, &[("queue_id", j.queue_id.clone())]).await {
            Ok(r) => {
                let t = elves_bench::tally(std::slice::from_ref(&j.task_id), &r);
                if t.settled() {
                    j.done = Some((Instant::now(), t.all_ok()));
                }
            }
            Err(_) => errors += 1,
        }
    }
    errors
}

/// Phase c: `m` tasks submitted one after the other as fast as they are accepted, then swept
/// until all are settled or `limit + grace` has passed.
async fn phase_flood(
    api: &Api,
    ip: &str,
    m: u32,
    limit: Duration,
    grace: Duration,
    poll: Duration,
) -> Value {
    let t0 = Instant::now();
    let (deadline, hard_end) = (t0 + limit, t0 + limit + grace);
    let mut jobs = Vec::new();
    let (mut submit_err, mut stop_reason, mut poll_err) = (0, None::<String>, 0);
    for _ in 0..m {
        if Instant::now() > deadline {
            stop_reason = Some("deadline during submit".into());
            break;
        }
        match submit(api, ip).await {
            Ok(j) => jobs.push(j),
            Err(_) => submit_err += 1,
        }
    }
    let submit_s = t0.elapsed().as_secs_f64();
    let mut sweeps = 0;
    while jobs.iter().any(|j| j.done.is_none()) && Instant::now() < hard_end {
        poll_err += sweep(api, &mut jobs).await;
        sweeps += 1;
        tokio::time::sleep(poll).await;
    }
    let since = |t: Instant| t.duration_since(t0).as_secs_f64();
    let returns: Vec<f64> = jobs
        .iter()
        .filter_map(|j| j.done.map(|d| since(d.0)))
        .collect();
    let (rate, basis) = flood_rate(jobs.len(), &returns, limit.as_secs_f64());
    let in_limit = returns
        .iter()
        .filter(|&&t| t <= limit.as_secs_f64())
        .count();
    if in_limit < jobs.len() && stop_reason.is_none() {
        stop_reason = Some(format!("not all returned within {} s", limit.as_secs()));
    }
    let per_job: Vec<f64> = jobs
        .iter()
        .filter_map(|j| {
            j.done
                .map(|d| d.0.duration_since(j.submitted).as_secs_f64() * 1e3)
        })
        .collect();
    let last = returns.iter().copied().fold(0.0, f64::max);
    let r2 = |v: f64| (v * 100.0).round() / 100.0;
    json!({
        "jobs_requested": m,
        "jobs_submitted": jobs.len(),
        "submit_errors": submit_err,
        "submit_s": r2(submit_s),
        "submit_rate_per_s": if submit_s > 0.0 { r2(jobs.len() as f64 / submit_s) } else { 0.0 },
        "limit_s": limit.as_secs(),
        "returned_within_limit": in_limit,
        "end_to_end_jobs_per_s": r2(rate),
        "end_to_end_basis": basis,
        "stopped_early": stop_reason,
        "eventual_returned": returns.len(),
        "eventual_returned_ok": jobs.iter().filter(|j| matches!(j.done, Some((_, true)))).count(),
        "eventual_first_submit_to_last_return_s": r2(last),
        "eventual_per_job_submit_to_seen_ms": summ(&per_job),
        "sweeps": sweeps,
        "poll_errors": poll_err,
    })
}

/// Phase c2: at most `window` tasks in flight until `m` are back (or `limit`).
async fn phase_window(
    api: &Api,
    ip: &str,
    m: u32,
    window: u32,
    limit: Duration,
    poll: Duration,
) -> Value {
    let t0 = Instant::now();
    let deadline = t0 + limit;
    let mut jobs: Vec<Job> = Vec::new();
    let (mut submit_err, mut poll_err) = (0, 0);
    // Bounded: each pass submits, sweeps or sleeps; the deadline ends it.
    while Instant::now() <= deadline {
        let outstanding = jobs.iter().filter(|j| j.done.is_none()).count();
        if jobs.len() >= m as usize && outstanding == 0 {
            break;
        }
        let mut free = (window as usize).saturating_sub(outstanding);
        while free > 0 && jobs.len() < m as usize && submit_err <= 50 {
            match submit(api, ip).await {
                Ok(j) => {
                    jobs.push(j);
                    free -= 1;
                }
                Err(_) => submit_err += 1,
            }
        }
        poll_err += sweep(api, &mut jobs).await;
        if submit_err > 50 {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    let since = |t: Instant| t.duration_since(t0).as_secs_f64();
    let last = jobs
        .iter()
        .filter_map(|j| j.done.map(|d| since(d.0)))
        .fold(0.0, f64::max);
    let returned = jobs.iter().filter(|j| j.done.is_some()).count();
    let per_job: Vec<f64> = jobs
        .iter()
        .filter_map(|j| {
            j.done
                .map(|d| d.0.duration_since(j.submitted).as_secs_f64() * 1e3)
        })
        .collect();
    let r2 = |v: f64| (v * 100.0).round() / 100.0;
    json!({
        "jobs_requested": m,
        "window": window,
        "jobs_submitted": jobs.len(),
        "submit_errors": submit_err,
        "jobs_returned": returned,
        "jobs_returned_ok": jobs.iter().filter(|j| matches!(j.done, Some((_, true)))).count(),
        "first_submit_to_last_return_s": r2(last),
        "jobs_per_s": if last > 0.0 { r2(returned as f64 / last) } else { 0.0 },
        "per_job_submit_to_seen_ms": summ(&per_job),
        "limit_s": limit.as_secs(),
        "poll_errors": poll_err,
    })
}

// ---------------------------------------------------------------------------------------
// The run

/// Replaces the installed worker by the `/bin/true` script (before any job ran).
fn install_true_worker(entry: &Path) -> anyhow::Result<()> {
    ensure!(
        Path::new("/bin/sh").is_file() && Path::new("/bin/true").is_file(),
        "--worker true needs /bin/sh and /bin/true"
    );
    let tmp = entry.with_extension("new");
    std::fs::write(&tmp, TRUE_WORKER)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, entry).context("installing the /bin/true worker")?;
    Ok(())
}

pub fn salt_peer(args: SaltPeerArgs) -> anyhow::Result<()> {
    let RunStart {
        started,
        deadline,
        machine: m,
        load_start,
        sign_type,
    } = args.common.begin()?;
    let (ips, mut cluster) = args.common.cluster(sign_type, args.agents, "info")?;
    if args.worker == Worker::True {
        install_true_worker(&cluster.entry)?;
    }
    // One keep-alive connection per agent for the fan-out (as Salt's publisher reaches all).
    let mut api = cluster.api.clone();
    api.client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(ips.len() + 1)
        .timeout(STEP_LIMIT)
        .build()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(cluster.ready(&ips))?;
    eprintln!(
        "elves-bench: center and {} agents ready after {:.1} s",
        ips.len(),
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    cluster.check_alive()?;
    let center = cluster.center.pid();
    let agent1 = cluster.agents[0].pid();
    let mut roots = vec![center];
    roots.extend(cluster.agents.iter().map(|a| a.pid()));
    let agents_idle_rss: u64 = cluster
        .agents
        .iter()
        .filter_map(|a| {
            std::fs::read_to_string(format!("/proc/{}/status", a.pid()))
                .ok()
                .and_then(|s| elves_bench::proc_status_kb(&s, "VmRSS"))
        })
        .sum();
    let mem_idle = json!({ "center": mem_report(center), "agent1": mem_report(agent1),
                           "all_agents_vmrss_kb_sum": agents_idle_rss });

    let phase_limit = |secs: u64| (Instant::now() + Duration::from_secs(secs)).min(deadline);
    let poll = Duration::from_millis(args.poll_ms);
    let ip1 = ips[0].clone();
    let mut phases = serde_json::Map::new();
    let mem_after_c;
    {
        let api = &api;
        let ips = &ips;
        let phases = &mut phases;
        mem_after_c = rt.block_on(async {
            for _ in 0..args.warmup {
                let _ = rt_once(api, &ip1).await;
                let _ = futures::future::join_all(ips.iter().map(|ip| rt_once(api, ip))).await;
            }
            eprintln!("elves-bench: a: sequential rt/exec on {ip1} ...");
            let c = Cpu::start(&roots);
            let mut v = phase_sync(api, &ip1, args.sync_calls, phase_limit(300)).await;
            v["cpu"] = c.result();
            phases.insert("a_sync_rt_exec_agent1_ms".into(), v);

            eprintln!("elves-bench: b: fan-out to {} agents ...", ips.len());
            let c = Cpu::start(&roots);
            let mut v = phase_fanout(api, ips, args.fanout_reps, phase_limit(300)).await;
            v["cpu"] = c.result();
            phases.insert("b_fanout_rt_exec_all_ms".into(), v);

            eprintln!(
                "elves-bench: c: flood of {} queue/qksqueue to {ip1} ...",
                args.async_jobs
            );
            let remaining = deadline.saturating_duration_since(Instant::now());
            let limit = Duration::from_secs(args.async_timeout).min(remaining);
            let grace = Duration::from_secs(args.async_grace).min(remaining.saturating_sub(limit));
            let c = Cpu::start(&roots);
            let mut v = phase_flood(api, &ip1, args.async_jobs, limit, grace, poll).await;
            v["cpu"] = c.result();
            phases.insert("c_async_flood_agent1".into(), v);
            let mem_after_c = json!({ "center": mem_report(center), "agent1": mem_report(agent1) });

            if args.window_jobs > 0 {
                eprintln!(
                    "elves-bench: c2: {} tasks, at most {} in flight ...",
                    args.window_jobs, args.window
                );
                let remaining = deadline.saturating_duration_since(Instant::now());
                let limit = Duration::from_secs(args.async_timeout).min(remaining);
                let c = Cpu::start(&roots);
                let mut v =
                    phase_window(api, &ip1, args.window_jobs, args.window, limit, poll).await;
                v["cpu"] = c.result();
                phases.insert("c2_async_window_agent1".into(), v);
            }
            mem_after_c
        });
    }
    cluster.check_alive()?;
    std::thread::sleep(Duration::from_secs(2));
    let mem_after = json!({ "center": mem_report(center), "agent1": mem_report(agent1) });
    let load_end = loadavg();
    let kept = args.common.keep(&mut cluster);
    cluster.stop();
    drop(cluster);

    let res = json!({
        "tool": "elves",
        "date_utc": m.date,
        "n_agents": ips.len(),
        "worker": match args.worker { Worker::True => "sh script running /bin/true", Worker::Noop => "native no-op" },
        "machine": { "nproc": m.nproc, "cpu_model": m.cpu_model, "kernel": m.kernel },
        "loadavg_at_start": load_start,
        "loadavg_at_end": load_end,
        "params": {
            "warmup": args.warmup, "sync_calls": args.sync_calls, "fanout_reps": args.fanout_reps,
            "async_jobs": args.async_jobs, "async_timeout": args.async_timeout,
            "async_grace": args.async_grace, "window_jobs": args.window_jobs,
            "window": args.window, "poll_ms": args.poll_ms, "settle_secs": args.settle_secs,
            "sign_type": sign_type.name(),
        },
        "mem_idle": mem_idle,
        "mem_after_c": mem_after_c,
        "mem_after": mem_after,
        "phases": phases,
        "wall_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&res)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let report = render(&res)?;
    args.common.publish(&report, kept)
}

fn render(r: &Value) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let mut o = String::new();
    let w = &mut o;
    let p = &r["phases"];
    // Strings without their JSON quotes.
    let t = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    writeln!(w, "## salt-peer: the phases of bench.py on Elves\n")?;
    writeln!(
        w,
        "- date: {}; load average {} at the start, {} at the end; wall {} s",
        t(&r["date_utc"]),
        t(&r["loadavg_at_start"]),
        t(&r["loadavg_at_end"]),
        r["wall_s"]
    )?;
    writeln!(
        w,
        "- one center and {} agents on loopback; worker: {}\n",
        r["n_agents"],
        t(&r["worker"])
    )?;
    writeln!(
        w,
        "| phase (ms) | n | p50 | p90 | p99 | max | failed | daemons' CPU (s) | others' CPU (s) |"
    )?;
    writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")?;
    for (name, key) in [
        (
            "a: rt/exec on agent 1, sequential",
            "a_sync_rt_exec_agent1_ms",
        ),
        (
            "b: fan-out, one rt/exec per agent",
            "b_fanout_rt_exec_all_ms",
        ),
    ] {
        let v = &p[key];
        writeln!(
            w,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            v["n"],
            v["p50"],
            v["p90"],
            v["p99"],
            v["max"],
            v["failed"],
            v["cpu"]["elves_daemons_cpu_s"],
            v["cpu"]["other_processes_cpu_s"]
        )?;
    }
    let c = &p["c_async_flood_agent1"];
    writeln!(
        w,
        "\nc: flood of {} tasks: {} jobs/s end to end ({}), {} back within {} s, {} ok; \
         submitted at {}/s; daemons' CPU {} s.",
        c["jobs_submitted"],
        c["end_to_end_jobs_per_s"],
        t(&c["end_to_end_basis"]),
        c["returned_within_limit"],
        c["limit_s"],
        c["eventual_returned_ok"],
        c["submit_rate_per_s"],
        c["cpu"]["elves_daemons_cpu_s"]
    )?;
    let c2 = &p["c2_async_window_agent1"];
    if !c2.is_null() {
        writeln!(
            w,
            "c2: {} tasks, at most {} in flight: {} jobs/s, per task p50 {} ms, p99 {} ms.",
            c2["jobs_returned"],
            c2["window"],
            c2["jobs_per_s"],
            c2["per_job_submit_to_seen_ms"]["p50"],
            c2["per_job_submit_to_seen_ms"]["p99"]
        )?;
    }
    let kb = |v: &Value| {
        v.as_f64()
            .map_or("?".into(), |k| format!("{:.1}", k / 1024.0))
    };
    for who in ["center", "agent1"] {
        let i = &r["mem_idle"][who];
        writeln!(
            w,
            "{who} idle: VmRSS {} MiB, VmHWM {} MiB, PSS {} MiB ({} process(es)).",
            kb(&i["main_vmrss_kb"]),
            kb(&i["main_vmhwm_kb"]),
            kb(&i["tree_pss_kb_sum"]),
            i["tree_procs"]
        )?;
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // (samples, p, numpy.percentile(samples, p))
        let cases: &[(&[f64], f64, f64)] = &[
            (&[1.0, 2.0, 3.0, 4.0], 50.0, 2.5),
            (&[1.0, 2.0, 3.0, 4.0], 90.0, 3.7),
            (&[1.0, 2.0, 3.0, 4.0], 99.0, 3.97),
            (&[5.0], 99.0, 5.0),
            (&[10.0, 20.0], 0.0, 10.0),
            (&[10.0, 20.0], 100.0, 20.0),
        ];
        for &(s, p, want) in cases {
            let got = pctl(s, p).unwrap();
            assert!((got - want).abs() < 1e-9, "{s:?} p{p}: {got} != {want}");
        }
        assert_eq!(pctl(&[], 50.0), None);
    }

    #[test]
    fn summary_matches_bench_py() {
        let v = summ(&[3.0, 1.0, 2.0, 4.0]);
        assert_eq!(v["n"], 4);
        assert_eq!(v["min"], 1.0);
        assert_eq!(v["p50"], 2.5);
        assert_eq!(v["p90"], 3.7);
        assert_eq!(v["max"], 4.0);
        assert_eq!(v["mean"], 2.5);
        assert_eq!(summ(&[]), json!({ "n": 0 }));
    }

    #[test]
    fn flood_headline_basis() {
        // (submitted, return times s, limit s, rate, basis)
        let cases: &[(usize, &[f64], f64, f64, &str)] = &[
            (
                4,
                &[0.5, 1.0, 1.5, 2.0],
                120.0,
                2.0,
                "n/(last_return-first_submit)",
            ),
            (
                4,
                &[0.5, 1.0, 130.0],
                120.0,
                2.0 / 120.0,
                "returned_within_limit/limit",
            ),
            (0, &[], 10.0, 0.0, "returned_within_limit/limit"),
        ];
        for &(n, ret, limit, rate, basis) in cases {
            let (r, b) = flood_rate(n, ret, limit);
            assert!((r - rate).abs() < 1e-9, "{n} {ret:?}: {r} != {rate}");
            assert_eq!(b, basis);
        }
    }

    #[test]
    fn process_trees() {
        let parents = [(2, 1), (3, 2), (4, 3), (5, 1), (6, 9)];
        let cases: &[(u32, &[u32])] = &[(1, &[1, 2, 5, 3, 4]), (3, &[3, 4]), (6, &[6]), (7, &[7])];
        for &(root, want) in cases {
            assert_eq!(tree_of(root, &parents), want, "tree of {root}");
        }
        // A cycle (a reused pid seen mid-scan) ends.
        assert_eq!(tree_of(1, &[(2, 1), (1, 2)]), vec![1, 2]);
    }

    #[test]
    fn stat_lines() {
        let cases: &[(&str, Option<Stat>)] = &[
            (
                "42 (elves) S 7 42 42 0 -1 4194560 1 0 0 0 10 5 3 2 20 0 4 0 1 0 0",
                Some(('S', 7, 20)),
            ),
            (
                "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 1 0 0",
                Some(('R', 1, 2)),
            ),
            ("garbage", None),
            ("1 (x) S 0", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_stat(line), *want, "{line}");
        }
    }

    #[test]
    fn true_worker_answers_like_cmd_run() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("app-worker");
        std::fs::write(&entry, b"old").unwrap();
        install_true_worker(&entry).unwrap();
        let out = std::process::Command::new(&entry)
            .args([APP, FUNC, ""])
            .output()
            .unwrap();
        assert!(out.status.success());
        // What the agent reads: flag true, empty result (Salt's check: retcode 0, ret "").
        match elves_worker_output::parse(&out.stdout) {
            elves_worker_output::Parsed::Answer { flag_true, result } => {
                assert!(flag_true, "{out:?}");
                assert_eq!(result, "");
            }
            _ => panic!("not an answer: {out:?}"),
        }
    }
}
