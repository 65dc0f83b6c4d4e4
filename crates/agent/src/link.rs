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
use crate::exec::{Executor, Job};
use crate::spool::{Spool, Spooled};

/// The agent's version, reported to the center.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How many messages may wait to go up the stream.
const OUTBOUND_BUFFER: usize = 1024;

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
    /// The sender of the link that is up now, if any: a job that outlives the link it came
    /// on sends its result on this one.
    current: Mutex<Option<mpsc::Sender<AgentMessage>>>,
}

enum LinkEnd {
    /// The link was up and then ended: reconnect soon.
    Dropped,
    /// The link could not be set up: back off.
    Failed,
    Cancelled,
}

impl Agent {
    pub fn new(cfg: AgentConfig, exec: Executor, apps: Arc<Distributor>, spool: Spool) -> Agent {
        Agent {
            cfg,
            exec,
            apps,
            running: Mutex::new(HashMap::new()),
            spool,
            current: Mutex::new(None),
        }
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
                    let hb = Heartbeat {
                        apps: self.apps(),
                        errors: self.apps.errors().into_iter().collect(),
                    };
                    if tx.try_send(AgentMessage { body: Some(agent_message::Body::Heartbeat(hb)) }).is_err() {
                        tracing::warn!("heartbeat not sent: the link is congested");
                    }
                    // Results the center has not acknowledged yet are offered again.
                    self.replay_spool(&tx);
                }
            }
        }
    }

    fn on_message(self: Arc<Self>, m: CenterMessage, tx: &mpsc::Sender<AgentMessage>) {
        match m.body {
            Some(center_message::Body::Run(run)) => {
                // The center may send a run again (recovery): never run it twice.
                if !run.sync
                    && let Some(done) = self.spool.get(&run.run_id)
                {
                    let _ = tx.try_send(result_message(done));
                    return;
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
            Some(center_message::Body::Ack(a)) => self.spool.remove(&a.run_id),
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
        let outcome = self.exec.run(&job, installed, token).await;
        tracing::info!(
            run_id = %run.run_id, app = %job.app, func = %job.func, flag = outcome.flag,
            costtime_ms = outcome.costtime_ms, "job finished"
        );
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
        };
        let mut msg = if run.sync {
            let mut m = result_message(done);
            if let Some(agent_message::Body::Result(r)) = &mut m.body {
                r.sync = true;
            }
            m
        } else {
            // Written before it is sent; removed when the center acknowledges it.
            if let Err(e) = self.spool.put(&done) {
                tracing::error!(run_id = %run.run_id, error = %e, "cannot spool a result; sending it unspooled");
            }
            result_message(done)
        };
        if let Some(agent_message::Body::Result(r)) = &mut msg.body {
            r.request_id = run.request_id.clone();
        }
        self.running
            .lock()
            .expect("running poisoned")
            .remove(&run.run_id);
        let Err(mpsc::error::SendError(msg)) = tx.send(msg).await else {
            return;
        };
        // The link the run came on is gone: an async result goes up the link that is up now,
        // if another one is (else it waits in the spool for the next link).
        let current = self.current.lock().expect("current poisoned").clone();
        let resent = match current {
            Some(now) if !run.sync && !now.same_channel(&tx) => now.send(msg).await.is_ok(),
            _ => false,
        };
        if !resent {
            tracing::info!(run_id = %run.run_id, sync = run.sync, "result not sent now: the link it came on is gone");
        }
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
        request_id: String::new(),
    };
    AgentMessage {
        body: Some(agent_message::Body::Result(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
