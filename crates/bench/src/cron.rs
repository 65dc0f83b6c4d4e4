//! `elves-bench cron-lag`: how late a center fires a thousand every-second crons, and whether
//! it fires each instant exactly once.
//!
//! A real center and real agents (the native no-op worker as app `noop`) run `--crons` crons
//! with the rule `* * * * * ?`, spread evenly over the agents, for `--secs` whole seconds
//! after all of them exist. The figures come from what the center recorded, read back from
//! its store after it stopped: every run row holds its scheduled instant (`fire_at_ms`) and
//! the instant the firer handed it to the scheduler (`dispatched_at_ms`, stamped after the
//! whole batch of that instant was dispatched, so never early). The lag is their difference,
//! in whole milliseconds of the center's clock. Missed fires are (cron, instant) pairs of the
//! window without a run, duplicates are pairs with more than one; what reached the agents is
//! counted from their `job finished` lines (one per run id).
//!
//! The baseline, measured in the same window: how late a plain thread of the bench wakes for
//! the same whole seconds (`std::thread::sleep` until each instant), the noise floor of
//! timers on this machine under this load.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use clap::Args;
use elves_bench::Summary;

use crate::harness::{APP, Cluster, ClusterOpts, CommonArgs, FUNC, JOB_TIMEOUT, RunStart, loadavg};

#[derive(Args)]
pub struct CronArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Every-second crons, created before the window starts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    crons: u32,
    /// Length of the measured window, whole seconds (each cron fires once per second).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(3..=3600))]
    secs: u32,
    /// Agents, with the identities 127.0.0.1, 127.0.0.2, …; cron i runs on agent i mod agents.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    agents: u32,
}

const ADD: &str = "/api/v2/cron/add";
/// The target for the p99 fire lag, in milliseconds.
const TARGET_P99_MS: f64 = 10.0;
/// How long after the window the results of its last fires may take to come back.
const SETTLE: Duration = Duration::from_secs(5);

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = elves_bench::proc_stat_cpu_ticks(&stat)?;
    let per_sec = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    };
    Some(ticks as f64 / per_sec)
}

/// Sleeps until each instant of `instants` (Unix ms) and records how late it woke, in µs.
fn timer_baseline(instants: Vec<i64>) -> std::thread::JoinHandle<Vec<f64>> {
    std::thread::spawn(move || {
        let mut late = Vec::with_capacity(instants.len());
        for at in instants {
            let target = UNIX_EPOCH + Duration::from_millis(at as u64);
            if let Ok(wait) = target.duration_since(SystemTime::now()) {
                std::thread::sleep(wait);
            }
            let woke = SystemTime::now().duration_since(target).unwrap_or_default();
            late.push(woke.as_secs_f64() * 1e6);
        }
        late
    })
}

/// What the center recorded for the window, per (cron, instant).
#[derive(Default)]
struct Tally {
    expected: usize,
    recorded: usize,
    missed: usize,
    duplicated: usize,
    catch_up: usize,
    not_stamped: usize,
    /// Lag samples, µs (whole milliseconds).
    lag_us: Vec<f64>,
    results_ok: usize,
    results_other: usize,
    /// The run ids of the window.
    runs: Vec<String>,
}

pub fn cron_lag(args: CronArgs) -> anyhow::Result<()> {
    let RunStart {
        started,
        deadline,
        machine: m,
        load_start,
        sign_type,
    } = args.common.begin()?;
    let needed = Duration::from_secs(u64::from(args.secs) + 120);
    ensure!(
        started + needed <= deadline,
        "--deadline-secs is too short for --secs {} (allow about {} s)",
        args.secs,
        needed.as_secs()
    );
    let ips: Vec<String> = (1..=args.agents).map(|i| format!("127.0.0.{i}")).collect();
    let mut store_url = String::new();
    let mut cluster = Cluster::start_with(
        &ClusterOpts {
            bin_dir: args.common.bin_dir.as_deref(),
            agent_ips: &ips,
            agent_filter: "info",
            sign_type,
            lean_agent: false,
            worker: args.common.worker,
        },
        |c| {
            // Every run of the window is kept, whatever its length.
            c.cron.history = args.secs + 30;
            c.cron.default_tz = "UTC".into();
            store_url = c.store.url.clone();
        },
    )?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let window = rt.block_on(async {
        cluster.ready(&ips).await?;
        let t_add = Instant::now();
        let mut ids = Vec::with_capacity(args.crons as usize);
        for i in 0..args.crons as usize {
            ensure!(
                Instant::now() < deadline,
                "the whole-run deadline passed while adding crons"
            );
            if i % 100 == 0 {
                cluster.check_alive()?;
            }
            let p = [
                ("ip", ips[i % ips.len()].clone()),
                ("app", APP.to_owned()),
                ("func", FUNC.to_owned()),
                ("rule", "* * * * * ?".to_owned()),
                ("timeout", JOB_TIMEOUT.to_owned()),
            ];
            let r = cluster.api.call(ADD, &p).await?;
            ids.push(r["id"].as_str().context("cron/add: no id")?.to_owned());
        }
        eprintln!(
            "elves-bench: {} crons added in {:.1} s; measuring {} s",
            ids.len(),
            t_add.elapsed().as_secs_f64(),
            args.secs
        );
        // The window: the whole seconds from two seconds from now, `secs` of them.
        let first = (unix_ms_now() / 1000 + 2) * 1000;
        let instants: Vec<i64> = (0..i64::from(args.secs))
            .map(|k| first + k * 1000)
            .collect();
        let last = *instants.last().context("an empty window")?;
        let baseline = timer_baseline(instants);
        // Center CPU over the window (from just before its first instant to just after its last).
        tokio::time::sleep(Duration::from_millis(
            (first - 500 - unix_ms_now()).max(0) as u64
        ))
        .await;
        let cpu0 = cpu_secs(cluster.center.pid());
        let t0 = Instant::now();
        while unix_ms_now() < last + 500 {
            cluster.check_alive()?;
            ensure!(
                Instant::now() < deadline,
                "the whole-run deadline passed during the window"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let cpu = cpu0
            .zip(cpu_secs(cluster.center.pid()))
            .map(|(a, b)| (b - a, t0.elapsed().as_secs_f64()));
        // Let the last fires' results come back before the center stops.
        tokio::time::sleep(SETTLE).await;
        cluster.check_alive()?;
        let baseline = baseline
            .join()
            .map_err(|_| anyhow::anyhow!("the timer baseline thread panicked"))?;
        anyhow::Ok((ids, first, last, baseline, cpu))
    });
    drop(rt);
    cluster.stop();
    let logs: Vec<String> = cluster
        .agents
        .iter()
        .map(|a| std::fs::read_to_string(&a.stderr).unwrap_or_default())
        .collect();
    let (ids, first, last, baseline, cpu) = match window {
        Ok(w) => w,
        Err(e) => {
            let kept = args.common.keep(&mut cluster);
            if let Some(k) = kept {
                eprintln!("elves-bench: kept {}", k.display());
            }
            return Err(e);
        }
    };

    // What the center recorded, read back from its store once it stopped.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tally = rt.block_on(async {
        let store = elves_store::Store::open(&store_url)
            .await
            .context("opening the center's store")?;
        let mut t = Tally::default();
        for id in &ids {
            let runs = store.cron_runs(id).await?;
            let mut per_instant: HashMap<i64, usize> = HashMap::new();
            for r in runs
                .iter()
                .filter(|r| (first..=last).contains(&r.fire_at_ms))
            {
                *per_instant.entry(r.fire_at_ms).or_default() += 1;
                t.recorded += 1;
                t.catch_up += usize::from(r.catch_up);
                match r.dispatched_at_ms {
                    Some(d) => t.lag_us.push((d - r.fire_at_ms) as f64 * 1000.0),
                    None => t.not_stamped += 1,
                }
                match &r.result {
                    Some(o) if o.flag && o.worker_flag == 1 => t.results_ok += 1,
                    Some(_) => t.results_other += 1,
                    None => {}
                }
                t.runs.push(r.run_id.clone());
            }
            let n = ((last - first) / 1000 + 1) as usize;
            t.expected += n;
            t.missed += n - per_instant.len().min(n);
            t.duplicated += per_instant.values().filter(|c| **c > 1).count();
        }
        store.close().await;
        anyhow::Ok(t)
    })?;
    drop(rt);

    // What reached the agents: one "job finished" line per run id.
    let mut finished: HashMap<String, usize> = HashMap::new();
    for log in &logs {
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["fields"]["message"] == "job finished"
                && let Some(run) = v["fields"]["run_id"].as_str()
            {
                *finished.entry(run.to_owned()).or_default() += 1;
            }
        }
    }
    let window_runs: HashSet<&str> = tally.runs.iter().map(String::as_str).collect();
    let ran = window_runs
        .iter()
        .filter(|r| finished.contains_key(**r))
        .count();
    let ran_twice = window_runs
        .iter()
        .filter(|r| finished.get(**r).is_some_and(|n| *n > 1))
        .count();

    let lag = Summary::of(&tally.lag_us);
    let base = Summary::of(&baseline);
    let mut out = String::new();
    out.push_str("## cron-lag\n\n");
    out.push_str(&m.lines());
    out.push_str(&format!(
        "- command: `elves-bench cron-lag --crons {} --secs {} --agents {} --sign-type {}`\n\
         - load average before / after: {load_start} / {}\n\
         - window: {} instants, {} … {} (Unix ms); whole run {:.1} s\n",
        args.crons,
        args.secs,
        args.agents,
        args.common.sign_type,
        loadavg(),
        (last - first) / 1000 + 1,
        first,
        last,
        started.elapsed().as_secs_f64()
    ));
    if let Some((busy, wall)) = cpu {
        out.push_str(&format!(
            "- center CPU over the window: {busy:.1} s in {wall:.1} s ({:.0} % of one core)\n",
            100.0 * busy / wall
        ));
    }
    out.push_str(&format!("\n{}\n", elves_bench::TABLE_HEAD));
    if let Some(s) = &lag {
        out.push_str(&elves_bench::row(
            "fire lag: scheduled instant → dispatched to the scheduler (center's records, whole ms)",
            s,
        ));
        out.push('\n');
    }
    if let Some(s) = &base {
        out.push_str(&elves_bench::row(
            "baseline: a bare thread's wake-up lateness at the same instants",
            s,
        ));
        out.push('\n');
    }
    out.push_str(&format!(
        "\n- fires expected {} ({} crons × {} instants); recorded {}; **missed {}**; **duplicated {}**; \
         catch-up fires {}; recorded but not stamped as dispatched {}\n\
         - runs of the window that reached an agent (its `job finished` line): {} of {}; run ids run \
         twice: {}; results stored: {} with worker_flag 1, {} otherwise\n",
        tally.expected,
        ids.len(),
        (last - first) / 1000 + 1,
        tally.recorded,
        tally.missed,
        tally.duplicated,
        tally.catch_up,
        tally.not_stamped,
        ran,
        window_runs.len(),
        ran_twice,
        tally.results_ok,
        tally.results_other,
    ));
    if let (Some(l), Some(b)) = (&lag, &base) {
        let p99_ms = l.p99 / 1000.0;
        out.push_str(&format!(
            "- p99 fire lag {p99_ms:.3} ms against the target {TARGET_P99_MS} ms: **{}**; \
             p99 against the bare timer's p99: {}\n",
            if p99_ms <= TARGET_P99_MS {
                "met"
            } else {
                "missed"
            },
            if b.p99 > 0.0 {
                format!("{:.1}×", l.p99 / b.p99)
            } else {
                "n/a".into()
            }
        ));
    }
    let kept = args.common.keep(&mut cluster);
    drop(cluster);
    args.common.publish(&out, kept)?;
    ensure!(
        tally.missed == 0 && tally.duplicated == 0 && ran_twice == 0,
        "fires were missed or duplicated (see the report)"
    );
    Ok(())
}
