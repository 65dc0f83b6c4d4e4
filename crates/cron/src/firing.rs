//! The firing loop: takes the lease, arms the started crons, sleeps until the earliest next
//! instant, records the due fires under the lease's fencing token and only then dispatches
//! the recorded ones; then it stamps them as dispatched (the fire lag `elves-bench cron-lag`
//! reads back) and prunes old runs, off the firing path. A firer that loses its lease drops
//! everything and waits to take it again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use elves_cron_expr::Schedule;
use elves_cron_expr::jiff::tz::TimeZone;
use elves_store::{CronRow, NewCronFire, Store};
use elves_types::{Clock, Id};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::firer::{Firer, Limits, Misfire};

/// Where the firer keeps its lease and records its fires: the store in production.
pub trait Ledger: Send + Sync + 'static {
    /// Acquires or renews the lease; the fencing token while `holder` holds it.
    fn lease(
        &self,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> impl Future<Output = Result<Option<i64>, elves_store::Error>> + Send;
    /// Every started cron.
    fn started(&self) -> impl Future<Output = Result<Vec<CronRow>, elves_store::Error>> + Send;
    /// Records fires if `token` is current; per fire, whether it was recorded.
    fn record(
        &self,
        holder: &str,
        token: i64,
        now_ms: i64,
        fires: &[NewCronFire],
    ) -> impl Future<Output = Result<Option<Vec<bool>>, elves_store::Error>> + Send;
    /// Stamps recorded fires as dispatched at `at_ms` and keeps the newest `keep` runs of
    /// their crons.
    fn dispatched(
        &self,
        fires: &[NewCronFire],
        at_ms: i64,
        keep: i64,
    ) -> impl Future<Output = Result<(), elves_store::Error>> + Send;
}

impl Ledger for Store {
    async fn lease(
        &self,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<i64>, elves_store::Error> {
        self.cron_lease(holder, now_ms, ttl_ms).await
    }
    async fn started(&self) -> Result<Vec<CronRow>, elves_store::Error> {
        self.started_crons().await
    }
    async fn record(
        &self,
        holder: &str,
        token: i64,
        now_ms: i64,
        fires: &[NewCronFire],
    ) -> Result<Option<Vec<bool>>, elves_store::Error> {
        self.record_cron_fires(holder, token, now_ms, fires).await
    }
    async fn dispatched(
        &self,
        fires: &[NewCronFire],
        at_ms: i64,
        keep: i64,
    ) -> Result<(), elves_store::Error> {
        self.cron_fires_dispatched(fires, at_ms, keep).await
    }
}

/// The firing loop's settings.
#[derive(Clone, Debug)]
pub struct FiringOptions {
    /// This firer's name in the lease.
    pub holder: String,
    pub lease_ttl: Duration,
    /// How often the lease is renewed and the started crons re-read.
    pub renew_every: Duration,
    pub limits: Limits,
    /// Runs kept per cron.
    pub history: i64,
    /// The zone of crons that name none.
    pub default_tz: TimeZone,
}

impl Default for FiringOptions {
    fn default() -> Self {
        FiringOptions {
            holder: format!("firer-{}", Id::random()),
            lease_ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            limits: Limits::default(),
            history: 50,
            default_tz: TimeZone::UTC,
        }
    }
}

/// A change the API made, so the firer need not wait for its next re-read.
#[derive(Clone, Debug)]
pub enum Command {
    Arm(Box<CronRow>),
    Disarm(Id),
}

/// One recorded fire, handed to the dispatcher.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub run_id: Id,
    pub at_ms: i64,
    pub catch_up: bool,
    pub cron: Arc<CronRow>,
}

struct Armed {
    row: Arc<CronRow>,
}

fn arm(
    firer: &mut Firer,
    jobs: &mut HashMap<Id, Armed>,
    row: CronRow,
    default_tz: &TimeZone,
    now: i64,
) {
    let Some(id) = Id::parse(&row.id) else {
        return;
    };
    let tz = if row.tz.is_empty() {
        Ok(default_tz.clone())
    } else {
        TimeZone::get(&row.tz)
    };
    let (Ok(schedule), Ok(tz), Some(misfire)) = (
        Schedule::parse_quartz(&row.rule),
        tz,
        Misfire::parse(&row.misfire),
    ) else {
        tracing::warn!(cron = %row.id, rule = %row.rule, "a stored cron cannot be scheduled; skipped");
        return;
    };
    let after = row
        .last_fire_at_ms
        .unwrap_or(i64::MIN)
        .max(row.started_at_ms);
    firer.arm(id, schedule, tz, misfire, after, now);
    jobs.insert(id, Armed { row: Arc::new(row) });
}

/// Brings the armed set in line with the started crons: new or restarted ones are armed,
/// gone ones disarmed, unchanged ones keep their next instant.
fn sync(
    firer: &mut Firer,
    jobs: &mut HashMap<Id, Armed>,
    rows: Vec<CronRow>,
    default_tz: &TimeZone,
    now: i64,
) {
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        let Some(id) = Id::parse(&row.id) else {
            continue;
        };
        seen.insert(id);
        let same = jobs.get(&id).is_some_and(|j| {
            j.row.started_at_ms == row.started_at_ms && j.row.rule == row.rule && j.row.tz == row.tz
        });
        if !same {
            arm(firer, jobs, row, default_tz, now);
        }
    }
    let gone: Vec<Id> = jobs
        .keys()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    for id in gone {
        firer.disarm(id);
        jobs.remove(&id);
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

async fn sleep_ms(clock: &dyn Clock, until_ms: i64) {
    let wait = (until_ms - clock.now_ms()).max(0);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
}

/// Runs the firing loop until `cancel` fires. `dispatch` is called for each recorded fire, in
/// instant order, after it is stored.
pub async fn run<L: Ledger>(
    opts: FiringOptions,
    ledger: Arc<L>,
    clock: Arc<dyn Clock>,
    mut commands: mpsc::Receiver<Command>,
    dispatch: impl Fn(Dispatch) + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    let ttl = ms(opts.lease_ttl);
    let renew = ms(opts.renew_every);
    loop {
        // Take the lease (or wait for it), discarding commands meanwhile: arming re-reads all.
        let mut token = loop {
            match ledger.lease(&opts.holder, clock.now_ms(), ttl).await {
                Ok(Some(t)) => break t,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cron lease unavailable"),
            }
            let until = clock.now_ms() + renew;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = commands.recv() => if c.is_none() { return },
                    _ = sleep_ms(&*clock, until) => break,
                }
            }
        };
        tracing::info!(holder = %opts.holder, token, "cron firer holds the lease");
        let mut firer = Firer::new(opts.limits);
        let mut jobs = HashMap::new();
        let mut resync = true;
        let mut renew_at = clock.now_ms() + renew;
        'held: loop {
            if resync {
                match ledger.started().await {
                    Ok(rows) => {
                        sync(
                            &mut firer,
                            &mut jobs,
                            rows,
                            &opts.default_tz,
                            clock.now_ms(),
                        );
                        resync = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the started crons"),
                }
            }
            // Idle: look ahead one instant for the crons that fired (or were armed), so the
            // next batch goes out without evaluating any rule first.
            firer.prepare();
            let wake = firer.next_wake().map_or(renew_at, |w| w.min(renew_at));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                c = commands.recv() => {
                    let now = clock.now_ms();
                    match c {
                        None => return,
                        Some(Command::Arm(row)) => arm(&mut firer, &mut jobs, *row, &opts.default_tz, now),
                        Some(Command::Disarm(id)) => {
                            firer.disarm(id);
                            jobs.remove(&id);
                        }
                    }
                    continue 'held;
                }
                _ = sleep_ms(&*clock, wake) => {}
            }
            let now = clock.now_ms();
            if now >= renew_at {
                match ledger.lease(&opts.holder, now, ttl).await {
                    Ok(Some(t)) => {
                        token = t;
                        renew_at = now + renew;
                        resync = true;
                    }
                    Ok(None) => {
                        tracing::warn!(holder = %opts.holder, "cron firer lost its lease");
                        break 'held;
                    }
                    Err(e) => {
                        // Fires still check the token and expiry, so going on is safe.
                        tracing::warn!(error = %e, "cannot renew the cron lease");
                        renew_at = now + renew.min(1000);
                    }
                }
            }
            let due = firer.due(now);
            if due.is_empty() {
                continue;
            }
            let mut records = Vec::with_capacity(due.len());
            let mut rows = Vec::with_capacity(due.len());
            for f in &due {
                let Some(job) = jobs.get(&f.cron) else {
                    continue;
                };
                records.push(NewCronFire {
                    cron_id: job.row.id.clone(),
                    run_id: Id::random().to_string(),
                    fire_at_ms: f.at_ms,
                    catch_up: f.catch_up,
                });
                rows.push(job.row.clone());
            }
            match ledger.record(&opts.holder, token, now, &records).await {
                Ok(Some(done)) => {
                    let mut sent = Vec::with_capacity(records.len());
                    for ((rec, row), recorded) in records.into_iter().zip(rows).zip(done) {
                        if !recorded {
                            continue;
                        }
                        let Some(run_id) = Id::parse(&rec.run_id) else {
                            continue;
                        };
                        elves_telemetry::cron_fire_lag_ms(clock.now_ms() - rec.fire_at_ms);
                        dispatch(Dispatch {
                            run_id,
                            at_ms: rec.fire_at_ms,
                            catch_up: rec.catch_up,
                            cron: row,
                        });
                        sent.push(rec);
                    }
                    // After the whole batch went out: each stamp is at or after its dispatch.
                    let at = clock.now_ms();
                    if let Err(e) = ledger.dispatched(&sent, at, opts.history).await {
                        // Only the stamps and the pruning are lost; the next batch prunes.
                        tracing::warn!(error = %e, fires = sent.len(), "cron dispatch stamps not stored");
                    }
                }
                Ok(None) => {
                    tracing::warn!(holder = %opts.holder, "cron fires refused: the lease moved on");
                    break 'held;
                }
                Err(e) => {
                    // Nothing was recorded, so nothing is dispatched: these instants are missed.
                    tracing::error!(error = %e, fires = records.len(), "cron fires not recorded");
                }
            }
        }
    }
}
