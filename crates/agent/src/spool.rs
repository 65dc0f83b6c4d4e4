//! The result spool: every asynchronous result is written here before it is sent, and removed
//! only when the center acknowledges it, so a result survives a lost link and an agent
//! restart (agent-protocol §6).

use std::io::Write;
use std::path::{Path, PathBuf};

use elves_types::Id;
use serde::{Deserialize, Serialize};

/// How many spooled results are read back at once.
pub const MAX_REPLAY: usize = 10_000;

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

/// A directory of spooled results, one file per run id.
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating, mode 0700) the spool directory.
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Spool {
            dir: dir.to_owned(),
        })
    }

    /// The file of a run; `None` for a run id that is not an Elves id (never a path).
    fn path(&self, run_id: &str) -> Option<PathBuf> {
        Id::parse(run_id).map(|id| self.dir.join(format!("{id}.json")))
    }

    /// Stores a result durably (written, synced, then renamed into place).
    pub fn put(&self, r: &Spooled) -> std::io::Result<()> {
        let path = self
            .path(&r.run_id)
            .ok_or_else(|| std::io::Error::other("invalid run id"))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(r)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Forgets an acknowledged result.
    pub fn remove(&self, run_id: &str) {
        if let Some(p) = self.path(run_id) {
            let _ = std::fs::remove_file(p);
        }
    }

    pub fn get(&self, run_id: &str) -> Option<Spooled> {
        let bytes = std::fs::read(self.path(run_id)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every spooled result (at most [`MAX_REPLAY`]), oldest first. Unreadable files are
    /// skipped with a logged error.
    pub fn all(&self) -> Vec<Spooled> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| {
                (
                    e.metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH),
                    e.path(),
                )
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .take(MAX_REPLAY)
            .filter_map(|(_, p)| {
                match std::fs::read(&p).map(|b| serde_json::from_slice::<Spooled>(&b)) {
                    Ok(Ok(s)) => Some(s),
                    _ => {
                        tracing::error!(file = %p.display(), "unreadable spooled result skipped");
                        None
                    }
                }
            })
            .collect()
    }
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

    #[test]
    fn results_survive_reopening_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        spool.put(&result("00000000000000A1")).unwrap();
        spool.put(&result("00000000000000A2")).unwrap();
        let again = Spool::open(&dir.path().join("spool")).unwrap();
        let mut runs: Vec<String> = again.all().into_iter().map(|s| s.run_id).collect();
        runs.sort();
        assert_eq!(runs, ["00000000000000A1", "00000000000000A2"]);
        assert_eq!(
            again.get("00000000000000A1"),
            Some(result("00000000000000A1"))
        );
        again.remove("00000000000000A1");
        assert_eq!(again.all().len(), 1);
        assert_eq!(again.get("00000000000000A1"), None);
    }

    #[test]
    fn run_ids_that_are_not_ids_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        for bad in ["../../etc/passwd", "", "x", "00000000000000A1/.."] {
            assert!(spool.put(&result(bad)).is_err(), "{bad:?}");
            assert_eq!(spool.get(bad), None);
            spool.remove(bad);
        }
        assert!(spool.all().is_empty());
    }

    #[test]
    fn a_corrupt_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("00000000000000B1.json"), b"{not json").unwrap();
        spool.put(&result("00000000000000B2")).unwrap();
        assert_eq!(spool.all().len(), 1);
    }
}
