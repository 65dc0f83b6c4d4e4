//! The result spool: every asynchronous result is written here before it is sent, and removed
//! only when the center acknowledges it, so a result survives a lost link and an agent
//! restart (agent-protocol §6).
//!
//! # Group commit
//!
//! Making a file durable costs two `fsync`s (the file, then its directory for its name), several
//! milliseconds on an ordinary disk, so one file per result capped an agent at a few hundred
//! results per second and kept its runtime threads blocked meanwhile. Results are therefore
//! written in **batches** by one writer thread: [`Spool::put`] hands the result over and waits;
//! the writer takes every result waiting at that moment (at most [`MAX_BATCH`] results or
//! about [`BATCH_BYTES`]), writes them as one file (`batch-{seq}.json`, a JSON array; written to
//! a temporary file, synced, renamed, directory synced) and only then answers each `put`. A
//! result is thus durable before `put` returns, exactly as before, and a burst of results costs
//! one pair of `fsync`s instead of one pair each.
//!
//! An index in memory (run id → batch file, and how many results of each file are not yet
//! acknowledged) serves [`Spool::get`] and [`Spool::remove`]; a file is deleted when its last
//! result is acknowledged. After a restart every result of a file that is still there is
//! offered again, including ones acknowledged just before the agent died: harmless, since
//! the center de-duplicates by run id. Files of the older layout (`{RUN}.json`, one result
//! each) are read the same way.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use elves_types::Id;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// How many spooled results are read back at once.
pub const MAX_REPLAY: usize = 10_000;
/// The most results one batch file holds.
pub const MAX_BATCH: usize = 512;
/// A batch is closed once its results' text passes this many bytes (a single larger result
/// still makes a batch of its own).
pub const BATCH_BYTES: usize = 1024 * 1024;
/// How many results may wait for the writer.
const WAITING: usize = 4096;

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
    /// The next order number (and batch sequence number).
    next: u64,
}

impl Index {
    /// Adds a file holding `run_ids`; a run id already spooled in an older file moves here.
    /// Returns the names of older files left with nothing to send.
    fn add(&mut self, name: String, run_ids: impl IntoIterator<Item = String>) -> Vec<String> {
        let n = self.next;
        self.next += 1;
        self.files.insert(n, (name, 0));
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
    /// last one.
    fn release(&mut self, n: u64) -> Option<String> {
        let (_, live) = self.files.get_mut(&n)?;
        *live = live.saturating_sub(1);
        if *live == 0 {
            return self.files.remove(&n).map(|(name, _)| name);
        }
        None
    }
}

/// What the writer thread and the spool's handles share.
struct Shared {
    dir: PathBuf,
    index: Mutex<Index>,
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

/// The results a spool file holds: a batch (JSON array) or, from the older layout, one result.
fn parse_file(bytes: &[u8]) -> Option<Vec<Spooled>> {
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

/// The sequence number of a batch file name `batch-{seq}.json`.
fn batch_seq(name: &str) -> Option<u64> {
    name.strip_prefix("batch-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

impl Spool {
    /// Opens (creating, mode 0700) the spool directory, indexes the results it holds (files
    /// that cannot be read are skipped with a logged error; leftover temporary files of an
    /// unfinished batch are removed: their results were never reported as spooled) and starts
    /// the writer thread.
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut files: Vec<(std::time::SystemTime, u64, String)> = Vec::new();
        let mut last_seq = 0;
        for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let seq = batch_seq(&name).unwrap_or(0);
            last_seq = last_seq.max(seq);
            let mtime = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            files.push((mtime, seq, name));
        }
        files.sort();
        let mut index = Index::default();
        for (_, _, name) in files {
            match std::fs::read(dir.join(&name))
                .ok()
                .and_then(|b| parse_file(&b))
            {
                Some(results) if !results.is_empty() => {
                    for old in index.add(name, results.into_iter().map(|r| r.run_id)) {
                        let _ = std::fs::remove_file(dir.join(old));
                    }
                }
                Some(_) => {
                    let _ = std::fs::remove_file(dir.join(&name));
                }
                None => {
                    tracing::error!(file = %dir.join(&name).display(), "unreadable spool file skipped")
                }
            }
        }
        index.next = index.next.max(last_seq + 1);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            index: Mutex::new(index),
        });
        let (tx, rx) = mpsc::channel(WAITING);
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || write_batches(&writer, rx))?;
        Ok(Spool { shared, tx })
    }

    /// Stores a result durably: returns once the batch holding it is written and synced.
    /// Fails for a run id that is not an Elves id (never part of a path) and when the batch
    /// cannot be written.
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

    /// Forgets an acknowledged result (its file goes when its last result is acknowledged).
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
        let bytes = std::fs::read(self.shared.dir.join(name)).ok()?;
        parse_file(&bytes)?
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
            let Some(results) = std::fs::read(&path).ok().and_then(|b| parse_file(&b)) else {
                tracing::error!(file = %path.display(), "unreadable spooled result skipped");
                continue;
            };
            out.extend(
                results
                    .into_iter()
                    .filter(|r| runs.get(&r.run_id) == Some(&n))
                    .take(MAX_REPLAY - out.len()),
            );
        }
        out
    }
}

/// The writer thread: one batch after the other until every [`Spool`] handle is gone.
fn write_batches(shared: &Shared, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = first.result.result.len() + first.result.param.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.result.result.len() + p.result.param.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let seq = shared.index().next;
        let name = format!("batch-{seq}.json");
        let results: Vec<&Spooled> = batch.iter().map(|p| &p.result).collect();
        let written = write_durably(&shared.dir, &name, &results);
        if written.is_ok() {
            // A result spooled again replaces its older copy; a file left with nothing to
            // send goes.
            let emptied = shared
                .index()
                .add(name, results.iter().map(|r| r.run_id.clone()));
            for old in emptied {
                shared.remove_file(&old);
            }
        } else {
            // The sequence number is not reused: a half-written file must not be mistaken
            // for a later batch.
            shared.index().next += 1;
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

/// Writes `results` as the file `name` in `dir`: to a temporary file, synced, renamed into
/// place, directory synced.
fn write_durably(dir: &Path, name: &str, results: &[&Spooled]) -> std::io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(results)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(run_id: &str) -> Spooled {
        Spooled {
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
        assert!(files(dir.path()) <= 300);
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
        // New batches never take the name of an older one.
        spool.put(&result("00000000000000E1")).await.unwrap();
        assert!(dir.path().join("batch-8.json").exists());
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
