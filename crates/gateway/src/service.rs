use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use elves_bus::Bus;
use elves_proto::agent_link_server::{AgentLink, AgentLinkServer};
use elves_proto::{
    Ack, AgentMessage, CenterMessage, Chunk, DesiredApp, DesiredApps, EnrollReply, EnrollRequest,
    FetchRequest, Instruct, JobResult, RunJob, Welcome, agent_message, center_message,
};
use elves_rpc::gateway::{AppsChanged, Cancel, Dispatch, WorkerOutcome};
use elves_rpc::scheduler::RunResult;
use elves_store::{AgentRecord, Credential, PackageStore, Store};
use elves_types::validate::is_ipv4;
use elves_types::{ApiError, Clock, ErrorCode, Id, SystemClock};
use futures::Stream;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::desired::Why;
use crate::links::Links;
use crate::registry::Registry;

/// How many messages may wait to go down one agent's stream.
const LINK_BUFFER: usize = 1024;
/// How long an agent has to send its Hello.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);
/// How long an agent has to answer a cancel.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// How long the module that asked for a run has to store its result.
const RESULT_WAIT: Duration = Duration::from_secs(15);
/// How long a synchronous job with no timeout may wait at most.
const MAX_SYNC_WAIT: Duration = Duration::from_secs(86_400 + 60);
/// How long the heartbeat module has to say which apps an agent should run.
const DESIRED_WAIT: Duration = Duration::from_secs(5);
/// The size of one package chunk sent to an agent.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// How many chunks of one download may wait to be sent.
const CHUNK_BUFFER: usize = 4;
/// How many package downloads may run at once, and how long one may wait for its turn.
const MAX_DOWNLOADS: usize = 16;
const DOWNLOAD_QUEUE_WAIT: Duration = Duration::from_secs(30);

/// The gateway's settings. (No `Debug`: it holds the enrollment token.)
#[derive(Clone)]
pub struct Options {
    /// Where agents connect.
    pub listen: SocketAddr,
    /// The enrollment token agents present (compared in constant time).
    pub token: String,
    /// This gateway's name, recorded as the agents' `connected_to`.
    pub instance: String,
    /// How often agents should heartbeat.
    pub heartbeat_secs: u32,
    /// The content-addressed package store (`[supervisor] packages_dir`) agents download from.
    pub packages_dir: PathBuf,
}

/// The running gateway.
pub struct Service {
    listener: TcpListener,
    state: Arc<State>,
}

struct State {
    opts: Options,
    store: Store,
    registry: Registry,
    bus: Bus,
    links: Links,
    clock: SystemClock,
    packages: PackageStore,
    downloads: Arc<Semaphore>,
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_secret() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    hex::encode(b)
}

impl Service {
    /// Binds the agents' listener and offers `Dispatch` on the bus.
    pub async fn bind(opts: Options, store: Store, bus: &Bus) -> std::io::Result<Service> {
        let listener = TcpListener::bind(opts.listen).await?;
        let packages = PackageStore::open(&opts.packages_dir)?;
        let bus = bus.for_module(elves_rpc::module::GATEWAY);
        let state = Arc::new(State {
            opts,
            registry: Registry::new(store.clone()),
            store,
            bus: bus.clone(),
            links: Links::default(),
            clock: SystemClock,
            packages,
            downloads: Arc::new(Semaphore::new(MAX_DOWNLOADS)),
        });
        let s = state.clone();
        bus.serve(move |d: Dispatch| {
            let s = s.clone();
            async move { s.dispatch(d).await }
        });
        let s = state.clone();
        bus.serve(move |c: Cancel| {
            let s = s.clone();
            async move { s.cancel(c).await }
        });
        let s = state.clone();
        bus.serve(move |c: AppsChanged| {
            let s = s.clone();
            async move { s.apps_changed(c).await }
        });
        Ok(Service { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves agents until `cancel` fires (and writes the heartbeats still waiting).
    pub async fn run(self, cancel: CancellationToken) -> Result<(), tonic::transport::Error> {
        let s = self.state.clone();
        let flusher = tokio::spawn({
            let cancel = cancel.clone();
            async move { s.registry.run(cancel).await }
        });
        let svc = AgentLinkServer::new(Handler(self.state.clone()));
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .tcp_nodelay(true)
            .add_service(svc)
            .serve_with_incoming_shutdown(
                // `tcp_nodelay` on the builder does not apply to an incoming stream we pass in:
                // set it here, or Nagle holds each job until the agent's delayed ACK (~40 ms).
                tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                cancel.clone().cancelled_owned(),
            )
            .await;
        // The server also ends on an error: stop the flusher then too, after its last flush.
        cancel.cancel();
        let _ = flusher.await;
        served
    }
}

impl State {
    async fn dispatch(&self, d: Dispatch) -> Result<Option<WorkerOutcome>, ApiError> {
        let ip = d.instruct.ip.clone();
        let Some(link) = self.links.get(&ip) else {
            tracing::info!(%ip, run_id = %d.run_id, "dispatch refused: agent not connected");
            return Err(ErrorCode::SendJobFail.into());
        };
        let timeout = d.instruct.timeout;
        let ins = &d.instruct;
        let msg = CenterMessage {
            body: Some(center_message::Body::Run(RunJob {
                run_id: d.run_id.to_string(),
                ins: Some(Instruct {
                    id: ins.id.to_string(),
                    ip: ins.ip.clone(),
                    r#type: ins.kind.clone(),
                    mode: ins.mode.clone(),
                    app: ins.app.clone(),
                    func: ins.func.clone(),
                    param: ins.param.clone(),
                    timeout,
                    proxy: ins.proxy.clone(),
                }),
                sync: d.sync,
                request_id: elves_bus::request_id_or_empty(),
            })),
        };
        let waiter = d
            .sync
            .then(|| self.links.wait_for(d.run_id, &ip, link.conn));
        if !crate::links::deliver(&link.tx, msg, crate::links::LINK_FULL_WAIT).await {
            self.links.forget(&d.run_id);
            tracing::warn!(%ip, run_id = %d.run_id, "dispatch failed: the agent's link stayed full or closed");
            return Err(ErrorCode::SendJobFail.into());
        }
        let Some(waiter) = waiter else {
            return Ok(None);
        };
        // The agent kills the worker at its timeout and reports; allow for the trip back.
        let wait = if timeout == 0 {
            MAX_SYNC_WAIT
        } else {
            Duration::from_secs(u64::from(timeout) + 10)
        };
        match tokio::time::timeout(wait, waiter).await {
            Ok(Ok(outcome)) => Ok(Some(outcome)),
            Ok(Err(_)) => {
                tracing::warn!(%ip, run_id = %d.run_id, "the agent's link dropped while its job ran");
                Err(ErrorCode::SendJobFail.into())
            }
            Err(_) => {
                self.links.forget(&d.run_id);
                tracing::warn!(%ip, run_id = %d.run_id, "no result from the agent in time");
                Err(ErrorCode::SendJobFail.into())
            }
        }
    }

    async fn cancel(&self, c: Cancel) -> Result<bool, ApiError> {
        let Some(link) = self.links.get(&c.ip) else {
            return Err(ErrorCode::SendJobFail.into());
        };
        let answer = self.links.wait_for_cancel(c.run_id, &c.ip, link.conn);
        let msg = CenterMessage {
            body: Some(center_message::Body::Cancel(elves_proto::Cancel {
                run_id: c.run_id.to_string(),
            })),
        };
        if !crate::links::deliver(&link.tx, msg, crate::links::LINK_FULL_WAIT).await {
            self.links.forget_cancel(&c.run_id);
            return Err(ErrorCode::SendJobFail.into());
        }
        match tokio::time::timeout(CANCEL_WAIT, answer).await {
            Ok(Ok(found)) => Ok(found),
            _ => {
                self.links.forget_cancel(&c.run_id);
                Err(ErrorCode::SendJobFail.into())
            }
        }
    }

    /// Sends the apps each affected, linked agent should run now.
    async fn apps_changed(&self, c: AppsChanged) {
        let ips = match c.ips {
            Some(ips) => ips,
            None => self.links.ips(),
        };
        let pushes = ips.iter().map(|ip| self.push_desired(ip, Why::Changed));
        futures::future::join_all(pushes).await;
    }

    /// The apps the agent at `ip` should run, from the heartbeat module.
    async fn desired(
        &self,
        ip: &str,
    ) -> Option<BTreeMap<String, elves_rpc::heartbeat::DesiredApp>> {
        let ask = elves_rpc::heartbeat::DesiredApps { ip: ip.to_owned() };
        match self.bus.call(ask, DESIRED_WAIT).await {
            Ok(Ok(apps)) => Some(apps),
            Ok(Err(e)) => {
                tracing::warn!(%ip, error = %e, "cannot tell which apps the agent should run");
                None
            }
            Err(e) => {
                tracing::warn!(%ip, error = %e, "no answer on which apps the agent should run");
                None
            }
        }
    }

    /// Computes `DesiredApps` and sends it down the agent's current link, if it has one and
    /// `why` calls for it (`crate::desired`). Pushes to one link are serialized, so an older
    /// answer never overtakes a newer one.
    async fn push_desired(&self, ip: &str, why: Why) {
        let Some(link) = self.links.get(ip) else {
            return;
        };
        let _turn = link.push.lock().await;
        let Some(apps) = self.desired(ip).await else {
            return;
        };
        if !link
            .sent
            .lock()
            .expect("sent poisoned")
            .should_send(why, &apps)
        {
            return;
        }
        let wire = apps
            .clone()
            .into_iter()
            .map(|(app, d)| {
                let d = DesiredApp {
                    version: d.version,
                    sha256: d.sha256.unwrap_or_default(),
                    size: d.size,
                };
                (app, d)
            })
            .collect();
        let msg = CenterMessage {
            body: Some(center_message::Body::Desired(DesiredApps { apps: wire })),
        };
        let queued = link.tx.try_send(msg).is_ok();
        let mut sent = link.sent.lock().expect("sent poisoned");
        if queued {
            sent.sent(apps, std::time::Instant::now());
        } else {
            sent.lost();
            tracing::warn!(%ip, "desired apps not sent: the agent's link is full or closed");
        }
    }

    /// The package file with this digest, when it belongs to one of the apps `ip` should run.
    async fn package_for(&self, ip: &str, sha256: &str) -> Result<PathBuf, Status> {
        let sha = sha256.to_ascii_lowercase();
        let desired = self
            .desired(ip)
            .await
            .ok_or_else(|| Status::unavailable("cannot tell which apps this agent should run"))?;
        let assigned = desired.values().any(|d| {
            d.sha256
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(&sha))
        });
        if !assigned {
            tracing::warn!(%ip, sha256 = %sha, "refused package download: not a package of this agent's apps");
            return Err(Status::not_found("no such package for this agent"));
        }
        self.packages.path(&sha).ok_or_else(|| {
            tracing::error!(%ip, sha256 = %sha, "an assigned package is missing from the package store");
            Status::not_found("the package is missing from the center's package store")
        })
    }

    /// Routes an agent's result: to the waiting rt call, or (asynchronous) through the
    /// scheduler to the module that asked for it. Returns whether to acknowledge it.
    async fn on_result(&self, ip: &str, r: JobResult) -> bool {
        let Some(run_id) = Id::parse(&r.run_id) else {
            return true;
        };
        let outcome = WorkerOutcome {
            flag: r.flag,
            message: r.result,
            costtime_ms: r.costtime,
        };
        if r.sync {
            if !self.links.complete(&run_id, ip, outcome) {
                tracing::debug!(%ip, %run_id, "rt result for no waiting call");
            }
            return true;
        }
        let ins = r.ins.unwrap_or_default();
        let Some(id) = Id::parse(&ins.id) else {
            tracing::warn!(%ip, %run_id, "async result without a valid job id dropped");
            return true;
        };
        let rr = RunResult {
            run_id,
            id,
            kind: ins.r#type,
            ip: ip.to_owned(),
            outcome,
        };
        match self.bus.call(rr, RESULT_WAIT).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(%ip, %run_id, error = %e, "result not stored yet; the agent keeps it");
                false
            }
            Err(e) => {
                tracing::warn!(%ip, %run_id, error = %e, "result not handed over; the agent keeps it");
                false
            }
        }
    }

    /// Checks the link's metadata against the credential pinned at enrollment.
    async fn authenticate(&self, ip: &str, bearer: &str) -> Result<(), Status> {
        if !is_ipv4(ip) {
            return Err(Status::invalid_argument(
                "x-elves-ip must be a dotted IPv4 address",
            ));
        }
        let pinned = self
            .store
            .credential(ip)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let Some(pinned) = pinned else {
            tracing::warn!(%ip, "refused agent link: this ip is not enrolled");
            return Err(Status::unauthenticated(
                "this ip is not enrolled; enroll first",
            ));
        };
        let presented = digest(bearer);
        if !bool::from(presented.as_bytes().ct_eq(pinned.secret_sha256.as_bytes())) {
            tracing::warn!(%ip, "refused agent link: the credential does not match the one pinned to this ip at enrollment");
            return Err(Status::permission_denied(
                "this ip is held by another credential; an operator must release it (elves admin agent release IP)",
            ));
        }
        Ok(())
    }

    /// The registry record of a Hello or heartbeat received now.
    fn record_of(
        &self,
        ip: &str,
        asset: &str,
        version: &str,
        apps: &std::collections::HashMap<String, String>,
    ) -> AgentRecord {
        let now = self.clock.now_ms();
        AgentRecord {
            ip: ip.to_owned(),
            asset: if asset.is_empty() {
                ip.to_owned()
            } else {
                asset.to_owned()
            },
            version: version.to_owned(),
            apps: apps.iter().map(|(a, v)| (a.clone(), v.clone())).collect(),
            connected_to: self.opts.instance.clone(),
            last_heartbeat_ms: now,
            first_seen_ms: now,
        }
    }

    /// Keeps a heartbeat for the next batched write of the registry.
    fn heartbeat(&self, ip: &str, asset: &str, version: &str, h: &elves_proto::Heartbeat) {
        let rec = self.record_of(ip, asset, version, &h.apps);
        let errors: BTreeMap<String, String> = h
            .errors
            .iter()
            .map(|(a, e)| (a.clone(), e.clone()))
            .collect();
        for (app, error) in &errors {
            tracing::warn!(%ip, %app, %error, "the agent cannot install an app");
        }
        self.registry.heartbeat(rec, errors);
    }
}

struct Handler(Arc<State>);

type LinkStream = Pin<Box<dyn Stream<Item = Result<CenterMessage, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;

fn metadata<'a, T>(req: &'a Request<T>, key: &str) -> &'a str {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The agent's claimed ip and its bearer credential, from a request's metadata.
fn identity<T>(req: &Request<T>) -> (String, String) {
    let ip = metadata(req, elves_proto::IP_HEADER).to_owned();
    let bearer = metadata(req, "authorization")
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_owned();
    (ip, bearer)
}

/// Reads `file` into chunks of [`CHUNK_SIZE`] bytes, sending each as it is read.
async fn send_chunks(mut file: tokio::fs::File, tx: mpsc::Sender<Result<Chunk, Status>>) {
    loop {
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut filled = 0;
        while filled < CHUNK_SIZE {
            match file.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!(
                            "cannot read the package: {e}"
                        ))))
                        .await;
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        if tx.send(Ok(Chunk { data: buf })).await.is_err() || filled < CHUNK_SIZE {
            return;
        }
    }
}

#[tonic::async_trait]
impl AgentLink for Handler {
    async fn enroll(&self, req: Request<EnrollRequest>) -> Result<Response<EnrollReply>, Status> {
        let s = &self.0;
        let r = req.into_inner();
        if !bool::from(r.token.as_bytes().ct_eq(s.opts.token.as_bytes())) {
            tracing::warn!(ip = %r.ip, "refused enrollment: wrong enrollment token");
            return Err(Status::unauthenticated("wrong enrollment token"));
        }
        if !is_ipv4(&r.ip) {
            return Err(Status::invalid_argument("ip must be a dotted IPv4 address"));
        }
        let secret = random_secret();
        let cred = Credential {
            ip: r.ip.clone(),
            secret_sha256: digest(&secret),
            asset: if r.asset.is_empty() {
                r.ip.clone()
            } else {
                r.asset.clone()
            },
            enrolled_at_ms: s.clock.now_ms(),
        };
        match s.store.pin_credential(&cred).await {
            Ok(true) => {
                tracing::info!(ip = %r.ip, asset = %cred.asset, "agent enrolled");
                Ok(Response::new(EnrollReply { credential: secret }))
            }
            Ok(false) => {
                tracing::warn!(ip = %r.ip, asset = %r.asset, "refused enrollment: this ip is already held by another credential");
                Err(Status::permission_denied(format!(
                    "ip {ip} is already enrolled with another credential; an operator must release it (elves admin agent release {ip})",
                    ip = r.ip
                )))
            }
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    type LinkStream = LinkStream;

    async fn link(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<LinkStream>, Status> {
        let s = self.0.clone();
        let (ip, bearer) = identity(&req);
        s.authenticate(&ip, &bearer).await?;
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_DEADLINE, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                body: Some(agent_message::Body::Hello(h)),
            }))) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on a link must be a Hello",
                ));
            }
        };
        let rec = s.record_of(&ip, &hello.asset, &hello.version, &hello.apps);
        if let Err(e) = s.registry.hello(&rec).await {
            tracing::warn!(%ip, error = %e, "could not record the agent's hello");
        }

        let (tx, rx) = mpsc::channel(LINK_BUFFER);
        let welcome = CenterMessage {
            body: Some(center_message::Body::Welcome(Welcome {
                center_version: env!("CARGO_PKG_VERSION").into(),
                heartbeat_interval_secs: s.opts.heartbeat_secs,
            })),
        };
        let _ = tx.try_send(welcome);
        let (link, replaced) = s.links.attach(&ip, tx.clone());
        let conn = link.conn;
        if !replaced {
            elves_telemetry::agent_link(true);
        }
        tracing::info!(%ip, asset = %hello.asset, version = %hello.version, replaced, "agent linked");
        {
            let (s, ip) = (s.clone(), ip.clone());
            tokio::spawn(async move { s.push_desired(&ip, Why::Welcome).await });
        }
        // Its running queue runs are reconciled at once (no handler: no queue module here).
        let _ = s.bus.cast(elves_rpc::queue::AgentLinked { ip: ip.clone() });

        tokio::spawn(async move {
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(%ip, error = %e, "agent link error");
                        break;
                    }
                };
                match msg.body {
                    Some(agent_message::Body::Result(r)) => {
                        // Handed over concurrently: a slow module must not hold up the link.
                        let (s, ip, tx) = (s.clone(), ip.clone(), tx.clone());
                        let rid = r.request_id.clone();
                        tokio::spawn(elves_bus::with_request_id_owned(rid, async move {
                            let run_id = r.run_id.clone();
                            if s.on_result(&ip, r).await {
                                let ack = Ack { run_id };
                                let ack = CenterMessage {
                                    body: Some(center_message::Body::Ack(ack)),
                                };
                                let _ = tx.try_send(ack);
                            }
                        }));
                    }
                    Some(agent_message::Body::Cancelled(c)) => {
                        if let Some(run_id) = Id::parse(&c.run_id) {
                            s.links.cancelled(&run_id, &ip, c.found);
                        }
                    }
                    Some(agent_message::Body::Heartbeat(h)) => {
                        s.heartbeat(&ip, &hello.asset, &hello.version, &h);
                        let push = link
                            .sent
                            .lock()
                            .expect("sent poisoned")
                            .heartbeat_needs_push(&h.apps, std::time::Instant::now());
                        if push {
                            let (s, ip) = (s.clone(), ip.clone());
                            tokio::spawn(async move { s.push_desired(&ip, Why::Heartbeat).await });
                        }
                    }
                    Some(agent_message::Body::Hello(_)) | None => {}
                }
            }
            if s.links.detach(&ip, conn) {
                elves_telemetry::agent_link(false);
                let relinked = || s.links.get(&ip).is_some();
                if let Err(e) = s.registry.unlinked(&ip, || !relinked()).await {
                    tracing::warn!(%ip, error = %e, "could not record the agent's disconnection");
                }
                tracing::info!(%ip, "agent unlinked");
            }
        });

        let out = ReceiverStream::new(rx);
        let out = futures::StreamExt::map(out, Ok);
        Ok(Response::new(Box::pin(out) as LinkStream))
    }

    type FetchPackageStream = ChunkStream;

    async fn fetch_package(
        &self,
        req: Request<FetchRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let s = self.0.clone();
        let (ip, bearer) = identity(&req);
        s.authenticate(&ip, &bearer).await?;
        let sha256 = req.into_inner().sha256;
        let path = s.package_for(&ip, &sha256).await?;
        let permit = tokio::time::timeout(DOWNLOAD_QUEUE_WAIT, s.downloads.clone().acquire_owned())
            .await
            .map_err(|_| Status::resource_exhausted("too many package downloads; try again later"))?
            .map_err(|_| Status::unavailable("the gateway is stopping"))?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(format!("cannot open the package: {e}")))?;
        tracing::info!(%ip, %sha256, "package download");
        let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
        tokio::spawn(async move {
            send_chunks(file, tx).await;
            drop(permit);
        });
        Ok(Response::new(
            Box::pin(ReceiverStream::new(rx)) as ChunkStream
        ))
    }
}
