//! The worker executor: runs one app worker as a child process and turns what it did into an
//! [`Outcome`] (agent-protocol §3 and §4).
//!
//! The executor resolves the entry program (the default `app-worker`/`app-worker.py` or the
//! job's `proxy`), refuses anything that would run a program from outside the app directory,
//! starts the worker in its own process group with a minimal environment, reads its stdout
//! and stderr concurrently, and enforces the output cap, the timeout and cancellation by
//! killing the whole process group. Every wait is bounded: a grandchild that keeps the pipes
//! open after the worker exits cannot make the executor hang.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine as _;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The default cap on a worker's stdout, in bytes (4 MiB).
pub const DEFAULT_OUTPUT_CAP: usize = 4 * 1024 * 1024;

/// How many bytes of a worker's stderr are kept for error messages.
pub const STDERR_TAIL: usize = 4096;

/// How long the executor keeps reading the pipes after the worker itself has exited.
///
/// A grandchild may inherit the pipes and keep them open; past this delay the executor stops
/// reading and reports with what it has.
pub const PIPE_DRAIN: Duration = Duration::from_millis(200);

/// How long the executor waits for a killed worker to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// How many times a spawn failing with `ETXTBSY` is retried.
///
/// A freshly written executable can be briefly "busy" when another thread of the agent forks
/// while the file is still open for writing (for example right after an install).
const SPAWN_RETRIES: u32 = 5;

/// The variables copied from the agent's environment into the worker's, when they are set.
pub const ENV_ALLOWLIST: &[&str] = &[
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TZ", "USER", "LOGNAME", "TMPDIR",
];

/// The interpreters a `proxy = "X|Y"` may name by default.
pub const DEFAULT_INTERPRETERS: &[&str] = &["python3", "python", "bash", "sh"];

/// The executor's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecConfig {
    /// The directory that holds one sub-directory per installed app.
    pub apps_dir: PathBuf,
    /// The interpreter names a `proxy = "X|Y"` may use; each is a bare name found through PATH.
    pub allowed_interpreters: Vec<String>,
    /// The most bytes of stdout a worker may print before it is killed.
    pub output_cap: usize,
    /// The program that runs `app-worker.py` when the app has no executable `app-worker`.
    pub python: String,
}

impl Default for ExecConfig {
    /// Returns the documented defaults: `apps_dir = "apps"`, the interpreters `python3`,
    /// `python`, `bash` and `sh`, a 4 MiB output cap and `python3`.
    fn default() -> Self {
        ExecConfig {
            apps_dir: PathBuf::from("apps"),
            allowed_interpreters: DEFAULT_INTERPRETERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            output_cap: DEFAULT_OUTPUT_CAP,
            python: "python3".to_owned(),
        }
    }
}

/// One worker run requested by the center, by agent-side cron or by the developer API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    /// The task or run id, exported to the worker as `ELVES_TASK_ID`.
    pub id: String,
    /// The task type (`rt`, `queue` or `cron`), exported as `ELVES_TASK_TYPE`.
    pub kind: String,
    /// The mode (`NP` or `P`), exported as `ELVES_MODE`.
    pub mode: String,
    /// The app name, which is also the name of its directory under `apps_dir`.
    pub app: String,
    /// The function name passed to the worker.
    pub func: String,
    /// The task's JSON parameter text, passed base64-encoded.
    pub param: String,
    /// The time limit in seconds; 0 means no limit.
    pub timeout_secs: u64,
    /// The optional entry override: empty, `"X|Y"` or `"Y"`.
    pub proxy: String,
}

/// The result of one worker run, as reported to the center.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// 1 when the worker answered `true`, 0 for any other answer, -1 when the agent could not
    /// run the worker or understand its output.
    pub flag: i32,
    /// The worker's result text, or the reason for a flag of -1.
    pub message: String,
    /// Milliseconds from spawning the worker to its exit (0 when it was never spawned).
    pub costtime_ms: i64,
}

impl Outcome {
    /// Builds a flag -1 outcome with the given message.
    pub(crate) fn fail(message: impl Into<String>, costtime_ms: i64) -> Outcome {
        Outcome {
            flag: -1,
            message: message.into(),
            costtime_ms,
        }
    }
}

/// Runs app workers according to an [`ExecConfig`].
#[derive(Debug, Clone)]
pub struct Executor {
    cfg: ExecConfig,
    /// Caps on concurrent workers (none: no cap).
    limiter: Option<std::sync::Arc<crate::limits::Limiter>>,
    /// The unprivileged user workers run as (none: the agent's user).
    user: Option<crate::limits::WorkerUser>,
}

/// A resolved entry: what to run, with which leading arguments, in which directory.
struct Entry {
    program: PathBuf,
    args: Vec<OsString>,
    app_dir: PathBuf,
}

/// Returns true when `app` is a single, ordinary path component.
fn is_safe_app_name(app: &str) -> bool {
    if app.is_empty() || app.contains(['/', '\\', '\0']) {
        return false;
    }
    let mut components = Path::new(app).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    )
}

/// Returns true when `path` (following symlinks) is a regular file with an execute bit set.
fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds a bare program name in the agent's PATH, skipping empty and relative PATH entries.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

/// Resolves the proxy file `y` inside the canonical app directory `app_dir`.
///
/// The file must be a relative path without `..` components that, once every symlink is
/// resolved, still lies inside the app directory and is a regular file.
fn resolve_inside(app_dir: &Path, y: &str) -> Result<PathBuf, String> {
    if y.is_empty() {
        return Err("app proxy refused : empty file name".to_owned());
    }
    let rel = Path::new(y);
    if rel.is_absolute() || y.contains('\0') {
        return Err(format!(
            "app proxy refused : [{y}] must be a path relative to the app directory"
        ));
    }
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "app proxy refused : [{y}] must not leave the app directory"
        ));
    }
    let canonical = std::fs::canonicalize(app_dir.join(rel))
        .map_err(|e| format!("app proxy refused : [{y}] not found in the app directory ({e})"))?;
    if !canonical.starts_with(app_dir) {
        return Err(format!(
            "app proxy refused : [{y}] resolves outside the app directory"
        ));
    }
    if !canonical.is_file() {
        return Err(format!("app proxy refused : [{y}] is not a regular file"));
    }
    Ok(canonical)
}

/// Resolves the entry program, its leading arguments and the canonical app directory.
fn resolve(cfg: &ExecConfig, app: &str, proxy: &str) -> Result<Entry, String> {
    if !is_safe_app_name(app) {
        return Err(format!(
            "app [{app}] refused : the app name must be a single path component"
        ));
    }
    let dir = cfg.apps_dir.join(app);
    let app_dir = std::fs::canonicalize(&dir)
        .map_err(|e| format!("app [{app}] entry missing : {} ({e})", dir.display()))?;
    if !app_dir.is_dir() {
        return Err(format!(
            "app [{app}] entry missing : {} is not a directory",
            dir.display()
        ));
    }

    if proxy.is_empty() {
        let worker = app_dir.join("app-worker");
        if is_executable_file(&worker) {
            return Ok(Entry {
                program: worker,
                args: Vec::new(),
                app_dir,
            });
        }
        let script = app_dir.join("app-worker.py");
        if script.is_file() {
            return Ok(Entry {
                program: PathBuf::from(&cfg.python),
                args: vec![script.into_os_string()],
                app_dir,
            });
        }
        return Err(format!(
            "app [{app}] entry missing : neither an executable app-worker nor app-worker.py in {}",
            app_dir.display()
        ));
    }

    let parts: Vec<&str> = proxy.split('|').collect();
    match parts.as_slice() {
        [y] => {
            let file = resolve_inside(&app_dir, y)?;
            if !is_executable_file(&file) {
                return Err(format!("app proxy refused : [{y}] is not executable"));
            }
            Ok(Entry {
                program: file,
                args: Vec::new(),
                app_dir,
            })
        }
        [x, y] => {
            if x.is_empty() || x.contains(['/', '\\', '\0']) {
                return Err(format!(
                    "app proxy refused : interpreter [{x}] must be a bare name from allowed_interpreters"
                ));
            }
            if !cfg.allowed_interpreters.iter().any(|a| a == x) {
                return Err(format!(
                    "app proxy refused : interpreter [{x}] is not allowed"
                ));
            }
            let interpreter = find_in_path(x).ok_or_else(|| {
                format!("app proxy refused : interpreter [{x}] not found in PATH")
            })?;
            let file = resolve_inside(&app_dir, y)?;
            Ok(Entry {
                program: interpreter,
                args: vec![file.into_os_string()],
                app_dir,
            })
        }
        _ => Err(format!(
            "app proxy refused : [{proxy}] has more than one '|'"
        )),
    }
}

/// Resolves the program to start for `app` with the given `proxy`, and its leading arguments.
///
/// The app name must be a single safe path component. Without a proxy the entry is
/// `{apps_dir}/{app}/app-worker` when it is an executable file, else `app-worker.py` run by
/// `cfg.python`. With `proxy = "X|Y"`, `X` must be a bare name listed in
/// `cfg.allowed_interpreters` (it is resolved through the agent's PATH) and `Y` a file of the
/// app directory passed as the first argument. With `proxy = "Y"`, `Y` must be an executable
/// file of the app directory. A `Y` that is absolute, contains `..`, or resolves (through
/// symlinks) outside the app directory is refused, as is a proxy with more than one `|`.
///
/// The function only reads the filesystem to check the files. On refusal it returns the
/// message to report with flag -1.
pub fn resolve_entry(
    cfg: &ExecConfig,
    app: &str,
    proxy: &str,
) -> Result<(PathBuf, Vec<OsString>), String> {
    resolve(cfg, app, proxy).map(|e| (e.program, e.args))
}

/// Kills the worker's process group when dropped while armed.
///
/// It is armed only while the direct child has not been reaped, so the group id cannot have
/// been reused by an unrelated process.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    /// Sends SIGKILL to the whole group, ignoring a group that no longer exists.
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            match killpg(pgid, Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => tracing::warn!(pgid = pgid.as_raw(), error = %e, "killpg failed"),
            }
        }
    }

    /// Disarms the guard once the direct child has been reaped.
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps the last `cap` bytes written to it.
struct TailBuf {
    buf: Vec<u8>,
    cap: usize,
}

impl TailBuf {
    fn new(cap: usize) -> Self {
        TailBuf {
            buf: Vec::new(),
            cap,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
        }
    }

    /// Returns the kept bytes as text, without a partial leading character or trailing
    /// whitespace.
    fn text(&self) -> String {
        let start = self
            .buf
            .iter()
            .take(3)
            .take_while(|b| (0x80..0xC0).contains(*b))
            .count();
        String::from_utf8_lossy(&self.buf[start..])
            .trim_end()
            .to_owned()
    }
}

/// Why the executor stopped the worker before it exited on its own.
pub(crate) enum Stop {
    Timeout,
    Cancelled,
    OverCap,
}

impl Stop {
    pub(crate) fn message(&self, cap: usize) -> String {
        match self {
            Stop::Timeout => "app exec timeout".to_owned(),
            Stop::Cancelled => "app exec cancelled".to_owned(),
            Stop::OverCap => format!("app output over cap ({cap} bytes)"),
        }
    }
}

/// Reads one chunk from an optional pipe; a closed or absent pipe never becomes ready.
async fn read_chunk<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> usize {
    match pipe {
        Some(p) => p.read(buf).await.unwrap_or(0),
        None => std::future::pending().await,
    }
}

/// Waits until the deadline, or forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Milliseconds elapsed since `start`, saturating.
fn elapsed_ms(start: Instant) -> i64 {
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// Formats a non-success exit status.
fn exit_message(status: ExitStatus, stderr: &TailBuf) -> String {
    let mut msg = match (status.code(), status.signal()) {
        (Some(code), _) => format!("app exec error : exit status {code}"),
        (None, Some(sig)) => format!("app exec error : signal: {sig}"),
        (None, None) => format!("app exec error : {status}"),
    };
    let tail = stderr.text();
    if !tail.is_empty() {
        msg.push_str(", stderr: ");
        msg.push_str(&tail);
    }
    msg
}

/// Spawns the command, retrying a few times when the executable is momentarily busy.
async fn spawn_with_retry(cmd: &mut Command) -> std::io::Result<Child> {
    let mut attempt = 0;
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(Errno::ETXTBSY as i32) && attempt < SPAWN_RETRIES =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

impl Executor {
    /// Creates an executor with the given configuration.
    pub fn new(cfg: ExecConfig) -> Executor {
        Executor {
            cfg,
            limiter: None,
            user: None,
        }
    }

    /// Caps concurrent workers with `limiter` (see [`crate::limits`]).
    pub fn with_limiter(mut self, limiter: std::sync::Arc<crate::limits::Limiter>) -> Executor {
        self.limiter = Some(limiter);
        self
    }

    /// Runs workers as `user` (the agent must be root).
    pub fn with_user(mut self, user: Option<crate::limits::WorkerUser>) -> Executor {
        self.user = user;
        self
    }

    /// Returns the executor's configuration.
    pub fn config(&self) -> &ExecConfig {
        &self.cfg
    }

    /// Runs one worker for `job` and reports what happened.
    ///
    /// `installed` says whether the app is installed (the caller owns that state); when it is
    /// false the outcome is flag -1 with `app [{app}] not install !`. Firing `cancel` kills the
    /// worker's process group and reports `app exec cancelled`. The call never panics on bad
    /// input and never waits without bound: after the worker exits, the pipes are read for at
    /// most [`PIPE_DRAIN`]. Processes the worker leaves behind after a normal exit are not
    /// killed; on timeout, cancellation or output over the cap the whole group is killed.
    pub async fn run(&self, job: &Job, installed: bool, cancel: CancellationToken) -> Outcome {
        let Admitted {
            mut cmd,
            program,
            _permit,
        } = match self.admit(job, installed, &cancel).await {
            Ok(a) => a,
            Err(o) => return o,
        };
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tracing::debug!(
            task = %job.id, app = %job.app, func = %job.func,
            program = %program.display(), "starting worker"
        );
        let start = Instant::now();
        let mut child = match spawn_with_retry(&mut cmd).await {
            Ok(child) => child,
            Err(e) => return Outcome::fail(format!("app exec error : {e}"), elapsed_ms(start)),
        };
        let mut guard = GroupGuard {
            pgid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        };
        let outcome = self
            .supervise(job, &mut child, &mut guard, start, cancel)
            .await;
        tracing::debug!(task = %job.id, app = %job.app, flag = outcome.flag,
            costtime_ms = outcome.costtime_ms, "worker finished");
        outcome
    }

    /// The worker's command for `job` (entry, arguments, directory, environment, own process
    /// group, empty stdin), without its stdout and stderr; or the flag -1 outcome of a refused
    /// entry. Also returns the program, for the log.
    fn command(&self, job: &Job) -> Result<(Command, PathBuf), Outcome> {
        let entry =
            resolve(&self.cfg, &job.app, &job.proxy).map_err(|msg| Outcome::fail(msg, 0))?;
        let param = base64::engine::general_purpose::STANDARD.encode(job.param.as_bytes());
        let mut cmd = Command::new(&entry.program);
        cmd.args(&entry.args)
            .arg(&job.app)
            .arg(&job.func)
            .arg(param)
            .current_dir(&entry.app_dir)
            .env_clear()
            .stdin(Stdio::null())
            .process_group(0);
        for name in ENV_ALLOWLIST {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        let elves_env: [(&str, &str); 5] = [
            ("ELVES_APP", &job.app),
            ("ELVES_FUNC", &job.func),
            ("ELVES_TASK_ID", &job.id),
            ("ELVES_TASK_TYPE", &job.kind),
            ("ELVES_MODE", &job.mode),
        ];
        for (name, value) in elves_env {
            cmd.env(name, OsStr::new(value));
        }
        if let Some(u) = &self.user {
            // std drops the supplementary groups too when it switches from root.
            cmd.uid(u.uid).gid(u.gid);
            cmd.env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
        }
        Ok((cmd, entry.program))
    }

    /// The worker's command and program, once the app is known to be installed and a slot
    /// under the worker caps ([`crate::limits`]) is free (waited for until `cancel`; the
    /// time limit starts at the spawn, not here). The slot is held until the [`Admitted`] is
    /// dropped.
    pub async fn admit(
        &self,
        job: &Job,
        installed: bool,
        cancel: &CancellationToken,
    ) -> Result<Admitted, Outcome> {
        if !installed {
            return Err(Outcome::fail(format!("app [{}] not install !", job.app), 0));
        }
        let (cmd, program) = self.command(job)?;
        let permit = match &self.limiter {
            Some(l) => Some(
                l.acquire(&job.app, cancel)
                    .await
                    .map_err(|msg| Outcome::fail(msg, 0))?,
            ),
            None => None,
        };
        Ok(Admitted {
            cmd,
            program,
            _permit: permit,
        })
    }

    /// Runs one worker for an asynchronous `job`, [admitted](Executor::admit) first (the
    /// caller records the run in between), with its stdout and stderr in `files` instead of
    /// pipes, so that the worker and its output survive the agent: a restarted agent adopts it
    /// ([`crate::runs`]). `started` is called with the worker's pid right after the spawn (the
    /// caller records it).
    ///
    /// Same rules as [`Executor::run`], except that the output cap is checked every
    /// [`FILE_POLL`] while the worker runs (and exactly once it exited), and that processes
    /// the worker leaves behind cannot delay the report (they hold no pipe of the agent).
    pub async fn run_to_files(
        &self,
        job: &Job,
        admitted: Admitted,
        files: &RunFiles,
        cancel: CancellationToken,
        started: impl FnOnce(i32),
    ) -> Outcome {
        let Admitted {
            mut cmd,
            program,
            _permit,
        } = admitted;
        let (out, err) = match files.for_worker() {
            Ok(f) => f,
            Err(e) => return Outcome::fail(format!("app exec error : output file: {e}"), 0),
        };
        // Not killed when the agent drops it: the worker outlives an agent that dies.
        cmd.stdout(out).stderr(err).kill_on_drop(false);
        tracing::debug!(
            task = %job.id, app = %job.app, func = %job.func,
            program = %program.display(), "starting worker"
        );
        let start = Instant::now();
        let mut child = match spawn_with_retry(&mut cmd).await {
            Ok(child) => child,
            Err(e) => return Outcome::fail(format!("app exec error : {e}"), elapsed_ms(start)),
        };
        let pid = child.id().and_then(|id| i32::try_from(id).ok());
        if let Some(pid) = pid {
            started(pid);
        }
        let mut guard = GroupGuard {
            pgid: pid.map(Pid::from_raw),
        };
        let cap = self.cfg.output_cap;
        let deadline = (job.timeout_secs > 0)
            .then(|| start.checked_add(Duration::from_secs(job.timeout_secs)))
            .flatten();
        let mut tick = tokio::time::interval(FILE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let waited = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Err(Stop::Cancelled),
                _ = sleep_until_opt(deadline) => break Err(Stop::Timeout),
                status = child.wait() => break Ok(status),
                _ = tick.tick() => {
                    if files.out_len() > cap as u64 {
                        break Err(Stop::OverCap);
                    }
                }
            }
        };
        let outcome = match waited {
            Ok(Ok(status)) => {
                guard.disarm();
                judge_files(Some(status), files, cap, elapsed_ms(start))
            }
            Ok(Err(e)) => {
                guard.kill();
                let _ = tokio::time::timeout(REAP_LIMIT, child.wait()).await;
                guard.disarm();
                Outcome::fail(format!("app exec error : {e}"), elapsed_ms(start))
            }
            Err(stop) => {
                guard.kill();
                if tokio::time::timeout(REAP_LIMIT, child.wait()).await.is_ok() {
                    guard.disarm();
                } else {
                    tracing::warn!(task = %job.id, "killed worker was not reaped in time");
                }
                tracing::info!(task = %job.id, app = %job.app, reason = %stop.message(cap),
                    "worker process group killed");
                Outcome::fail(stop.message(cap), elapsed_ms(start))
            }
        };
        tracing::debug!(task = %job.id, app = %job.app, flag = outcome.flag,
            costtime_ms = outcome.costtime_ms, "worker finished");
        outcome
    }

    /// Reads the worker's pipes and waits for it, enforcing the cap, timeout and cancellation.
    async fn supervise(
        &self,
        job: &Job,
        child: &mut Child,
        guard: &mut GroupGuard,
        start: Instant,
        cancel: CancellationToken,
    ) -> Outcome {
        let cap = self.cfg.output_cap;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let mut out: Vec<u8> = Vec::new();
        let mut err = TailBuf::new(STDERR_TAIL);
        let mut out_chunk = vec![0u8; 8192];
        let mut err_chunk = vec![0u8; 8192];
        let deadline = if job.timeout_secs > 0 {
            start.checked_add(Duration::from_secs(job.timeout_secs))
        } else {
            None
        };

        // Phase 1: until the direct child exits, or we stop it.
        let waited = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Err(Stop::Cancelled),
                _ = sleep_until_opt(deadline) => break Err(Stop::Timeout),
                n = read_chunk(&mut stdout, &mut out_chunk) => {
                    if n == 0 {
                        stdout = None;
                    } else {
                        out.extend_from_slice(&out_chunk[..n]);
                        if out.len() > cap {
                            break Err(Stop::OverCap);
                        }
                    }
                }
                n = read_chunk(&mut stderr, &mut err_chunk) => {
                    if n == 0 {
                        stderr = None;
                    } else {
                        err.push(&err_chunk[..n]);
                    }
                }
                status = child.wait() => break Ok(status),
            }
        };

        let status = match waited {
            Ok(Ok(status)) => {
                guard.disarm();
                status
            }
            Ok(Err(e)) => {
                // Waiting failed: make sure nothing of the worker survives.
                guard.kill();
                let _ = tokio::time::timeout(REAP_LIMIT, child.wait()).await;
                guard.disarm();
                return Outcome::fail(format!("app exec error : {e}"), elapsed_ms(start));
            }
            Err(stop) => {
                guard.kill();
                if tokio::time::timeout(REAP_LIMIT, child.wait()).await.is_ok() {
                    guard.disarm();
                } else {
                    tracing::warn!(task = %job.id, "killed worker was not reaped in time");
                }
                let costtime = elapsed_ms(start);
                tracing::info!(task = %job.id, app = %job.app, reason = %stop.message(cap),
                    "worker process group killed");
                return Outcome::fail(stop.message(cap), costtime);
            }
        };
        let costtime = elapsed_ms(start);

        // Phase 2: drain what is left in the pipes, for a bounded time.
        let drain_deadline = Instant::now() + PIPE_DRAIN;
        while stdout.is_some() || stderr.is_some() {
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(drain_deadline) => break,
                n = read_chunk(&mut stdout, &mut out_chunk) => {
                    if n == 0 {
                        stdout = None;
                    } else {
                        out.extend_from_slice(&out_chunk[..n]);
                        if out.len() > cap {
                            // The worker is gone; leftovers are closed with the pipes.
                            return Outcome::fail(Stop::OverCap.message(cap), costtime);
                        }
                    }
                }
                n = read_chunk(&mut stderr, &mut err_chunk) => {
                    if n == 0 {
                        stderr = None;
                    } else {
                        err.push(&err_chunk[..n]);
                    }
                }
            }
        }
        drop(stdout);
        drop(stderr);

        judge(Some(status), &out, &err, costtime)
    }
}

/// A worker allowed to start: its command (without stdout and stderr) and its slot under the
/// worker caps, held until this is dropped (or until the permit [taken](Admitted::take_permit)
/// out of it is).
pub struct Admitted {
    cmd: Command,
    program: PathBuf,
    _permit: Option<crate::limits::Permit>,
}

impl Admitted {
    /// Takes the slot under the worker caps out, for a caller that holds it longer than the
    /// worker runs (an asynchronous run keeps it until its result is spooled and its journal
    /// slot freed, so the journal holds at most one record per worker slot).
    pub fn take_permit(&mut self) -> Option<crate::limits::Permit> {
        self._permit.take()
    }
}

/// How often the output cap of a worker writing to files is checked.
pub const FILE_POLL: Duration = Duration::from_millis(50);

/// Where a detached worker's stdout and stderr go: two files, by path, or kept open by the
/// [journal](crate::runs) (see [`HeldFiles`]).
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub out: PathBuf,
    pub err: PathBuf,
    held: Option<std::sync::Arc<HeldFiles>>,
    /// Where this run's stdout and stderr start in held files (0 for files by path).
    from: (u64, u64),
}

/// A journal slot's stdout and stderr files, kept open for appending by the agent; each run's
/// output starts where the previous one's ended ([`HeldFiles::place`]). A worker gets
/// duplicates of these descriptors, so its output lands at the end of a file the agent never opens, truncates-and-closes or creates again
/// (ext4 flushes a file truncated to 0 when its last descriptor closes; here that happens
/// only when the agent stops).
#[derive(Debug)]
pub struct HeldFiles {
    pub out: std::fs::File,
    pub err: std::fs::File,
}

impl HeldFiles {
    /// Opens (creating, for appending and reading) the two files.
    pub fn open(out: &Path, err: &Path) -> std::io::Result<HeldFiles> {
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(p)
        };
        Ok(HeldFiles {
            out: open(out)?,
            err: open(err)?,
        })
    }

    /// Where the next run's stdout and stderr start: the files' ends, after emptying both
    /// when either is longer than [`REUSE_BYTES`] (a truncation costs a file system
    /// transaction, so it is not paid on every run).
    pub fn place(&self) -> std::io::Result<(u64, u64)> {
        let (out, err) = (self.out.metadata()?.len(), self.err.metadata()?.len());
        if out <= REUSE_BYTES && err <= REUSE_BYTES {
            return Ok((out, err));
        }
        self.out.set_len(0)?;
        self.err.set_len(0)?;
        Ok((0, 0))
    }
}

/// How long a held slot's output files may grow, run after run, before they are emptied.
pub const REUSE_BYTES: u64 = 256 * 1024;

impl RunFiles {
    /// Files named by path, created (emptied) for each worker.
    pub fn at(out: PathBuf, err: PathBuf) -> RunFiles {
        RunFiles {
            out,
            err,
            held: None,
            from: (0, 0),
        }
    }

    /// Files the caller keeps open, the run's stdout and stderr starting at `from` in them.
    pub fn held(
        out: PathBuf,
        err: PathBuf,
        held: std::sync::Arc<HeldFiles>,
        from: (u64, u64),
    ) -> RunFiles {
        RunFiles {
            out,
            err,
            held: Some(held),
            from,
        }
    }

    /// The worker's stdout and stderr (appended to, for held files).
    fn for_worker(&self) -> std::io::Result<(std::fs::File, std::fs::File)> {
        match &self.held {
            Some(h) => Ok((h.out.try_clone()?, h.err.try_clone()?)),
            None => Ok((
                std::fs::File::create(&self.out)?,
                std::fs::File::create(&self.err)?,
            )),
        }
    }

    /// How much the run wrote to stdout, 0 when it cannot be read.
    pub(crate) fn out_len(&self) -> u64 {
        match &self.held {
            Some(h) => h
                .out
                .metadata()
                .map(|m| m.len().saturating_sub(self.from.0))
                .unwrap_or(0),
            None => file_len(&self.out),
        }
    }

    /// The run's whole stdout.
    fn read_out(&self) -> std::io::Result<Vec<u8>> {
        match &self.held {
            Some(h) => read_from(&h.out, self.from.0, self.from.0 + self.out_len()),
            None => std::fs::read(&self.out),
        }
    }

    /// The last [`STDERR_TAIL`] bytes of the stderr file (empty when it cannot be read).
    fn err_tail(&self) -> Vec<u8> {
        let tail = |f: &std::fs::File, start: u64| {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let from = len.saturating_sub(STDERR_TAIL as u64).max(start);
            read_from(f, from, len).unwrap_or_default()
        };
        match &self.held {
            Some(h) => tail(&h.err, self.from.1),
            None => std::fs::File::open(&self.err)
                .map(|f| tail(&f, 0))
                .unwrap_or_default(),
        }
    }
}

/// Bytes `from..to` of `f` (fewer if it is shorter), without moving its offset.
fn read_from(f: &std::fs::File, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let want = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match f.read_at(&mut buf[got..], from + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The size of a file, 0 when it cannot be read.
pub(crate) fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The outcome of a worker that wrote to `files` and is gone: `status` is its exit status when
/// the agent reaped it, `None` for a worker adopted after an agent restart (its exit status
/// went to whoever reaped it; the answer in its output decides alone).
pub(crate) fn judge_files(
    status: Option<ExitStatus>,
    files: &RunFiles,
    cap: usize,
    costtime: i64,
) -> Outcome {
    if files.out_len() > cap as u64 {
        return Outcome::fail(Stop::OverCap.message(cap), costtime);
    }
    let out = match files.read_out() {
        Ok(b) => b,
        Err(e) => return Outcome::fail(format!("app exec error : output file: {e}"), costtime),
    };
    let mut err = TailBuf::new(STDERR_TAIL);
    err.push(&files.err_tail());
    judge(status, &out, &err, costtime)
}

/// The outcome of a worker that exited with `status` (`None`: unknown) and printed `out`.
fn judge(status: Option<ExitStatus>, out: &[u8], err: &TailBuf, costtime: i64) -> Outcome {
    if let Some(status) = status
        && !status.success()
    {
        return Outcome::fail(exit_message(status, err), costtime);
    }
    match elves_worker_output::parse(out) {
        elves_worker_output::Parsed::Answer { flag_true, result } => Outcome {
            flag: i32::from(flag_true),
            message: result,
            costtime_ms: costtime,
        },
        elves_worker_output::Parsed::MissingFlag => {
            let text = String::from_utf8_lossy(out);
            Outcome::fail(
                format!(
                    "app output flag error : {}",
                    elves_worker_output::tail(&text, elves_worker_output::DEFAULT_TAIL)
                ),
                costtime,
            )
        }
        elves_worker_output::Parsed::MissingResult => {
            let text = String::from_utf8_lossy(out);
            Outcome::fail(
                format!(
                    "app output result error : {}",
                    elves_worker_output::tail(&text, elves_worker_output::DEFAULT_TAIL)
                ),
                costtime,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for ok in ["app", "my_app", "a.b", "app-1", "应用"] {
            assert!(is_safe_app_name(ok), "{ok} should be accepted");
        }
        for bad in ["", ".", "..", "a/b", "/abs", "a\\b", "a\0b", "./a", "a/"] {
            assert!(!is_safe_app_name(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn tail_buf_keeps_the_end_without_partial_chars() {
        let mut t = TailBuf::new(4);
        t.push("ab你".as_bytes());
        // "ab你" is 5 bytes; the kept bytes are the last 4: "b" + 3-byte char.
        assert_eq!(t.text(), "b你");
        let mut t = TailBuf::new(2);
        t.push("你".as_bytes());
        assert_eq!(t.text(), "");
        let mut t = TailBuf::new(16);
        t.push(b"boom\n\n");
        assert_eq!(t.text(), "boom");
    }

    #[test]
    fn default_config() {
        let cfg = ExecConfig::default();
        assert_eq!(cfg.output_cap, 4 * 1024 * 1024);
        assert_eq!(cfg.python, "python3");
        assert_eq!(
            cfg.allowed_interpreters,
            ["python3", "python", "bash", "sh"]
        );
    }
}
