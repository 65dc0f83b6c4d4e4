//! App distribution on the agent: follows the center's `DesiredApps`.
//!
//! For every desired app whose installed version differs, the package is fetched over the
//! authenticated link channel (`FetchPackage`) into `data_dir/downloads/{sha256}.zip.part`,
//! its size and SHA-256 are verified, and it is installed with [`install::install`] (verified
//! again, extracted into a staging directory and swapped in atomically) in a blocking task
//! while the app's [`AppLocks`] guard is held, so the updates of one app never overlap. Apps
//! the center no longer assigns are removed with [`install::remove`], except the ones
//! pre-installed by the agent's own `[apps]` configuration, which always stay.
//!
//! The installed map (app → version) is what the agent reports in its heartbeats and what
//! decides whether a worker may run. The apps installed by distribution are persisted in
//! `data_dir/installed.json` (written atomically), so a restart keeps them; at start each entry
//! is checked against the version marker the installer wrote, and entries that do not match
//! the files are dropped (the next `DesiredApps` installs them again).
//!
//! Every finished install or removal, successful or not, bumps a counter the link watches
//! ([`Distributor::watch_changes`]): the link sends a heartbeat at once, so the center's agent
//! list shows the outcome within a moment rather than at the next periodic heartbeat.
//!
//! A replaced or removed tree that a running worker still uses is kept under a `.retired-`
//! name (see [`install`]); [`Distributor::run`] deletes it every [`REAP_EVERY`] once no
//! process uses it any more.
//!
//! A failed install or removal is logged at error level, kept as the app's `last_error`
//! (sent in every heartbeat until the app reaches its desired state) and retried with back-off
//! (2 s doubling to 5 min); the version installed before keeps working. An entry without a
//! SHA-256 (simple mode, no package in the center's store) can only be satisfied by an app
//! pre-installed at that version; otherwise it is an error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elves_proto::agent_link_client::AgentLinkClient;
use elves_proto::{DesiredApp, FetchRequest};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;

use crate::install::{self, AppLocks, Limits};

/// The first wait after a failed install; it doubles up to [`RETRY_CAP`].
pub const RETRY_BASE: Duration = Duration::from_secs(2);
pub const RETRY_CAP: Duration = Duration::from_secs(300);
/// How often retired trees still used by a running worker are looked at again.
pub const REAP_EVERY: Duration = Duration::from_secs(2);
/// The longest the center may stay silent in the middle of a download.
const CHUNK_IDLE: Duration = Duration::from_secs(30);

/// How to reach the center for downloads: the link's channel and identity.
#[derive(Clone)]
pub struct Fetcher {
    pub channel: Channel,
    pub ip: String,
    pub credential: String,
}

/// The wait before retry number `attempt` (0-based): 2 s, 4 s, 8 s … at most 5 min.
pub fn retry_wait(attempt: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(RETRY_CAP)
}

/// Back-off state of one app's target (version and package).
struct Retry {
    target: (String, String),
    attempt: u32,
    not_before: Instant,
}

/// What to do for one app.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Install(DesiredApp),
    Remove,
}

/// The apps this agent runs and the machinery that follows the center's wishes.
pub struct Distributor {
    apps_dir: PathBuf,
    data_dir: PathBuf,
    /// Apps pre-installed by the agent's configuration: never removed.
    preinstalled: BTreeMap<String, String>,
    installed: Mutex<BTreeMap<String, String>>,
    /// The apps installed by distribution (persisted).
    distributed: Mutex<BTreeMap<String, String>>,
    errors: Mutex<BTreeMap<String, String>>,
    desired: Mutex<Option<BTreeMap<String, DesiredApp>>>,
    busy: Mutex<HashSet<String>>,
    retries: Mutex<HashMap<String, Retry>>,
    fetcher: Mutex<Option<Fetcher>>,
    locks: AppLocks,
    wake: Notify,
    limits: Limits,
    /// Bumped after every finished install or removal (the link heartbeats at once).
    changes: watch::Sender<u64>,
    /// Whether `apps_dir` may hold retired trees to delete.
    retired_pending: AtomicBool,
}

impl Distributor {
    /// The distributor of an agent: the configuration's apps plus the ones
    /// `data_dir/installed.json` lists and the files confirm.
    pub fn new(apps_dir: &Path, data_dir: &Path, preinstalled: BTreeMap<String, String>) -> Self {
        let mut distributed: BTreeMap<String, String> =
            std::fs::read(data_dir.join("installed.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
        distributed.retain(|app, version| {
            let ok = install::installed_version(apps_dir, app).as_deref() == Some(version);
            if !ok {
                tracing::warn!(%app, %version, "installed.json lists a version the files do not match; forgetting it");
            }
            ok
        });
        let mut installed = preinstalled.clone();
        installed.extend(distributed.clone());
        Distributor {
            apps_dir: apps_dir.to_owned(),
            data_dir: data_dir.to_owned(),
            preinstalled,
            installed: Mutex::new(installed),
            distributed: Mutex::new(distributed),
            errors: Mutex::default(),
            desired: Mutex::default(),
            busy: Mutex::default(),
            retries: Mutex::default(),
            fetcher: Mutex::default(),
            locks: AppLocks::new(),
            wake: Notify::new(),
            limits: Limits::default(),
            changes: watch::Sender::new(0),
            // A worker that outlived the previous agent may hold a tree cleanup_staging kept.
            retired_pending: AtomicBool::new(true),
        }
    }

    /// The installed apps, app → version.
    pub fn installed(&self) -> BTreeMap<String, String> {
        self.installed.lock().expect("installed poisoned").clone()
    }

    pub fn is_installed(&self, app: &str) -> bool {
        self.installed
            .lock()
            .expect("installed poisoned")
            .contains_key(app)
    }

    /// The last error of every app that has not reached its desired state.
    pub fn errors(&self) -> BTreeMap<String, String> {
        self.errors.lock().expect("errors poisoned").clone()
    }

    /// Sets (or clears, with `None`) how packages are downloaded.
    pub fn set_fetcher(&self, f: Option<Fetcher>) {
        let wake = f.is_some();
        *self.fetcher.lock().expect("fetcher poisoned") = f;
        if wake {
            self.wake.notify_one();
        }
    }

    /// Takes the center's latest wishes.
    pub fn set_desired(&self, apps: BTreeMap<String, DesiredApp>) {
        *self.desired.lock().expect("desired poisoned") = Some(apps);
        self.wake.notify_one();
    }

    /// A receiver that sees a change after every finished install or removal, successful or
    /// not: the moment to report the installed apps and errors to the center.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Follows the desired apps until `cancel` fires, and deletes retired trees once no worker
    /// uses them.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        tokio::spawn(self.clone().reap_loop(cancel.clone()));
        loop {
            let next = self.clone().reconcile();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = sleep => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Every [`REAP_EVERY`], while retired trees may exist, deletes the ones no process uses.
    async fn reap_loop(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(REAP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            if !self.retired_pending.swap(false, Ordering::SeqCst) {
                continue;
            }
            let dir = self.apps_dir.clone();
            let kept = match tokio::task::spawn_blocking(move || install::reap_retired(&dir)).await
            {
                Ok(Ok(kept)) => kept,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot look for retired app trees");
                    1
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the reaper task failed");
                    1
                }
            };
            if kept > 0 {
                self.retired_pending.store(true, Ordering::SeqCst);
            }
        }
    }

    /// What each app needs, given the desired and installed maps.
    fn plan(&self, desired: &BTreeMap<String, DesiredApp>) -> BTreeMap<String, Step> {
        let installed = self.installed();
        let mut steps = BTreeMap::new();
        for (app, d) in desired {
            if installed.get(app) != Some(&d.version) {
                steps.insert(app.clone(), Step::Install(d.clone()));
            }
        }
        for app in installed.keys() {
            if !desired.contains_key(app) && !self.preinstalled.contains_key(app) {
                steps.insert(app.clone(), Step::Remove);
            }
        }
        steps
    }

    /// Starts the work that is due; returns when to look again for work in back-off.
    fn reconcile(self: Arc<Self>) -> Option<Instant> {
        let desired = self.desired.lock().expect("desired poisoned").clone()?;
        let steps = self.plan(&desired);
        {
            // Errors of apps that are now as desired are cleared.
            let mut errors = self.errors.lock().expect("errors poisoned");
            errors.retain(|app, _| steps.contains_key(app));
            self.retries
                .lock()
                .expect("retries poisoned")
                .retain(|app, _| steps.contains_key(app));
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let have_fetcher = self.fetcher.lock().expect("fetcher poisoned").is_some();
        for (app, step) in steps {
            let target = match &step {
                Step::Install(d) => (d.version.clone(), d.sha256.clone()),
                Step::Remove => (String::new(), String::new()),
            };
            if let Some(r) = self.retries.lock().expect("retries poisoned").get(&app)
                && r.target == target
                && r.not_before > now
            {
                next = Some(next.map_or(r.not_before, |n| n.min(r.not_before)));
                continue;
            }
            if matches!(&step, Step::Install(d) if !d.sha256.is_empty()) && !have_fetcher {
                continue; // No link: wait for the next one.
            }
            if !self.busy.lock().expect("busy poisoned").insert(app.clone()) {
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                let result = me.apply(&app, &step).await;
                me.busy.lock().expect("busy poisoned").remove(&app);
                match result {
                    Ok(()) => {
                        me.errors.lock().expect("errors poisoned").remove(&app);
                        me.retries.lock().expect("retries poisoned").remove(&app);
                    }
                    Err(e) => me.failed(&app, target, e),
                }
                me.retired_pending.store(true, Ordering::SeqCst);
                me.changes.send_modify(|n| *n = n.wrapping_add(1));
                me.wake.notify_one();
            });
        }
        next
    }

    fn failed(&self, app: &str, target: (String, String), error: String) {
        let mut retries = self.retries.lock().expect("retries poisoned");
        let attempt = match retries.get(app) {
            Some(r) if r.target == target => r.attempt.saturating_add(1),
            _ => 0,
        };
        let wait = retry_wait(attempt);
        tracing::error!(%app, version = %target.0, %error, retry_in = ?wait, "app install failed; the installed version keeps serving");
        retries.insert(
            app.to_owned(),
            Retry {
                target,
                attempt,
                not_before: Instant::now() + wait,
            },
        );
        self.errors
            .lock()
            .expect("errors poisoned")
            .insert(app.to_owned(), error);
    }

    async fn apply(&self, app: &str, step: &Step) -> Result<(), String> {
        let _guard = self.locks.lock(app).await;
        match step {
            Step::Remove => {
                let (dir, a) = (self.apps_dir.clone(), app.to_owned());
                tokio::task::spawn_blocking(move || install::remove(&dir, &a))
                    .await
                    .map_err(|e| format!("removal task failed: {e}"))?
                    .map_err(|e| e.to_string())?;
                self.set_installed(app, None)
            }
            Step::Install(d) if d.sha256.is_empty() => Err(format!(
                "version {} is not pre-installed and the center has no package for it",
                d.version
            )),
            Step::Install(d) => {
                install::check_app_name(app).map_err(|e| e.to_string())?;
                install::check_version(&d.version).map_err(|e| e.to_string())?;
                let part = self.download(d).await?;
                let (dir, a, d2, p) = (
                    self.apps_dir.clone(),
                    app.to_owned(),
                    d.clone(),
                    part.clone(),
                );
                let limits = self.limits;
                let result = tokio::task::spawn_blocking(move || {
                    install::verify_digest(&p, &d2.sha256, d2.size)?;
                    install::install(&dir, &a, &d2.version, &p, &d2.sha256, d2.size, &limits)
                })
                .await;
                let _ = std::fs::remove_file(&part);
                result
                    .map_err(|e| format!("install task failed: {e}"))?
                    .map_err(|e| e.to_string())?;
                tracing::info!(%app, version = %d.version, "app installed");
                self.set_installed(app, Some(&d.version))
            }
        }
    }

    /// Records the change in the installed map and persists the distributed apps.
    fn set_installed(&self, app: &str, version: Option<&str>) -> Result<(), String> {
        let snapshot = {
            let mut installed = self.installed.lock().expect("installed poisoned");
            let mut distributed = self.distributed.lock().expect("distributed poisoned");
            match version {
                Some(v) => {
                    installed.insert(app.to_owned(), v.to_owned());
                    distributed.insert(app.to_owned(), v.to_owned());
                }
                None => {
                    installed.remove(app);
                    distributed.remove(app);
                }
            }
            distributed.clone()
        };
        let path = self.data_dir.join("installed.json");
        let tmp = self.data_dir.join("installed.json.tmp");
        let text = serde_json::to_vec_pretty(&snapshot).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot persist {}: {e}", path.display()))
    }

    /// Fetches the package into `data_dir/downloads/{sha256}.zip.part`.
    async fn download(&self, d: &DesiredApp) -> Result<PathBuf, String> {
        let sha = d.sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("invalid package digest {:?}", d.sha256));
        }
        let f = self
            .fetcher
            .lock()
            .expect("fetcher poisoned")
            .clone()
            .ok_or("not linked to the center")?;
        let dir = self.data_dir.join("downloads");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let part = dir.join(format!("{sha}.zip.part"));
        let result = fetch(&f, &sha, d.size, &part).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        result.map(|()| part)
    }
}

async fn fetch(f: &Fetcher, sha: &str, size: u64, part: &Path) -> Result<(), String> {
    let mut client = AgentLinkClient::new(f.channel.clone());
    let mut req = Request::new(FetchRequest {
        sha256: sha.to_owned(),
    });
    let md = req.metadata_mut();
    match (f.ip.parse(), format!("Bearer {}", f.credential).parse()) {
        (Ok(ip), Ok(bearer)) => {
            md.insert(elves_proto::IP_HEADER, ip);
            md.insert("authorization", bearer);
        }
        _ => return Err("the ip or the credential is not a valid header value".into()),
    }
    let mut stream = client
        .fetch_package(req)
        .await
        .map_err(|s| format!("download refused: {}", s.message()))?
        .into_inner();
    let mut file = tokio::fs::File::create(part)
        .await
        .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
    let mut got: u64 = 0;
    loop {
        let chunk = tokio::time::timeout(CHUNK_IDLE, stream.message())
            .await
            .map_err(|_| "download stalled".to_string())?
            .map_err(|s| format!("download failed: {}", s.message()))?;
        let Some(chunk) = chunk else { break };
        got += chunk.data.len() as u64;
        if got > size {
            return Err(format!(
                "package size mismatch: expected {size} bytes, got more"
            ));
        }
        file.write_all(&chunk.data)
            .await
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    }
    file.sync_all()
        .await
        .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(version: &str, sha: &str) -> DesiredApp {
        DesiredApp {
            version: version.into(),
            sha256: sha.into(),
            size: 1,
        }
    }

    #[test]
    fn retry_waits_double_from_2s_to_5min() {
        let waits: Vec<u64> = (0..10).map(|a| retry_wait(a).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn plan_installs_differences_and_removes_only_distributed_apps() {
        let tmp = tempfile::tempdir().unwrap();
        let pre = BTreeMap::from([("cfg".to_string(), "1".to_string())]);
        let dist = Distributor::new(&tmp.path().join("apps"), tmp.path(), pre);
        dist.installed.lock().unwrap().extend([
            ("old".to_string(), "1".to_string()),
            ("same".to_string(), "2".to_string()),
        ]);
        let desired = BTreeMap::from([
            ("same".to_string(), d("2", "")),
            ("new".to_string(), d("1", "ab")),
        ]);
        let steps = dist.plan(&desired);
        assert_eq!(
            steps,
            BTreeMap::from([
                ("new".to_string(), Step::Install(d("1", "ab"))),
                ("old".to_string(), Step::Remove),
            ]),
            "cfg (pre-installed) stays, same is as desired"
        );
    }

    #[test]
    fn installed_json_entries_must_match_the_files() {
        let tmp = tempfile::tempdir().unwrap();
        let apps = tmp.path().join("apps");
        std::fs::create_dir_all(apps.join("good")).unwrap();
        std::fs::write(apps.join("good").join(install::MARKER), "1.0").unwrap();
        std::fs::write(
            tmp.path().join("installed.json"),
            r#"{"good":"1.0","gone":"2.0"}"#,
        )
        .unwrap();
        let dist = Distributor::new(&apps, tmp.path(), BTreeMap::new());
        assert_eq!(
            dist.installed(),
            BTreeMap::from([("good".to_string(), "1.0".to_string())])
        );
    }
}
