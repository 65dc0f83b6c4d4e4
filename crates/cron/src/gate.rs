//! The gate between the API's stop/start/delete and the firer's casts.
//!
//! The firer records an instant's fires ahead of the instant and casts them at the instant
//! without asking the store again. A stop (or delete) that commits between the two must still
//! win: "once `stop` answered, the cron does not fire". So the API reports every committed
//! start/stop/delete here, synchronously, before it answers; the firer takes a
//! [`Gate::snapshot`] before it records a batch and casts each recorded run under the gate's
//! lock only if [`admits`] says so.
//!
//! Why this is enough: a stop's store change commits, then it is reported here. A recording
//! that began after the report (snapshot at or after it) runs after the commit, so the store
//! refuses it (the cron is stopped). A recording that began before the report has an older
//! snapshot, so its runs of that cron are not cast after the report. A cast already made
//! under the lock happened before the stop answered.

use std::collections::HashMap;
use std::sync::Mutex;

use elves_types::Id;

/// What the API did to a cron (after its store change committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Stopped or deleted.
    Stopped,
    /// Started (again) at this instant (its new `started_at_ms`).
    Started { at_ms: i64 },
}

/// Whether a run of instant `at_ms`, recorded after the firer's snapshot `snapshot`, may be
/// cast given the cron's latest change `latest` (its sequence number and what it was).
///
/// A change no newer than the snapshot was seen by the recording's store transaction. A newer
/// one: a stop withdraws the run; a stop followed by a start before the instant keeps it (the
/// cron is started at the instant and was started before it, as if never stopped); a start at
/// or after the instant does not (nothing at or before a start fires).
pub fn admits(latest: Option<(u64, Change)>, snapshot: u64, at_ms: i64) -> bool {
    match latest {
        None => true,
        Some((seq, _)) if seq <= snapshot => true,
        Some((_, Change::Started { at_ms: s })) => s < at_ms,
        Some((_, Change::Stopped)) => false,
    }
}

#[derive(Default)]
struct State {
    seq: u64,
    /// The latest change of each cron changed since the oldest snapshot still in use.
    changes: HashMap<Id, (u64, Change)>,
}

/// Shared by the API and the firer (see the module documentation).
#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
}

/// The gate's state while the firer holds its lock to cast.
pub struct Held<'a> {
    state: &'a State,
}

impl Held<'_> {
    /// See [`admits`].
    pub fn admits(&self, cron: Id, snapshot: u64, at_ms: i64) -> bool {
        admits(self.state.changes.get(&cron).copied(), snapshot, at_ms)
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a counter and a map updated in one step each: a panic elsewhere
        // cannot leave it half-changed, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports a committed start/stop/delete of `cron`. Call it before answering the API.
    pub fn changed(&self, cron: Id, change: Change) {
        let mut s = self.lock();
        s.seq += 1;
        let seq = s.seq;
        s.changes.insert(cron, (seq, change));
    }

    /// The current sequence number, to take before recording. Changes at or before
    /// `oldest_in_use` (the oldest snapshot of a run still waiting to be cast; `None`: none)
    /// can no longer matter and are forgotten, so the map holds only recent changes.
    pub fn snapshot(&self, oldest_in_use: Option<u64>) -> u64 {
        let mut s = self.lock();
        let seq = s.seq;
        let keep_after = oldest_in_use.unwrap_or(seq).min(seq);
        s.changes.retain(|_, (c, _)| *c > keep_after);
        seq
    }

    /// Runs `f` under the gate's lock: casts made in `f` happen entirely before or entirely
    /// after any change reported meanwhile.
    pub fn hold<R>(&self, f: impl FnOnce(&Held<'_>) -> R) -> R {
        let s = self.lock();
        f(&Held { state: &s })
    }

    /// How many changes are remembered (for tests).
    pub fn remembered(&self) -> usize {
        self.lock().changes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_after_the_recording_decides_the_cast() {
        let at = 10_000;
        // (latest change, snapshot, cast?)
        let cases = [
            (None, 5, true),
            (Some((3, Change::Stopped)), 5, true),
            (Some((5, Change::Stopped)), 5, true),
            (Some((6, Change::Stopped)), 5, false),
            (Some((6, Change::Started { at_ms: at - 100 })), 5, true),
            (Some((6, Change::Started { at_ms: at })), 5, false),
            (Some((6, Change::Started { at_ms: at + 1 })), 5, false),
            (Some((4, Change::Started { at_ms: at + 1 })), 5, true),
        ];
        for (latest, snapshot, want) in cases {
            assert_eq!(admits(latest, snapshot, at), want, "{latest:?} {snapshot}");
        }
    }

    #[test]
    fn the_gate_remembers_only_what_a_waiting_run_needs() {
        let g = Gate::new();
        let (a, b) = (Id::random(), Id::random());
        let s0 = g.snapshot(None);
        g.changed(a, Change::Stopped);
        let s1 = g.snapshot(Some(s0));
        g.changed(b, Change::Started { at_ms: 5 });
        g.hold(|h| {
            assert!(!h.admits(a, s0, 10), "stopped after the recording");
            assert!(h.admits(a, s1, 10), "stopped before the recording");
            assert!(h.admits(b, s0, 10), "started before the instant");
            assert!(!h.admits(b, s0, 5), "started at the instant");
        });
        assert_eq!(g.remembered(), 2);
        // Nothing waits from before s1 any more: a's stop is forgotten, b's kept.
        g.snapshot(Some(s1));
        assert_eq!(g.remembered(), 1);
        g.snapshot(None);
        assert_eq!(g.remembered(), 0);
    }
}
