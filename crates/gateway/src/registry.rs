//! The agent registry's writer: heartbeats batched in memory, links and unlinks written at once.
//!
//! A heartbeat only replaces the agent's entry in an in-memory map (the latest one wins);
//! [`Registry::run`] writes the whole map to the store in one transaction every
//! [`FLUSH_EVERY`]. So the registry's `last_heartbeat_ms` (and the installed apps and errors a
//! heartbeat reports) reach the store at most [`FLUSH_EVERY`] plus one write later — far
//! inside the online rule's slack (`agents.online_secs`, minutes) and the queue's give-up
//! (`queue.give_up_secs`, more than a heartbeat period).
//!
//! A Hello (the link's start) and the end of a link are written at once, each awaited by the
//! link, because they change whether the agent is linked. Every write holds one async lock, so
//! an older batched heartbeat can never overwrite a newer link or unlink: the Hello drops the
//! agent's waiting heartbeat (the Hello is newer), and the unlink writes the waiting heartbeat
//! with the link cleared.
//!
//! The map is bounded: one entry per linked, authenticated agent. A failed batch is kept (an
//! entry newer than the failed one wins) and written at the next flush.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use elves_store::{AgentRecord, Store};
use tokio_util::sync::CancellationToken;

/// How often the waiting heartbeats are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// One agent's latest heartbeat, not yet written.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    rec: AgentRecord,
    errors: BTreeMap<String, String>,
}

/// The registry's writer (see the module documentation).
pub struct Registry {
    store: Store,
    pending: Mutex<HashMap<String, Entry>>,
    /// Held by every store write of this registry, so writes land in the order they were made.
    writer: tokio::sync::Mutex<()>,
}

impl Registry {
    pub fn new(store: Store) -> Registry {
        Registry {
            store,
            pending: Mutex::default(),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.pending.lock().expect("registry pending poisoned")
    }

    /// Keeps `rec` as the agent's latest heartbeat; written at the next flush.
    pub fn heartbeat(&self, rec: AgentRecord, errors: BTreeMap<String, String>) {
        let ip = rec.ip.clone();
        self.pending().insert(ip, Entry { rec, errors });
    }

    /// Writes a Hello's record now (a waiting heartbeat of that agent is older: dropped).
    pub async fn hello(&self, rec: &AgentRecord) -> Result<(), elves_store::Error> {
        let _w = self.writer.lock().await;
        self.pending().remove(&rec.ip);
        self.store.record_agent(rec).await
    }

    /// Writes that the agent at `ip` has no link any more, with its waiting heartbeat if any —
    /// unless `still_unlinked` says a new link has come meanwhile.
    pub async fn unlinked(
        &self,
        ip: &str,
        still_unlinked: impl Fn() -> bool,
    ) -> Result<(), elves_store::Error> {
        let _w = self.writer.lock().await;
        if !still_unlinked() {
            return Ok(());
        }
        let waiting = self.pending().remove(ip);
        match waiting {
            Some(mut e) => {
                e.rec.connected_to.clear();
                self.store.record_agent_with_errors(&e.rec, &e.errors).await
            }
            None => self.store.set_agent_connection(ip, "").await,
        }
    }

    /// Writes every waiting heartbeat in one transaction; returns how many. On failure they
    /// wait for the next flush (unless a newer heartbeat of the same agent came meanwhile).
    pub async fn flush(&self) -> Result<usize, elves_store::Error> {
        let _w = self.writer.lock().await;
        let batch: Vec<(String, Entry)> = self.pending().drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(AgentRecord, BTreeMap<String, String>)> = batch
            .iter()
            .map(|(_, e)| (e.rec.clone(), e.errors.clone()))
            .collect();
        match self.store.record_agents(&rows).await {
            Ok(()) => Ok(rows.len()),
            Err(e) => {
                let mut pending = self.pending();
                for (ip, entry) in batch {
                    pending.entry(ip).or_insert(entry);
                }
                Err(e)
            }
        }
    }

    /// Flushes every [`FLUSH_EVERY`] until `cancel` fires, then once more.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => false,
                _ = cancel.cancelled() => true,
            };
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "could not record the agents' heartbeats; retrying at the next flush");
            }
            if stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ip: &str, at: i64, connected_to: &str) -> AgentRecord {
        AgentRecord {
            ip: ip.into(),
            asset: format!("asset-{ip}"),
            version: "1".into(),
            apps: BTreeMap::from([("demo".into(), format!("v{at}"))]),
            connected_to: connected_to.into(),
            last_heartbeat_ms: at,
            first_seen_ms: at,
        }
    }

    /// A scratch directory, removed when dropped (no tempfile dependency for two tests).
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            let dir = std::env::temp_dir().join(format!("elves-gw-{}", elves_types::Id::random()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn store(dir: &Scratch) -> Store {
        Store::open(&format!("sqlite://{}", dir.0.join("r.db").display()))
            .await
            .unwrap()
    }

    /// One step of a scenario, applied to a fresh registry.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Hello(i64),
        Beat(i64),
        Flush,
        Unlink,
        /// An unlink whose link was replaced meanwhile: nothing is written.
        UnlinkRelinked,
    }

    /// (name, steps, what the store then says of 10.0.0.1: last heartbeat and whether linked).
    type Case<'a> = (&'a str, &'a [Step], Option<(i64, bool)>);

    /// What the store says about agent 10.0.0.1 after the steps: (last heartbeat, linked).
    #[tokio::test]
    async fn writes_land_in_the_order_they_were_made() {
        use Step::*;
        let cases: &[Case] = &[
            (
                "a heartbeat waits for the flush",
                &[Hello(1), Beat(2)],
                Some((1, true)),
            ),
            (
                "a flush writes it",
                &[Hello(1), Beat(2), Flush],
                Some((2, true)),
            ),
            (
                "the latest heartbeat wins",
                &[Hello(1), Beat(2), Beat(3), Flush],
                Some((3, true)),
            ),
            (
                "a hello drops an older waiting heartbeat",
                &[Beat(2), Hello(5), Flush],
                Some((5, true)),
            ),
            (
                "an unlink writes the waiting heartbeat unlinked",
                &[Hello(1), Beat(2), Unlink],
                Some((2, false)),
            ),
            (
                "an unlink is not undone by a later flush",
                &[Hello(1), Beat(2), Unlink, Flush],
                Some((2, false)),
            ),
            (
                "an unlink with nothing waiting",
                &[Hello(1), Unlink],
                Some((1, false)),
            ),
            (
                "an unlink after a relink writes nothing",
                &[Hello(1), Beat(2), UnlinkRelinked, Flush],
                Some((2, true)),
            ),
            ("nothing written without hello or flush", &[Beat(2)], None),
        ];
        for (name, steps, want) in cases {
            let dir = Scratch::new();
            let store = store(&dir).await;
            let reg = Registry::new(store.clone());
            for step in *steps {
                match *step {
                    Hello(at) => reg.hello(&rec("10.0.0.1", at, "c")).await.unwrap(),
                    Beat(at) => reg.heartbeat(rec("10.0.0.1", at, "c"), BTreeMap::new()),
                    Flush => {
                        reg.flush().await.unwrap();
                    }
                    Unlink => reg.unlinked("10.0.0.1", || true).await.unwrap(),
                    UnlinkRelinked => reg.unlinked("10.0.0.1", || false).await.unwrap(),
                }
            }
            let got = store
                .agent("10.0.0.1")
                .await
                .unwrap()
                .map(|r| (r.last_heartbeat_ms, !r.connected_to.is_empty()));
            assert_eq!(got, *want, "{name}");
            store.close().await;
        }
    }

    #[tokio::test]
    async fn one_flush_writes_every_agent_with_its_errors_and_run_flushes_on_its_own() {
        let dir = Scratch::new();
        let store = store(&dir).await;
        let reg = std::sync::Arc::new(Registry::new(store.clone()));
        let errors = BTreeMap::from([("demo".to_string(), "no package".to_string())]);
        for i in 1..=3 {
            reg.heartbeat(rec(&format!("10.0.0.{i}"), 7, "c"), errors.clone());
        }
        assert_eq!(reg.flush().await.unwrap(), 3);
        assert_eq!(reg.flush().await.unwrap(), 0, "nothing left to write");
        assert_eq!(store.agents().await.unwrap().len(), 3);
        assert_eq!(store.agent_app_errors("10.0.0.2").await.unwrap(), errors);

        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (reg, cancel) = (reg.clone(), cancel.clone());
            async move { reg.run(cancel).await }
        });
        reg.heartbeat(rec("10.0.0.9", 9, "c"), BTreeMap::new());
        let by = std::time::Instant::now() + Duration::from_secs(10);
        while store.agent("10.0.0.9").await.unwrap().is_none() {
            assert!(std::time::Instant::now() < by, "never flushed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Cancelling flushes what is still waiting.
        reg.heartbeat(rec("10.0.0.9", 10, "c"), BTreeMap::new());
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(
            store
                .agent("10.0.0.9")
                .await
                .unwrap()
                .unwrap()
                .last_heartbeat_ms,
            10
        );
    }
}
