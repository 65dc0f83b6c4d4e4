//! The firing loop on tokio's paused time, against an in-memory ledger with the store's rules
//! (the store's own tests check the same rules on SQLite).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elves_cron::Ledger;
use elves_cron::TokioClock;
use elves_cron::firing::{
    Command, Dispatch, Dispatcher, FiringOptions, THREAD_NAME, run, spawn_thread,
};
use elves_cron::gate::{Change, Gate};
use elves_store::{CronRow, CronRunRow, NewCronFire};
use elves_types::{Clock, Id, SystemClock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;

/// One recorded run.
#[derive(Clone, Debug)]
struct Run {
    run_id: String,
    cron: String,
    at: i64,
    stamped: Option<i64>,
}

#[derive(Default)]
struct State {
    lease: Option<(String, i64, i64)>,
    crons: HashMap<String, CronRow>,
    /// Every recorded run not withdrawn, in recording order.
    runs: Vec<Run>,
    /// Holders whose lease calls fail (a store they cannot reach).
    unreachable: HashSet<String>,
    /// When set: every call is logged with the clock's time at its start, and takes this long.
    timed: Option<(Arc<TokioClock>, Duration)>,
    /// (call, clock at its start) of every call, when `timed`.
    calls: Vec<(&'static str, i64)>,
    /// The names of the threads the calls ran on.
    threads: HashSet<String>,
}

#[derive(Default)]
struct MemoryLedger(Mutex<State>);

impl MemoryLedger {
    /// Logs every call from now on, and makes each take `latency` (a busy store).
    fn timed(&self, clock: &Arc<TokioClock>, latency: Duration) {
        self.0.lock().unwrap().timed = Some((clock.clone(), latency));
    }
    fn calls(&self) -> Vec<(&'static str, i64)> {
        self.0.lock().unwrap().calls.clone()
    }
    /// The start of a call: logged, then its latency.
    async fn call(&self, name: &'static str) {
        let latency = {
            let mut s = self.0.lock().unwrap();
            let thread = std::thread::current().name().unwrap_or_default().to_owned();
            s.threads.insert(thread);
            let Some((clock, latency)) = s.timed.clone() else {
                return;
            };
            s.calls.push((name, clock.now_ms()));
            latency
        };
        tokio::time::sleep(latency).await;
    }
    fn add(&self, id: &str, rule: &str, misfire: &str, started_at: i64) {
        let row = CronRow {
            id: id.into(),
            app: "apptest".into(),
            owner: "A".into(),
            ip: "10.0.0.1".into(),
            func: "echo".into(),
            mode: "NP".into(),
            param: String::new(),
            timeout: 90,
            proxy: String::new(),
            rule: rule.into(),
            tz: "UTC".into(),
            misfire: misfire.into(),
            started: true,
            started_at_ms: started_at,
            last_fire_at_ms: None,
            created_at_ms: started_at,
            last: None,
        };
        self.0.lock().unwrap().crons.insert(id.into(), row);
    }
    fn row(&self, id: &str) -> CronRow {
        self.0.lock().unwrap().crons[id].clone()
    }
    fn set_started(&self, id: &str, started: bool, now: i64) {
        let mut s = self.0.lock().unwrap();
        let c = s.crons.get_mut(id).unwrap();
        if c.started != started {
            c.started = started;
            if started {
                c.started_at_ms = now;
            }
        }
    }
    fn delete(&self, id: &str) {
        let mut s = self.0.lock().unwrap();
        s.crons.remove(id);
        s.runs.retain(|r| r.cron != id);
    }
    fn unreachable(&self, holder: &str) {
        self.0.lock().unwrap().unreachable.insert(holder.into());
    }
    /// (cron, instant) of every recorded run.
    fn fires(&self) -> Vec<(String, i64)> {
        let s = self.0.lock().unwrap();
        s.runs.iter().map(|r| (r.cron.clone(), r.at)).collect()
    }
    fn run_at(&self, cron: &str, at: i64) -> Option<Run> {
        let s = self.0.lock().unwrap();
        s.runs
            .iter()
            .find(|r| r.cron == cron && r.at == at)
            .cloned()
    }
    /// (cron, instant, dispatched at) of every stamped run.
    fn stamps(&self) -> Vec<(String, i64, i64)> {
        let s = self.0.lock().unwrap();
        s.runs
            .iter()
            .filter_map(|r| r.stamped.map(|at| (r.cron.clone(), r.at, at)))
            .collect()
    }
}

impl Ledger for MemoryLedger {
    async fn lease(
        &self,
        holder: &str,
        now: i64,
        ttl: i64,
    ) -> Result<Option<i64>, elves_store::Error> {
        self.call("lease").await;
        let mut s = self.0.lock().unwrap();
        if s.unreachable.contains(holder) {
            return Err(elves_store::Error::Db("unreachable".into()));
        }
        let token = match &s.lease {
            None => 1,
            Some((h, t, exp)) if h == holder && *exp > now => *t,
            Some((_, t, exp)) if *exp <= now => t + 1,
            Some(_) => return Ok(None),
        };
        s.lease = Some((holder.into(), token, now + ttl));
        Ok(Some(token))
    }
    async fn started(&self) -> Result<Vec<CronRow>, elves_store::Error> {
        self.call("started").await;
        let s = self.0.lock().unwrap();
        let mut v: Vec<_> = s.crons.values().filter(|c| c.started).cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
    async fn pending(&self, limit: i64) -> Result<Vec<CronRunRow>, elves_store::Error> {
        self.call("pending").await;
        let s = self.0.lock().unwrap();
        let mut v: Vec<CronRunRow> = s
            .runs
            .iter()
            .filter(|r| r.stamped.is_none())
            .map(|r| CronRunRow {
                run_id: r.run_id.clone(),
                cron_id: r.cron.clone(),
                fire_at_ms: r.at,
                recorded_at_ms: r.at,
                catch_up: false,
                dispatched_at_ms: None,
                result: None,
            })
            .collect();
        v.sort_by_key(|r| r.fire_at_ms);
        v.truncate(limit as usize);
        Ok(v)
    }
    async fn withdraw(&self, run_ids: &[String]) -> Result<(), elves_store::Error> {
        self.call("withdraw").await;
        let mut s = self.0.lock().unwrap();
        s.runs
            .retain(|r| r.stamped.is_some() || !run_ids.contains(&r.run_id));
        Ok(())
    }
    async fn record(
        &self,
        holder: &str,
        token: i64,
        now: i64,
        fires: &[NewCronFire],
    ) -> Result<Option<Vec<bool>>, elves_store::Error> {
        self.call("record").await;
        let mut s = self.0.lock().unwrap();
        if !matches!(&s.lease, Some((h, t, exp)) if h == holder && *t == token && *exp > now) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for f in fires {
            let ok = match s.crons.get_mut(&f.cron_id) {
                Some(c)
                    if c.started
                        && c.started_at_ms < f.fire_at_ms
                        && c.last_fire_at_ms.is_none_or(|l| l < f.fire_at_ms) =>
                {
                    c.last_fire_at_ms = Some(f.fire_at_ms);
                    true
                }
                _ => false,
            };
            if ok {
                s.runs.push(Run {
                    run_id: f.run_id.clone(),
                    cron: f.cron_id.clone(),
                    at: f.fire_at_ms,
                    stamped: None,
                });
            }
            out.push(ok);
        }
        Ok(Some(out))
    }
    async fn dispatched(
        &self,
        fires: &[NewCronFire],
        at_ms: i64,
        _keep: i64,
    ) -> Result<(), elves_store::Error> {
        self.call("dispatched").await;
        let mut s = self.0.lock().unwrap();
        for f in fires {
            if let Some(r) = s.runs.iter_mut().find(|r| r.run_id == f.run_id) {
                r.stamped = Some(at_ms);
            }
        }
        Ok(())
    }
}

/// One dispatched fire: (cron, instant, clock at dispatch, catch-up, run id).
type Dispatched = (String, i64, i64, bool, String);

/// One message sent: (clock when it was built, clock when it was sent, its fires' crons).
type Message = (i64, i64, Vec<String>);

/// Records what the firer sends, and when each message was built.
struct Recorder {
    clock: Arc<TokioClock>,
    dispatched: Arc<Mutex<Vec<Dispatched>>>,
    messages: Arc<Mutex<Vec<Message>>>,
}

impl Dispatcher for Recorder {
    /// (clock when built, the fires)
    type Prepared = (i64, Vec<Dispatch>);

    fn prepare(&self, fires: &[Dispatch]) -> Self::Prepared {
        (self.clock.now_ms(), fires.to_vec())
    }

    fn send(&self, (built, fires): Self::Prepared) {
        let now = self.clock.now_ms();
        let crons = fires.iter().map(|d| d.cron.id.clone()).collect();
        self.messages.lock().unwrap().push((built, now, crons));
        let mut d = self.dispatched.lock().unwrap();
        for x in fires {
            d.push((
                x.cron.id.clone(),
                x.at_ms,
                now,
                x.catch_up,
                x.run_id.to_string(),
            ));
        }
    }
}

/// A running firer and what it dispatched.
struct Running {
    commands: mpsc::Sender<Command>,
    gate: Arc<Gate>,
    dispatched: Arc<Mutex<Vec<Dispatched>>>,
    messages: Arc<Mutex<Vec<Message>>>,
    cancel: CancellationToken,
}

fn start(ledger: &Arc<MemoryLedger>, clock: &Arc<TokioClock>, holder: &str) -> Running {
    let (tx, rx) = mpsc::channel(16);
    let dispatched = Arc::new(Mutex::new(Vec::new()));
    let messages = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        clock: clock.clone(),
        dispatched: dispatched.clone(),
        messages: messages.clone(),
    };
    let cancel = CancellationToken::new();
    let gate = Arc::new(Gate::new());
    let opts = FiringOptions {
        holder: holder.into(),
        ..FiringOptions::default()
    };
    let clock_dyn: Arc<dyn Clock> = clock.clone();
    tokio::spawn(run(
        opts,
        ledger.clone(),
        clock_dyn,
        gate.clone(),
        rx,
        recorder,
        cancel.clone(),
    ));
    Running {
        commands: tx,
        gate,
        dispatched,
        messages,
        cancel,
    }
}

impl Running {
    fn taken(&self) -> Vec<Dispatched> {
        std::mem::take(&mut *self.dispatched.lock().unwrap())
    }

    fn messages(&self) -> Vec<Message> {
        std::mem::take(&mut *self.messages.lock().unwrap())
    }

    /// What the cron service does on `stop`: the store change, then the gate, then the
    /// command to disarm.
    async fn stop(&self, ledger: &MemoryLedger, cron: &str, now: i64) {
        ledger.set_started(cron, false, now);
        let id = Id::parse(cron).unwrap();
        self.gate.changed(id, Change::Stopped);
        self.commands.send(Command::Disarm(id)).await.unwrap();
    }

    async fn start(&self, ledger: &MemoryLedger, cron: &str, now: i64) {
        ledger.set_started(cron, true, now);
        let id = Id::parse(cron).unwrap();
        self.gate.changed(id, Change::Started { at_ms: now });
        let row = ledger.row(cron);
        self.commands
            .send(Command::Arm(Box::new(row)))
            .await
            .unwrap();
    }

    async fn delete(&self, ledger: &MemoryLedger, cron: &str) {
        ledger.delete(cron);
        let id = Id::parse(cron).unwrap();
        self.gate.changed(id, Change::Stopped);
        self.commands.send(Command::Disarm(id)).await.unwrap();
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Sleeps until the clock reads `at`.
async fn until(clock: &TokioClock, at: i64) {
    let now = clock.now_ms();
    assert!(now <= at, "already past {at}: {now}");
    sleep_ms((at - now) as u64).await;
}

/// Asserts no (cron, instant) was dispatched twice.
fn assert_once(all: &[Dispatched]) {
    let mut seen = HashSet::new();
    for d in all {
        assert!(seen.insert((&d.0, d.1)), "fired twice: {d:?} in {all:?}");
    }
}

fn id(n: u8) -> String {
    format!("{:016X}", n)
}

#[tokio::test(start_paused = true)]
async fn every_second_fires_exactly_on_each_instant() {
    let ledger = Arc::new(MemoryLedger::default());
    let clock = TokioClock::starting_at(T0 + 250);
    ledger.add(&id(1), "* * * * * ?", "fire_once", T0);
    ledger.add(&id(2), "0/2 * * * * ?", "fire_once", T0);
    let f = start(&ledger, &clock, "a");
    sleep_ms(6_000).await;
    let got = f.taken();
    let ones: Vec<_> = got
        .iter()
        .filter(|d| d.0 == id(1))
        .map(|d| (d.1, d.2))
        .collect();
    let want: Vec<_> = (1..=6).map(|s| (T0 + s * 1000, T0 + s * 1000)).collect();
    assert_eq!(ones, want, "on the instant, to the millisecond");
    let twos: Vec<_> = got.iter().filter(|d| d.0 == id(2)).map(|d| d.1).collect();
    assert_eq!(twos, [T0 + 2000, T0 + 4000, T0 + 6000]);
    assert!(got.iter().all(|d| !d.3));
    // Every recorded fire is stamped as dispatched, at its dispatch (no time passes here).
    let stamps: Vec<_> = ledger
        .stamps()
        .into_iter()
        .map(|(c, at, stamp)| (c, at, stamp - at))
        .collect();
    let fired: Vec<_> = got.iter().map(|d| (d.0.clone(), d.1, 0)).collect();
    assert_eq!(stamps, fired);
    f.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn stop_start_and_delete_while_a_fire_is_in_flight() {
    let ledger = Arc::new(MemoryLedger::default());
    let clock = TokioClock::starting_at(T0 + 100);
    ledger.add(&id(1), "* * * * * ?", "fire_once", T0);
    let f = start(&ledger, &clock, "a");
    sleep_ms(1_000).await; // fired at T0+1 s; its run is "in flight" (no result needed)
    assert_eq!(f.taken().len(), 1);
    // Stop: no more fires, even though the firer has the next instant armed.
    ledger.set_started(&id(1), false, clock.now_ms());
    f.commands
        .send(Command::Disarm(Id::parse(&id(1)).unwrap()))
        .await
        .unwrap();
    sleep_ms(3_000).await;
    assert!(f.taken().is_empty());
    // Stopped in the store but the command lost: the store still refuses the fire.
    ledger.add(&id(3), "* * * * * ?", "fire_once", clock.now_ms());
    f.commands
        .send(Command::Arm(Box::new(ledger.row(&id(3)))))
        .await
        .unwrap();
    sleep_ms(1).await;
    ledger.set_started(&id(3), false, clock.now_ms());
    sleep_ms(2_000).await;
    assert!(f.taken().is_empty(), "a stopped cron never fires");
    // Start again: fires resume from the start, nothing of the stopped period is caught up.
    let restart = clock.now_ms();
    ledger.set_started(&id(1), true, restart);
    f.commands
        .send(Command::Arm(Box::new(ledger.row(&id(1)))))
        .await
        .unwrap();
    sleep_ms(2_000).await;
    let got: Vec<_> = f.taken().iter().map(|d| (d.1, d.3)).collect();
    let first = (restart / 1000 + 1) * 1000;
    assert_eq!(got, [(first, false), (first + 1000, false)]);
    // Delete: nothing more.
    ledger.delete(&id(1));
    f.commands
        .send(Command::Disarm(Id::parse(&id(1)).unwrap()))
        .await
        .unwrap();
    sleep_ms(3_000).await;
    assert!(f.taken().is_empty());
    f.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn restart_with_missed_fires_under_both_policies() {
    // (policy, seconds down on top of the lease expiry, catch-up fires expected: one per cron)
    for (policy, down, catch_ups) in [("fire_once", 30, 2), ("skip", 30, 0)] {
        let ledger = Arc::new(MemoryLedger::default());
        let clock = TokioClock::starting_at(T0 + 500);
        ledger.add(&id(1), "* * * * * ?", policy, T0);
        // A rule that fires every minute at :10 — its fire at 00:01:10 is missed while down.
        ledger.add(&id(2), "10 * * * * ?", policy, T0);
        let a = start(&ledger, &clock, "a");
        sleep_ms(60_000).await;
        a.cancel.cancel();
        let before = a.taken();
        // The center is down for `down` s (its lease expires meanwhile).
        sleep_ms(15_000 + down * 1000).await;
        let b = start(&ledger, &clock, "b");
        sleep_ms(5_000).await;
        let after = b.taken();
        b.cancel.cancel();
        let caught: Vec<_> = after.iter().filter(|d| d.3).collect();
        assert_eq!(caught.len(), catch_ups, "{policy} down {down}: {after:?}");
        // Never twice the same instant, in either life.
        let mut all: Vec<_> = before
            .iter()
            .chain(&after)
            .map(|d| (d.0.clone(), d.1))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "{policy}: duplicate fires");
        assert_eq!(ledger.fires().len(), n);
        // The every-second cron fires on time again once the new firer runs.
        let last = after
            .iter()
            .filter(|d| d.0 == id(1) && !d.3)
            .map(|d| d.1 - d.2)
            .max();
        assert_eq!(last, Some(0));
    }
}

#[tokio::test(start_paused = true)]
async fn a_firer_whose_lease_runs_out_after_recording_leaves_the_run_to_the_next() {
    let ledger = Arc::new(MemoryLedger::default());
    // a takes the lease at T0+0.8 s, so it runs out at T0+15.8 s: after a recorded the fire of
    // T0+16 s (at T0+15.5 s), before its instant.
    let clock = TokioClock::starting_at(T0 + 800);
    ledger.add(&id(1), "* * * * * ?", "fire_once", T0);
    let a = start(&ledger, &clock, "a");
    sleep_ms(2_000).await;
    let b = start(&ledger, &clock, "b");
    // a can no longer reach the store to renew (a partition, a stalled disk).
    ledger.unreachable("a");
    let expiry = T0 + 800 + 15_000;
    until(&clock, T0 + 16_000 - 100).await;
    let ahead = ledger.run_at(&id(1), T0 + 16_000).expect("recorded ahead");
    assert!(ahead.stamped.is_none());
    sleep_ms(10_000).await;
    let (from_a, from_b) = (a.taken(), b.taken());
    // a sent nothing once its lease could have passed to b.
    assert!(
        from_a.iter().all(|d| d.2 < expiry),
        "a fired after its lease ran out: {from_a:?}"
    );
    assert_eq!(from_a.last().map(|d| d.1), Some(T0 + 15_000));
    // b took the lease (polling every 5 s: at T0+17.8 s) and sent a's recorded run once,
    // under a's run id (1.8 s late: on time), then its own fires.
    assert_eq!(
        from_b.first().map(|d| (d.1, d.2, d.3, d.4.clone())),
        Some((T0 + 16_000, T0 + 17_800, false, ahead.run_id))
    );
    let mut all = from_a.clone();
    all.extend(from_b.iter().cloned());
    assert_once(&all);
    // Every instant from the first to the last, once.
    let ats: Vec<i64> = all.iter().map(|d| d.1).collect();
    let want: Vec<i64> = (1..=ats.len() as i64).map(|s| T0 + s * 1000).collect();
    assert_eq!(ats, want);
    a.cancel.cancel();
    b.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_stop_or_delete_between_recording_and_instant_withdraws_the_fire() {
    #[derive(Debug, Clone, Copy)]
    enum Act {
        Nothing,
        Stop,
        Delete,
        /// Stop, then start again this long after the stop.
        StopStart(i64),
    }
    let t = T0 + 5_000;
    // (what happens 300 ms before the instant (after its recording), fired at the instant)
    let cases = [
        (Act::Nothing, true),
        (Act::Stop, false),
        (Act::Delete, false),
        // Started again before the instant: as if never stopped.
        (Act::StopStart(100), true),
        // Started again after it: nothing at or before a start fires.
        (Act::StopStart(500), false),
    ];
    for (act, fired) in cases {
        let ledger = Arc::new(MemoryLedger::default());
        let clock = TokioClock::starting_at(T0 + 100);
        ledger.add(&id(1), "* * * * * ?", "fire_once", T0);
        let f = start(&ledger, &clock, "a");
        until(&clock, t - 300).await;
        assert!(
            ledger.run_at(&id(1), t).is_some(),
            "{act:?}: recorded ahead"
        );
        let now = clock.now_ms();
        match act {
            Act::Nothing => {}
            Act::Stop => f.stop(&ledger, &id(1), now).await,
            Act::Delete => f.delete(&ledger, &id(1)).await,
            Act::StopStart(after) => {
                f.stop(&ledger, &id(1), now).await;
                until(&clock, now + after).await;
                f.start(&ledger, &id(1), now + after).await;
            }
        }
        until(&clock, t + 1_700).await;
        let got = f.taken();
        assert_once(&got);
        let at_t: Vec<_> = got.iter().filter(|d| d.1 == t).collect();
        assert_eq!(at_t.len(), usize::from(fired), "{act:?}: {got:?}");
        if fired {
            assert_eq!(at_t[0].2, t, "{act:?}: on the instant");
        }
        // The withdrawn run is gone from the store; a sent one is stamped.
        let run = ledger.run_at(&id(1), t);
        assert_eq!(run.is_some(), fired, "{act:?}: {run:?}");
        assert!(run.is_none_or(|r| r.stamped == Some(t)));
        // Stopped or deleted: nothing after either; started again: the next second fires.
        let after: Vec<i64> = got.iter().filter(|d| d.1 > t).map(|d| d.1).collect();
        let want: &[i64] = match act {
            Act::Nothing | Act::StopStart(_) => &[t + 1_000],
            Act::Stop | Act::Delete => &[],
        };
        assert_eq!(after, want, "{act:?}");
        f.cancel.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_between_recording_and_instant_fires_the_recorded_run_at_most_once() {
    // (rule, its instant T after T0, policy, restart this long after T, the recorded run of T:
    // sent (catch-up?) or withdrawn, catch-up fires of other instants)
    let cases = [
        ("* * * * * ?", 3_000, "fire_once", -100, Some(false), 0),
        ("* * * * * ?", 3_000, "skip", -100, Some(false), 0),
        // Within the 2 s grace: on time, and the next instant (T+1 s) fires too.
        ("* * * * * ?", 3_000, "fire_once", 1_500, Some(false), 0),
        ("* * * * * ?", 3_000, "skip", 1_500, Some(false), 0),
        // Missed, with later instants missed too: only the latest is caught up, once.
        ("* * * * * ?", 3_000, "fire_once", 20_000, None, 1),
        ("* * * * * ?", 3_000, "skip", 20_000, None, 0),
        // Missed, and the latest missed instant: it is the catch-up fire itself.
        ("0/10 * * * * ?", 10_000, "fire_once", 5_000, Some(true), 0),
        ("0/10 * * * * ?", 10_000, "skip", 5_000, None, 0),
    ];
    for (rule, t, policy, restart, want, other_catch_ups) in cases {
        let what = format!("{rule} {policy} restarted at T{restart:+}");
        let t = T0 + t;
        let ledger = Arc::new(MemoryLedger::default());
        let clock = TokioClock::starting_at(T0 + 100);
        ledger.add(&id(1), rule, policy, T0);
        // The center (its holder name configured) is killed after recording T, before T.
        let a = start(&ledger, &clock, "center-1");
        until(&clock, t - 200).await;
        a.cancel.cancel();
        let recorded = ledger.run_at(&id(1), t).expect("recorded ahead");
        until(&clock, t + restart).await;
        let b = start(&ledger, &clock, "center-1");
        // Looked at between instants (x.2 or x.3 s past a second).
        sleep_ms(3_300).await;
        let (before, after) = (a.taken(), b.taken());
        assert!(before.iter().all(|d| d.1 < t), "{what}: {before:?}");
        let mut all = before.clone();
        all.extend(after.iter().cloned());
        assert_once(&all);
        let sent: Vec<_> = after.iter().filter(|d| d.1 == t).collect();
        match want {
            Some(catch_up) => {
                assert_eq!(sent.len(), 1, "{what}: {after:?}");
                let d = sent[0];
                assert_eq!(
                    (d.2, d.3, &d.4),
                    (t.max(t + restart), catch_up, &recorded.run_id),
                    "{what}"
                );
            }
            None => {
                assert!(sent.is_empty(), "{what}: {after:?}");
                assert!(ledger.run_at(&id(1), t).is_none(), "{what}: withdrawn");
            }
        }
        let caught = after.iter().filter(|d| d.3 && d.1 != t).count();
        assert_eq!(caught, other_catch_ups, "{what}: {after:?}");
        // Every dispatched run is the run recorded for its instant, and every run recorded
        // for an instant that passed was dispatched (or withdrawn).
        for d in &all {
            assert_eq!(
                ledger.run_at(&d.0, d.1).map(|r| r.run_id),
                Some(d.4.clone())
            );
        }
        let now = clock.now_ms();
        let passed = ledger.fires().into_iter().filter(|f| f.1 <= now).count();
        assert_eq!(passed, all.len(), "{what}");
        b.cancel.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn no_store_work_starts_just_before_an_instant_and_the_lease_stays_renewed() {
    let guard = FiringOptions::default().guard.as_millis() as i64;
    let renew = FiringOptions::default().renew_every.as_millis() as i64;
    // (the firer starts this many ms past a whole second, which puts its 5 s renewals (and
    // the re-reads after them) that far past each fifth instant; each store call's latency,
    // ms; the renewals' offsets past a whole second after the first)
    let cases: &[(i64, u64, &[i64])] = &[
        // The first renewal falls due 10, 30 or 90 ms before an instant (the firer took the
        // lease at +start and the call took `latency`): it waits for that instant's casts and
        // starts right after their stamps (one store call), and so do the later ones.
        (970, 20, &[20]),
        (930, 40, &[40]),
        (905, 5, &[5]),
        // Due exactly a guard before: not held back (its re-read is).
        (880, 20, &[900]),
        // Due half way between instants: on time.
        (300, 20, &[320]),
        // Slow calls: a renewal due at x.56 s follows the recording of the next instant.
        (500, 60, &[560]),
    ];
    for &(offset, latency, offsets) in cases {
        let what = format!("started at +{offset} ms, calls of {latency} ms");
        let ledger = Arc::new(MemoryLedger::default());
        let clock = TokioClock::starting_at(T0 + offset);
        ledger.timed(&clock, Duration::from_millis(latency));
        ledger.add(&id(1), "* * * * * ?", "fire_once", T0);
        ledger.add(&id(2), "0/2 * * * * ?", "fire_once", T0);
        let f = start(&ledger, &clock, "a");
        sleep_ms(40_000).await;
        f.cancel.cancel();
        let got = f.taken();
        assert_once(&got);
        // The first instant may be late (the firer was just starting); every later one is
        // cast on the instant, although the store takes `latency` for every call.
        let settled = T0 + 3_000;
        let late: Vec<_> = got
            .iter()
            .filter(|d| d.1 >= settled && d.2 != d.1)
            .collect();
        assert!(late.is_empty(), "{what}: late casts {late:?}");
        let end = clock.now_ms();
        let seconds: Vec<i64> = (settled / 1000..=end / 1000).map(|s| s * 1000).collect();
        let want = seconds.len() + seconds.iter().filter(|t| *t % 2000 == 0).count();
        assert_eq!(
            got.iter().filter(|d| d.1 >= settled).count(),
            want,
            "{what}"
        );
        // No store call started within the guard window before an instant (once runs wait
        // for every instant).
        let calls = ledger.calls();
        for (call, at) in calls.iter().filter(|c| c.1 >= settled) {
            let next = (at / 1000 + 1) * 1000;
            assert!(
                next - at >= guard,
                "{what}: {call} started {} ms before an instant",
                next - at
            );
        }
        // The lease was renewed every 5 s (plus at most the guard), so never lost, and each
        // renewal is followed by the re-read of the started crons.
        let leases: Vec<i64> = calls
            .iter()
            .filter(|c| c.0 == "lease")
            .map(|c| c.1)
            .collect();
        assert!(leases.len() >= 7, "{what}: {leases:?}");
        for w in leases.windows(2) {
            assert!(
                w[1] - w[0] >= renew && w[1] - w[0] <= renew + guard + latency as i64,
                "{what}: renewals {leases:?}"
            );
        }
        let mut seen: Vec<i64> = leases[1..].iter().map(|at| at.rem_euclid(1000)).collect();
        seen.dedup();
        assert_eq!(seen, offsets, "{what}: renewals {leases:?}");
        let rereads = calls.iter().filter(|c| c.0 == "started").count();
        assert_eq!(rereads, leases.len(), "{what}: one re-read per lease call");
    }
}

#[tokio::test(start_paused = true)]
async fn an_instants_message_is_built_ahead_and_again_only_when_a_run_is_withdrawn() {
    let t = T0 + 5_000;
    let ahead = FiringOptions::default().record_ahead.as_millis() as i64;
    // (crons stopped 300 ms before the instant t, after its recording; the message sent at t:
    // built when, and for which crons)
    /// (crons stopped, the message sent at t: built when, for which crons)
    type Case = (&'static [u8], Option<(i64, &'static [u8])>);
    let cases: &[Case] = &[
        (&[], Some((t - ahead, &[1, 2]))),
        // One withdrawn: built again, at the instant, for the other.
        (&[1], Some((t, &[2]))),
        (&[2], Some((t, &[1]))),
        // All withdrawn: nothing to send.
        (&[1, 2], None),
    ];
    for &(stopped, want) in cases {
        let ledger = Arc::new(MemoryLedger::default());
        let clock = TokioClock::starting_at(T0 + 100);
        ledger.add(&id(1), "* * * * * ?", "fire_once", T0);
        ledger.add(&id(2), "* * * * * ?", "fire_once", T0);
        let f = start(&ledger, &clock, "a");
        until(&clock, t - 300).await;
        for n in stopped {
            f.stop(&ledger, &id(*n), clock.now_ms()).await;
        }
        until(&clock, t + 1).await;
        let messages = f.messages();
        f.cancel.cancel();
        // Every earlier instant's message was built at its recording, sent at its instant.
        let at = |m: &Message| m.1;
        for m in messages.iter().filter(|m| at(m) < t && at(m) > T0 + 1_000) {
            assert_eq!(m.0, m.1 - ahead, "{stopped:?}: {messages:?}");
        }
        let at_t: Vec<(i64, Vec<String>)> = messages
            .iter()
            .filter(|m| at(m) == t)
            .map(|m| (m.0, m.2.clone()))
            .collect();
        let want: Vec<(i64, Vec<String>)> = want
            .iter()
            .map(|(built, crons)| (*built, crons.iter().map(|n| id(*n)).collect()))
            .collect();
        assert_eq!(at_t, want, "{stopped:?}");
    }
}

/// What a send on the firer's thread saw: (instant, clock at the send, the sending thread,
/// the thread the task it spawned ran on).
type SeenSend = (i64, i64, String, String);

/// Sends by spawning a task, as the bus does.
struct Spawning(mpsc::UnboundedSender<SeenSend>);

impl Dispatcher for Spawning {
    type Prepared = Vec<Dispatch>;
    fn prepare(&self, fires: &[Dispatch]) -> Vec<Dispatch> {
        fires.to_vec()
    }
    fn send(&self, fires: Vec<Dispatch>) {
        let now = SystemClock.now_ms();
        let name = || std::thread::current().name().unwrap_or_default().to_owned();
        let sender = name();
        for f in fires {
            let (seen, sender) = (self.0.clone(), sender.clone());
            tokio::spawn(async move {
                let _ = seen.send((f.at_ms, now, sender, name()));
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_its_own_thread_the_firer_casts_onto_the_callers_runtime_never_early() {
    const WAIT: Duration = Duration::from_secs(10);
    let ledger = Arc::new(MemoryLedger::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    ledger.add(&id(1), "* * * * * ?", "fire_once", clock.now_ms());
    let (commands, rx) = mpsc::channel(16);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let opts = FiringOptions {
        holder: "a".into(),
        ..FiringOptions::default()
    };
    let thread = spawn_thread(
        tokio::runtime::Handle::current(),
        opts,
        ledger.clone(),
        clock,
        Arc::new(Gate::new()),
        rx,
        Spawning(seen_tx),
        cancel.clone(),
    )
    .unwrap();
    for _ in 0..2 {
        let (at, sent, sender, handler) = tokio::time::timeout(WAIT, seen.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(sent >= at, "sent at {sent}, before its instant {at}");
        assert_eq!(sender, THREAD_NAME);
        // The task the send spawned ran on the caller's runtime (its workers), not the firer's.
        assert_ne!(handler, THREAD_NAME);
    }
    // Every store call ran on the caller's runtime too.
    let threads = ledger.0.lock().unwrap().threads.clone();
    assert!(
        !threads.is_empty() && !threads.contains(THREAD_NAME),
        "{threads:?}"
    );
    // Cancelled, the thread ends.
    cancel.cancel();
    let joined = tokio::task::spawn_blocking(move || thread.join());
    tokio::time::timeout(WAIT, joined)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(commands);
}

#[tokio::test(start_paused = true)]
async fn crons_added_one_by_one_on_a_slow_store_all_fire() {
    let ledger = Arc::new(MemoryLedger::default());
    let clock = TokioClock::starting_at(T0 + 100);
    ledger.timed(&clock, Duration::from_millis(20));
    let f = start(&ledger, &clock, "a");
    sleep_ms(500).await;
    let mut added = Vec::new();
    for n in 0..250u8 {
        let cron = format!("{:016X}", 0x1000 + u32::from(n));
        let now = clock.now_ms();
        ledger.add(&cron, "* * * * * ?", "fire_once", now);
        f.commands
            .send(Command::Arm(Box::new(ledger.row(&cron))))
            .await
            .unwrap();
        added.push((cron, now));
        sleep_ms(13).await;
    }
    sleep_ms(10_000).await;
    let end = clock.now_ms();
    let got = f.taken();
    f.cancel.cancel();
    assert_once(&got);
    for (cron, at) in &added {
        let first = (at / 1000 + 1) * 1000;
        let mine: Vec<i64> = got.iter().filter(|d| &d.0 == cron).map(|d| d.1).collect();
        let want: Vec<i64> = (first / 1000..=end / 1000).map(|s| s * 1000).collect();
        assert_eq!(mine, want, "{cron} added at {at}");
    }
}
