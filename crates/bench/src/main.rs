//! `elves-bench`: reproducible benchmarks of a running Elves, against baselines measured in
//! the same run.
//!
//! `elves-bench rt-latency` starts a real center and a real agent (the `elves` binary) on
//! loopback in a temporary directory, installs the native no-op worker as app `noop`, and
//! compares, round by round, a bare spawn of that worker with a signed `rt/exec` of it. Build
//! first, into the same target directory:
//!
//! ```text
//! cargo build --release -p elves-cli -p elves-bench
//! target/release/elves-bench rt-latency --n 2000 --warmup 200 --out rt-latency.md
//! ```
//!
//! Every run is bounded: `--n` and `--warmup` are capped, readiness, each request and each
//! tokio spawn have a limit, a whole-run deadline stops the measure, and 30 s past it a
//! watchdog kills the center, the agent and the bench whatever they are doing. Method, figures
//! and findings: `BENCHMARKS.md` at the repository root.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser, Subcommand};
use elves_bench::{Summary, TABLE_HEAD, ms, row};
use elves_config::{AgentConfig, CenterConfig};
use elves_sign::{SignType, signed_query};

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
    RtLatency(RtArgs),
}

#[derive(Args)]
struct RtArgs {
    /// Measured rounds (each: one bare std spawn, one bare tokio spawn, one rt/exec).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    n: u32,
    /// Rounds run first and thrown away.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    warmup: u32,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Whole-run deadline in seconds: the measure stops there and reports what it has.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=3600))]
    deadline_secs: u64,
    /// MD5 or HMAC-SHA256.
    #[arg(long, default_value = "HMAC-SHA256")]
    sign_type: String,
    /// Where `elves` and `elves-noop-worker` are; default: next to this executable.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Run the agent with debug logs of its executor and split each rt/exec into the way
    /// down (client to worker spawn), the worker run and the way back, from log timestamps.
    #[arg(long)]
    agent_trace: bool,
    /// Keep the temporary directory (configs, logs) and print its path.
    #[arg(long)]
    keep_dir: bool,
}

/// The variables the agent copies into a worker's environment (`elves_agent::exec::ENV_ALLOWLIST`).
const ENV_ALLOWLIST: &[&str] = &[
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TZ", "USER", "LOGNAME", "TMPDIR",
];
const APP: &str = "noop";
const FUNC: &str = "run";
const RT_PATH: &str = "/api/v2/rt/exec";
/// Per spawn and per request.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// Readiness: center answering /healthz, then the agent running a job.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// The `timeout` parameter of every rt/exec, seconds.
const RT_TIMEOUT: &str = "10";

/// Pids the watchdog kills if the run overstays its deadline.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::RtLatency(args) => rt_latency(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elves-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Machine, date, helpers

struct Machine {
    nproc: usize,
    cpus_listed: usize,
    cpu_model: String,
    kernel: String,
    date: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cpus_listed = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into())
    };
    let kernel = format!(
        "{} {}",
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease")
    );
    let date = elves_bench::utc_rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpus_listed,
        cpu_model,
        kernel,
        date,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    hex::encode_upper(b)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

// ---------------------------------------------------------------------------------------
// Center and agent as child processes

/// A role of the `elves` binary; stopped (SIGTERM, then SIGKILL) when dropped.
struct Role {
    name: &'static str,
    child: Child,
    stderr: PathBuf,
}

impl Role {
    fn start(
        elves: &Path,
        name: &'static str,
        config: &Path,
        dir: &Path,
        log_filter: &str,
    ) -> anyhow::Result<Role> {
        let stderr = dir.join(format!("{name}.stderr"));
        let err = std::fs::File::create(&stderr)?;
        let mut cmd = Command::new(elves);
        cmd.args(["--log-format", "json", name, "--config"])
            .arg(config)
            .current_dir(dir)
            .env_clear()
            .env("ELVES_LOG", log_filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        // The same allow-listed variables the bench's own spawns pass to the worker.
        for v in ENV_ALLOWLIST {
            if let Some(val) = std::env::var_os(v) {
                cmd.env(v, val);
            }
        }
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} {name}", elves.display()))?;
        CHILDREN
            .lock()
            .expect("children poisoned")
            .push(child.id() as i32);
        Ok(Role {
            name,
            child,
            stderr,
        })
    }

    /// Fails with the tail of its stderr if it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the {} exited ({status}); its stderr ends with:\n{}",
                self.name,
                tail(&self.stderr, 2000)
            );
        }
        Ok(())
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watchdog(deadline: Instant) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        std::thread::sleep(Duration::from_secs(30));
        eprintln!("elves-bench: whole-run deadline passed by 30 s; killing the center and agent");
        for pid in CHILDREN.lock().map(|v| v.clone()).unwrap_or_default() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::process::exit(3);
    });
}

// ---------------------------------------------------------------------------------------
// The worker, spawned bare

/// The worker's environment, as the agent builds it (agent-protocol §3).
fn worker_env(round: u64) -> Vec<(String, std::ffi::OsString)> {
    let mut env: Vec<(String, std::ffi::OsString)> = ENV_ALLOWLIST
        .iter()
        .filter_map(|v| std::env::var_os(v).map(|val| ((*v).to_owned(), val)))
        .collect();
    for (k, v) in [
        ("ELVES_APP", APP.to_owned()),
        ("ELVES_FUNC", FUNC.to_owned()),
        ("ELVES_TASK_ID", format!("bench-{round}")),
        ("ELVES_TASK_TYPE", "rt".to_owned()),
        ("ELVES_MODE", "NP".to_owned()),
    ] {
        env.push((k.to_owned(), v.into()));
    }
    env
}

fn check_output(stdout: &[u8], ok: bool, what: &str) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(stdout);
    ensure!(
        ok && text.contains("<ElvesWFlag>true</ElvesWFlag>"),
        "{what}: the worker did not answer true: {text}"
    );
    Ok(())
}

/// `apps/noop/app-worker noop run ""` with std::process: spawn, read stdout and stderr, wait.
fn bare_std(entry: &Path, app_dir: &Path, round: u64) -> anyhow::Result<Duration> {
    let mut cmd = Command::new(entry);
    cmd.args([APP, FUNC, ""])
        .current_dir(app_dir)
        .env_clear()
        .envs(worker_env(round))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let t0 = Instant::now();
    let out = cmd.output().context("bare spawn (std)")?;
    let took = t0.elapsed();
    check_output(&out.stdout, out.status.success(), "bare spawn (std)")?;
    Ok(took)
}

/// The same with tokio::process, the mechanism the agent uses.
async fn bare_tokio(entry: &Path, app_dir: &Path, round: u64) -> anyhow::Result<Duration> {
    let mut cmd = tokio::process::Command::new(entry);
    cmd.args([APP, FUNC, ""])
        .current_dir(app_dir)
        .env_clear()
        .envs(worker_env(round))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let t0 = Instant::now();
    let out = tokio::time::timeout(STEP_LIMIT, cmd.output())
        .await
        .context("bare spawn (tokio) over its limit")?
        .context("bare spawn (tokio)")?;
    let took = t0.elapsed();
    check_output(&out.stdout, out.status.success(), "bare spawn (tokio)")?;
    Ok(took)
}

// ---------------------------------------------------------------------------------------
// rt/exec

struct Api {
    client: reqwest::Client,
    url: String,
    auth_id: String,
    auth_key: String,
    sign_type: SignType,
}

struct RtSample {
    took: Duration,
    sent_us: i64,
    recv_us: i64,
    id: String,
    costtime_ms: i64,
}

impl Api {
    async fn exec(&self) -> anyhow::Result<RtSample> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let body = signed_query(
            RT_PATH,
            &[
                ("ip", "127.0.0.1"),
                ("app", APP),
                ("func", FUNC),
                ("timeout", RT_TIMEOUT),
            ],
            &self.auth_id,
            &self.auth_key,
            self.sign_type,
            now,
            None,
        );
        let sent = SystemTime::now();
        let t0 = Instant::now();
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .context("rt/exec: sending")?;
        let text = resp.text().await.context("rt/exec: reading the answer")?;
        let took = t0.elapsed();
        let recv = SystemTime::now();
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("rt/exec: not JSON: {text}"))?;
        let r = &v["result"];
        ensure!(
            v["flag"] == "true" && r["worker_flag"] == 1,
            "rt/exec did not succeed: {text}"
        );
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
}

// ---------------------------------------------------------------------------------------
// The run

struct Series {
    bare_std: Vec<f64>,
    bare_tokio: Vec<f64>,
    rt: Vec<RtSample>,
}

fn rt_latency(args: RtArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.deadline_secs);
    watchdog(deadline);
    let m = machine();
    let load_start = loadavg();
    let sign_type = SignType::parse(&args.sign_type)
        .with_context(|| format!("unknown --sign-type {:?}", args.sign_type))?;

    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench executable has no directory")?
            .to_owned(),
    };
    let elves = bin_dir.join("elves");
    let noop = bin_dir.join("elves-noop-worker");
    for p in [&elves, &noop] {
        ensure!(
            p.is_file(),
            "{} not found: run `cargo build --release -p elves-cli -p elves-bench` first \
             (or pass --bin-dir)",
            p.display()
        );
    }

    let tmp = tempfile::Builder::new().prefix("elves-bench-").tempdir()?;
    let dir = tmp.path().to_owned();
    let apps_dir = dir.join("apps");
    let app_dir = apps_dir.join(APP);
    std::fs::create_dir_all(&app_dir)?;
    let entry = app_dir.join("app-worker");
    std::fs::copy(&noop, &entry).context("installing the no-op worker")?;

    let (api_port, agents_port) = (free_port()?, free_port()?);
    let mut center = CenterConfig::default();
    center.server.listen = format!("127.0.0.1:{api_port}");
    center.agents.listen = format!("127.0.0.1:{agents_port}");
    center.auth.id = random_hex(8);
    center.auth.key = random_hex(16);
    center.agents.token = random_hex(16);
    center.store.url = format!("sqlite://{}", dir.join("elves.db").display());
    center.validate()?;
    let mut agent = AgentConfig {
        ip: "127.0.0.1".into(),
        asset: "bench".into(),
        center: format!("http://127.0.0.1:{agents_port}"),
        token: center.agents.token.clone(),
        data_dir: dir.join("agent"),
        apps_dir: apps_dir.clone(),
        ..AgentConfig::default()
    };
    agent.apps.insert(APP.into(), "1.0.0".into());
    agent.validate()?;
    let center_toml = dir.join("center.toml");
    let agent_toml = dir.join("agent.toml");
    std::fs::write(&center_toml, toml::to_string(&center)?)?;
    std::fs::write(&agent_toml, toml::to_string(&agent)?)?;

    let agent_filter = if args.agent_trace {
        "info,elves_agent::exec=debug"
    } else {
        "info"
    };
    let mut center_role = Role::start(&elves, "center", &center_toml, &dir, "info")?;
    let mut agent_role = Role::start(&elves, "agent", &agent_toml, &dir, agent_filter)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let api = Api {
        client: reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .timeout(STEP_LIMIT)
            .build()?,
        url: format!("http://127.0.0.1:{api_port}{RT_PATH}"),
        auth_id: center.auth.id.clone(),
        auth_key: center.auth.key.clone(),
        sign_type,
    };
    let healthz = format!("http://127.0.0.1:{api_port}/healthz");

    let measured = rt.block_on(async {
        // Readiness, bounded: the API first, then a job that runs on the agent.
        let ready_by = Instant::now() + READY_LIMIT;
        loop {
            center_role.check_alive()?;
            let up = api.client.get(&healthz).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            ensure!(
                Instant::now() < ready_by,
                "the center did not answer /healthz in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            center_role.check_alive()?;
            agent_role.check_alive()?;
            let last_err = match api.exec().await {
                Ok(_) => break,
                Err(e) => format!("{e:#}"),
            };
            ensure!(
                Instant::now() < ready_by,
                "the agent did not run a job in time; last answer: {last_err}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
            let a = bare_std(&entry, &app_dir, round)?;
            let b = bare_tokio(&entry, &app_dir, round).await?;
            let c = api.exec().await?;
            if round >= u64::from(args.warmup) {
                s.bare_std.push(us(a));
                s.bare_tokio.push(us(b));
                s.rt.push(c);
            }
        }
        anyhow::Ok((s, partial))
    });
    drop(rt);
    drop(agent_role);
    drop(center_role);
    let (series, partial) = measured?;
    let load_end = loadavg();

    let trace = if args.agent_trace {
        Some(agent_trace(&dir.join("agent.stderr"), &series.rt)?)
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
    print!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("elves-bench: report written to {}", out.display());
    }
    if args.keep_dir {
        let kept = tmp.keep();
        eprintln!("elves-bench: kept {}", kept.display());
    }
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
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(ts) = v["timestamp"]
            .as_str()
            .and_then(elves_bench::rfc3339_micros_of_day)
        else {
            continue;
        };
        let f = &v["fields"];
        let Some(task) = f["task"].as_str() else {
            continue;
        };
        match f["message"].as_str() {
            Some("starting worker") => start.insert(task.to_owned(), ts),
            Some("worker finished") => end.insert(task.to_owned(), ts),
            _ => None,
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
    writeln!(w, "- date: {}", r.m.date)?;
    let listed = if r.m.cpus_listed != r.m.nproc {
        format!(" ({} listed in /proc/cpuinfo)", r.m.cpus_listed)
    } else {
        String::new()
    };
    writeln!(
        w,
        "- machine: nproc {}{listed}, {}, {}",
        r.m.nproc, r.m.cpu_model, r.m.kernel
    )?;
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
        "- rt/exec: POST {RT_PATH} ip=127.0.0.1 app=noop func=run timeout={RT_TIMEOUT}, \
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
