//! The run journal: every asynchronous run the agent carries out is recorded on disk before
//! its worker starts, so that an agent killed while workers run can take them back when it
//! starts again (agent-protocol §6: a result reaches the center exactly once, and a run is
//! never run twice).
//!
//! Per run id, in `{data_dir}/runs/`: `{RUN}.json` (the [`Record`]: the job, then the worker's
//! pid and process start time once it started), `{RUN}.out` and `{RUN}.err` (the worker's
//! stdout and stderr, see [`crate::exec::Executor::run_to_files`]).
//!
//! # The life of a run
//!
//! 1. [`Journal::begin`] writes the record (no pid yet) — before the spawn.
//! 2. The worker starts; [`Journal::started`] rewrites the record with its pid and start time.
//! 3. The worker ends; the agent writes the result to the [spool](crate::spool) and only
//!    then [`Journal::finish`]es the run (record and output files removed).
//!
//! # Recovery ([`recover`]), for each record left by an agent that died
//!
//! * its result is in the spool → the run is over (the record is removed);
//! * it has a pid and that process (same start time, not a zombie) still runs → it is
//!   **adopted**: watched until it exits (its timeout and a cancel still apply, by killing its
//!   process group), then its output file gives the result;
//! * it has a pid and the worker is gone → its output file gives the result at once;
//! * it has no pid → the agent died between the record and the spawn, so the run is reported
//!   as failed (flag -1, never started again: a run never runs twice).
//!
//! The exit status of a worker that ended while no agent was its parent is unknown: only its
//! answer in stdout decides (markers present → their flag; missing → the usual flag -1
//! "output flag/result error").

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elves_types::Id;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::exec::{self, Executor, Outcome, RunFiles, Stop};

/// How many records are read back at once.
pub const MAX_RECORDS: usize = 10_000;
/// How often an adopted worker is checked.
pub const ADOPT_POLL: Duration = Duration::from_millis(50);

/// One run in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub run_id: String,
    pub id: String,
    pub ip: String,
    pub kind: String,
    pub mode: String,
    pub app: String,
    pub func: String,
    pub param: String,
    pub timeout: u32,
    pub proxy: String,
    /// Unix ms when the run began (its timeout counts from here after a restart).
    pub began_unix_ms: i64,
    /// The worker's pid (also its process group id), once it started.
    pub pid: Option<i32>,
    /// The worker's start time (`/proc/PID/stat` field 22, clock ticks after boot), which
    /// tells the worker apart from a later process that got the same pid.
    pub start_ticks: Option<u64>,
}

/// Unix ms now.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A process's state letter and start time from `/proc/PID/stat`.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// The state letter (field 3) and start time (field 22) of a `/proc/PID/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after its
/// last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 lie between the state and the start time.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the worker of a record still runs: same pid, same start time, not a zombie.
pub fn still_runs(pid: i32, start_ticks: u64) -> bool {
    matches!(proc_stat(pid), Some((state, start)) if start == start_ticks && state != 'Z')
}

/// The directory of run records.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating, mode 0700) the journal directory.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Journal {
            dir: dir.to_owned(),
        })
    }

    /// The file of a run with this extension; `None` for a run id that is not an Elves id
    /// (never a path).
    fn path(&self, run_id: &str, ext: &str) -> Option<PathBuf> {
        Id::parse(run_id).map(|id| self.dir.join(format!("{id}.{ext}")))
    }

    /// Where the run's worker writes its stdout and stderr.
    pub fn files(&self, run_id: &str) -> Option<RunFiles> {
        Some(RunFiles {
            out: self.path(run_id, "out")?,
            err: self.path(run_id, "err")?,
        })
    }

    /// Writes the record (written to a temporary file, then renamed into place). Not synced:
    /// the journal protects against the agent's death, not the machine's.
    fn write(&self, r: &Record) -> std::io::Result<()> {
        let path = self
            .path(&r.run_id, "json")
            .ok_or_else(|| std::io::Error::other("invalid run id"))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(r)?)?;
        std::fs::rename(&tmp, &path)
    }

    /// Records a run before its worker starts.
    pub fn begin(&self, r: &Record) -> std::io::Result<()> {
        self.write(r)
    }

    /// Records the worker's pid and start time.
    pub fn started(&self, r: &mut Record, pid: i32) -> std::io::Result<()> {
        r.pid = Some(pid);
        r.start_ticks = proc_stat(pid).map(|(_, t)| t);
        self.write(r)
    }

    /// Forgets a run whose result is spooled.
    pub fn finish(&self, run_id: &str) {
        for ext in ["json", "out", "err"] {
            if let Some(p) = self.path(run_id, ext) {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// Every record (at most [`MAX_RECORDS`]); unreadable ones are logged and removed with
    /// their files.
    pub fn all(&self) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            if out.len() >= MAX_RECORDS {
                break;
            }
            match std::fs::read(&p).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(r)) if self.path(&r.run_id, "json").as_deref() == Some(p.as_path()) => {
                    out.push(r)
                }
                _ => {
                    tracing::error!(file = %p.display(), "unreadable run record removed");
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        out
    }
}

/// What became of a run found in the journal at start.
pub enum Found {
    /// The worker was never started: report this failure.
    NeverStarted(Outcome),
    /// The worker ended while the agent was away: its outcome.
    Ended(Outcome),
    /// The worker still runs: adopt it with [`adopt`].
    Running { pid: i32, start_ticks: u64 },
}

/// Classifies a record left by a previous agent (the spool was checked first).
pub fn classify(exec: &Executor, journal: &Journal, r: &Record) -> Found {
    let costtime = (unix_ms() - r.began_unix_ms).max(0);
    let (Some(pid), Some(files)) = (r.pid, journal.files(&r.run_id)) else {
        return Found::NeverStarted(Outcome::fail(
            "app exec error : the agent stopped while starting the worker",
            0,
        ));
    };
    match r.start_ticks {
        Some(t) if still_runs(pid, t) => Found::Running {
            pid,
            start_ticks: t,
        },
        _ => Found::Ended(exec::judge_files(
            None,
            &files,
            exec.config().output_cap,
            costtime,
        )),
    }
}

/// Kills the adopted worker's process group, if its leader is still the same process.
fn kill_group(pid: i32, start_ticks: u64) {
    if still_runs(pid, start_ticks) {
        match killpg(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pgid = pid, error = %e, "killpg failed"),
        }
    }
}

/// Watches a worker started by a previous agent until it exits, enforcing what is left of
/// its timeout, its output cap and `cancel`; then reads its result from its output file.
pub async fn adopt(
    exec: &Executor,
    journal: &Journal,
    r: &Record,
    pid: i32,
    start_ticks: u64,
    cancel: CancellationToken,
) -> Outcome {
    let cap = exec.config().output_cap;
    let Some(files) = journal.files(&r.run_id) else {
        return Outcome::fail("app exec error : invalid run id", 0);
    };
    let deadline = (r.timeout > 0).then(|| {
        let end = r.began_unix_ms + i64::from(r.timeout) * 1000;
        let left = u64::try_from(end - unix_ms()).unwrap_or(0);
        tokio::time::Instant::now() + Duration::from_millis(left)
    });
    let costtime = || (unix_ms() - r.began_unix_ms).max(0);
    let mut tick = tokio::time::interval(ADOPT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = loop {
        if !still_runs(pid, start_ticks) {
            break None;
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Some(Stop::Cancelled),
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break Some(Stop::Timeout),
            _ = tick.tick() => {
                if exec::file_len(&files.out) > cap as u64 {
                    break Some(Stop::OverCap);
                }
            }
        }
    };
    match stop {
        None => exec::judge_files(None, &files, cap, costtime()),
        Some(stop) => {
            kill_group(pid, start_ticks);
            tracing::info!(run_id = %r.run_id, reason = %stop.message(cap), "adopted worker's process group killed");
            Outcome::fail(stop.message(cap), costtime())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 99 100";
        for comm in ["sh", "a b", "x) (y", ")"] {
            let line = format!("1234 ({comm}) {tail}");
            assert_eq!(parse_stat(&line), Some(('S', 424242)), "{line}");
        }
        assert_eq!(parse_stat("1234 (sh) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_runs_and_a_wrong_start_time_does_not() {
        let me = std::process::id() as i32;
        let (state, start) = proc_stat(me).expect("own /proc stat");
        assert_ne!(state, 'Z');
        assert!(still_runs(me, start));
        assert!(!still_runs(me, start + 1));
    }

    fn record(run_id: &str) -> Record {
        Record {
            run_id: run_id.into(),
            id: "00000000000000AA".into(),
            ip: "10.0.0.1".into(),
            kind: "queue".into(),
            mode: "P".into(),
            app: "apptest".into(),
            func: "echo".into(),
            param: "{}".into(),
            timeout: 5,
            proxy: String::new(),
            began_unix_ms: 1,
            pid: None,
            start_ticks: None,
        }
    }

    #[test]
    fn records_survive_reopening_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("runs")).unwrap();
        let mut r = record("00000000000000A1");
        j.begin(&r).unwrap();
        j.started(&mut r, std::process::id() as i32).unwrap();
        std::fs::write(&j.files(&r.run_id).unwrap().out, b"x").unwrap();
        let again = Journal::open(&dir.path().join("runs")).unwrap();
        assert_eq!(again.all(), vec![r.clone()]);
        again.finish(&r.run_id);
        assert!(again.all().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("runs")).unwrap().count(),
            0
        );
    }

    #[test]
    fn bad_run_ids_and_corrupt_records() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        for bad in ["../x", "", "00000000000000A1/.."] {
            assert!(j.begin(&record(bad)).is_err(), "{bad:?}");
            assert!(j.files(bad).is_none());
        }
        std::fs::write(dir.path().join("00000000000000B1.json"), b"{not json").unwrap();
        // A record whose name is not its run id is not trusted either.
        std::fs::write(
            dir.path().join("00000000000000B2.json"),
            serde_json::to_vec(&record("00000000000000B3")).unwrap(),
        )
        .unwrap();
        assert!(j.all().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
