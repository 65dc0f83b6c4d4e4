//! The firing loop on tokio's paused time, against an in-memory ledger with the store's rules
//! (the store's own tests check the same rules on SQLite).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elves_cron::Ledger;
use elves_cron::TokioClock;
use elves_cron::firing::{Command, Dispatch, FiringOptions, run};
use elves_store::{CronRow, NewCronFire};
use elves_types::{Clock, Id};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;

#[derive(Default)]
struct State {
    lease: Option<(String, i64, i64)>,
    crons: HashMap<String, CronRow>,
    /// (cron, instant) of every recorded fire.
    fires: Vec<(String, i64)>,
    /// (cron, instant, dispatched at) of every dispatch stamp.
    stamps: Vec<(String, i64, i64)>,
}

#[derive(Default)]
struct MemoryLedger(Mutex<State>);

impl MemoryLedger {
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
        self.0.lock().unwrap().crons.remove(id);
    }
    fn expire_lease(&self) {
        if let Some(l) = &mut self.0.lock().unwrap().lease {
            l.2 = 0;
        }
    }
    fn fires(&self) -> Vec<(String, i64)> {
        self.0.lock().unwrap().fires.clone()
    }
    fn stamps(&self) -> Vec<(String, i64, i64)> {
        self.0.lock().unwrap().stamps.clone()
    }
}

impl Ledger for MemoryLedger {
    async fn lease(
        &self,
        holder: &str,
        now: i64,
        ttl: i64,
    ) -> Result<Option<i64>, elves_store::Error> {
        let mut s = self.0.lock().unwrap();
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
        let s = self.0.lock().unwrap();
        let mut v: Vec<_> = s.crons.values().filter(|c| c.started).cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
    async fn record(
        &self,
        holder: &str,
        token: i64,
        now: i64,
        fires: &[NewCronFire],
    ) -> Result<Option<Vec<bool>>, elves_store::Error> {
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
                s.fires.push((f.cron_id.clone(), f.fire_at_ms));
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
        let mut s = self.0.lock().unwrap();
        for f in fires {
            s.stamps.push((f.cron_id.clone(), f.fire_at_ms, at_ms));
        }
        Ok(())
    }
}

/// One dispatched fire: (cron, instant, clock at dispatch, catch-up).
type Dispatched = (String, i64, i64, bool);

/// A running firer and what it dispatched.
struct Running {
    commands: mpsc::Sender<Command>,
    dispatched: Arc<Mutex<Vec<Dispatched>>>,
    cancel: CancellationToken,
}

fn start(ledger: &Arc<MemoryLedger>, clock: &Arc<TokioClock>, holder: &str) -> Running {
    let (tx, rx) = mpsc::channel(16);
    let dispatched = Arc::new(Mutex::new(Vec::new()));
    let d = dispatched.clone();
    let c = clock.clone();
    let cancel = CancellationToken::new();
    let opts = FiringOptions {
        holder: holder.into(),
        ..FiringOptions::default()
    };
    let clock_dyn: Arc<dyn Clock> = clock.clone();
    tokio::spawn(run(
        opts,
        ledger.clone(),
        clock_dyn,
        rx,
        move |x: Dispatch| {
            d.lock()
                .unwrap()
                .push((x.cron.id.clone(), x.at_ms, c.now_ms(), x.catch_up))
        },
        cancel.clone(),
    ));
    Running {
        commands: tx,
        dispatched,
        cancel,
    }
}

impl Running {
    fn taken(&self) -> Vec<Dispatched> {
        std::mem::take(&mut *self.dispatched.lock().unwrap())
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
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
async fn a_firer_with_an_older_token_cannot_fire() {
    let ledger = Arc::new(MemoryLedger::default());
    let clock = TokioClock::starting_at(T0 + 500);
    ledger.add(&id(1), "* * * * * ?", "fire_once", T0);
    let a = start(&ledger, &clock, "a");
    sleep_ms(2_000).await;
    let b = start(&ledger, &clock, "b");
    sleep_ms(3_000).await;
    // b waits while a holds the lease.
    assert!(b.taken().is_empty());
    assert_eq!(a.taken().len(), 5);
    // a's lease expires under it (a long pause, a partition) and b takes it with a newer
    // token before a notices.
    ledger.expire_lease();
    let stolen = clock.now_ms();
    assert_eq!(ledger.lease("b", stolen, 15_000).await.unwrap(), Some(2));
    sleep_ms(10_000).await;
    let (from_a, from_b) = (a.taken(), b.taken());
    assert!(!from_b.is_empty(), "b fires once it holds the lease");
    // Every instant fired once, by one firer or the other, never both.
    let mut all: Vec<_> = from_a.iter().chain(&from_b).map(|d| d.1).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "duplicate fires: a {from_a:?} b {from_b:?}");
    // After b took over, a fires nothing: its token is older.
    assert!(
        from_a.iter().all(|d| d.2 <= stolen),
        "a fired after losing: {from_a:?}"
    );
    a.cancel.cancel();
    b.cancel.cancel();
}
