//! The agent's side of the link: enrollment, the stream, reconnection with jittered
//! exponential back-off, and the jobs the center sends down it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elves_config::AgentConfig;
use elves_proto::agent_link_client::AgentLinkClient;
use elves_proto::{
    AgentMessage, Cancelled, CenterMessage, EnrollRequest, Heartbeat, Hello, Instruct, JobResult,
    RunJob, agent_message, center_message,
};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tracing::Instrument;

use crate::apps::{Distributor, Fetcher};
use crate::exec::{Executor, Job, Outcome};
use crate::runs::{Found, Journal, Record};
use crate::spool::{Spool, Spooled};

/// The agent's version, reported to the center.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How many messages may wait to go up the stream.
const OUTBOUND_BUFFER: usize = 1024;
/// How many acknowledged run ids are remembered, so that a late redelivery of a run whose
/// result the center already stored does not run it again.
const ACKED_MEMORY: usize = 16_384;

/// Jittered exponential back-off ("full jitter"): the n-th wait is uniform in
/// `[base, min(cap, base·2ⁿ)]`.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The upper bound of the next wait, before jitter.
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap)
    }

    /// The next wait, and one step further.
    pub fn next_wait(&mut self) -> Duration {
        let hi = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let lo = self.base.min(hi);
        rand::rng().random_range(lo..=hi)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A running agent.
pub struct Agent {
    cfg: AgentConfig,
    exec: Executor,
    apps: Arc<Distributor>,
    running: Mutex<HashMap<String, CancellationToken>>,
    spool: Spool,
    journal: Journal,
    /// Run ids the center acknowledged lately (oldest first in the queue).
    acked: Mutex<(
        std::collections::HashSet<String>,
        std::collections::VecDeque<String>,
    )>,
    /// The sender of the link that is up now, if any: a job that outlives the link it came
    /// on sends its result on this one.
    current: Mutex<Option<mpsc::Sender<AgentMessage>>>,
    /// After-run hooks: dashboard records and mode-P processors.
    hooks: Arc<crate::hooks::Hooks>,
}

enum LinkEnd {
    /// The link was up and then ended: reconnect soon.
    Dropped,
    /// The link could not be set up: back off.
    Failed,
    Cancelled,
}

impl Agent {
    pub fn new(
        cfg: AgentConfig,
        exec: Executor,
        apps: Arc<Distributor>,
        spool: Spool,
        journal: Journal,
    ) -> Agent {
        Agent {
            cfg,
            exec,
            apps,
            running: Mutex::new(HashMap::new()),
            spool,
            journal,
            acked: Mutex::new(Default::default()),
            current: Mutex::new(None),
            hooks: Arc::default(),
        }
    }

    /// Sets the hooks called after each run.
    pub fn with_hooks(mut self, hooks: Arc<crate::hooks::Hooks>) -> Agent {
        self.hooks = hooks;
        self
    }

    fn credential_path(&self) -> PathBuf {
        self.cfg.data_dir.join("credential")
    }

    fn read_credential(&self) -> Option<String> {
        std::fs::read_to_string(self.credential_path())
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    fn write_credential(&self, secret: &str) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.cfg.data_dir.join("credential.tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.credential_path())
    }

    fn apps(&self) -> HashMap<String, String> {
        self.apps.installed().into_iter().collect()
    }

    /// Connects, serves and reconnects until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        // Runs a previous agent left behind, before any link: a redelivery finds them.
        self.clone().recover().await;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let end = tokio::select! {
                end = self.clone().link_once(&mut backoff) => end,
                _ = cancel.cancelled() => LinkEnd::Cancelled,
            };
            let wait = match end {
                LinkEnd::Cancelled => break,
                LinkEnd::Dropped | LinkEnd::Failed => backoff.next_wait(),
            };
            tracing::debug!(?wait, "reconnecting after back-off");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => break,
            }
        }
        for token in self.running.lock().expect("running poisoned").values() {
            token.cancel();
        }
        tracing::info!("agent stopped");
    }

    async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(self.cfg.center.clone())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect()
            .await
    }

    async fn link_once(self: Arc<Self>, backoff: &mut Backoff) -> LinkEnd {
        let channel = match self.channel().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(center = %self.cfg.center, error = %e, "cannot reach the center");
                return LinkEnd::Failed;
            }
        };
        let mut client = AgentLinkClient::new(channel.clone());
        let credential = match self.read_credential() {
            Some(c) => c,
            None => {
                let req = EnrollRequest {
                    token: self.cfg.token.clone(),
                    ip: self.cfg.ip.clone(),
                    asset: self.cfg.asset.clone(),
                };
                match client.enroll(req).await {
                    Ok(r) => {
                        let secret = r.into_inner().credential;
                        if let Err(e) = self.write_credential(&secret) {
                            tracing::error!(error = %e, "cannot store the credential");
                            return LinkEnd::Failed;
                        }
                        tracing::info!(ip = %self.cfg.ip, "enrolled with the center");
                        secret
                    }
                    Err(s) => {
                        tracing::error!(ip = %self.cfg.ip, code = ?s.code(), reason = %s.message(), "enrollment refused");
                        return LinkEnd::Failed;
                    }
                }
            }
        };

        // An install or removal that finishes after the Hello is reported at once, not at the
        // next beat.
        let mut app_changes = self.apps.watch_changes();
        let (tx, rx) = mpsc::channel::<AgentMessage>(OUTBOUND_BUFFER);
        let hello = Hello {
            asset: self.cfg.asset.clone(),
            version: VERSION.into(),
            apps: self.apps(),
        };
        let _ = tx.try_send(AgentMessage {
            body: Some(agent_message::Body::Hello(hello)),
        });
        let mut req = Request::new(ReceiverStream::new(rx));
        let md = req.metadata_mut();
        match (self.cfg.ip.parse(), format!("Bearer {credential}").parse()) {
            (Ok(ip), Ok(bearer)) => {
                md.insert(elves_proto::IP_HEADER, ip);
                md.insert("authorization", bearer);
            }
            _ => {
                tracing::error!("the ip or the stored credential is not a valid header value");
                return LinkEnd::Failed;
            }
        }
        let mut inbound = match client.link(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                if s.code() == Code::Unauthenticated {
                    // The center does not know this ip (its store was reset): enroll again.
                    tracing::warn!(reason = %s.message(), "the center does not know this agent; enrolling again");
                    let _ = std::fs::remove_file(self.credential_path());
                } else {
                    tracing::error!(code = ?s.code(), reason = %s.message(), "link refused");
                }
                return LinkEnd::Failed;
            }
        };
        tracing::info!(center = %self.cfg.center, ip = %self.cfg.ip, "linked to the center");
        backoff.reset();
        *self.current.lock().expect("current poisoned") = Some(tx.clone());
        self.apps.set_fetcher(Some(Fetcher {
            channel,
            ip: self.cfg.ip.clone(),
            credential,
        }));
        // Results finished while the link was down (or before a restart) go up first.
        self.replay_spool(&tx);

        let mut beat = tokio::time::interval(Duration::from_secs(self.cfg.heartbeat.interval_secs));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await; // The Hello was the first heartbeat.
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => self.clone().on_message(m, &tx),
                    Ok(None) => {
                        tracing::warn!("the center closed the link");
                        return LinkEnd::Dropped;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the link failed");
                        return LinkEnd::Dropped;
                    }
                },
                _ = beat.tick() => {
                    self.send_heartbeat(&tx);
                    // Results the center has not acknowledged yet are offered again.
                    self.replay_spool(&tx);
                }
                Ok(()) = app_changes.changed() => self.send_heartbeat(&tx),
            }
        }
    }

    /// Sends the installed apps and their install errors up the link.
    fn send_heartbeat(&self, tx: &mpsc::Sender<AgentMessage>) {
        let hb = Heartbeat {
            apps: self.apps(),
            errors: self.apps.errors().into_iter().collect(),
        };
        let msg = AgentMessage {
            body: Some(agent_message::Body::Heartbeat(hb)),
        };
        if tx.try_send(msg).is_err() {
            tracing::warn!("heartbeat not sent: the link is congested");
        }
    }

    fn on_message(self: Arc<Self>, m: CenterMessage, tx: &mpsc::Sender<AgentMessage>) {
        match m.body {
            Some(center_message::Body::Run(run)) => {
                // The center may send a run again (recovery): never run it twice.
                if !run.sync {
                    if let Some(done) = self.spool.get(&run.run_id) {
                        let _ = tx.try_send(result_message(done));
                        return;
                    }
                    if self.was_acked(&run.run_id) {
                        tracing::debug!(run_id = %run.run_id, "redelivery of an acknowledged run ignored");
                        return;
                    }
                }
                let token = CancellationToken::new();
                {
                    let mut running = self.running.lock().expect("running poisoned");
                    if running.contains_key(&run.run_id) {
                        return;
                    }
                    running.insert(run.run_id.clone(), token.clone());
                }
                let tx = tx.clone();
                // Every log line of the run carries the API request's id (a str field: quoted
                // and escaped by the formatter, whatever the center sent).
                let span = match run.request_id.as_str() {
                    "" => tracing::Span::none(),
                    rid => tracing::info_span!("run", rid),
                };
                tokio::spawn(async move { self.run_job(run, token, tx).await }.instrument(span));
            }
            Some(center_message::Body::Cancel(c)) => {
                let token = self
                    .running
                    .lock()
                    .expect("running poisoned")
                    .get(&c.run_id)
                    .cloned();
                if let Some(t) = &token {
                    t.cancel();
                }
                let answer = Cancelled {
                    run_id: c.run_id,
                    found: token.is_some(),
                };
                let _ = tx.try_send(AgentMessage {
                    body: Some(agent_message::Body::Cancelled(answer)),
                });
            }
            Some(center_message::Body::Ack(a)) => {
                self.spool.remove(&a.run_id);
                self.remember_ack(a.run_id);
            }
            Some(center_message::Body::Desired(d)) => {
                self.apps
                    .set_desired(d.apps.into_iter().collect::<BTreeMap<_, _>>());
            }
            Some(center_message::Body::Welcome(_)) | None => {}
        }
    }

    /// Sends every spooled result again (after a reconnect, and at each heartbeat).
    fn replay_spool(&self, tx: &mpsc::Sender<AgentMessage>) {
        for done in self.spool.all() {
            if tx.try_send(result_message(done)).is_err() {
                break;
            }
        }
    }

    fn was_acked(&self, run_id: &str) -> bool {
        self.acked
            .lock()
            .expect("acked poisoned")
            .0
            .contains(run_id)
    }

    fn remember_ack(&self, run_id: String) {
        let mut acked = self.acked.lock().expect("acked poisoned");
        let (set, order) = &mut *acked;
        if set.insert(run_id.clone()) {
            order.push_back(run_id);
            if order.len() > ACKED_MEMORY
                && let Some(old) = order.pop_front()
            {
                set.remove(&old);
            }
        }
    }

    /// Takes back the runs of the journal: spooled ones are forgotten, ended ones spooled,
    /// running workers adopted (see [`crate::runs`]).
    async fn recover(self: Arc<Self>) {
        for rec in self.journal.all() {
            if self.spool.contains(&rec.run_id) {
                self.journal.finish(&rec);
                continue;
            }
            match crate::runs::classify(&self.exec, &self.journal, &rec) {
                Found::NeverStarted(o) | Found::Ended(o) => {
                    tracing::info!(run_id = %rec.run_id, flag = o.flag, "run of a previous agent collected");
                    self.settle(&rec, o).await;
                }
                Found::Running { pid, start_ticks } => {
                    tracing::info!(run_id = %rec.run_id, pid, "worker of a previous agent adopted");
                    let token = CancellationToken::new();
                    self.running
                        .lock()
                        .expect("running poisoned")
                        .insert(rec.run_id.clone(), token.clone());
                    let me = self.clone();
                    tokio::spawn(async move {
                        let o = crate::runs::adopt(
                            &me.exec,
                            &me.journal,
                            &rec,
                            pid,
                            start_ticks,
                            token,
                        )
                        .await;
                        let msg = me.settle(&rec, o).await;
                        me.send_now(&rec.run_id, msg, None).await;
                    });
                }
            }
        }
    }

    /// An asynchronous run ended: its result goes to the spool, then the run leaves the
    /// journal (unless it could not be spooled; a run that ended waiting for its worker slot was
    /// never recorded, and has nothing to remove) and the running set. Returns the message to send.
    async fn settle(&self, rec: &Record, o: Outcome) -> AgentMessage {
        let done = Spooled {
            run_id: rec.run_id.clone(),
            id: rec.id.clone(),
            ip: rec.ip.clone(),
            kind: rec.kind.clone(),
            mode: rec.mode.clone(),
            app: rec.app.clone(),
            func: rec.func.clone(),
            param: rec.param.clone(),
            timeout: rec.timeout,
            proxy: rec.proxy.clone(),
            flag: o.flag,
            costtime: o.costtime_ms,
            result: o.message,
            request_id: rec.request_id.clone(),
        };
        // Written before it is sent; removed when the center acknowledges it.
        let spooled = self.spool.put(&done).await;
        self.running
            .lock()
            .expect("running poisoned")
            .remove(&rec.run_id);
        match spooled {
            Ok(()) => self.journal.finish(rec),
            Err(e) => {
                tracing::error!(run_id = %rec.run_id, error = %e, "cannot spool a result; sending it unspooled");
            }
        }
        result_message(done)
    }

    /// Sends a result up `tx` if given and still open, else up the link that is up now, if
    /// any (else it waits in the spool for the next link).
    async fn send_now(
        &self,
        run_id: &str,
        msg: AgentMessage,
        tx: Option<&mpsc::Sender<AgentMessage>>,
    ) {
        let msg = match tx {
            Some(tx) => match tx.send(msg).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(msg)) => msg,
            },
            None => msg,
        };
        let current = self.current.lock().expect("current poisoned").clone();
        let sent = match current {
            Some(now) if tx.is_none_or(|tx| !now.same_channel(tx)) => now.send(msg).await.is_ok(),
            _ => false,
        };
        if !sent {
            tracing::info!(%run_id, "result not sent now: no link is up; it waits in the spool");
        }
    }

    async fn run_job(&self, run: RunJob, token: CancellationToken, tx: mpsc::Sender<AgentMessage>) {
        let ins = run.ins.unwrap_or_default();
        let job = Job {
            id: ins.id.clone(),
            kind: ins.r#type.clone(),
            mode: if ins.r#type == "rt" {
                "NP".into()
            } else {
                ins.mode.clone()
            },
            app: ins.app.clone(),
            func: ins.func.clone(),
            param: ins.param.clone(),
            timeout_secs: u64::from(ins.timeout),
            proxy: ins.proxy.clone(),
        };
        let installed = self.apps.is_installed(&job.app);
        if !run.sync {
            return self
                .run_async(run.run_id, run.request_id, ins, job, installed, token, tx)
                .await;
        }
        let outcome = self.exec.run(&job, installed, token).await;
        tracing::info!(
            run_id = %run.run_id, task = %ins.id, app = %job.app, func = %job.func,
            flag = outcome.flag, costtime_ms = outcome.costtime_ms, "job finished"
        );
        self.hooks.finished(&job, &ins.ip, &outcome);
        let done = Spooled {
            run_id: run.run_id.clone(),
            id: ins.id,
            ip: ins.ip,
            kind: ins.r#type,
            mode: job.mode,
            app: job.app,
            func: job.func,
            param: job.param,
            timeout: ins.timeout,
            proxy: job.proxy,
            flag: outcome.flag,
            costtime: outcome.costtime_ms,
            result: outcome.message,
            request_id: run.request_id.clone(),
        };
        let mut msg = result_message(done);
        if let Some(agent_message::Body::Result(r)) = &mut msg.body {
            r.sync = true;
        }
        self.running
            .lock()
            .expect("running poisoned")
            .remove(&run.run_id);
        if tx.send(msg).await.is_err() {
            tracing::info!(run_id = %run.run_id, "synchronous result not sent: the link it came on is gone");
        }
    }

    /// An asynchronous run: recorded in the journal before its worker starts, output to
    /// files, result spooled (see [`crate::runs`]).
    #[allow(clippy::too_many_arguments)]
    async fn run_async(
        &self,
        run_id: String,
        request_id: String,
        ins: Instruct,
        job: Job,
        installed: bool,
        token: CancellationToken,
        tx: mpsc::Sender<AgentMessage>,
    ) {
        let mut rec = Record {
            run_id: run_id.clone(),
            id: ins.id,
            ip: ins.ip,
            kind: ins.r#type,
            mode: job.mode.clone(),
            app: job.app.clone(),
            func: job.func.clone(),
            param: job.param.clone(),
            timeout: ins.timeout,
            proxy: job.proxy.clone(),
            began_unix_ms: crate::runs::unix_ms(),
            pid: None,
            start_ticks: None,
            slot: None,
            request_id,
            out_from: 0,
            err_from: 0,
        };
        // The run waits for its worker slot unrecorded: an agent killed meanwhile never
        // started it, so the center's redelivery runs it. It then holds the slot until it
        // leaves the journal (after `settle`), not only while the worker runs, so the journal
        // holds at most one record per worker slot: runs that ended but wait for the spool
        // would otherwise let new workers start and take ever more journal slots (each new
        // slot three file creations) while the agent is behind.
        let mut permit = None;
        let outcome = match self.exec.admit(&job, installed, &token).await {
            Err(o) => o,
            Ok(mut admitted) => {
                permit = admitted.take_permit();
                rec.began_unix_ms = crate::runs::unix_ms();
                match (self.journal.begin(&mut rec), self.journal.files(&rec)) {
                    (Ok(()), Some(files)) => {
                        let journal = &self.journal;
                        self.exec
                            .run_to_files(&job, admitted, &files, token, |pid| {
                                if let Err(e) = journal.started(&mut rec, pid) {
                                    tracing::error!(%run_id, error = %e, "cannot record a worker's pid");
                                }
                            })
                            .await
                    }
                    (Err(e), _) => {
                        Outcome::fail(format!("app exec error : cannot record the run: {e}"), 0)
                    }
                    (_, None) => Outcome::fail("app exec error : invalid run id", 0),
                }
            }
        };
        tracing::info!(
            %run_id, task = %rec.id, app = %job.app, func = %job.func, flag = outcome.flag,
            costtime_ms = outcome.costtime_ms, "job finished"
        );
        // Dashboard record, and a mode "P" run's delivery to the app's processor.
        self.hooks.finished(&job, &rec.ip, &outcome);
        let msg = self.settle(&rec, outcome).await;
        drop(permit);
        self.send_now(&run_id, msg, Some(&tx)).await;
    }
}

/// The message carrying a result up the link.
fn result_message(done: Spooled) -> AgentMessage {
    let ins = Instruct {
        id: done.id,
        ip: done.ip,
        r#type: done.kind,
        mode: done.mode,
        app: done.app,
        func: done.func,
        param: done.param,
        timeout: done.timeout,
        proxy: done.proxy,
    };
    let r = JobResult {
        run_id: done.run_id,
        ins: Some(ins),
        flag: done.flag,
        costtime: done.costtime,
        result: done.result,
        sync: false,
        request_id: done.request_id,
    };
    AgentMessage {
        body: Some(agent_message::Body::Result(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An async result carries the request id of the call that started its run, also when
    /// it is sent again from the spool after a restart (the spool keeps it; older spooled
    /// results without one read as empty).
    #[tokio::test]
    async fn async_results_name_their_request_id_also_from_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let done = Spooled {
            run_id: "00000000000000A7".into(),
            id: "00000000000000B7".into(),
            ip: "10.0.0.7".into(),
            kind: "queue".into(),
            mode: "NP".into(),
            app: "app".into(),
            func: "f".into(),
            param: String::new(),
            timeout: 5,
            proxy: String::new(),
            flag: 1,
            costtime: 3,
            result: "ok".into(),
            request_id: "req-7".into(),
        };
        let spool = crate::spool::Spool::open(dir.path()).unwrap();
        spool.put(&done).await.unwrap();
        drop(spool);
        let again = crate::spool::Spool::open(dir.path()).unwrap();
        let replayed = again.all();
        assert_eq!(replayed, vec![done.clone()]);
        for (d, want) in [
            (replayed[0].clone(), "req-7"),
            (
                Spooled {
                    request_id: String::new(),
                    ..done
                },
                "",
            ),
        ] {
            match result_message(d).body {
                Some(agent_message::Body::Result(r)) => {
                    assert_eq!(r.request_id, want);
                    assert!(!r.sync);
                }
                other => panic!("not a result: {other:?}"),
            }
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let ceilings: Vec<u64> = (0..10)
            .map(|_| {
                let c = b.ceiling();
                let w = b.next_wait();
                assert!(
                    w >= Duration::from_millis(200) && w <= c,
                    "{w:?} not in [200ms, {c:?}]"
                );
                c.as_millis() as u64
            })
            .collect();
        assert_eq!(
            ceilings,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(200));
    }

    #[test]
    fn backoff_is_jittered() {
        let mut waits = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
            for _ in 0..5 {
                b.next_wait();
            }
            waits.insert(b.next_wait());
        }
        assert!(
            waits.len() > 10,
            "waits after the same number of failures should differ: {waits:?}"
        );
    }
}
