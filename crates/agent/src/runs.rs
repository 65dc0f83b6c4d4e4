//! The run journal: every asynchronous run the agent carries out is recorded on disk before
//! its worker starts, so that an agent killed while workers run can take them back when it
//! starts again (agent-protocol §6: a result reaches the center exactly once, and a run is
//! never run twice).
//!
//! Per run in progress, in `{data_dir}/runs/`, a **slot** `n`: `slot-{n}.json` (the
//! [`Record`]: the job, then the worker's pid and process start time once it started),
//! `slot-{n}.out` and `slot-{n}.err` (the worker's stdout and stderr, see
//! [`crate::exec::Executor::run_to_files`]). Slot files are kept and rewritten in place by
//! later runs (see [`Journal`]).
//!
//! # The life of a run
//!
//! 1. Once the run holds its worker slot under the caps ([`crate::limits`]),
//!    [`Journal::begin`] takes a free journal slot and writes the record (no pid yet) — before
//!    the spawn. A run still waiting for its worker slot is not recorded: an agent killed then
//!    never started it, and the center's redelivery runs it; and journal slots number at most
//!    the runs holding a worker slot or waiting for the spool.
//! 2. The worker starts; [`Journal::started`] rewrites the record with its pid and start time
//!    (one write over the old one).
//! 3. The worker ends; the agent writes the result to the [spool](crate::spool) and only
//!    then [`Journal::finish`]es the run (record blanked, slot freed; the output files stay
//!    for the slot's next run, which writes after them).
//!
//! # Recovery ([`classify`]), for each record left by an agent that died
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

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elves_types::Id;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::exec::{self, Executor, HeldFiles, Outcome, RunFiles, Stop};

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
    /// The journal slot whose files the run uses (`None`: the older layout, files named by
    /// the run id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// The id of the API request that started the run (empty if none), for its result.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// Where the run's output starts in its slot's stdout and stderr files: a held slot's
    /// files are appended to run after run and emptied only once they pass
    /// [`crate::exec::REUSE_BYTES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub out_from: u64,
    /// See `out_from`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub err_from: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whether a slot's record file content marks a free slot: empty or only blanks (a finished
/// run's record is overwritten with blanks, which needs no truncation).
fn is_free(record: &[u8]) -> bool {
    record.iter().all(u8::is_ascii_whitespace)
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

/// How many slots keep their files for the next run; a run in a slot beyond removes its
/// files when it ends.
pub const KEPT_SLOTS: u32 = 1024;

/// How many slots keep their three files open between runs (the lowest numbers: slots are
/// taken lowest first, and the worker cap bounds how many are in use at once).
pub const HELD_SLOTS: u32 = 128;

/// Whether the process group `pgid` (a worker's, whose id is the worker's pid) still has
/// members: processes the worker left behind. A group id is not reused while the group
/// exists; a false "yes" after reuse only costs new output files.
fn group_lingers(pgid: i32) -> bool {
    pgid > 0
        && matches!(
            killpg(Pid::from_raw(pgid), None),
            Ok(()) | Err(Errno::EPERM)
        )
}

/// Overwrites a whole file with blanks, in one write.
fn blank(f: &File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = usize::try_from(f.metadata()?.len()).map_err(std::io::Error::other)?;
    f.write_all_at(&vec![b' '; len], 0)
}

/// The files of slot `n`: record, stdout, stderr.
fn slot_name(n: u32, ext: &str) -> String {
    format!("slot-{n}.{ext}")
}

/// The slot number of a record file name `slot-{n}.json`.
fn slot_of(name: &str) -> Option<u32> {
    name.strip_prefix("slot-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// The directory of run records.
///
/// Each run in progress holds a **slot**: `slot-{n}.json` (its record), `slot-{n}.out` and
/// `slot-{n}.err`. A slot's files are kept and rewritten in place by the next run that takes
/// the slot (an empty or blank record file is a free slot), because creating a file costs far
/// more than rewriting one on a file system that has just deleted many (ext4 searches for an
/// inode that was not freed recently). The first [`HELD_SLOTS`] slots also keep their files
/// **open**: records are written (and blanked) with one `pwrite`, workers get duplicates of the
/// `O_APPEND` output descriptors, and each run's output starts where the previous one's ended
/// (`Record::out_from`), so there is no `open`, `close` or `ftruncate` per run; the output
/// files are emptied only past [`crate::exec::REUSE_BYTES`], and replaced when a worker left
/// processes behind. Records of the older layout (`{RUN}.json`, `.out`, `.err`) are still read
/// and removed.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
    slots: Arc<Mutex<Slots>>,
}

#[derive(Debug, Default)]
struct Slots {
    /// Free slots (lowest first).
    free: BTreeSet<u32>,
    /// The next never-used slot number.
    next: u32,
    /// The open files of slots below [`HELD_SLOTS`] used so far.
    held: HashMap<u32, Arc<Held>>,
}

/// A slot's files, kept open.
#[derive(Debug)]
struct Held {
    record: File,
    io: Arc<HeldFiles>,
}

impl Journal {
    /// Opens (creating, mode 0700) the journal directory; slots whose record file is empty
    /// are free.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut free = BTreeSet::new();
        let mut next = 0;
        for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
            let name = e.file_name();
            let Some(n) = name.to_str().and_then(slot_of) else {
                continue;
            };
            next = next.max(n.saturating_add(1));
            if std::fs::read(e.path()).is_ok_and(|b| is_free(&b)) {
                free.insert(n);
            }
        }
        // Numbers below `next` that have no record file at all are free too.
        for n in 0..next {
            if !dir.join(slot_name(n, "json")).exists() {
                free.insert(n);
            }
        }
        Ok(Journal {
            dir: dir.to_owned(),
            slots: Arc::new(Mutex::new(Slots {
                free,
                next,
                held: HashMap::new(),
            })),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open files of slot `n` (opened on first use), `None` beyond [`HELD_SLOTS`] or when
    /// they cannot be opened (the slot then works by path).
    fn held(&self, n: u32) -> Option<Arc<Held>> {
        if n >= HELD_SLOTS {
            return None;
        }
        let mut slots = self.slots();
        if let Some(h) = slots.held.get(&n) {
            return Some(h.clone());
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(slot_name(n, "json")))
            .and_then(|record| {
                let io = HeldFiles::open(
                    &self.dir.join(slot_name(n, "out")),
                    &self.dir.join(slot_name(n, "err")),
                )?;
                Ok(Held {
                    record,
                    io: Arc::new(io),
                })
            });
        match opened {
            Ok(h) => {
                let h = Arc::new(h);
                slots.held.insert(n, h.clone());
                Some(h)
            }
            Err(e) => {
                tracing::warn!(slot = n, error = %e, "cannot keep a journal slot's files open");
                None
            }
        }
    }

    /// The record file of a run: its slot's, or (older layout) one named by its run id;
    /// `None` for a run id that is not an Elves id (never a path).
    fn record_path(&self, r: &Record) -> Option<PathBuf> {
        let id = Id::parse(&r.run_id)?;
        Some(match r.slot {
            Some(n) => self.dir.join(slot_name(n, "json")),
            None => self.dir.join(format!("{id}.json")),
        })
    }

    /// Where the run's worker writes its stdout and stderr.
    pub fn files(&self, r: &Record) -> Option<RunFiles> {
        let id = Id::parse(&r.run_id)?;
        Some(match r.slot {
            Some(n) => {
                let (out, err) = (
                    self.dir.join(slot_name(n, "out")),
                    self.dir.join(slot_name(n, "err")),
                );
                match self.held(n) {
                    Some(h) => RunFiles::held(out, err, h.io.clone(), (r.out_from, r.err_from)),
                    None => RunFiles::at(out, err),
                }
            }
            None => RunFiles::at(
                self.dir.join(format!("{id}.out")),
                self.dir.join(format!("{id}.err")),
            ),
        })
    }

    /// Writes the record over its file's start, in one write, padded with blanks to at least
    /// the length already there (so no truncation is needed and no state in between is
    /// visible to an agent that dies). Not synced: the journal protects against the agent's
    /// death, not the machine's.
    fn write(&self, r: &Record) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let path = self
            .record_path(r)
            .ok_or_else(|| std::io::Error::other("invalid run id"))?;
        let write = |f: &File| {
            let mut bytes = serde_json::to_vec(r)?;
            let len = f.metadata()?.len();
            if (bytes.len() as u64) < len {
                bytes.resize(usize::try_from(len).unwrap_or(bytes.len()), b' ');
            }
            f.write_all_at(&bytes, 0)
        };
        match r.slot.and_then(|n| self.held(n)) {
            Some(h) => write(&h.record),
            None => write(
                &std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?,
            ),
        }
    }

    /// Records a run before its worker starts, in a free slot (noted in `r`).
    pub fn begin(&self, r: &mut Record) -> std::io::Result<()> {
        if Id::parse(&r.run_id).is_none() {
            return Err(std::io::Error::other("invalid run id"));
        }
        let n = {
            let mut slots = self.slots();
            match slots.free.pop_first() {
                Some(n) => n,
                None => {
                    let n = slots.next;
                    slots.next = n.saturating_add(1);
                    n
                }
            }
        };
        r.slot = Some(n);
        // The run's output goes after what the slot's held files hold (emptied first once
        // they are long); files by path are created anew for the worker.
        let placed = match self.held(n) {
            Some(h) => h.io.place(),
            None => Ok((0, 0)),
        };
        placed
            .and_then(|(out, err)| {
                (r.out_from, r.err_from) = (out, err);
                self.write(r)
            })
            .inspect_err(|_| {
                // Not recorded: the slot is someone else's to take.
                r.slot = None;
                self.release(n);
            })
    }

    /// Creates the files of the first `count` slots (at most [`HELD_SLOTS`]) now, as free
    /// slots, so that the first burst of runs after the agent starts does not pay for creating
    /// them (a file creation costs far more than rewriting one, see [`Journal`]). Called at
    /// start with the worker cap, which bounds the slots in use. The files are not kept open
    /// until used: every open descriptor of the agent is copied into, then closed by, each
    /// worker it spawns. Slots whose files cannot be made are made on first use.
    pub fn prepare(&self, count: usize) {
        let count = u32::try_from(count).unwrap_or(u32::MAX).min(HELD_SLOTS);
        let mut slots = self.slots();
        while slots.next < count {
            let n = slots.next;
            let made = ["json", "out", "err"].iter().try_for_each(|ext| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(self.dir.join(slot_name(n, ext)))
                    .map(drop)
            });
            if let Err(e) = made {
                tracing::warn!(slot = n, error = %e, "cannot prepare a journal slot");
                break;
            }
            slots.free.insert(n);
            slots.next = n + 1;
        }
    }

    /// Records the worker's pid and start time.
    pub fn started(&self, r: &mut Record, pid: i32) -> std::io::Result<()> {
        r.pid = Some(pid);
        r.start_ticks = proc_stat(pid).map(|(_, t)| t);
        self.write(r)
    }

    fn release(&self, n: u32) {
        self.slots().free.insert(n);
    }

    /// Forgets a run whose result is spooled: its slot's files are emptied and the slot freed
    /// (files removed beyond [`KEPT_SLOTS`] and in the older layout).
    pub fn finish(&self, r: &Record) {
        let (Some(record), Some(files)) = (self.record_path(r), self.files(r)) else {
            return;
        };
        match (r.slot, r.slot.and_then(|n| self.held(n))) {
            (Some(n), Some(h)) => {
                // Blanks over the record free the slot (no truncation: see `is_free`); its
                // output files stay, the next run's output goes after it.
                if let Err(e) = blank(&h.record) {
                    tracing::warn!(slot = n, error = %e, "cannot free a journal slot");
                    return;
                }
                if r.pid.is_some_and(group_lingers) {
                    // Processes the worker left behind may still write to its stdout and
                    // stderr: the slot's next run gets new files (made on its first use),
                    // and what is still written to these unlinked ones goes nowhere.
                    for p in [&files.out, &files.err] {
                        let _ = std::fs::remove_file(p);
                    }
                    self.slots().held.remove(&n);
                }
                self.release(n);
            }
            (Some(n), None) if n < KEPT_SLOTS => {
                // The record first, as above.
                if std::fs::OpenOptions::new()
                    .write(true)
                    .open(&record)
                    .and_then(|f| f.set_len(0))
                    .is_err()
                {
                    let _ = std::fs::remove_file(&record);
                }
                // Removed rather than emptied when the worker left processes behind (see
                // above): the next run creates them anew.
                let lingering = r.pid.is_some_and(group_lingers);
                for p in [&files.out, &files.err] {
                    if lingering {
                        let _ = std::fs::remove_file(p);
                    } else {
                        let _ = std::fs::OpenOptions::new()
                            .write(true)
                            .open(p)
                            .and_then(|f| f.set_len(0));
                    }
                }
                self.release(n);
            }
            _ => {
                for p in [&record, &files.out, &files.err] {
                    let _ = std::fs::remove_file(p);
                }
                if let Some(n) = r.slot {
                    self.release(n);
                }
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
            let slot = p.file_name().and_then(|n| n.to_str()).and_then(slot_of);
            let bytes = match std::fs::read(&p) {
                Ok(b) if is_free(&b) && slot.is_some() => continue, // a free slot
                Ok(b) => b,
                Err(_) => Vec::new(),
            };
            match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) if r.slot == slot && self.record_path(&r).as_deref() == Some(p.as_path()) => {
                    out.push(r)
                }
                _ => {
                    tracing::error!(file = %p.display(), "unreadable run record removed");
                    match slot {
                        // Emptied, not removed: the slot is free again.
                        Some(_) => {
                            let _ = std::fs::write(&p, b"");
                        }
                        None => {
                            let _ = std::fs::remove_file(&p);
                        }
                    }
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
    let (Some(pid), Some(files)) = (r.pid, journal.files(r)) else {
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
    let Some(files) = journal.files(r) else {
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
                if files.out_len() > cap as u64 {
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
            request_id: String::new(),
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
            slot: None,
            out_from: 0,
            err_from: 0,
        }
    }

    #[test]
    fn records_survive_reopening_until_finished_and_slots_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let j = Journal::open(&runs).unwrap();
        let mut r = record("00000000000000A1");
        j.begin(&mut r).unwrap();
        assert_eq!(r.slot, Some(0));
        // A pid shorter than the `null` it replaces: the record stays whole.
        j.started(&mut r, 7).unwrap();
        assert_eq!(r.pid, Some(7));
        std::fs::write(&j.files(&r).unwrap().out, b"x").unwrap();
        let mut other = record("00000000000000A2");
        j.begin(&mut other).unwrap();
        assert_eq!(other.slot, Some(1));

        let again = Journal::open(&runs).unwrap();
        let mut found = again.all();
        found.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        assert_eq!(found, vec![r.clone(), other.clone()]);
        again.finish(&r);
        assert_eq!(again.all(), vec![other.clone()]);
        assert!(is_free(
            &std::fs::read(runs.join(slot_name(0, "json"))).unwrap()
        ));
        // The freed slot is taken again, its files rewritten in place; a restart sees the
        // same free slots.
        let reopened = Journal::open(&runs).unwrap();
        let mut third = record("00000000000000A3");
        reopened.begin(&mut third).unwrap();
        assert_eq!(third.slot, Some(0));
        assert_eq!(
            (third.out_from, third.err_from),
            (1, 0),
            "the next run's output starts after the earlier run's"
        );
        assert_eq!(
            reopened.all().iter().find(|x| x.run_id == third.run_id),
            Some(&third),
            "the offsets are recorded"
        );
        let mut fourth = record("00000000000000A4");
        reopened.begin(&mut fourth).unwrap();
        assert_eq!(fourth.slot, Some(2));
        for done in [&other, &third, &fourth] {
            reopened.finish(done);
        }
        assert!(reopened.all().is_empty());
    }

    /// Prepared slots exist on disk as free slots (empty), are taken lowest first, do not
    /// disturb a slot that holds a run, and read as free after a restart.
    #[test]
    fn prepared_slots_are_free_and_taken_lowest_first() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let j = Journal::open(&runs).unwrap();
        let mut busy = record("00000000000000B1");
        j.begin(&mut busy).unwrap();
        assert_eq!(busy.slot, Some(0));
        j.prepare(3);
        for n in 0..3 {
            for ext in ["json", "out", "err"] {
                assert!(runs.join(slot_name(n, ext)).exists(), "slot {n} {ext}");
            }
        }
        assert!(!runs.join(slot_name(3, "json")).exists());
        assert_eq!(j.all(), vec![busy.clone()], "the busy slot keeps its run");
        let mut next = record("00000000000000B2");
        j.begin(&mut next).unwrap();
        assert_eq!(next.slot, Some(1));

        let reopened = Journal::open(&runs).unwrap();
        let mut third = record("00000000000000B3");
        reopened.begin(&mut third).unwrap();
        assert_eq!(
            third.slot,
            Some(2),
            "0 and 1 hold runs, 2 is a prepared free slot"
        );
        // More than the held slots: only the held ones are made.
        let other = Journal::open(&dir.path().join("many")).unwrap();
        other.prepare(10_000);
        let files = std::fs::read_dir(dir.path().join("many")).unwrap().count();
        assert_eq!(files, 3 * HELD_SLOTS as usize);
    }

    /// An executor whose app `apptest` is the shell `script`, under `dir`.
    fn shell_app(dir: &Path, script: &str) -> Executor {
        use std::os::unix::fs::PermissionsExt;
        let apps = dir.join("apps");
        std::fs::create_dir_all(apps.join("apptest")).unwrap();
        let worker = apps.join("apptest/app-worker");
        std::fs::write(&worker, script).unwrap();
        std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
        Executor::new(exec::ExecConfig {
            apps_dir: apps,
            ..exec::ExecConfig::default()
        })
    }

    /// Runs `r` (already begun in `j`) to its files, recording its pid; its outcome, and the
    /// run's own bytes of its stdout and stderr files.
    async fn run_in_slot(
        exec: &Executor,
        j: &Journal,
        r: &mut Record,
    ) -> (exec::Outcome, Vec<u8>, Vec<u8>) {
        let files = j.files(r).unwrap();
        let job = exec::Job {
            id: r.id.clone(),
            kind: r.kind.clone(),
            mode: r.mode.clone(),
            app: r.app.clone(),
            func: r.func.clone(),
            param: r.param.clone(),
            timeout_secs: 5,
            proxy: String::new(),
        };
        let cancel = CancellationToken::new();
        let admitted = exec.admit(&job, true, &cancel).await.ok().unwrap();
        let o = exec
            .run_to_files(&job, admitted, &files, cancel, |pid| {
                j.started(r, pid).unwrap()
            })
            .await;
        let from = |path: &Path, at: u64| {
            let bytes = std::fs::read(path).unwrap();
            bytes[usize::try_from(at).unwrap()..].to_vec()
        };
        (
            o,
            from(&files.out, r.out_from),
            from(&files.err, r.err_from),
        )
    }

    /// Runs one after the other in the same held slot: each outcome and stderr tail is its
    /// own worker's (the shorter second answer shows no byte of the first, a failure's
    /// stderr tail none of an earlier run's), and a finished slot's record is free.
    #[tokio::test]
    async fn a_held_slot_gives_each_run_only_its_own_output() {
        let dir = tempfile::tempdir().unwrap();
        let exec = shell_app(
            dir.path(),
            "#!/bin/sh\necho \"warn $ELVES_FUNC\" >&2\n\
             printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s</ElvesWResult>' \"$ELVES_FUNC\"\n\
             [ \"$ELVES_FUNC\" = fails ] && exit 3\nexit 0\n",
        );
        let j = Journal::open(&dir.path().join("runs")).unwrap();
        let cases = [
            (
                "a-much-longer-first-answer",
                1,
                "a-much-longer-first-answer",
            ),
            ("short", 1, "short"),
            ("fails", -1, "warn fails"),
            ("ok", 1, "ok"),
        ];
        for (i, (func, flag, said)) in cases.into_iter().enumerate() {
            let mut r = record(&format!("00000000000000D{i}"));
            r.func = func.into();
            j.begin(&mut r).unwrap();
            assert_eq!(r.slot, Some(0), "{func}: the freed slot is reused");
            let (o, out, _) = run_in_slot(&exec, &j, &mut r).await;
            assert_eq!(o.flag, flag, "{func}: {o:?}");
            assert!(o.message.contains(said), "{func}: {o:?}");
            assert!(!o.message.contains("warn short"), "{func}: {o:?}");
            if flag == 1 {
                assert_eq!(o.message, said, "{func}: nothing of an earlier run");
            }
            let answer =
                format!("<ElvesWFlag>true</ElvesWFlag><ElvesWResult>{func}</ElvesWResult>");
            assert_eq!(
                String::from_utf8_lossy(&out),
                answer,
                "{func}: the output file holds this run's answer from the run's offset"
            );
            j.finish(&r);
            let record = std::fs::read(j.dir.join(slot_name(0, "json"))).unwrap();
            assert!(is_free(&record), "{func}: the slot is free");
        }
        assert!(j.all().is_empty());
    }

    /// A worker that exits leaving a process behind that still writes to its stdout and
    /// stderr: the slot's next run, in progress when those late bytes come, sees none of them
    /// (its files are new), and its answer is whole.
    #[tokio::test]
    async fn late_output_of_a_lingering_process_does_not_reach_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let exec = shell_app(
            dir.path(),
            "#!/bin/sh\n\
             if [ \"$ELVES_FUNC\" = linger ]; then (sleep 0.3; echo LATE; echo LATE >&2) & fi\n\
             [ \"$ELVES_FUNC\" = slow ] && sleep 0.8\n\
             printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s</ElvesWResult>' \"$ELVES_FUNC\"\n",
        );
        let j = Journal::open(&dir.path().join("runs")).unwrap();
        for (i, func) in ["linger", "slow"].into_iter().enumerate() {
            let mut r = record(&format!("00000000000000F{i}"));
            r.func = func.into();
            j.begin(&mut r).unwrap();
            assert_eq!(r.slot, Some(0), "{func}");
            let (o, out, err) = run_in_slot(&exec, &j, &mut r).await;
            assert_eq!((o.flag, o.message.as_str()), (1, func), "{func}: {o:?}");
            let answer =
                format!("<ElvesWFlag>true</ElvesWFlag><ElvesWResult>{func}</ElvesWResult>");
            assert_eq!(
                String::from_utf8_lossy(&out),
                answer,
                "{func}: the run's output holds its own answer alone"
            );
            assert!(!err.starts_with(b"LATE"), "{func}: {err:?}");
            j.finish(&r);
        }
    }

    /// A held slot's output files are emptied (and the next run starts at 0) only once
    /// either has grown past `REUSE_BYTES`.
    #[test]
    fn held_output_is_emptied_once_it_grows_long() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("runs")).unwrap();
        let append = |r: &Record, stream: &str, n: usize| {
            let files = j.files(r).unwrap();
            let path = if stream == "out" {
                files.out
            } else {
                files.err
            };
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(&vec![b'x'; n]).unwrap();
        };
        let limit = usize::try_from(exec::REUSE_BYTES).unwrap();
        // (bytes the earlier run wrote to stdout, to stderr) → the next run's offsets.
        let cases = [
            ((10, 3), (10, 3)),
            ((limit - 10, 0), (limit, 3)),
            ((1, 0), (0, 0)),
            ((0, limit + 1), (0, 0)),
        ];
        let mut at = (0, 0);
        for (i, ((out, err), want)) in cases.into_iter().enumerate() {
            let mut r = record(&format!("00000000000000E{i}"));
            j.begin(&mut r).unwrap();
            assert_eq!((r.out_from, r.err_from), at, "case {i}");
            append(&r, "out", out);
            append(&r, "err", err);
            j.finish(&r);
            let mut next = record("00000000000000EF");
            j.begin(&mut next).unwrap();
            let want = (want.0 as u64, want.1 as u64);
            assert_eq!((next.out_from, next.err_from), want, "case {i}");
            let files = j.files(&next).unwrap();
            assert_eq!(files.out_len(), 0, "case {i}: nothing of earlier runs");
            j.finish(&next);
            at = want;
        }
    }

    #[test]
    fn records_of_the_older_layout_are_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = record("00000000000000C1");
        r.pid = Some(4242);
        std::fs::write(
            dir.path().join("00000000000000C1.json"),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("00000000000000C1.out"), b"out").unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.all(), vec![r.clone()]);
        assert_eq!(
            std::fs::read(j.files(&r).unwrap().out).unwrap(),
            b"out",
            "its output is where it was"
        );
        j.finish(&r);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_run_ids_and_corrupt_records() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        for bad in ["../x", "", "00000000000000A1/.."] {
            assert!(j.begin(&mut record(bad)).is_err(), "{bad:?}");
            assert!(j.files(&record(bad)).is_none());
        }
        std::fs::write(dir.path().join("00000000000000B1.json"), b"{not json").unwrap();
        // A record whose name is not its run id is not trusted either.
        std::fs::write(
            dir.path().join("00000000000000B2.json"),
            serde_json::to_vec(&record("00000000000000B3")).unwrap(),
        )
        .unwrap();
        // Nor one in a slot it does not name.
        let mut wrong = record("00000000000000B4");
        wrong.slot = Some(9);
        std::fs::write(
            dir.path().join("slot-3.json"),
            serde_json::to_vec(&wrong).unwrap(),
        )
        .unwrap();
        assert!(j.all().is_empty());
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            ["slot-3.json"],
            "the slot's record is emptied, not removed"
        );
        assert_eq!(std::fs::read(dir.path().join("slot-3.json")).unwrap(), b"");
    }
}
