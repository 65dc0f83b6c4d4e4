//! `elves-bench agent-scale`: many simulated agents against one real center.
//!
//! A load generator that speaks the real agent protocol (`elves-proto`, the same gRPC client
//! the agent uses; not the agent binary): each simulated agent enrolls with the center's token
//! under its own ip (`10.x.y.z`, the gateway's identity), opens its own connection and link,
//! says Hello with one installed app, then heartbeats every `--heartbeat-ms` (phases spread
//! at random over the first period, as real agents start at different times). It answers a
//! `RunJob` at once with a no-op success (flag 1) and a `Cancel` with "not found", and counts
//! every `DesiredApps` it gets.
//!
//! Meanwhile a client sends `--rt-rate` rt/exec per second, each to a random simulated agent,
//! and times them. After the measured window the registry is checked in the center's store
//! (every simulated agent linked, with its asset, agent version and apps, and a heartbeat
//! recorded within the last few periods). The center's CPU (user + sys over wall, from
//! `/proc/PID/stat`) is taken over the window, after every agent linked; its peak RSS
//! (`VmHWM`) over the whole run.
//!
//! `--find-max` adds `--step` agents at a time (up to `--max-agents`) and measures a window
//! after each step: it reports the largest N at which the center stayed under one core and
//! 1 GiB with every heartbeat recorded and no error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use elves_bench::{Summary, TABLE_HEAD, row};
use elves_proto::agent_link_client::AgentLinkClient;
use elves_proto::{
    AgentMessage, Cancelled, EnrollRequest, Heartbeat, Hello, JobResult, agent_message,
    center_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

use crate::harness::{Cluster, ClusterOpts, CommonArgs, Machine, RT_PATH, RunStart, loadavg};

/// The app every simulated agent reports installed.
const SIM_APP: &str = "noop";
const SIM_APP_VERSION: &str = "1.0.0";
/// The agent version simulated agents report.
const SIM_VERSION: &str = "bench-sim";
/// How many enrollments and links are set up at once.
const CONNECT_CONCURRENCY: usize = 64;
/// How long one enrollment or link may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// Messages that may wait to go up one simulated link.
const SIM_BUFFER: usize = 64;
/// The most rt/exec calls in flight at once.
const RT_IN_FLIGHT: usize = 32;
/// CPU and memory the center may use at a step of `--find-max`.
const MAX_CORES: f64 = 1.0;
const MAX_RSS_KB: u64 = 1024 * 1024;

#[derive(Args)]
pub struct AgentScaleArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Simulated agents (the first step with `--find-max`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    agents: u32,
    /// The measured window, seconds (each step's with `--find-max`).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
    secs: u64,
    /// Each simulated agent's heartbeat period, milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    heartbeat_ms: u64,
    /// rt/exec calls per second, each to a random simulated agent (0: none).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    rt_rate: u32,
    /// Add `--step` agents at a time and report the largest N the center holds under one
    /// core and 1 GiB.
    #[arg(long)]
    find_max: bool,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    step: u32,
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    max_agents: u32,
}

/// The ip of simulated agent `i` (0-based): `10.x.y.z`, never ending in `.0`.
pub fn sim_ip(i: u32) -> String {
    let n = i / 254 * 256 + i % 254 + 1;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// What the simulated agents saw, summed.
#[derive(Default)]
struct Stats {
    linked: AtomicU64,
    heartbeats: AtomicU64,
    desired: AtomicU64,
    runs: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("first_error poisoned");
        first.get_or_insert(what);
    }
}

/// Enrolls agent `ip` and opens its own connection; returns the channel and credential.
async fn enroll(endpoint: &str, token: &str, ip: &str) -> anyhow::Result<(Channel, String)> {
    let channel = Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(CONNECT_LIMIT)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("{ip}: connecting"))?;
    let reply = AgentLinkClient::new(channel.clone())
        .enroll(EnrollRequest {
            token: token.to_owned(),
            ip: ip.to_owned(),
            asset: asset_of(ip),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{ip}: enrollment refused: {}", s.message()))?;
    Ok((channel, reply.into_inner().credential))
}

fn asset_of(ip: &str) -> String {
    format!("sim-{ip}")
}

fn apps() -> HashMap<String, String> {
    HashMap::from([(SIM_APP.to_owned(), SIM_APP_VERSION.to_owned())])
}

/// Opens the link of one simulated agent and serves it until `cancel` fires.
async fn link(
    ip: String,
    channel: Channel,
    credential: String,
    period: Duration,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<AgentMessage>(SIM_BUFFER);
    let hello = Hello {
        asset: asset_of(&ip),
        version: SIM_VERSION.into(),
        apps: apps(),
    };
    tx.try_send(AgentMessage {
        body: Some(agent_message::Body::Hello(hello)),
    })
    .ok()
    .context("queueing the hello")?;
    let mut req = Request::new(ReceiverStream::new(rx));
    let md = req.metadata_mut();
    md.insert(elves_proto::IP_HEADER, ip.parse()?);
    md.insert("authorization", format!("Bearer {credential}").parse()?);
    let mut inbound = tokio::time::timeout(CONNECT_LIMIT, AgentLinkClient::new(channel).link(req))
        .await
        .context("linking: no answer in time")?
        .map_err(|s| anyhow::anyhow!("link refused: {}", s.message()))?
        .into_inner();
    stats.linked.fetch_add(1, Ordering::Relaxed);
    // Phases spread over one period, as agents that started at different times.
    let phase = period.mul_f64(rand_unit());
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = beat.tick() => {
                let hb = Heartbeat { apps: apps(), errors: HashMap::new() };
                tx.try_send(AgentMessage { body: Some(agent_message::Body::Heartbeat(hb)) })
                    .ok()
                    .context("heartbeat not sent: the link is congested")?;
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            msg = inbound.message() => {
                let m = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => bail!("the center closed the link"),
                    Err(s) => bail!("the link failed: {}", s.message()),
                };
                let answer = match m.body {
                    Some(center_message::Body::Run(run)) => {
                        stats.runs.fetch_add(1, Ordering::Relaxed);
                        Some(agent_message::Body::Result(JobResult {
                            run_id: run.run_id,
                            ins: run.ins,
                            flag: 1,
                            costtime: 0,
                            result: "ok".into(),
                            sync: run.sync,
                            request_id: run.request_id,
                        }))
                    }
                    Some(center_message::Body::Cancel(c)) => {
                        Some(agent_message::Body::Cancelled(Cancelled { run_id: c.run_id, found: false }))
                    }
                    Some(center_message::Body::Desired(_)) => {
                        stats.desired.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Some(center_message::Body::Welcome(_) | center_message::Body::Ack(_)) | None => None,
                };
                if let Some(body) = answer {
                    tx.try_send(AgentMessage { body: Some(body) })
                        .ok()
                        .context("answer not sent: the link is congested")?;
                }
            }
        }
    }
}

/// A uniform number in [0, 1) from the operating system's random source.
fn rand_unit() -> f64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Enrolls and links simulated agents `from..to`, `CONNECT_CONCURRENCY` at a time, each then
/// served by its own task until `cancel` fires.
async fn add_agents(
    from: u32,
    to: u32,
    endpoint: &str,
    token: &str,
    period: Duration,
    stats: &Arc<Stats>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let want = stats.linked.load(Ordering::Relaxed) + u64::from(to - from);
    let results: Vec<anyhow::Result<(String, Channel, String)>> = futures::stream::iter(from..to)
        .map(|i| async move {
            let ip = sim_ip(i);
            let (ch, cred) = enroll(endpoint, token, &ip).await?;
            Ok((ip, ch, cred))
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    for r in results {
        let (ip, channel, credential) = r?;
        let (stats, cancel) = (stats.clone(), cancel.clone());
        tokio::spawn(async move {
            if let Err(e) = link(
                ip.clone(),
                channel,
                credential,
                period,
                stats.clone(),
                cancel,
            )
            .await
            {
                stats.error(format!("{ip}: {e:#}"));
            }
        });
    }
    let by = Instant::now() + CONNECT_LIMIT;
    while stats.linked.load(Ordering::Relaxed) < want {
        ensure!(
            stats.errors.load(Ordering::Relaxed) == 0,
            "a simulated agent failed: {}",
            stats
                .first_error
                .lock()
                .expect("poisoned")
                .clone()
                .unwrap_or_default()
        );
        ensure!(
            Instant::now() < by,
            "the simulated agents did not all link in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn clock_ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = elves_bench::proc_stat_cpu_ticks(&stat)
        .with_context(|| format!("parsing /proc/{pid}/stat"))?;
    Ok(ticks as f64 / clock_ticks_per_sec())
}

/// A kB figure (`VmHWM`, `VmRSS`) of `pid`.
fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    elves_bench::proc_status_kb(&status, key)
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Sends `rate` rt/exec per second to random simulated agents `0..n` until `cancel` fires;
/// returns the latencies (µs) of the calls that succeeded and the failures.
async fn rt_load(
    cluster: &Cluster,
    n: u32,
    rate: u32,
    cancel: CancellationToken,
) -> (Vec<f64>, Vec<String>) {
    use futures::StreamExt;
    let mut lat = Vec::new();
    let mut failures = Vec::new();
    if rate == 0 {
        cancel.cancelled().await;
        return (lat, failures);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled(), if in_flight.is_empty() => break,
            _ = tick.tick(), if !cancel.is_cancelled() && in_flight.len() < RT_IN_FLIGHT => {
                let i = ((rand_unit() * f64::from(n)) as u32).min(n - 1);
                let ip = sim_ip(i);
                let params = [
                    ("ip", ip.clone()),
                    ("app", SIM_APP.to_owned()),
                    ("func", "run".to_owned()),
                    ("timeout", "10".to_owned()),
                ];
                let body = cluster.api.sign(RT_PATH, &params);
                in_flight.push(async move {
                    let t0 = Instant::now();
                    let r = cluster.api.send(RT_PATH, body).await;
                    (ip, t0.elapsed(), r)
                });
            }
            Some((ip, took, r)) = in_flight.next(), if !in_flight.is_empty() => {
                match r.and_then(|text| crate::harness::envelope_result(RT_PATH, &text)) {
                    Ok(v) if v["worker_flag"] == 1 => lat.push(took.as_secs_f64() * 1e6),
                    Ok(v) => failures.push(format!("{ip}: {v}")),
                    Err(e) => failures.push(format!("{ip}: {e:#}")),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if cancel.is_cancelled() => {}
        }
    }
    (lat, failures)
}

/// One measured window at the current number of agents.
struct Window {
    agents: u32,
    secs: f64,
    cores: f64,
    /// This process's CPU over the window: the simulated agents and the rt/exec client.
    bench_cores: f64,
    rss_kb: u64,
    peak_rss_kb: u64,
    heartbeats: u64,
    rt: Option<Summary>,
    rt_failures: Vec<String>,
    registry: Result<(), String>,
}

impl Window {
    fn held(&self) -> bool {
        self.cores < MAX_CORES
            && self.peak_rss_kb < MAX_RSS_KB
            && self.rt_failures.is_empty()
            && self.registry.is_ok()
    }
}

/// Checks the registry in the center's store: every simulated agent linked, with its data
/// and a recent heartbeat. (`info/agents/detail` needs the supervisor module, which a
/// simple-mode center does not run.)
async fn check_registry(
    store: &elves_store::Store,
    n: u32,
    period: Duration,
) -> anyhow::Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // A heartbeat every period; allow three for the store's write queue under load.
    let stale_ms = (period * 3).as_millis() as i64 + 2000;
    let records: HashMap<String, elves_store::AgentRecord> = store
        .agents()
        .await?
        .into_iter()
        .map(|r| (r.ip.clone(), r))
        .collect();
    let want_apps: std::collections::BTreeMap<String, String> = apps().into_iter().collect();
    let mut bad = Vec::new();
    for i in 0..n {
        let ip = sim_ip(i);
        let problem = match records.get(&ip) {
            None => Some("not in the registry".to_owned()),
            Some(r) if r.connected_to.is_empty() => Some("not linked".into()),
            Some(r) if r.asset != asset_of(&ip) => Some(format!("asset {:?}", r.asset)),
            Some(r) if r.version != SIM_VERSION => Some(format!("version {:?}", r.version)),
            Some(r) if r.apps != want_apps => Some(format!("apps {:?}", r.apps)),
            Some(r) if now_ms - r.last_heartbeat_ms > stale_ms => Some(format!(
                "last heartbeat {} ms ago",
                now_ms - r.last_heartbeat_ms
            )),
            Some(_) => None,
        };
        if let Some(p) = problem {
            bad.push(format!("{ip}: {p}"));
        }
    }
    ensure!(
        bad.is_empty(),
        "{} of {n} agents wrong in the registry, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    Ok(())
}

/// Measures one window of `secs` with `n` agents linked.
async fn measure(
    cluster: &Cluster,
    store: &elves_store::Store,
    n: u32,
    args: &AgentScaleArgs,
    stats: &Stats,
) -> anyhow::Result<Window> {
    let pid = cluster.center.pid();
    let period = Duration::from_millis(args.heartbeat_ms);
    let me = std::process::id();
    let (cpu0, bench0, hb0, t0) = (
        cpu_secs(pid)?,
        cpu_secs(me)?,
        stats.heartbeats.load(Ordering::Relaxed),
        Instant::now(),
    );
    let stop = CancellationToken::new();
    let s = stop.clone();
    let secs = args.secs;
    let rt = rt_load(cluster, n, args.rt_rate, stop.clone());
    let timer = async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        s.cancel();
    };
    let ((lat, rt_failures), ()) = tokio::join!(rt, timer);
    let wall = t0.elapsed().as_secs_f64();
    let cores = (cpu_secs(pid)? - cpu0) / wall;
    let bench_cores = (cpu_secs(me)? - bench0) / wall;
    let heartbeats = stats.heartbeats.load(Ordering::Relaxed) - hb0;
    let registry = check_registry(store, n, period)
        .await
        .map_err(|e| format!("{e:#}"));
    Ok(Window {
        agents: n,
        secs: wall,
        cores,
        bench_cores,
        rss_kb: status_kb(pid, "VmRSS")?,
        peak_rss_kb: status_kb(pid, "VmHWM")?,
        heartbeats,
        rt: Summary::of(&lat),
        rt_failures,
        registry,
    })
}

pub fn agent_scale(args: AgentScaleArgs) -> anyhow::Result<()> {
    let RunStart {
        started,
        deadline,
        machine,
        load_start,
        sign_type,
    } = args.common.begin()?;
    let mut cluster = Cluster::start(&ClusterOpts {
        bin_dir: args.common.bin_dir.as_deref(),
        agent_ips: &[],
        agent_filter: "info",
        sign_type,
        lean_agent: false,
        worker: args.common.worker,
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        cluster.ready(&[]).await?;
        let store = elves_store::Store::open(&cluster.store_url)
            .await
            .context("opening the center's store to check the registry")?;
        let stats = Arc::new(Stats::default());
        let cancel = CancellationToken::new();
        let period = Duration::from_millis(args.heartbeat_ms);
        let mut windows = Vec::new();
        let mut n = 0u32;
        let mut target = args.agents;
        let outcome: anyhow::Result<()> = async {
            loop {
                let t = Instant::now();
                add_agents(n, target, &cluster.agents_endpoint, &cluster.agents_token, period, &stats, &cancel)
                    .await?;
                eprintln!(
                    "elves-bench: {target} simulated agents linked ({} added in {:.1} s); measuring {} s",
                    target - n,
                    t.elapsed().as_secs_f64(),
                    args.secs
                );
                n = target;
                // One period for every agent's first heartbeat, then the window.
                tokio::time::sleep(period).await;
                let w = measure(&cluster, &store, n, &args, &stats).await?;
                eprintln!(
                    "elves-bench: N={n}: center {:.3} cores (load generator {:.3}), peak RSS {} MiB, registry {}",
                    w.cores,
                    w.bench_cores,
                    w.peak_rss_kb / 1024,
                    if w.registry.is_ok() { "correct" } else { "WRONG" }
                );
                let held = w.held();
                windows.push(w);
                ensure!(
                    stats.errors.load(Ordering::Relaxed) == 0,
                    "a simulated agent failed: {}",
                    stats.first_error.lock().expect("poisoned").clone().unwrap_or_default()
                );
                cluster.check_alive()?;
                if !args.find_max || !held || target >= args.max_agents {
                    return Ok(());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left < Duration::from_secs(args.secs * 2 + 30) {
                    eprintln!("elves-bench: stopping the search: the whole-run deadline is near");
                    return Ok(());
                }
                target = (target + args.step).min(args.max_agents);
            }
        }
        .await;
        cancel.cancel();
        store.close().await;
        let errors = stats.errors.load(Ordering::Relaxed);
        let first_error = stats.first_error.lock().expect("poisoned").clone();
        anyhow::Ok((windows, outcome, errors, first_error, stats))
    });
    let kept = args.common.keep(&mut cluster);
    cluster.stop();
    let (windows, outcome, errors, first_error, stats) = result?;
    let report = report(
        &args,
        &machine,
        &load_start,
        started.elapsed(),
        &windows,
        &outcome,
        errors,
        first_error.as_deref(),
        &stats,
    );
    args.common.publish(&report, kept)?;
    outcome?;
    ensure!(errors == 0, "simulated agents reported {errors} errors");
    for w in &windows {
        if let Err(e) = &w.registry {
            bail!("the registry was wrong with {} agents: {e}", w.agents);
        }
    }
    if !args.find_max
        && let Some(w) = windows.first()
    {
        ensure!(
            w.rt_failures.is_empty(),
            "rt/exec failed: {:?}",
            &w.rt_failures[..w.rt_failures.len().min(5)]
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &AgentScaleArgs,
    m: &Machine,
    load_start: &str,
    took: Duration,
    windows: &[Window],
    outcome: &anyhow::Result<()>,
    errors: u64,
    first_error: Option<&str>,
    stats: &Stats,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "## agent-scale: {} simulated agents, heartbeat every {} ms, {} s windows{}\n\n",
        args.agents,
        args.heartbeat_ms,
        args.secs,
        if args.find_max {
            format!(", --find-max step {} up to {}", args.step, args.max_agents)
        } else {
            String::new()
        }
    ));
    out.push_str(&m.lines());
    out.push_str(&format!(
        "- load average at start: {load_start}; at end: {}\n- run took {:.1} s\n\n",
        loadavg(),
        took.as_secs_f64()
    ));
    out.push_str("| agents | window s | center cores (user+sys / wall) | load generator cores | center RSS MiB | peak RSS MiB | heartbeats sent/s | rt/exec ok | rt failures | registry |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for w in windows {
        out.push_str(&format!(
            "| {} | {:.1} | {:.3} | {:.3} | {:.1} | {:.1} | {:.0} | {} | {} | {} |\n",
            w.agents,
            w.secs,
            w.cores,
            w.bench_cores,
            w.rss_kb as f64 / 1024.0,
            w.peak_rss_kb as f64 / 1024.0,
            w.heartbeats as f64 / w.secs,
            w.rt.map_or(0, |s| s.n),
            w.rt_failures.len(),
            match &w.registry {
                Ok(()) => "correct".to_owned(),
                Err(e) => format!("WRONG: {e}"),
            }
        ));
    }
    let rt_rows: Vec<String> = windows
        .iter()
        .filter_map(|w| {
            w.rt.map(|s| row(&format!("rt/exec to a random agent, N={}", w.agents), &s))
        })
        .collect();
    if !rt_rows.is_empty() {
        out.push_str(&format!("\n{TABLE_HEAD}\n"));
        for r in rt_rows {
            out.push_str(&format!("{r}\n"));
        }
    }
    out.push_str(&format!(
        "\nSimulated agents: {} linked, {} heartbeats, {} DesiredApps received, {} runs answered, {errors} errors{}.\n",
        stats.linked.load(Ordering::Relaxed),
        stats.heartbeats.load(Ordering::Relaxed),
        stats.desired.load(Ordering::Relaxed),
        stats.runs.load(Ordering::Relaxed),
        first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
    ));
    if args.find_max {
        let best = windows.iter().filter(|w| w.held()).map(|w| w.agents).max();
        out.push_str(&format!(
            "Largest N held (< {MAX_CORES} core, < {} MiB peak RSS, registry correct, no rt failure): {}\n",
            MAX_RSS_KB / 1024,
            best.map_or("none".to_owned(), |b| b.to_string())
        ));
    }
    if let Err(e) = outcome {
        out.push_str(&format!("\nThe run stopped early: {e:#}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_ips_are_distinct_valid_and_never_end_in_0_or_255() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..60_000 {
            let ip = sim_ip(i);
            assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
            let last: u32 = ip.rsplit('.').next().unwrap().parse().unwrap();
            assert!((1..=254).contains(&last), "{ip}");
            assert!(seen.insert(ip.clone()), "{ip} twice");
        }
        assert_eq!(sim_ip(0), "10.0.0.1");
        assert_eq!(sim_ip(253), "10.0.0.254");
        assert_eq!(sim_ip(254), "10.0.1.1");
    }
}
