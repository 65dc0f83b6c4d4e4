//! `elves-bench footprint`: idle resident memory of a center and an agent, the size of the
//! `elves-agent` binary, and the center's start-up time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use elves_bench::{Summary, TABLE_HEAD, proc_status_kb, row};

use crate::harness::{Cluster, ClusterOpts, CommonArgs, RunStart, loadavg};
use crate::load::{self, Conn};

#[derive(Args)]
pub struct FootprintArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds the center and agent sit idle (after their first job) before RSS is read.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    idle_secs: u64,
    /// Fresh centers started to time the start-up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    starts: u32,
}

const MIB: f64 = 1024.0 * 1024.0;

fn rss_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    proc_status_kb(&status, key).with_context(|| format!("no {key} for pid {pid}"))
}

/// Polls `GET path` every millisecond until it answers 200; the time from `since`.
async fn until_200(
    addr: &str,
    path: &str,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let req = load::get(addr, path);
    loop {
        if let Ok(mut c) = Conn::connect(addr).await
            && let Ok((200, _)) = c.request(&req).await
        {
            return Ok(since.elapsed());
        }
        ensure!(
            since.elapsed() < limit,
            "{path} did not answer 200 within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The size of a copy of `bin` passed through `strip`, if `strip` is installed.
fn stripped_size(bin: &Path) -> Option<u64> {
    let dir = tempfile::tempdir().ok()?;
    let copy = dir.path().join("bin");
    std::fs::copy(bin, &copy).ok()?;
    let ok = std::process::Command::new("strip")
        .arg(&copy)
        .status()
        .ok()?
        .success();
    ok.then(|| std::fs::metadata(&copy).ok().map(|m| m.len()))?
}

pub fn footprint(args: FootprintArgs) -> anyhow::Result<()> {
    let RunStart {
        machine: m,
        load_start,
        sign_type,
        ..
    } = args.common.begin()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bin_dir = match &args.common.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .to_owned(),
    };

    // Start-up: fresh centers (new data directory each: migrations included), spawn → 200.
    let mut healthz = Vec::new();
    let mut readyz = Vec::new();
    let mut version = Vec::new();
    for _ in 0..args.starts {
        let t = Instant::now();
        let st = std::process::Command::new(bin_dir.join("elves"))
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()?;
        ensure!(st.success(), "elves --version failed");
        version.push(t.elapsed().as_secs_f64() * 1e6);

        let t = Instant::now();
        let mut c = Cluster::start(&ClusterOpts {
            bin_dir: args.common.bin_dir.as_deref(),
            agent_ips: &[],
            agent_filter: "info",
            sign_type,
            lean_agent: false,
            worker: args.common.worker,
        })?;
        let addr = c.api.addr().to_owned();
        let limit = Duration::from_secs(30);
        let h = rt.block_on(until_200(&addr, "/healthz", t, limit))?;
        let r = rt.block_on(until_200(&addr, "/readyz", t, limit))?;
        c.check_alive()?;
        healthz.push(h.as_secs_f64() * 1e6);
        readyz.push(r.as_secs_f64() * 1e6);
        c.stop();
    }

    // Idle memory: one center, one agent (the lean `elves-agent` hosts run), one job each
    // way, then idle.
    let ips = ["127.0.0.1".to_owned()];
    let mut cluster = Cluster::start(&ClusterOpts {
        bin_dir: args.common.bin_dir.as_deref(),
        agent_ips: &ips,
        agent_filter: "info",
        sign_type,
        lean_agent: true,
        worker: args.common.worker,
    })?;
    rt.block_on(cluster.ready(&ips))?;
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    cluster.check_alive()?;
    let (cp, ap) = (cluster.center.pid(), cluster.agents[0].pid());
    let center = (rss_kb(cp, "VmRSS")?, rss_kb(cp, "VmHWM")?);
    let agent = (rss_kb(ap, "VmRSS")?, rss_kb(ap, "VmHWM")?);
    let kept = args.common.keep(&mut cluster);
    cluster.stop();

    let agent_bin = bin_dir.join("elves-agent");
    let agent_size = std::fs::metadata(&agent_bin)
        .with_context(|| {
            format!(
                "{}: build it too (cargo build --release -p elves-agent)",
                agent_bin.display()
            )
        })?
        .len();
    let agent_stripped = stripped_size(&agent_bin);
    let elves_size = std::fs::metadata(bin_dir.join("elves"))?.len();

    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let mib = |kb: u64| kb as f64 / 1024.0;
    let mut out = format!(
        "## footprint\n\n{}\nload average: {} at the start, {} at the end\n\n\
         | measure | figure | target | |\n|---|--:|--:|---|\n",
        m.lines(),
        load_start,
        loadavg()
    );
    out.push_str(&format!(
        "| center idle RSS ({} s after its first jobs; peak so far) | {:.1} MiB ({:.1}) | ≤ 30 MiB | {} |\n",
        args.idle_secs,
        mib(center.0),
        mib(center.1),
        verdict(mib(center.0) <= 30.0)
    ));
    out.push_str(&format!(
        "| agent (`elves-agent`) idle RSS (peak so far) | {:.1} MiB ({:.1}) | ≤ 10 MiB | {} |\n",
        mib(agent.0),
        mib(agent.1),
        verdict(mib(agent.0) <= 10.0)
    ));
    let stripped = agent_stripped.unwrap_or(agent_size);
    out.push_str(&format!(
        "| `elves-agent` size as built (after `strip`) | {:.2} MiB ({}) | ≤ 15 MiB | {} |\n",
        agent_size as f64 / MIB,
        agent_stripped.map_or("strip not installed".to_owned(), |s| format!(
            "{:.2} MiB",
            s as f64 / MIB
        )),
        verdict(stripped as f64 / MIB <= 15.0)
    ));
    out.push_str(&format!(
        "| `elves` size as built (for information) | {:.2} MiB | | |\n\n",
        elves_size as f64 / MIB
    ));
    out.push_str(&format!(
        "Center start-up, fresh data directory each time (spawn → first 200), {} starts:\n\n{TABLE_HEAD}\n{}\n{}\n{}\n\n",
        args.starts,
        Summary::of(&version).map(|s| row("`elves --version` spawn → exit (**baseline**)", &s)).unwrap_or_default(),
        Summary::of(&healthz).map(|s| row("center spawn → `/healthz` 200", &s)).unwrap_or_default(),
        Summary::of(&readyz).map(|s| row("center spawn → `/readyz` 200", &s)).unwrap_or_default(),
    ));
    args.common.publish(&out, kept)
}
