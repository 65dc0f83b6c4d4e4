//! The result spool: every asynchronous result is written here before it is sent, and removed
//! only when the center acknowledges it, so a result survives a lost link and an agent
//! restart (agent-protocol §6).
//!
//! # Group commit into an append-only log
//!
//! Making a result durable costs an `fsync`, several milliseconds on an ordinary disk, and
//! creating a file costs more than writing one (ext4 searches its inode tables for an inode
//! that was not freed recently, which is slow right after many deletions). Results are
//! therefore written in **batches** by one writer thread, **appended** to a log segment: [`Spool::put`]
//! hands the result over and waits; the writer takes every result waiting at that moment (at
//! most [`MAX_BATCH`] results or about [`BATCH_BYTES`]), appends them as one line (a JSON array)
//! to the current segment `seg-{seq}.log`, syncs the file's data and only then answers each
//! `put`. A result is thus durable before `put` returns, a burst of results costs one `fsync`,
//! and a file is created (and its directory synced) only when a segment is started: at the
//! first result after a start, and after [`SEGMENT_BYTES`].
//!
//! An index in memory (run id → segment, and how many results of each segment are not yet
//! acknowledged) serves [`Spool::get`] and [`Spool::remove`]; a segment the writer has moved
//! on from is deleted when its last result is acknowledged. A line cut short by a crash (only
//! ever the last line of a segment: a segment whose write failed is never appended to again)
//! is skipped when read. After a restart every result of a segment that is still there is
//! offered again, including ones acknowledged just before the agent died: harmless, since the
//! center de-duplicates by run id. Files of the older layouts (`batch-{seq}.json`, a JSON
//! array; `{RUN}.json`, one result) are read the same way and removed when acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use elves_types::Id;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// How many spooled results are read back at once.
pub const MAX_REPLAY: usize = 10_000;
/// The most results one batch holds.
pub const MAX_BATCH: usize = 512;
/// A batch is closed once its results' text passes this many bytes (a single larger result
/// still makes a batch of its own).
pub const BATCH_BYTES: usize = 1024 * 1024;
/// A segment takes no more batches once it is this long; the next batch starts a new one.
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// How many results may wait for the writer.
const WAITING: usize = 4096;
/// Under a steady stream of results (the previous batch was written less than [`STEADY`]
/// ago), a batch of fewer than [`SMALL_BATCH`] results waits this long once for more before
/// it is written: one sync then covers several results instead of one each. A result that
/// comes alone after a quiet spell is written at once.
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);
/// See [`LINGER`].
const STEADY: std::time::Duration = std::time::Duration::from_millis(5);
/// See [`LINGER`].
const SMALL_BATCH: usize = 8;

/// A spooled result: what the agent sends up the link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spooled {
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
    pub flag: i32,
    pub costtime: i64,
    pub result: String,
    /// The id of the API request that started the run (empty if none): a result sent again
    /// from the spool still names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

/// One result waiting for the writer, and where its answer goes.
struct Pending {
    result: Spooled,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// Which file holds each spooled result.
#[derive(Default)]
struct Index {
    /// Run id → the order number of its file.
    runs: HashMap<String, u64>,
    /// Order number (oldest first) → file name and how many of its results are not yet
    /// acknowledged.
    files: BTreeMap<u64, (String, usize)>,
    /// The next order number (and segment sequence number).
    next: u64,
    /// The segment the writer appends to: kept while it is, even with nothing to send.
    current: Option<u64>,
}

impl Index {
    /// Adds `run_ids` to file `n` (named `name`); a run id already spooled in an older file
    /// moves here. Returns the names of files left with nothing to send.
    fn add(
        &mut self,
        n: u64,
        name: &str,
        run_ids: impl IntoIterator<Item = String>,
    ) -> Vec<String> {
        self.files.entry(n).or_insert_with(|| (name.to_owned(), 0));
        let mut emptied = Vec::new();
        for run_id in run_ids {
            match self.runs.insert(run_id, n) {
                Some(old) if old == n => continue,
                Some(old) => emptied.extend(self.release(old)),
                None => {}
            }
            if let Some((_, live)) = self.files.get_mut(&n) {
                *live += 1;
            }
        }
        emptied
    }

    /// One result of file `n` is no longer needed; returns the file's name when it was the
    /// last one and the writer no longer appends to it.
    fn release(&mut self, n: u64) -> Option<String> {
        let (_, live) = self.files.get_mut(&n)?;
        *live = live.saturating_sub(1);
        if *live == 0 && self.current != Some(n) {
            return self.files.remove(&n).map(|(name, _)| name);
        }
        None
    }

    /// A new segment for the writer: its order number and name.
    fn start_segment(&mut self) -> (u64, String) {
        let n = self.next;
        self.next += 1;
        let name = format!("seg-{n}.log");
        self.files.insert(n, (name.clone(), 0));
        self.current = Some(n);
        (n, name)
    }

    /// The writer moved on from its segment; returns its name if nothing in it is left to
    /// send.
    fn retire_segment(&mut self) -> Option<String> {
        let n = self.current.take()?;
        match self.files.get(&n) {
            Some((_, 0)) => self.files.remove(&n).map(|(name, _)| name),
            _ => None,
        }
    }
}

/// What the writer thread and the spool's handles share.
struct Shared {
    dir: PathBuf,
    index: Mutex<Index>,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
}

impl Shared {
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // The index holds no invariant a panicking holder could break halfway that matters
        // more than keeping results flowing.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove_file(&self, name: &str) {
        if let Err(e) = std::fs::remove_file(self.dir.join(name))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = name, error = %e, "cannot remove an acknowledged spool file");
        }
    }
}

/// A directory of spooled results, written in batches (see the module's documentation).
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    /// To the writer thread; it ends when every handle is dropped.
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

/// The results a spool file holds, oldest first: a segment (one JSON array per line; a line
/// that cannot be read, such as one cut short by a crash, is skipped), a batch (JSON array)
/// or, from the oldest layout, one result. `None` for a file of another kind that cannot be
/// read.
fn parse_file(name: &str, bytes: &[u8]) -> Option<Vec<Spooled>> {
    if name.ends_with(".log") {
        let mut out = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Vec<Spooled>>(line) {
                Ok(batch) => out.extend(batch),
                Err(_) => tracing::warn!(file = name, "unreadable spool line skipped"),
            }
        }
        return Some(out);
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum File {
        Batch(Vec<Spooled>),
        One(Box<Spooled>),
    }
    match serde_json::from_slice::<File>(bytes).ok()? {
        File::Batch(v) => Some(v),
        File::One(s) => Some(vec![*s]),
    }
}

/// The sequence number of a segment `seg-{seq}.log` or batch file `batch-{seq}.json`.
fn file_seq(name: &str) -> Option<u64> {
    let seq = name
        .strip_prefix("seg-")
        .and_then(|r| r.strip_suffix(".log"))
        .or_else(|| name.strip_prefix("batch-")?.strip_suffix(".json"))?;
    seq.parse().ok()
}

impl Spool {
    /// Opens (creating, mode 0700) the spool directory, indexes the results it holds (files
    /// that cannot be read are skipped with a logged error; leftover temporary files of the
    /// older layout are removed: their results were never reported as spooled) and starts
    /// the writer thread. New results go to a new segment.
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        Spool::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> std::io::Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // Oldest first: the older layouts (no sequence number) by time, then by sequence.
        let mut files: Vec<(Option<u64>, std::time::SystemTime, String)> = Vec::new();
        for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if !name.ends_with(".json") && !name.ends_with(".log") {
                continue;
            }
            let mtime = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            files.push((file_seq(&name), mtime, name));
        }
        files.sort();
        let mut index = Index::default();
        let mut order = 0;
        for (seq, _, name) in files {
            index.next = index.next.max(seq.map_or(0, |s| s + 1));
            match std::fs::read(dir.join(&name))
                .ok()
                .and_then(|b| parse_file(&name, &b))
            {
                Some(results) if !results.is_empty() => {
                    for old in index.add(order, &name, results.into_iter().map(|r| r.run_id)) {
                        let _ = std::fs::remove_file(dir.join(old));
                    }
                    order += 1;
                }
                Some(_) => {
                    let _ = std::fs::remove_file(dir.join(&name));
                }
                None => {
                    tracing::error!(file = %dir.join(&name).display(), "unreadable spool file skipped")
                }
            }
        }
        // Order numbers of new segments follow the files found (and never reuse a name).
        index.next = index.next.max(order);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            index: Mutex::new(index),
            segment_bytes,
        });
        let (tx, rx) = mpsc::channel(WAITING);
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || write_batches(&writer, rx))?;
        Ok(Spool { shared, tx })
    }

    /// Stores a result durably: returns once the batch holding it is written and synced.
    /// Fails for a run id that is not an Elves id and when the batch cannot be written.
    pub async fn put(&self, r: &Spooled) -> std::io::Result<()> {
        if Id::parse(&r.run_id).is_none() {
            return Err(std::io::Error::other("invalid run id"));
        }
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                result: r.clone(),
                done,
            })
            .await
            .map_err(|_| std::io::Error::other("the spool writer stopped"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the spool writer stopped"))?
    }

    /// Forgets an acknowledged result (its file goes when its last result is acknowledged
    /// and the writer has moved on from it).
    pub fn remove(&self, run_id: &str) {
        let emptied = {
            let mut index = self.shared.index();
            match index.runs.remove(run_id) {
                Some(n) => index.release(n),
                None => None,
            }
        };
        if let Some(name) = emptied {
            self.shared.remove_file(&name);
        }
    }

    /// Whether a result for this run is spooled.
    pub fn contains(&self, run_id: &str) -> bool {
        self.shared.index().runs.contains_key(run_id)
    }

    pub fn get(&self, run_id: &str) -> Option<Spooled> {
        let name = {
            let index = self.shared.index();
            let n = index.runs.get(run_id)?;
            index.files.get(n)?.0.clone()
        };
        let bytes = std::fs::read(self.shared.dir.join(&name)).ok()?;
        parse_file(&name, &bytes)?
            .into_iter()
            .rev()
            .find(|r| r.run_id == run_id)
    }

    /// Every spooled result not yet acknowledged (at most [`MAX_REPLAY`]), oldest first.
    /// Unreadable files are skipped with a logged error.
    pub fn all(&self) -> Vec<Spooled> {
        let (files, runs): (Vec<(u64, String)>, HashMap<String, u64>) = {
            let index = self.shared.index();
            (
                index
                    .files
                    .iter()
                    .filter(|(_, (_, live))| *live > 0)
                    .map(|(n, (name, _))| (*n, name.clone()))
                    .collect(),
                index.runs.clone(),
            )
        };
        let mut out = Vec::new();
        for (n, name) in files {
            if out.len() >= MAX_REPLAY {
                break;
            }
            let path = self.shared.dir.join(&name);
            let Some(results) = std::fs::read(&path)
                .ok()
                .and_then(|b| parse_file(&name, &b))
            else {
                tracing::error!(file = %path.display(), "unreadable spooled result skipped");
                continue;
            };
            // A result spooled twice in one segment: its last copy.
            let mut seen = std::collections::HashSet::new();
            let mut mine: Vec<Spooled> = results
                .into_iter()
                .rev()
                .filter(|r| runs.get(&r.run_id) == Some(&n) && seen.insert(r.run_id.clone()))
                .collect();
            mine.reverse();
            out.extend(mine.into_iter().take(MAX_REPLAY - out.len()));
        }
        out
    }
}

/// The segment the writer appends to.
struct Segment {
    n: u64,
    name: String,
    file: std::fs::File,
    len: u64,
    /// Created and not yet synced with its directory entry.
    fresh: bool,
}

/// The writer thread: one batch after the other until every [`Spool`] handle is gone.
fn write_batches(shared: &Shared, mut rx: mpsc::Receiver<Pending>) {
    let mut segment: Option<Segment> = None;
    let mut last_write: Option<std::time::Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = first.result.result.len() + first.result.param.len();
        let mut batch = vec![first];
        let mut drain = |batch: &mut Vec<Pending>| {
            while batch.len() < MAX_BATCH && bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.result.result.len() + p.result.param.len();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
        };
        drain(&mut batch);
        if batch.len() < SMALL_BATCH && last_write.is_some_and(|t| t.elapsed() < STEADY) {
            std::thread::sleep(LINGER);
            drain(&mut batch);
        }
        if segment
            .as_ref()
            .is_some_and(|s| s.len >= shared.segment_bytes)
        {
            retire(shared, &mut segment);
        }
        let results: Vec<&Spooled> = batch.iter().map(|p| &p.result).collect();
        let written = append(shared, &mut segment, &results);
        last_write = Some(std::time::Instant::now());
        match (&written, &segment) {
            (Ok(()), Some(s)) => {
                // A result spooled again replaces its older copy; a file left with nothing
                // to send goes.
                let emptied =
                    shared
                        .index()
                        .add(s.n, &s.name, results.iter().map(|r| r.run_id.clone()));
                for old in emptied {
                    shared.remove_file(&old);
                }
            }
            _ => {
                // Never append after a failed write: what it left is at most a cut line at
                // the end of this segment, skipped when read.
                retire(shared, &mut segment);
            }
        }
        let failure = written.as_ref().err().map(|e| (e.kind(), e.to_string()));
        for p in batch {
            let answer = match &failure {
                None => Ok(()),
                Some((kind, msg)) => Err(std::io::Error::new(*kind, msg.clone())),
            };
            let _ = p.done.send(answer);
        }
    }
}

/// The writer moves on from its segment (removed if nothing in it is left to send).
fn retire(shared: &Shared, segment: &mut Option<Segment>) {
    if segment.take().is_some()
        && let Some(name) = shared.index().retire_segment()
    {
        shared.remove_file(&name);
    }
}

/// Appends `results` as one line to the writer's segment (started if there is none) and
/// syncs it: the file's data, and for a new segment the file and its directory entry.
fn append(
    shared: &Shared,
    segment: &mut Option<Segment>,
    results: &[&Spooled],
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(results)?;
    line.push(b'\n');
    if segment.is_none() {
        let (n, name) = shared.index().start_segment();
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(shared.dir.join(&name));
        match file {
            Ok(file) => {
                *segment = Some(Segment {
                    n,
                    name,
                    file,
                    len: 0,
                    fresh: true,
                });
            }
            Err(e) => {
                shared.index().retire_segment();
                return Err(e);
            }
        }
    }
    let Some(s) = segment.as_mut() else {
        return Err(std::io::Error::other("no spool segment"));
    };
    s.file.write_all(&line)?;
    s.len += line.len() as u64;
    if s.fresh {
        s.file.sync_all()?;
        std::fs::File::open(&shared.dir)?.sync_all()?;
        s.fresh = false;
    } else {
        s.file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(run_id: &str) -> Spooled {
        Spooled {
            request_id: String::new(),
            run_id: run_id.into(),
            id: "00000000000000AA".into(),
            ip: "10.0.0.1".into(),
            kind: "queue".into(),
            mode: "NP".into(),
            app: "apptest".into(),
            func: "echo".into(),
            param: "{\"my\":\"中文\"}".into(),
            timeout: 5,
            proxy: String::new(),
            flag: 1,
            costtime: 12,
            result: "ok".into(),
        }
    }

    fn run_ids(spool: &Spool) -> Vec<String> {
        let mut runs: Vec<String> = spool.all().into_iter().map(|s| s.run_id).collect();
        runs.sort();
        runs
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn results_survive_reopening_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let (a, b) = (result("00000000000000A1"), result("00000000000000A2"));
        // Concurrent puts: each returns only once its result is on disk, whichever batch.
        let (ra, rb) = tokio::join!(spool.put(&a), spool.put(&b));
        ra.unwrap();
        rb.unwrap();
        drop(spool);
        let again = Spool::open(&dir.path().join("spool")).unwrap();
        assert_eq!(run_ids(&again), ["00000000000000A1", "00000000000000A2"]);
        assert_eq!(again.get("00000000000000A1"), Some(a));
        assert!(again.contains("00000000000000A2"));
        again.remove("00000000000000A1");
        assert_eq!(again.all(), vec![b]);
        assert_eq!(again.get("00000000000000A1"), None);
        again.remove("00000000000000A2");
        assert!(again.all().is_empty());
        assert_eq!(
            files(&dir.path().join("spool")),
            0,
            "acknowledged files are removed"
        );
    }

    #[tokio::test]
    async fn a_burst_is_durable_and_replayed_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let all: Vec<Spooled> = (0..300)
            .map(|i| result(&format!("{:016X}", 0xB000 + i)))
            .collect();
        let mut puts = tokio::task::JoinSet::new();
        for r in &all {
            let (spool, r) = (spool.clone(), r.clone());
            puts.spawn(async move { spool.put(&r).await });
        }
        while let Some(answer) = puts.join_next().await {
            answer.unwrap().unwrap();
        }
        assert_eq!(files(dir.path()), 1, "one segment for the whole burst");
        let again = Spool::open(dir.path()).unwrap();
        let mut want: Vec<String> = all.iter().map(|r| r.run_id.clone()).collect();
        want.sort();
        assert_eq!(run_ids(&again), want);
        for r in &all {
            again.remove(&r.run_id);
        }
        assert_eq!(files(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_batch_file_goes_with_its_last_result_and_old_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let batch: Vec<Spooled> = ["00000000000000C1", "00000000000000C2", "00000000000000C3"]
            .iter()
            .map(|r| result(r))
            .collect();
        std::fs::write(
            dir.path().join("batch-7.json"),
            serde_json::to_vec(&batch).unwrap(),
        )
        .unwrap();
        // The layout before batches: one result per file, named by its run id.
        std::fs::write(
            dir.path().join("00000000000000D1.json"),
            serde_json::to_vec(&result("00000000000000D1")).unwrap(),
        )
        .unwrap();
        // A batch the writer had not finished when the agent died: never reported spooled.
        std::fs::write(dir.path().join("batch-8.json.tmp"), b"[{\"run_").unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(
            run_ids(&spool),
            [
                "00000000000000C1",
                "00000000000000C2",
                "00000000000000C3",
                "00000000000000D1"
            ]
        );
        assert!(!dir.path().join("batch-8.json.tmp").exists());
        spool.remove("00000000000000C1");
        spool.remove("00000000000000C3");
        assert!(dir.path().join("batch-7.json").exists());
        assert_eq!(spool.get("00000000000000C2"), Some(batch[1].clone()));
        spool.remove("00000000000000C2");
        assert!(!dir.path().join("batch-7.json").exists());
        spool.remove("00000000000000D1");
        assert_eq!(files(dir.path()), 0);
        // New segments never take the sequence number of an older file.
        spool.put(&result("00000000000000E1")).await.unwrap();
        assert!(dir.path().join("seg-8.log").exists());
    }

    #[tokio::test]
    async fn a_burst_creates_one_file_and_a_segment_goes_once_left_and_emptied() {
        let dir = tempfile::tempdir().unwrap();
        // Segments of about two results.
        let one = serde_json::to_vec(&[&result("00000000000000A1")])
            .unwrap()
            .len() as u64;
        let spool = Spool::open_with(dir.path(), one + 1).unwrap();
        let burst: Vec<Spooled> = (0..50)
            .map(|i| result(&format!("{:016X}", 0xA100 + i)))
            .collect();
        let mut puts = tokio::task::JoinSet::new();
        for r in &burst {
            let (spool, r) = (spool.clone(), r.clone());
            puts.spawn(async move { spool.put(&r).await });
        }
        while let Some(answer) = puts.join_next().await {
            answer.unwrap().unwrap();
        }
        let made = files(dir.path());
        assert!((1..=50).contains(&made), "{made} files for 50 results");
        // The current segment stays while the writer appends to it, even when emptied.
        for r in &burst {
            spool.remove(&r.run_id);
        }
        assert!(files(dir.path()) <= 1);
        let (a, b, c) = (
            result("00000000000000B1"),
            result("00000000000000B2"),
            result("00000000000000B3"),
        );
        spool.put(&a).await.unwrap();
        spool.put(&b).await.unwrap();
        // Over its size: the next result starts a new segment; the old one goes with its
        // last result.
        spool.put(&c).await.unwrap();
        assert_eq!(spool.all(), vec![a.clone(), b.clone(), c.clone()]);
        spool.remove(&a.run_id);
        spool.remove(&b.run_id);
        assert_eq!(files(dir.path()), 1);
        assert_eq!(spool.all(), vec![c]);
    }

    #[tokio::test]
    async fn a_line_cut_short_is_skipped_and_the_rest_read() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (result("00000000000000C1"), result("00000000000000C2"));
        let mut text = serde_json::to_vec(&[&a]).unwrap();
        text.push(b'\n');
        text.extend(serde_json::to_vec(&[&b]).unwrap());
        text.push(b'\n');
        text.extend_from_slice(b"[{\"run_id\":\"00000000000000C3\",\"id");
        std::fs::write(dir.path().join("seg-3.log"), &text).unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.all(), vec![a.clone(), b.clone()]);
        assert!(!spool.contains("00000000000000C3"));
        // Never appended to again: new results go to a new segment.
        let c = result("00000000000000C4");
        spool.put(&c).await.unwrap();
        assert!(dir.path().join("seg-4.log").exists());
        assert_eq!(std::fs::read(dir.path().join("seg-3.log")).unwrap(), text);
        drop(spool);
        let again = Spool::open(dir.path()).unwrap();
        assert_eq!(again.all(), vec![a, b, c]);
    }

    #[tokio::test]
    async fn a_result_spooled_again_replaces_the_older_copy() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut r = result("00000000000000F1");
        spool.put(&r).await.unwrap();
        r.result = "second".into();
        spool.put(&r).await.unwrap();
        assert_eq!(spool.all(), vec![r.clone()]);
        assert_eq!(files(dir.path()), 1, "the first copy's file went");
        let again = Spool::open(dir.path()).unwrap();
        assert_eq!(again.get("00000000000000F1"), Some(r));
    }

    #[tokio::test]
    async fn run_ids_that_are_not_ids_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        for bad in ["../../etc/passwd", "", "x", "00000000000000A1/.."] {
            assert!(spool.put(&result(bad)).await.is_err(), "{bad:?}");
            assert_eq!(spool.get(bad), None);
            spool.remove(bad);
        }
        assert!(spool.all().is_empty());
        assert_eq!(files(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000000000000B1.json"), b"{not json").unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.put(&result("00000000000000B2")).await.unwrap();
        assert_eq!(run_ids(&spool), ["00000000000000B2"]);
    }
}
