//! `elves-bench rt-throughput`: how many `rt/exec` calls per second a center and two agents
//! carry with many concurrent clients, against how fast the machine spawns the same no-op
//! worker bare, measured in alternating rounds of the same run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use clap::Args;
use elves_bench::{Summary, TABLE_HEAD, row};

use crate::harness::{
    Cluster, CommonArgs, RT_PATH, RunStart, bare_std_parallel, loadavg, rt_params,
};
use crate::load::{self, cpu_time};

#[derive(Args)]
pub struct RtThroughputArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Concurrent clients (keep-alive connections), spread evenly over the agents.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    clients: u32,
    /// Agents (127.0.0.1, 127.0.0.2, …).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=50))]
    agents: u32,
    /// Seconds of load per round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    secs: u64,
    /// Rounds (each: the bare spawn baseline, then the load).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Bare spawns per baseline measure.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=100_000))]
    spawns: u64,
    /// Threads spawning the baseline at once (default: one per agent).
    #[arg(long)]
    spawners: Option<usize>,
    /// Seconds of load thrown away first.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
}

struct Round {
    spawn_rate: f64,
    calls: load::LoadResult,
    center_cpu: Duration,
    agents_cpu: Duration,
}

pub fn rt_throughput(args: RtThroughputArgs) -> anyhow::Result<()> {
    let RunStart {
        started,
        deadline,
        machine: m,
        load_start,
        sign_type,
    } = args.common.begin()?;
    let (ips, mut cluster) = args.common.cluster(sign_type, args.agents, "info")?;
    let spawners = args.spawners.unwrap_or(ips.len()).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = cluster.api.addr().to_owned();
    let api = Arc::new(cluster.api.clone());
    let make: load::MakeRequest = {
        let (ips, addr) = (ips.clone(), addr.clone());
        Arc::new(move |conn, _i| {
            let body = api.sign(RT_PATH, &rt_params(&ips[conn % ips.len()]));
            load::post_form(&addr, RT_PATH, &body)
        })
    };
    let run = |secs: u64| {
        let (addr, make) = (addr.clone(), make.clone());
        let clients = args.clients as usize;
        rt.block_on(async move {
            load::closed_loop(
                &addr,
                clients,
                Duration::from_secs(secs),
                make,
                load::envelope_ok,
            )
            .await
        })
    };
    rt.block_on(cluster.ready(&ips))?;
    eprintln!(
        "elves-bench: ready after {:.1} s; warm-up {} s, then {} rounds",
        started.elapsed().as_secs_f64(),
        args.warmup_secs,
        args.rounds
    );
    if args.warmup_secs > 0 {
        run(args.warmup_secs)?;
    }
    let mut rounds = Vec::new();
    for r in 0..args.rounds {
        if std::time::Instant::now() + Duration::from_secs(args.secs * 2 + 10) > deadline {
            eprintln!("elves-bench: stopping after {r} rounds: the deadline is near");
            break;
        }
        let took = bare_std_parallel(
            &cluster.entry,
            &cluster.app_dir,
            args.spawns as usize,
            spawners,
        )?;
        let spawn_rate = args.spawns as f64 / took.as_secs_f64();
        let cpu = |c: &Cluster| {
            (
                cpu_time(c.center.pid()).unwrap_or_default(),
                c.agents
                    .iter()
                    .map(|a| cpu_time(a.pid()).unwrap_or_default())
                    .sum::<Duration>(),
            )
        };
        let (c0, a0) = cpu(&cluster);
        let calls = run(args.secs)?;
        let (c1, a1) = cpu(&cluster);
        cluster.check_alive()?;
        ensure!(
            calls.failed == 0,
            "{} of {} calls failed; first: {}",
            calls.failed,
            calls.ok + calls.failed,
            calls.first_failure.as_deref().unwrap_or("?")
        );
        eprintln!(
            "elves-bench: round {}: {:.0} calls/s, bare {:.0} spawns/s",
            r + 1,
            calls.rate(),
            spawn_rate
        );
        rounds.push(Round {
            spawn_rate,
            calls,
            center_cpu: c1 - c0,
            agents_cpu: a1 - a0,
        });
    }
    ensure!(!rounds.is_empty(), "no round measured before the deadline");
    let load_end = loadavg();
    let kept = args.common.keep(&mut cluster);
    cluster.stop();

    let mut out = String::new();
    out.push_str(&format!(
        "## rt throughput\n\n{} clients over {} agents, {} rounds of {} s (after {} s of warm-up); \
         baseline: {} bare spawns by {} threads per round.\n\n{}\nload average: {} at the start, {} at the end\n\n",
        args.clients,
        ips.len(),
        rounds.len(),
        args.secs,
        args.warmup_secs,
        args.spawns,
        spawners,
        m.lines(),
        load_start,
        load_end
    ));
    out.push_str(
        "| round | rt/exec calls | **calls/s** | bare spawns/s (**baseline**) | ratio | center CPU (ms/call) | agents' CPU (ms/call) |\n\
         |--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let mut ratios = Vec::new();
    let mut lat = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        let ratio = r.calls.rate() / r.spawn_rate;
        ratios.push(ratio);
        let per = |d: Duration| d.as_secs_f64() * 1e3 / r.calls.ok.max(1) as f64;
        out.push_str(&format!(
            "| {} | {} | **{:.0}** | {:.0} | {:.2} | {:.3} | {:.3} |\n",
            i + 1,
            r.calls.ok,
            r.calls.rate(),
            r.spawn_rate,
            ratio,
            per(r.center_cpu),
            per(r.agents_cpu)
        ));
        lat.extend_from_slice(&r.calls.latencies_us);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    out.push_str(&format!(
        "\nMedian ratio calls/s ÷ bare spawns/s: **{median:.2}** (target ≥ 0.80: {}).\n\n",
        if median >= 0.8 { "met" } else { "missed" }
    ));
    if let Some(s) = Summary::of(&lat) {
        out.push_str(&format!(
            "{TABLE_HEAD}\n{}\n\n",
            row("rt/exec under load, per call", &s)
        ));
    }
    args.common.publish(&out, kept)
}
