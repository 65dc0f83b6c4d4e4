//! What every scenario shares: the machine description, a cluster of `elves center` and
//! `elves agent` child processes started from generated configs in a temporary directory, the
//! watchdog, the bare spawn of the no-op worker (the baseline) and signed v2 API calls.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use elves_config::{AgentConfig, CenterConfig};
use elves_sign::{SignType, signed_query};

/// The variables the agent copies into a worker's environment (`elves_agent::exec::ENV_ALLOWLIST`).
pub const ENV_ALLOWLIST: &[&str] = &[
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TZ", "USER", "LOGNAME", "TMPDIR",
];
pub const APP: &str = "noop";
pub const FUNC: &str = "run";
pub const RT_PATH: &str = "/api/v2/rt/exec";
/// Per spawn and per request.
pub const STEP_LIMIT: Duration = Duration::from_secs(30);
/// Readiness: center answering /healthz, then every agent running a job.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// The `timeout` parameter of every job the benches send, seconds.
pub const JOB_TIMEOUT: &str = "10";
/// The agent's executor at debug level: one "starting worker" and one "worker finished" line
/// per run, with the task id (used to split rt/exec and to count queue runs).
pub const AGENT_TRACE_FILTER: &str = "info,elves_agent::exec=debug";

/// The options every scenario has (flattened into its own).
#[derive(clap::Args)]
pub struct CommonArgs {
    /// Also write the markdown report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Whole-run deadline in seconds: rt-latency stops its measure there and reports what it
    /// has; queue-throughput fails if a variant is not done by then.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=3600))]
    pub deadline_secs: u64,
    /// MD5 or HMAC-SHA256.
    #[arg(long, default_value = "HMAC-SHA256")]
    pub sign_type: String,
    /// Where `elves` and `elves-noop-worker` are; default: next to this executable.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, the center's SQLite file) and print its path.
    #[arg(long)]
    pub keep_dir: bool,
    /// The no-op worker the agents run (and the spawn baselines spawn): `rust` is
    /// `elves-noop-worker` (a dynamically linked Rust program); `c-static` is the same answer
    /// from a statically linked C program compiled here with `cc -O2 -static` (the cheapest
    /// native worker: no dynamic loader, no runtime start-up).
    #[arg(long, value_enum, default_value_t = WorkerKind::Rust)]
    pub worker: WorkerKind,
}

/// Which no-op worker a [`Cluster`] installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerKind {
    Rust,
    CStatic,
}

impl WorkerKind {
    /// How a report names it.
    pub fn describe(self) -> &'static str {
        match self {
            WorkerKind::Rust => {
                "the native no-op worker `elves-noop-worker` (Rust, dynamically linked)"
            }
            WorkerKind::CStatic => {
                "the native no-op worker in C, statically linked (`cc -O2 -static`, `--worker c-static`)"
            }
        }
    }
}

/// The C no-op worker of `--worker c-static`: the answer of `elves-noop-worker`, one write.
const C_NOOP: &str = r#"#include <unistd.h>
static const char answer[] = "<ElvesWFlag>true</ElvesWFlag><ElvesWResult>ok</ElvesWResult>";
int main(void) {
    return write(1, answer, sizeof answer - 1) == (ssize_t)(sizeof answer - 1) ? 0 : 1;
}
"#;

/// Compiles [`C_NOOP`] to `dest` with `$CC` (default `cc`), statically linked.
fn compile_c_noop(dir: &Path, dest: &Path) -> anyhow::Result<()> {
    let src = dir.join("noop.c");
    std::fs::write(&src, C_NOOP)?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(&cc)
        .args(["-O2", "-static", "-o"])
        .arg(dest)
        .arg(&src)
        .output()
        .with_context(|| format!("--worker c-static needs a C compiler: cannot run {cc:?}"))?;
    ensure!(
        out.status.success(),
        "--worker c-static: `{cc} -O2 -static` failed (a static libc is needed, e.g. Debian's \
         libc6-dev): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// What a run knows from its start.
pub struct RunStart {
    pub started: Instant,
    pub deadline: Instant,
    pub machine: Machine,
    pub load_start: String,
    pub sign_type: SignType,
}

impl CommonArgs {
    /// Starts the clock and the watchdog, describes the machine, parses `--sign-type`.
    pub fn begin(&self) -> anyhow::Result<RunStart> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(self.deadline_secs);
        watchdog(deadline);
        Ok(RunStart {
            started,
            deadline,
            machine: Machine::describe(),
            load_start: loadavg(),
            sign_type: SignType::parse(&self.sign_type)
                .with_context(|| format!("unknown --sign-type {:?}", self.sign_type))?,
        })
    }

    /// Starts a center and `agents` agents on the loopback identities `127.0.0.1`,
    /// `127.0.0.2`, … (agents logging at `agent_filter`); returns the identities too.
    pub fn cluster(
        &self,
        sign_type: SignType,
        agents: u32,
        agent_filter: &str,
    ) -> anyhow::Result<(Vec<String>, Cluster)> {
        let ips: Vec<String> = (1..=agents).map(|i| format!("127.0.0.{i}")).collect();
        let cluster = Cluster::start(&ClusterOpts {
            bin_dir: self.bin_dir.as_deref(),
            agent_ips: &ips,
            agent_filter,
            sign_type,
            lean_agent: false,
            worker: self.worker,
        })?;
        Ok((ips, cluster))
    }

    /// Keeps the cluster's directory when asked (call before dropping it).
    pub fn keep(&self, cluster: &mut Cluster) -> Option<PathBuf> {
        if self.keep_dir {
            cluster.keep_dir()
        } else {
            None
        }
    }

    /// Prints the report, writes it to `--out`, says where the kept directory is.
    pub fn publish(&self, report: &str, kept: Option<PathBuf>) -> anyhow::Result<()> {
        print!("{report}");
        if let Some(out) = &self.out {
            std::fs::write(out, report).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("elves-bench: report written to {}", out.display());
        }
        if let Some(kept) = kept {
            eprintln!("elves-bench: kept {}", kept.display());
        }
        Ok(())
    }
}

/// Pids the watchdog kills if the run overstays its deadline.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

// ---------------------------------------------------------------------------------------
// Machine, date, helpers

pub struct Machine {
    pub nproc: usize,
    pub cpus_listed: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub date: String,
}

impl Machine {
    pub fn describe() -> Machine {
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

    /// The report's `- date:` and `- machine:` lines.
    pub fn lines(&self) -> String {
        let listed = if self.cpus_listed != self.nproc {
            format!(" ({} listed in /proc/cpuinfo)", self.cpus_listed)
        } else {
            String::new()
        };
        format!(
            "- date: {}\n- machine: nproc {}{listed}, {}, {}\n",
            self.date, self.nproc, self.cpu_model, self.kernel
        )
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    hex::encode_upper(b)
}

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

pub fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

pub fn us(d: Duration) -> f64 {
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

/// Kills the center and agents and exits 30 s after `deadline`, whatever the run is doing.
fn watchdog(deadline: Instant) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        std::thread::sleep(Duration::from_secs(30));
        eprintln!("elves-bench: whole-run deadline passed by 30 s; killing the center and agents");
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
// Center and agents as child processes

/// A role of the `elves` binary; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Role {
    label: String,
    child: Child,
    pub stderr: PathBuf,
}

impl Role {
    /// `elves --log-format json <role> --config <config>` (no role: a binary that is only
    /// that role, `elves-agent`), logging to `<label>.stderr`.
    fn start(
        elves: &Path,
        role: &str,
        label: &str,
        config: &Path,
        dir: &Path,
        log_filter: &str,
    ) -> anyhow::Result<Role> {
        let stderr = dir.join(format!("{label}.stderr"));
        let mut cmd = elves_command(elves, std::fs::File::create(&stderr)?, log_filter);
        cmd.args(["--log-format", "json"]);
        if !role.is_empty() {
            cmd.arg(role);
        }
        cmd.arg("--config")
            .arg(config)
            .current_dir(dir)
            .env("NO_COLOR", "1");
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} {role}", elves.display()))?;
        CHILDREN
            .lock()
            .expect("children poisoned")
            .push(child.id() as i32);
        Ok(Role {
            label: label.to_owned(),
            child,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the tail of its stderr if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the {} exited ({status}); its stderr ends with:\n{}",
                self.label,
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

/// How to start a [`Cluster`].
pub struct ClusterOpts<'a> {
    /// Where `elves` and `elves-noop-worker` are; default: next to this executable.
    pub bin_dir: Option<&'a Path>,
    /// One agent per identity, each with `[apps] noop = "1.0.0"`.
    pub agent_ips: &'a [String],
    /// `ELVES_LOG` of the agents.
    pub agent_filter: &'a str,
    pub sign_type: SignType,
    /// Run the agents as the lean `elves-agent` binary (what hosts deploy) instead of
    /// `elves agent`.
    pub lean_agent: bool,
    pub worker: WorkerKind,
}

/// One center and its agents on loopback, in a temporary directory, with the native no-op
/// worker installed as `apps/noop/app-worker`. Stopped when dropped.
pub struct Cluster {
    // Declared before `tmp`: the processes stop before their directory goes.
    pub center: Role,
    pub agents: Vec<Role>,
    pub api: Api,
    /// The worker as the agents run it, and its app directory (their cwd).
    pub entry: PathBuf,
    pub app_dir: PathBuf,
    /// Where agents connect (`http://…`), the enrollment token and the store's URL
    /// (agent-scale's simulated agents and registry check).
    pub agents_endpoint: String,
    pub agents_token: String,
    pub store_url: String,
    healthz: String,
    tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Writes the configs (random `auth.id`, `auth.key`, `agents.token`, free loopback ports,
    /// SQLite store, memory bus), installs the worker and starts the processes. Call
    /// [`Cluster::ready`] before using it.
    pub fn start(o: &ClusterOpts) -> anyhow::Result<Cluster> {
        Cluster::start_with(o, |_| {})
    }

    /// [`Cluster::start`] with the center's config changed by `tweak` before it is written.
    pub fn start_with(
        o: &ClusterOpts,
        tweak: impl FnOnce(&mut CenterConfig),
    ) -> anyhow::Result<Cluster> {
        let bin_dir = match o.bin_dir {
            Some(d) => d.to_owned(),
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
        match o.worker {
            WorkerKind::Rust => {
                std::fs::copy(&noop, &entry).context("installing the no-op worker")?;
            }
            WorkerKind::CStatic => compile_c_noop(&dir, &entry)?,
        }

        let (api_port, agents_port) = (free_port()?, free_port()?);
        let mut center = CenterConfig::default();
        center.server.listen = format!("127.0.0.1:{api_port}");
        center.agents.listen = format!("127.0.0.1:{agents_port}");
        center.auth.id = random_hex(8);
        center.auth.key = random_hex(16);
        center.agents.token = random_hex(16);
        center.store.url = format!("sqlite://{}", dir.join("elves.db").display());
        tweak(&mut center);
        center.validate()?;
        let center_toml = dir.join("center.toml");
        std::fs::write(&center_toml, toml::to_string(&center)?)?;
        let center_role = Role::start(&elves, "center", "center", &center_toml, &dir, "info")?;

        let mut agents = Vec::new();
        for (i, ip) in o.agent_ips.iter().enumerate() {
            // rt-latency's single agent keeps its historical file names.
            let label = if o.agent_ips.len() == 1 {
                "agent".to_owned()
            } else {
                format!("agent-{}", i + 1)
            };
            let mut agent = AgentConfig {
                ip: ip.clone(),
                asset: format!("bench-{}", i + 1),
                center: format!("http://127.0.0.1:{agents_port}"),
                token: center.agents.token.clone(),
                data_dir: dir.join(&label),
                apps_dir: apps_dir.clone(),
                ..AgentConfig::default()
            };
            agent.apps.insert(APP.into(), "1.0.0".into());
            agent.validate()?;
            let toml_path = dir.join(format!("{label}.toml"));
            std::fs::write(&toml_path, toml::to_string(&agent)?)?;
            let (bin, role) = if o.lean_agent {
                (elves.with_file_name("elves-agent"), "")
            } else {
                (elves.clone(), "agent")
            };
            agents.push(Role::start(
                &bin,
                role,
                &label,
                &toml_path,
                &dir,
                o.agent_filter,
            )?);
        }

        let api = Api {
            client: reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1)
                .timeout(STEP_LIMIT)
                .build()?,
            base: format!("http://127.0.0.1:{api_port}"),
            auth_id: center.auth.id.clone(),
            auth_key: center.auth.key.clone(),
            sign_type: o.sign_type,
        };
        Ok(Cluster {
            center: center_role,
            agents,
            api,
            entry,
            app_dir,
            agents_endpoint: format!("http://127.0.0.1:{agents_port}"),
            agents_token: center.agents.token.clone(),
            store_url: center.store.url.clone(),
            healthz: format!("http://127.0.0.1:{api_port}/healthz"),
            tmp: Some(tmp),
        })
    }

    /// Fails if the center or an agent has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.center.check_alive()?;
        for a in &mut self.agents {
            a.check_alive()?;
        }
        Ok(())
    }

    /// Waits, bounded, for `/healthz` and then for a successful `rt/exec` on every agent.
    pub async fn ready(&mut self, agent_ips: &[String]) -> anyhow::Result<()> {
        let ready_by = Instant::now() + READY_LIMIT;
        loop {
            self.check_alive()?;
            let up = self.api.client.get(&self.healthz).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            ensure!(
                Instant::now() < ready_by,
                "the center did not answer /healthz in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for ip in agent_ips {
            loop {
                self.check_alive()?;
                let last_err = match self.api.call(RT_PATH, &rt_params(ip)).await {
                    Ok(r) if r["worker_flag"] == 1 => break,
                    Ok(r) => format!("worker_flag is not 1: {r}"),
                    Err(e) => format!("{e:#}"),
                };
                ensure!(
                    Instant::now() < ready_by,
                    "the agent {ip} did not run a job in time; last answer: {last_err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Stops the agents, then the center (also done when dropped).
    pub fn stop(&mut self) {
        for a in &mut self.agents {
            a.stop();
        }
        self.center.stop();
    }

    /// Keeps the temporary directory after the run and returns its path.
    pub fn keep_dir(&mut self) -> Option<PathBuf> {
        self.tmp.take().map(|t| t.keep())
    }
}

/// The parameters of an `rt/exec` of the no-op worker on agent `ip`.
pub fn rt_params(ip: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ip", ip.to_owned()),
        ("app", APP.to_owned()),
        ("func", FUNC.to_owned()),
        ("timeout", JOB_TIMEOUT.to_owned()),
    ]
}

// ---------------------------------------------------------------------------------------
// Signed v2 calls

#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    base: String,
    auth_id: String,
    auth_key: String,
    sign_type: SignType,
}

impl Api {
    /// The API's `host:port`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The signed form body of a call to `path` (api-v2 §2), signed now.
    pub fn sign(&self, path: &str, params: &[(&str, String)]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        signed_query(
            path,
            &params,
            &self.auth_id,
            &self.auth_key,
            self.sign_type,
            now,
            None,
        )
    }

    /// POSTs a signed body to `path` and returns the whole answer's text.
    pub async fn send(&self, path: &str, body: String) -> anyhow::Result<String> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .with_context(|| format!("{path}: sending"))?;
        resp.text()
            .await
            .with_context(|| format!("{path}: reading the answer"))
    }

    /// Signs, sends and checks the envelope (`flag` `"true"`); returns its `result` (JSON null
    /// when there is none).
    pub async fn call(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> anyhow::Result<serde_json::Value> {
        let text = self.send(path, self.sign(path, params)).await?;
        envelope_result(path, &text)
    }
}

/// The `result` of an answer whose `flag` is `"true"`; an error with the answer otherwise.
pub fn envelope_result(path: &str, text: &str) -> anyhow::Result<serde_json::Value> {
    let mut v: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("{path}: not JSON: {text}"))?;
    ensure!(v["flag"] == "true", "{path} did not succeed: {text}");
    Ok(v["result"].take())
}

// ---------------------------------------------------------------------------------------
// The worker, spawned bare (the baseline)

/// The worker's environment, as the agent builds it (agent-protocol §3).
fn worker_env(task_id: &str) -> Vec<(String, std::ffi::OsString)> {
    let mut env: Vec<(String, std::ffi::OsString)> = ENV_ALLOWLIST
        .iter()
        .filter_map(|v| std::env::var_os(v).map(|val| ((*v).to_owned(), val)))
        .collect();
    for (k, v) in [
        ("ELVES_APP", APP),
        ("ELVES_FUNC", FUNC),
        ("ELVES_TASK_ID", task_id),
        ("ELVES_TASK_TYPE", "rt"),
        ("ELVES_MODE", "NP"),
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

/// `apps/noop/app-worker noop run ""`, set up as the agent does (app directory as cwd,
/// `env_clear` + allow-list + `ELVES_*`, stdin null, stdout and stderr piped, own process
/// group).
fn worker_command(entry: &Path, app_dir: &Path, round: u64) -> Command {
    let mut cmd = Command::new(entry);
    cmd.args([APP, FUNC, ""])
        .current_dir(app_dir)
        .env_clear()
        .envs(worker_env(&format!("bench-{round}")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// The worker with std::process: spawn, read both pipes, wait. Returns the time it took.
pub fn bare_std(entry: &Path, app_dir: &Path, round: u64) -> anyhow::Result<Duration> {
    let mut cmd = worker_command(entry, app_dir, round);
    let t0 = Instant::now();
    let out = cmd.output().context("bare spawn (std)")?;
    let took = t0.elapsed();
    check_output(&out.stdout, out.status.success(), "bare spawn (std)")?;
    Ok(took)
}

/// The same with tokio::process, the mechanism the agent uses.
pub async fn bare_tokio(entry: &Path, app_dir: &Path, round: u64) -> anyhow::Result<Duration> {
    let mut cmd = tokio::process::Command::from(worker_command(entry, app_dir, round));
    cmd.kill_on_drop(true);
    let t0 = Instant::now();
    let out = tokio::time::timeout(STEP_LIMIT, cmd.output())
        .await
        .context("bare spawn (tokio) over its limit")?
        .context("bare spawn (tokio)")?;
    let took = t0.elapsed();
    check_output(&out.stdout, out.status.success(), "bare spawn (tokio)")?;
    Ok(took)
}

/// The same worker run `total` times by `spawners` threads at once (each [`bare_std`], one
/// after the other; the runs split as evenly as they go). Returns the wall time of the
/// whole, from the first spawn to the last exit.
pub fn bare_std_parallel(
    entry: &Path,
    app_dir: &Path,
    total: usize,
    spawners: usize,
) -> anyhow::Result<Duration> {
    let shares = elves_bench::split_evenly(total, spawners.max(1));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                s.spawn(move || -> anyhow::Result<()> {
                    for i in 0..n {
                        bare_std(entry, app_dir, (k * total + i) as u64)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a spawner thread panicked"))??;
        }
        anyhow::Ok(())
    })?;
    Ok(t0.elapsed())
}

/// A command for the `elves` binary at `elves`: empty environment but for the allow-listed
/// variables the bench's own spawns pass to the worker and `ELVES_LOG=log_filter`, no stdin or
/// stdout, stderr to `stderr`, killed when the bench dies.
pub fn elves_command(elves: &Path, stderr: std::fs::File, log_filter: &str) -> Command {
    let mut cmd = Command::new(elves);
    cmd.env_clear()
        .env("ELVES_LOG", log_filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
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
    cmd
}
