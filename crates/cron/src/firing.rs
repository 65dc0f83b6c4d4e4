//! The firing loop: takes the lease, arms the started crons, takes over the runs a previous
//! firer recorded but did not send, and then for each instant: a little **ahead** of it
//! ([`FiringOptions::record_ahead`]) records its fires under the lease's fencing token, and
//! **at** the instant casts the recorded runs (those the [`Gate`] still admits: a stop or
//! delete that committed meanwhile withdraws them) and then stamps them as dispatched (the
//! fire lag `elves-bench cron-lag` reads back) and prunes old runs. The instant's message is
//! built when its fires are recorded ([`Dispatcher::prepare`]), so the instant's own work is
//! the gate check and sending it; and no store work starts within [`FiringOptions::guard`]
//! before an instant with runs waiting (it is done right after that instant's send). In the
//! center the loop runs on its own thread ([`spawn_thread`]). A firer that loses its lease, or
//! whose lease runs out before an instant, casts nothing more and waits to take it again; what
//! it recorded is the next holder's to cast once or withdraw ([`judge_pending`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use elves_cron_expr::Schedule;
use elves_cron_expr::jiff::tz::TimeZone;
use elves_store::{CronRow, CronRunRow, NewCronFire, Store};
use elves_types::{Clock, Id};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::firer::{Firer, Limits, Misfire, Pending, judge_pending};
use crate::gate::Gate;

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
    /// Recorded runs without a dispatch stamp nor a result, by instant, at most `limit`.
    fn pending(
        &self,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<CronRunRow>, elves_store::Error>> + Send;
    /// Deletes recorded runs that were never dispatched.
    fn withdraw(
        &self,
        run_ids: &[String],
    ) -> impl Future<Output = Result<(), elves_store::Error>> + Send;
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
    async fn pending(&self, limit: i64) -> Result<Vec<CronRunRow>, elves_store::Error> {
        self.pending_cron_runs(limit).await
    }
    async fn withdraw(&self, run_ids: &[String]) -> Result<(), elves_store::Error> {
        self.withdraw_cron_runs(run_ids).await.map(|_| ())
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

/// How many runs recorded but never sent are taken over at once, at most.
const PENDING_LIMIT: i64 = 100_000;

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
    /// How long before an instant its fires are recorded, so that at the instant only the
    /// casts remain (recording a thousand fires takes tens to hundreds of ms on a busy
    /// machine). A run recorded ahead is withdrawn if its cron stops before the instant.
    pub record_ahead: Duration,
    /// No store work (lease renewal, re-reading the started crons, taking over, recording,
    /// the stamps of an earlier instant) **starts** this close before an instant that has runs
    /// waiting; it is done right after that instant's casts instead, so the casts never queue
    /// behind it. Each of these is one store call that usually takes a few ms and, waiting for
    /// SQLite's write lock behind the result writer, tens of ms on a loaded machine: 100 ms
    /// covers that, and postponing is free (instants are whole seconds apart; the lease has
    /// 10 s of margin). At most 500 ms is used, so that a renewal always finds room between
    /// every-second instants.
    pub guard: Duration,
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
            record_ahead: Duration::from_millis(500),
            guard: Duration::from_millis(100),
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

/// Hands an instant's recorded fires over (to the scheduler, in production). The message is
/// built when the fires are recorded, ahead of their instant, so that at the instant only
/// sending it remains; it is built again at the instant only if the [`Gate`] withdrew some of
/// its runs meanwhile.
pub trait Dispatcher: Send + Sync + 'static {
    /// A message ready to send.
    type Prepared: Send + 'static;
    /// Builds the message for `fires` (the fires of one instant).
    fn prepare(&self, fires: &[Dispatch]) -> Self::Prepared;
    /// Sends a prepared message; called at its instant, under the gate's lock.
    fn send(&self, prepared: Self::Prepared);
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

/// How the loop waits for its next wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// On tokio's timer only (whole ms, rounded up); paused time moves it.
    Runtime,
    /// On tokio's timer until [`PRECISE_MARGIN_MS`] before, then the rest with
    /// [`std::thread::sleep`] (only on the firer's own thread, which nothing else uses).
    Precise,
}

/// How long before a wake-up the precise wait leaves tokio's timer, which rounds up to whole
/// ms and reads a clock of whole ms: 3 ms is its worst overshoot.
const PRECISE_MARGIN_MS: i64 = 3;

/// Sleeps on this thread until `clock` reads `until_ms` (never returns earlier, unless it is
/// further away than a precise wait's margin: the clock stepped back, the loop looks again).
/// A clock of whole ms reads `until_ms - 1` up to a whole ms before it: the last ms is slept
/// in 200 µs steps, so the wake is at most about that late. Bounded: at most
/// [`PRECISE_MARGIN_MS`] of sleeping in a few dozen steps.
fn sleep_precisely(clock: &dyn Clock, until_ms: i64) {
    for _ in 0..64 {
        let left = until_ms - clock.now_ms();
        if left <= 0 || left > PRECISE_MARGIN_MS + 1 {
            return;
        }
        let step = if left > 1 {
            Duration::from_millis(left as u64 - 1)
        } else {
            Duration::from_micros(200)
        };
        std::thread::sleep(step);
    }
}

/// The firer's thread (see [`spawn_thread`]).
pub const THREAD_NAME: &str = "elves-cron-firer";

/// A ledger whose calls run on another runtime (the center's): the firer's thread awaits
/// them there, so the store's connections (sqlx spawns the return of a connection to its pool
/// on the runtime that drops it, and PostgreSQL/MySQL sockets belong to the runtime that
/// opened them) only ever live on the center's runtime.
struct OnRuntime<L> {
    ledger: Arc<L>,
    runtime: Handle,
}

impl<L> OnRuntime<L> {
    async fn on<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, elves_store::Error>> + Send + 'static,
    ) -> Result<T, elves_store::Error> {
        self.runtime.spawn(call).await.unwrap_or_else(|e| {
            Err(elves_store::Error::Db(format!(
                "the cron store call did not finish: {e}"
            )))
        })
    }
}

impl<L: Ledger> Ledger for OnRuntime<L> {
    async fn lease(
        &self,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<i64>, elves_store::Error> {
        let (l, holder) = (self.ledger.clone(), holder.to_owned());
        self.on(async move { l.lease(&holder, now_ms, ttl_ms).await })
            .await
    }
    async fn started(&self) -> Result<Vec<CronRow>, elves_store::Error> {
        let l = self.ledger.clone();
        self.on(async move { l.started().await }).await
    }
    async fn record(
        &self,
        holder: &str,
        token: i64,
        now_ms: i64,
        fires: &[NewCronFire],
    ) -> Result<Option<Vec<bool>>, elves_store::Error> {
        let (l, holder, fires) = (self.ledger.clone(), holder.to_owned(), fires.to_vec());
        self.on(async move { l.record(&holder, token, now_ms, &fires).await })
            .await
    }
    async fn pending(&self, limit: i64) -> Result<Vec<CronRunRow>, elves_store::Error> {
        let l = self.ledger.clone();
        self.on(async move { l.pending(limit).await }).await
    }
    async fn withdraw(&self, run_ids: &[String]) -> Result<(), elves_store::Error> {
        let (l, run_ids) = (self.ledger.clone(), run_ids.to_vec());
        self.on(async move { l.withdraw(&run_ids).await }).await
    }
    async fn dispatched(
        &self,
        fires: &[NewCronFire],
        at_ms: i64,
        keep: i64,
    ) -> Result<(), elves_store::Error> {
        let (l, fires) = (self.ledger.clone(), fires.to_vec());
        self.on(async move { l.dispatched(&fires, at_ms, keep).await })
            .await
    }
}

/// A dispatcher whose sends run in the center's runtime context, so the tasks a send spawns
/// (the bus's handler of the message) run on the center's runtime, not the firer's.
struct Entered<D> {
    dispatch: D,
    runtime: Handle,
}

impl<D: Dispatcher> Dispatcher for Entered<D> {
    type Prepared = D::Prepared;
    fn prepare(&self, fires: &[Dispatch]) -> Self::Prepared {
        self.dispatch.prepare(fires)
    }
    fn send(&self, prepared: Self::Prepared) {
        let _center = self.runtime.enter();
        self.dispatch.send(prepared);
    }
}

/// Runs the firing loop ([`run`]) on its own OS thread, [`THREAD_NAME`], with a tokio runtime
/// of its own (current-thread), so that its wake-up at an instant never waits behind the
/// center's tasks, and it wakes precisely (tokio's timer to within a few ms, then
/// [`std::thread::sleep`]; never before the instant). The store calls and the casts still run
/// on `center` (the center's runtime): see [`OnRuntime`] and [`Entered`]. The thread ends when
/// `cancel` fires (or every command sender is gone), after the store call in progress, if
/// any, came back.
#[allow(clippy::too_many_arguments)]
pub fn spawn_thread<L: Ledger, D: Dispatcher>(
    center: Handle,
    opts: FiringOptions,
    ledger: Arc<L>,
    clock: Arc<dyn Clock>,
    gate: Arc<Gate>,
    commands: mpsc::Receiver<Command>,
    dispatch: D,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let ledger = Arc::new(OnRuntime {
        ledger,
        runtime: center.clone(),
    });
    let dispatch = Entered {
        dispatch,
        runtime: center,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            runtime.block_on(run_waking(
                Wake::Precise,
                opts,
                ledger,
                clock,
                gate,
                commands,
                dispatch,
                cancel,
            ));
            tracing::debug!("cron firer thread stopped");
        })
}

/// A run recorded and waiting for its instant.
struct Staged {
    rec: NewCronFire,
    cron: Id,
    run_id: Id,
    row: Arc<CronRow>,
    /// The gate's snapshot taken before it was recorded (or found recorded).
    snap: u64,
}

impl Staged {
    fn dispatch(&self) -> Dispatch {
        Dispatch {
            run_id: self.run_id,
            at_ms: self.rec.fire_at_ms,
            catch_up: self.rec.catch_up,
            cron: self.row.clone(),
        }
    }
}

/// The runs of one instant, and their message once built.
struct Batch<P> {
    runs: Vec<Staged>,
    prepared: Option<P>,
}

impl<P> Default for Batch<P> {
    fn default() -> Self {
        Batch {
            runs: Vec::new(),
            prepared: None,
        }
    }
}

impl<P> Batch<P> {
    fn add(&mut self, run: Staged) {
        self.runs.push(run);
        // Built for fewer runs: built again (before the instant) for all.
        self.prepared = None;
    }
}

/// The runs waiting for their instant, by instant.
type Waiting<P> = BTreeMap<i64, Batch<P>>;

/// Builds the messages of the instants that lack one (after a recording or a take-over).
fn prepare_waiting<D: Dispatcher>(waiting: &mut Waiting<D::Prepared>, dispatch: &D) {
    for batch in waiting.values_mut() {
        if batch.prepared.is_none() && !batch.runs.is_empty() {
            let fires: Vec<Dispatch> = batch.runs.iter().map(Staged::dispatch).collect();
            batch.prepared = Some(dispatch.prepare(&fires));
        }
    }
}

/// The largest guard window used (see [`FiringOptions::guard`]).
const MAX_GUARD_MS: i64 = 500;

/// Whether store work must wait: an instant with runs waiting is less than `guard` ms away
/// (or due).
fn guarded<P>(waiting: &Waiting<P>, now: i64, guard: i64) -> bool {
    waiting
        .first_key_value()
        .is_some_and(|(at, _)| *at - now < guard)
}

/// When work due at `at` may start, seen at `now`: when it is due (`now` if that passed),
/// unless that falls in the guard window of the next instant with runs waiting
/// (`next_cast`); then right after that instant. (Work that fell due before the window but was
/// not done by the time the window began waits too: the loop never wakes for work it may not
/// do.)
fn held_back(at: i64, now: i64, next_cast: Option<i64>, guard: i64) -> i64 {
    let at = at.max(now);
    match next_cast {
        Some(c) if c - at < guard => at.max(c),
        _ => at,
    }
}

/// An instant's casts whose dispatch stamps and withdrawals are not stored yet.
struct Cast {
    sent: Vec<NewCronFire>,
    at: i64,
    withdrawn: Vec<String>,
}

fn oldest_snapshot<P>(waiting: &Waiting<P>, also: Option<u64>) -> Option<u64> {
    waiting
        .values()
        .flat_map(|b| &b.runs)
        .map(|s| s.snap)
        .chain(also)
        .min()
}

/// Judges the runs a previous firer (or this one, before it lost its lease) recorded but
/// never sent: the ones to cast are added to `waiting`, the others returned to withdraw.
fn take_over<P>(
    firer: &Firer,
    jobs: &HashMap<Id, Armed>,
    runs: Vec<CronRunRow>,
    limits: Limits,
    snap: u64,
    now: i64,
    waiting: &mut Waiting<P>,
) -> Vec<String> {
    // Per cron, the latest recorded instant that is not in the future.
    let mut latest: HashMap<&str, i64> = HashMap::new();
    for r in &runs {
        if r.fire_at_ms <= now {
            let l = latest.entry(r.cron_id.as_str()).or_insert(r.fire_at_ms);
            *l = (*l).max(r.fire_at_ms);
        }
    }
    let mut withdraw = Vec::new();
    for r in &runs {
        let (Some(cron), Some(run_id)) = (Id::parse(&r.cron_id), Id::parse(&r.run_id)) else {
            withdraw.push(r.run_id.clone());
            continue;
        };
        let job = jobs
            .get(&cron)
            .filter(|j| j.row.started_at_ms < r.fire_at_ms);
        let misfire = job.and_then(|_| firer.misfire_of(cron));
        let later_due = firer.next_of(cron).is_some_and(|n| n <= now)
            || latest
                .get(r.cron_id.as_str())
                .is_some_and(|l| *l > r.fire_at_ms);
        match (
            judge_pending(limits, misfire, r.fire_at_ms, now, later_due),
            job,
        ) {
            (Pending::Cast { catch_up }, Some(job)) => {
                waiting.entry(r.fire_at_ms).or_default().add(Staged {
                    rec: NewCronFire {
                        cron_id: r.cron_id.clone(),
                        run_id: r.run_id.clone(),
                        fire_at_ms: r.fire_at_ms,
                        catch_up,
                    },
                    cron,
                    run_id,
                    row: job.row.clone(),
                    snap,
                });
            }
            _ => withdraw.push(r.run_id.clone()),
        }
    }
    withdraw
}

/// Stores an instant's dispatch stamps (pruning old runs) and deletes its withdrawn runs.
async fn store_stamps<L: Ledger>(ledger: &L, cast: Cast, history: i64) {
    let Cast {
        sent,
        at,
        withdrawn,
    } = cast;
    if !sent.is_empty()
        && let Err(e) = ledger.dispatched(&sent, at, history).await
    {
        // Only the stamps and the pruning are lost; the next batch prunes. (A next holder
        // would take these over as pending and send them again under the same run ids, which
        // agents run once.)
        tracing::warn!(error = %e, fires = sent.len(), "cron dispatch stamps not stored");
    }
    if !withdrawn.is_empty() {
        tracing::debug!(
            runs = withdrawn.len(),
            "cron runs withdrawn: stopped before their instant"
        );
        if let Err(e) = ledger.withdraw(&withdrawn).await {
            // They stay recorded, never sent; a take-over withdraws them.
            tracing::warn!(error = %e, "cron runs not withdrawn");
        }
    }
}

/// Runs the firing loop until `cancel` fires. `dispatch` prepares each instant's message
/// when its fires are stored and sends it at the instant (in instant order, under the
/// `gate`'s lock).
///
/// This runs on the caller's runtime (and its timer, so paused time drives it in tests); the
/// center runs it on a thread of its own ([`spawn_thread`]).
pub async fn run<L: Ledger, D: Dispatcher>(
    opts: FiringOptions,
    ledger: Arc<L>,
    clock: Arc<dyn Clock>,
    gate: Arc<Gate>,
    commands: mpsc::Receiver<Command>,
    dispatch: D,
    cancel: CancellationToken,
) {
    run_waking(
        Wake::Runtime,
        opts,
        ledger,
        clock,
        gate,
        commands,
        dispatch,
        cancel,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run_waking<L: Ledger, D: Dispatcher>(
    wake_mode: Wake,
    opts: FiringOptions,
    ledger: Arc<L>,
    clock: Arc<dyn Clock>,
    gate: Arc<Gate>,
    mut commands: mpsc::Receiver<Command>,
    dispatch: D,
    cancel: CancellationToken,
) {
    let ttl = ms(opts.lease_ttl);
    let renew = ms(opts.renew_every);
    let ahead = ms(opts.record_ahead).max(0);
    let guard = ms(opts.guard).clamp(0, MAX_GUARD_MS);
    loop {
        // Take the lease (or wait for it), discarding commands meanwhile: arming re-reads all.
        let (mut token, mut expires) = loop {
            let now = clock.now_ms();
            match ledger.lease(&opts.holder, now, ttl).await {
                Ok(Some(t)) => break (t, now + ttl),
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
        let mut waiting: Waiting<D::Prepared> = BTreeMap::new();
        let mut resync = true;
        // The snapshot taken before the read the take-over judges by, until it is done.
        let mut taking_over: Option<u64> = None;
        let mut take_over_due = true;
        let mut renew_at = clock.now_ms() + renew;
        // Casts made whose stamps are still to store (normally only the last instant's).
        let mut unstamped: Vec<Cast> = Vec::new();
        'held: loop {
            // Store work first, each step only outside the guard window of the next instant.
            if !unstamped.is_empty() && !guarded(&waiting, clock.now_ms(), guard) {
                for c in std::mem::take(&mut unstamped) {
                    store_stamps(&*ledger, c, opts.history).await;
                }
            }
            if resync && !guarded(&waiting, clock.now_ms(), guard) {
                let snap = gate.snapshot(oldest_snapshot(&waiting, taking_over));
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
                        if take_over_due {
                            taking_over = Some(snap);
                            take_over_due = false;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the started crons"),
                }
            }
            if let Some(snap) = taking_over
                && !resync
                && !guarded(&waiting, clock.now_ms(), guard)
            {
                match ledger.pending(PENDING_LIMIT).await {
                    Ok(runs) => {
                        let now = clock.now_ms();
                        let withdraw =
                            take_over(&firer, &jobs, runs, opts.limits, snap, now, &mut waiting);
                        if !withdraw.is_empty() {
                            tracing::info!(
                                runs = withdraw.len(),
                                "recorded cron runs withdrawn at take-over"
                            );
                            if let Err(e) = ledger.withdraw(&withdraw).await {
                                tracing::warn!(error = %e, "cron runs not withdrawn");
                            }
                        }
                        taking_over = None;
                        prepare_waiting(&mut waiting, &dispatch);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the pending cron runs"),
                }
            }
            // Idle: look ahead one instant for the crons that fired (or were armed), so the
            // next batch is recorded without evaluating any rule first.
            if !guarded(&waiting, clock.now_ms(), guard) {
                firer.prepare();
            }
            let next_cast = waiting.first_key_value().map(|(at, _)| *at);
            let now = clock.now_ms();
            let next_record = firer
                .next_wake()
                .map(|at| held_back(at - ahead, now, next_cast, guard));
            let next_renew = held_back(renew_at, now, next_cast, guard);
            let wake = [next_cast, next_record, Some(next_renew)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_renew);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break 'held,
                c = commands.recv() => {
                    let now = clock.now_ms();
                    match c {
                        None => break 'held,
                        Some(Command::Arm(row)) => arm(&mut firer, &mut jobs, *row, &opts.default_tz, now),
                        Some(Command::Disarm(id)) => {
                            firer.disarm(id);
                            jobs.remove(&id);
                        }
                    }
                    continue 'held;
                }
                _ = sleep_ms(&*clock, match wake_mode {
                    Wake::Runtime => wake,
                    Wake::Precise => wake - PRECISE_MARGIN_MS,
                }) => {
                    if wake_mode == Wake::Precise {
                        sleep_precisely(&*clock, wake);
                    }
                }
            }
            let now = clock.now_ms();
            // At an instant: cast what was recorded for it, nothing else first.
            if next_cast.is_some_and(|at| at <= now) {
                if now >= expires {
                    // Another firer may hold the lease now: what is recorded is its to judge.
                    tracing::warn!(holder = %opts.holder, "cron firer's lease ran out before an instant");
                    break 'held;
                }
                let later = waiting.split_off(&(now + 1));
                let due = std::mem::replace(&mut waiting, later);
                let mut sent = Vec::new();
                let mut withdrawn = Vec::new();
                gate.hold(|g| {
                    for batch in due.into_values() {
                        let (admitted, refused): (Vec<Staged>, Vec<Staged>) = batch
                            .runs
                            .into_iter()
                            .partition(|s| g.admits(s.cron, s.snap, s.rec.fire_at_ms));
                        let message = match batch.prepared {
                            Some(p) if refused.is_empty() => Some(p),
                            // Some were withdrawn (or it was never built): built for the rest.
                            _ if !admitted.is_empty() => {
                                let fires: Vec<Dispatch> =
                                    admitted.iter().map(Staged::dispatch).collect();
                                Some(dispatch.prepare(&fires))
                            }
                            _ => None,
                        };
                        if let Some(m) = message {
                            dispatch.send(m);
                        }
                        sent.extend(admitted.into_iter().map(|s| s.rec));
                        withdrawn.extend(refused.into_iter().map(|s| s.rec.run_id));
                    }
                });
                // After the whole batch went out: each stamp is at or after its dispatch.
                let at = clock.now_ms();
                for rec in &sent {
                    elves_telemetry::cron_fire_lag_ms(at - rec.fire_at_ms);
                }
                // Stored at the top of the loop: now, unless the next instant is too close.
                unstamped.push(Cast {
                    sent,
                    at,
                    withdrawn,
                });
                continue 'held;
            }
            if guarded(&waiting, now, guard) {
                // Renewing or recording now could hold up the next instant's casts.
                continue 'held;
            }
            if now >= renew_at {
                match ledger.lease(&opts.holder, now, ttl).await {
                    Ok(Some(t)) => {
                        token = t;
                        expires = now + ttl;
                        renew_at = now + renew;
                        resync = true;
                    }
                    Ok(None) => {
                        tracing::warn!(holder = %opts.holder, "cron firer lost its lease");
                        break 'held;
                    }
                    Err(e) => {
                        // Recordings still check the token and expiry, and casts the expiry,
                        // so going on is safe.
                        tracing::warn!(error = %e, "cannot renew the cron lease");
                        renew_at = now + renew.min(1000);
                    }
                }
                continue 'held;
            }
            // Ahead of the next instant: record its fires.
            let Some(next) = firer.next_wake() else {
                continue;
            };
            if next - ahead > now {
                continue;
            }
            if now >= expires {
                tracing::warn!(holder = %opts.holder, "cron firer's lease ran out");
                break 'held;
            }
            let snap = gate.snapshot(oldest_snapshot(&waiting, taking_over));
            // Judged as at the instant (or now, if late): the fires of that instant.
            let due = firer.due(next.max(now));
            if due.is_empty() {
                continue;
            }
            let mut records = Vec::with_capacity(due.len());
            let mut rows = Vec::with_capacity(due.len());
            for f in &due {
                let Some(job) = jobs.get(&f.cron) else {
                    continue;
                };
                let run_id = Id::random();
                records.push(NewCronFire {
                    cron_id: job.row.id.clone(),
                    run_id: run_id.to_string(),
                    fire_at_ms: f.at_ms,
                    catch_up: f.catch_up,
                });
                rows.push((f.cron, run_id, job.row.clone()));
            }
            let recorded = ledger.record(&opts.holder, token, now, &records).await;
            let over = clock.now_ms() - next;
            if over > 0 {
                // The instant's casts wait for this: `record_ahead` is short for this store.
                tracing::warn!(
                    fires = records.len(),
                    took_ms = clock.now_ms() - now,
                    late_ms = over,
                    "cron fires recorded after their instant"
                );
            }
            match recorded {
                Ok(Some(done)) => {
                    for ((rec, (cron, run_id, row)), recorded) in
                        records.into_iter().zip(rows).zip(done)
                    {
                        if recorded {
                            waiting.entry(rec.fire_at_ms).or_default().add(Staged {
                                rec,
                                cron,
                                run_id,
                                row,
                                snap,
                            });
                        }
                    }
                    prepare_waiting(&mut waiting, &dispatch);
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
        // The casts made are stamped, so that no take-over (this firer's own, when it holds
        // the lease again) mistakes them for runs never sent.
        for c in unstamped {
            store_stamps(&*ledger, c, opts.history).await;
        }
        if cancel.is_cancelled() || commands.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elves_types::SystemClock;

    #[test]
    fn a_precise_wait_never_ends_before_its_instant() {
        let clock = SystemClock;
        for ahead in [0, 1, 2, PRECISE_MARGIN_MS, PRECISE_MARGIN_MS + 1] {
            let until = clock.now_ms() + ahead;
            sleep_precisely(&clock, until);
            assert!(clock.now_ms() >= until, "{ahead} ms ahead");
        }
        // Further than the margin (the clock stepped back): it returns, the loop looks again.
        let far = clock.now_ms() + 60_000;
        sleep_precisely(&clock, far);
        assert!(clock.now_ms() < far);
    }
}
