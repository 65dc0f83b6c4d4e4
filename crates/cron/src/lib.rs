//! The cron module: Quartz schedules on the center (api-v2 §6 "Crons").
//!
//! Contract:
//! * `cron/add` creates a cron **started**; `start`/`stop` are idempotent; `delete` removes
//!   the cron and its history. An unknown id is `[411.1]`; a rule that is invalid or never
//!   fires again (in the cron's zone, **ext** `tz`) is `[403.5]`.
//! * Each fire is recorded (cron id + scheduled instant, unique, in increasing order) in the
//!   store **before** it is dispatched to the scheduler as an `AsyncJob` with its own run id
//!   (kind `cron`, instruct id = the cron id). The run's result — or its delivery failure,
//!   stored as `flag:"false"`, `[410.1]`, `worker_flag:-1` — becomes the cron's last result,
//!   and the newest [`Options::history`] runs of each cron are kept.
//! * Ahead of time: the fires of an instant are recorded shortly before it
//!   ([`FiringOptions::record_ahead`]), and their one message to the scheduler is built and
//!   encoded then, so at the instant only the [`gate`] check and the hand-over of that message
//!   remain: the fire lag is the wake-up, not the store. A `stop` or `delete` that answers
//!   before the instant withdraws the recorded run (the message is then built again for the
//!   rest); a `start` before the instant keeps it. No store work starts within
//!   [`FiringOptions::guard`] (100 ms) before an instant with runs waiting.
//! * Exactly once: only the holder of the firer lease fires, and every recording checks the
//!   lease's fencing token in the same transaction, so a firer that lost its lease (paused,
//!   partitioned, replaced) records nothing, and it casts nothing once its lease may have run
//!   out. An instant is recorded once, and never one at or before the newest recorded fire.
//!   Runs recorded but never sent (the firer stopped or lost its lease before their instant)
//!   are judged by the next holder: cast once under their run id if on time (or as the
//!   `fire_once` catch-up), else withdrawn. (Known window: a center killed between an
//!   instant's cast and the commit of its dispatch stamps, a few ms, leaves runs that look
//!   never sent; if the policy then withdraws them, an agent may still run them and their
//!   results are ignored. No instant is fired twice either way.)
//! * Misfires: a fire later than [`Options::late_grace`] (the center was down, or stalled) is
//!   a misfire. Policy `fire_once` (default) fires the latest missed instant once if it is
//!   within [`Options::misfire_window`] (60 s); `skip` fires nothing. Earlier missed instants
//!   never fire: there is at most one catch-up fire per cron.
//! * Precision: the firer keeps the next instant of every started cron in one ordered set and
//!   sleeps until the earliest (no polling). In the center it runs on a thread of its own,
//!   `elves-cron-firer` ([`firing::spawn_thread`]; [`Options::firer_thread`]), so its wake-up
//!   waits for no task of the center, and it sleeps the last ms with the OS's sleep (never
//!   waking before the instant); store calls and the send still run on the center's runtime.
//!   Time comes from an injected [`Clock`](elves_types::Clock), so tests run the loop on
//!   tokio's paused time ([`firing::run`]).
//!
//! The firing core ([`firer::Firer`]) is pure: `arm`/`disarm` crons and `due(now)` → the fires
//! to make. The loop ([`firing`]) drives it against a [`Ledger`] (the store in production)
//! and hands each recorded fire to a dispatcher (the scheduler in production).

pub mod firer;
pub mod firing;
pub mod gate;
mod service;

pub use firing::{FiringOptions, Ledger};
pub use service::{Options, Service};

use std::sync::Arc;

use elves_types::Clock;

/// A clock that follows tokio's clock from a fixed Unix instant, so that paused time in tests
/// (and benchmarks) moves it.
#[derive(Clone, Debug)]
pub struct TokioClock {
    base_ms: i64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base_ms` now.
    pub fn starting_at(base_ms: i64) -> Arc<TokioClock> {
        Arc::new(TokioClock {
            base_ms,
            start: tokio::time::Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.base_ms + self.start.elapsed().as_millis() as i64
    }
}
