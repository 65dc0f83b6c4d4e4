//! The heartbeat module: the agent registry.
//!
//! The gateway records every agent's hello and heartbeats in the store (ip, asset, version,
//! installed apps, which gateway holds its link, last heartbeat, first seen). This module
//! answers questions about them. An agent is **online** while its link is up or until
//! `online_secs` after its last heartbeat (api-v2 `info/agents/detail`, agent-protocol §1).
//! The registry is in the store, so it survives a center restart.
//!
//! It also answers which apps each agent should run (`heartbeat.desiredApps`, original §8.3):
//!
//! * **supervisor mode**: the active version of every app bound to the agent's ip, with the
//!   package (SHA-256 and size) recorded for that version. A bound app without an active
//!   version is left out.
//! * **simple mode**: the center's `[apps]` table (app → version), the same for every agent.
//!   When the store's versions table has that app and version (a package was uploaded), the
//!   entry carries its package and agents install it; otherwise the entry has no SHA-256 and
//!   the agent must already have that version pre-installed (agent `[apps]` plus the files
//!   under `apps_dir/{app}`), or it reports an error for the app.
//!
//! It is computed from the store at every request, so it is never stale.
//!
//! `agentInfo` (`info/agents/detail`, a hot read path) reuses a record it read from the store
//! for up to [`INFO_TTL`] (at most [`INFO_CAPACITY`] agents are kept). With the gateway's
//! batched heartbeat writes (every 250 ms), an answer reflects the agent's link and heartbeats
//! as of at most about 1.25 s ago; whether it is online is still decided at the request's own
//! instant. The online rule's slack (`online_secs`, minutes) dwarfs both.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elves_bus::Bus;
use elves_rpc::heartbeat::{AgentInfo, AgentSummary, DesiredApp, DesiredApps, ListAgents};
use elves_store::{AgentRecord, Store};
use elves_types::{ApiError, Clock, ErrorCode, SystemClock};
use serde_json::{Value, json};

/// Formats a Unix-ms instant for API results.
pub type TimeFormat = Arc<dyn Fn(i64) -> String + Send + Sync>;

/// The heartbeat module's settings.
#[derive(Clone)]
pub struct Options {
    /// How long after its last heartbeat an unlinked agent still counts as online.
    pub online_secs: u64,
    pub time_format: TimeFormat,
    /// Where the apps agents should run come from.
    pub apps: AppSource,
}

/// Where the desired apps come from (`auth.mode`).
#[derive(Clone, Debug)]
pub enum AppSource {
    /// Apps, active versions and bindings of the supervisor (in the store).
    Supervisor,
    /// The center's `[apps]` table, app → version, for every agent.
    Simple(BTreeMap<String, String>),
}

/// Whether `r` is online at `now_ms`.
pub fn is_online(r: &AgentRecord, now_ms: i64, online_secs: u64) -> bool {
    online_at(
        !r.connected_to.is_empty(),
        r.last_heartbeat_ms,
        now_ms,
        online_secs,
    )
}

/// The online rule: linked, or a heartbeat within `online_secs` of `now_ms`.
fn online_at(linked: bool, last_heartbeat_ms: i64, now_ms: i64, online_secs: u64) -> bool {
    linked || now_ms.saturating_sub(last_heartbeat_ms) <= (online_secs as i64).saturating_mul(1000)
}

/// How long `agentInfo` reuses a registry record read from the store.
pub const INFO_TTL: Duration = Duration::from_secs(1);
/// How many agents' records `agentInfo` keeps at most.
pub const INFO_CAPACITY: usize = 10_000;

/// What `agentInfo` needs of a registry record, with its time already formatted.
#[derive(Clone, Debug, PartialEq)]
struct Info {
    ip: String,
    asset: String,
    linked: bool,
    last_heartbeat_ms: i64,
    last_hb_time: String,
}

/// Registry records read for `agentInfo`, each reused for [`INFO_TTL`]; an unknown agent is
/// remembered too (as `None`).
#[derive(Default)]
struct InfoCache {
    entries: Mutex<HashMap<String, (Instant, Option<Info>)>>,
}

impl InfoCache {
    fn get(&self, ip: &str, now: Instant) -> Option<Option<Info>> {
        let entries = self.entries.lock().expect("info cache poisoned");
        entries
            .get(ip)
            .filter(|(at, _)| now.saturating_duration_since(*at) < INFO_TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, ip: &str, info: Option<Info>, now: Instant) {
        let mut entries = self.entries.lock().expect("info cache poisoned");
        if entries.len() >= INFO_CAPACITY && !entries.contains_key(ip) {
            entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < INFO_TTL);
            if entries.len() >= INFO_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(ip.to_owned(), (now, info));
    }
}

/// The running heartbeat module.
pub struct Service;

impl Service {
    /// Offers the heartbeat messages on `bus`.
    pub fn start(opts: Options, bus: &Bus, store: Store) -> Service {
        let bus = bus.for_module(elves_rpc::module::HEARTBEAT);
        let opts = Arc::new(opts);
        let o = opts.clone();
        let s = store.clone();
        bus.serve(move |m: DesiredApps| {
            let (store, opts) = (s.clone(), o.clone());
            async move { desired_apps(&store, &opts.apps, &m.ip).await }
        });
        let (s, o) = (store.clone(), opts.clone());
        let cache = Arc::new(InfoCache::default());
        bus.serve(move |m: AgentInfo| {
            let (store, opts, cache) = (s.clone(), o.clone(), cache.clone());
            async move {
                let now = (Instant::now(), SystemClock.now_ms());
                agent_info(&store, &opts, &cache, &m.ip, now).await
            }
        });
        bus.serve(move |_: ListAgents| {
            let (store, opts) = (store.clone(), opts.clone());
            async move { list_agents(&store, &opts, SystemClock.now_ms()).await }
        });
        Service
    }
}

fn registry_err(e: elves_store::Error) -> ApiError {
    tracing::error!(error = %e, "app registry unavailable");
    ApiError::internal("app registry unavailable")
}

/// The apps the agent at `ip` should run (see the module documentation).
pub async fn desired_apps(
    store: &Store,
    source: &AppSource,
    ip: &str,
) -> Result<BTreeMap<String, DesiredApp>, ApiError> {
    let wanted: Vec<(String, String)> = match source {
        AppSource::Simple(apps) => apps.iter().map(|(a, v)| (a.clone(), v.clone())).collect(),
        AppSource::Supervisor => {
            let mut wanted = Vec::new();
            for app in store.apps_bound_to(ip).await.map_err(registry_err)? {
                let active = store.app(&app).await.map_err(registry_err)?;
                if let Some(version) = active.and_then(|a| a.active_version) {
                    wanted.push((app, version));
                }
            }
            wanted
        }
    };
    let mut out = BTreeMap::new();
    for (app, version) in wanted {
        let package = store.version(&app, &version).await.map_err(registry_err)?;
        let entry = match package {
            Some(p) => DesiredApp {
                version,
                sha256: Some(p.sha256),
                size: p.size,
            },
            None => DesiredApp {
                version,
                sha256: None,
                size: 0,
            },
        };
        out.insert(app, entry);
    }
    Ok(out)
}

/// Every agent of the registry, with whether it is online at `now_ms`.
pub async fn list_agents(
    store: &Store,
    opts: &Options,
    now_ms: i64,
) -> Result<Vec<AgentSummary>, ApiError> {
    let mut all = store.agents().await.map_err(|e| {
        tracing::error!(error = %e, "agent registry unavailable");
        ApiError::internal("agent registry unavailable")
    })?;
    all.sort_by(|a, b| a.ip.cmp(&b.ip));
    Ok(all
        .into_iter()
        .map(|r| AgentSummary {
            online: is_online(&r, now_ms, opts.online_secs),
            ip: r.ip,
            asset: r.asset,
            version: r.version,
            last_heartbeat_ms: r.last_heartbeat_ms,
            apps: r.apps,
        })
        .collect())
}

/// `info/agents/detail`'s answer at `now` (monotonic, Unix ms), from a record at most
/// [`INFO_TTL`] old.
async fn agent_info(
    store: &Store,
    opts: &Options,
    cache: &InfoCache,
    ip: &str,
    now: (Instant, i64),
) -> Result<Value, ApiError> {
    let (now, now_ms) = now;
    let info = match cache.get(ip, now) {
        Some(info) => info,
        None => {
            let rec = store.agent(ip).await.map_err(|e| {
                tracing::error!(error = %e, "agent registry unavailable");
                ApiError::internal("agent registry unavailable")
            })?;
            let info = rec.map(|r| Info {
                linked: !r.connected_to.is_empty(),
                last_hb_time: (opts.time_format)(r.last_heartbeat_ms),
                last_heartbeat_ms: r.last_heartbeat_ms,
                ip: r.ip,
                asset: r.asset,
            });
            cache.put(ip, info.clone(), now);
            info
        }
    };
    match info {
        Some(i) if online_at(i.linked, i.last_heartbeat_ms, now_ms, opts.online_secs) => {
            Ok(json!({
                "ip": i.ip,
                "asset": i.asset,
                "last_hb_time": i.last_hb_time,
            }))
        }
        _ => Err(ErrorCode::AgentInfoNotFound.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(connected_to: &str, last_heartbeat_ms: i64) -> AgentRecord {
        AgentRecord {
            ip: "10.0.0.5".into(),
            asset: "web-5".into(),
            version: "0.1.0".into(),
            apps: Default::default(),
            connected_to: connected_to.into(),
            last_heartbeat_ms,
            first_seen_ms: 0,
        }
    }

    #[test]
    fn online_rule() {
        let now = 1_000_000_000;
        let cases = [
            ("linked, old heartbeat", record("center@a", 0), true),
            (
                "unlinked, heartbeat 599 s ago",
                record("", now - 599_000),
                true,
            ),
            (
                "unlinked, heartbeat exactly 600 s ago",
                record("", now - 600_000),
                true,
            ),
            (
                "unlinked, heartbeat 601 s ago",
                record("", now - 601_000),
                false,
            ),
        ];
        for (name, r, want) in cases {
            assert_eq!(is_online(&r, now, 600), want, "{name}");
        }
    }

    #[tokio::test]
    async fn agent_info_answers_online_agents_and_414_1_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("e.db").display()))
            .await
            .unwrap();
        let opts = Options {
            online_secs: 600,
            time_format: Arc::new(|ms| format!("t{ms}")),
            apps: AppSource::Supervisor,
        };
        let now = 5_000_000;
        store
            .record_agent(&AgentRecord {
                last_heartbeat_ms: now - 1000,
                ..record("", 0)
            })
            .await
            .unwrap();
        let t0 = Instant::now();
        // A fresh cache per question: these check the rule, not the reuse.
        let ask = |ip: &'static str, now_ms: i64| {
            let (store, opts) = (store.clone(), opts.clone());
            async move { agent_info(&store, &opts, &InfoCache::default(), ip, (t0, now_ms)).await }
        };
        let v = ask("10.0.0.5", now).await.unwrap();
        assert_eq!(
            v,
            json!({"ip": "10.0.0.5", "asset": "web-5", "last_hb_time": format!("t{}", now - 1000)})
        );
        let later = now + 700_000;
        assert_eq!(
            ask("10.0.0.5", later).await,
            Err(ErrorCode::AgentInfoNotFound.into())
        );
        assert_eq!(
            ask("10.9.9.9", now).await,
            Err(ErrorCode::AgentInfoNotFound.into())
        );
    }

    #[tokio::test]
    async fn agent_info_reuses_a_record_for_at_most_info_ttl_and_decides_online_at_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        let opts = Options {
            online_secs: 600,
            time_format: Arc::new(|ms| format!("t{ms}")),
            apps: AppSource::Supervisor,
        };
        let cache = InfoCache::default();
        let t0 = Instant::now();
        let now = 5_000_000;
        let linked = |at| AgentRecord {
            last_heartbeat_ms: at,
            ..record("center@a", 0)
        };
        let hb_of = |v: Result<Value, ApiError>| v.map(|v| v["last_hb_time"].clone());
        // Unknown: remembered as unknown within the TTL.
        assert_eq!(
            agent_info(&store, &opts, &cache, "10.0.0.5", (t0, now)).await,
            Err(ErrorCode::AgentInfoNotFound.into())
        );
        store.record_agent(&linked(now)).await.unwrap();
        let just_before = t0 + INFO_TTL - Duration::from_millis(1);
        assert_eq!(
            agent_info(&store, &opts, &cache, "10.0.0.5", (just_before, now)).await,
            Err(ErrorCode::AgentInfoNotFound.into()),
            "within the TTL the cached answer stands"
        );
        let t1 = t0 + INFO_TTL;
        assert_eq!(
            hb_of(agent_info(&store, &opts, &cache, "10.0.0.5", (t1, now)).await),
            Ok(json!(format!("t{now}"))),
            "after the TTL the store is read again"
        );
        // The agent unlinks and its last heartbeat ages: the cached record (linked) stands
        // until the TTL, then the store's (unlinked, too old) says offline.
        store.set_agent_connection("10.0.0.5", "").await.unwrap();
        let much_later = now + 700_000;
        assert!(
            agent_info(&store, &opts, &cache, "10.0.0.5", (t1, much_later))
                .await
                .is_ok()
        );
        assert_eq!(
            agent_info(
                &store,
                &opts,
                &cache,
                "10.0.0.5",
                (t1 + INFO_TTL, much_later)
            )
            .await,
            Err(ErrorCode::AgentInfoNotFound.into())
        );
    }

    #[test]
    fn the_info_cache_stays_within_its_capacity() {
        let cache = InfoCache::default();
        let t0 = Instant::now();
        for i in 0..INFO_CAPACITY + 10 {
            cache.put(&format!("ip{i}"), None, t0);
            assert!(cache.entries.lock().unwrap().len() <= INFO_CAPACITY);
        }
        assert_eq!(
            cache.get("ip3", t0),
            None,
            "cleared when full of live entries"
        );
        assert_eq!(
            cache.get(&format!("ip{}", INFO_CAPACITY + 9), t0),
            Some(None)
        );
    }

    async fn open_store(dir: &tempfile::TempDir) -> Store {
        Store::open(&format!("sqlite://{}", dir.path().join("e.db").display()))
            .await
            .unwrap()
    }

    fn app(version: &str, sha: Option<&str>, size: u64) -> DesiredApp {
        DesiredApp {
            version: version.into(),
            sha256: sha.map(String::from),
            size,
        }
    }

    #[tokio::test]
    async fn supervisor_mode_gives_the_active_version_of_every_bound_app() {
        use elves_store::{Change, NewVersion};
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        let ch = Change {
            actor: "t",
            at_ms: 1,
        };
        let (sha1, sha2) = ("1".repeat(64), "2".repeat(64));
        for name in ["alpha", "beta", "gamma"] {
            store.create_app(name, name, None, ch).await.unwrap();
        }
        for (app, version, sha) in [
            ("alpha", "1.0.0", &sha1),
            ("alpha", "2.0.0", &sha2),
            ("beta", "0.1", &sha1),
            ("gamma", "9", &sha2),
        ] {
            let v = NewVersion {
                app,
                version,
                sha256: sha,
                size: 10,
            };
            store.add_version(&v, false, ch).await.unwrap();
        }
        store
            .set_active_version("alpha", "2.0.0", ch)
            .await
            .unwrap();
        store.set_active_version("gamma", "9", ch).await.unwrap();
        // beta is bound but has no active version; gamma is active but bound elsewhere.
        store.bind("alpha", &["10.0.0.1"], ch).await.unwrap();
        store.bind("beta", &["10.0.0.1"], ch).await.unwrap();
        store.bind("gamma", &["10.0.0.2"], ch).await.unwrap();

        let got = desired_apps(&store, &AppSource::Supervisor, "10.0.0.1")
            .await
            .unwrap();
        assert_eq!(
            got,
            BTreeMap::from([("alpha".to_string(), app("2.0.0", Some(&sha2), 10))])
        );
        let got = desired_apps(&store, &AppSource::Supervisor, "10.0.0.9")
            .await
            .unwrap();
        assert!(got.is_empty(), "an unbound agent should run nothing");

        store
            .set_active_version("alpha", "1.0.0", ch)
            .await
            .unwrap();
        store.unbind("gamma", &["10.0.0.2"], ch).await.unwrap();
        let got = desired_apps(&store, &AppSource::Supervisor, "10.0.0.1")
            .await
            .unwrap();
        assert_eq!(got["alpha"], app("1.0.0", Some(&sha1), 10));
        assert!(
            desired_apps(&store, &AppSource::Supervisor, "10.0.0.2")
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn simple_mode_gives_the_config_table_with_packages_when_known() {
        use elves_store::{Change, NewVersion};
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        let ch = Change {
            actor: "t",
            at_ms: 1,
        };
        let sha = "a".repeat(64);
        store.create_app("packaged", "p", None, ch).await.unwrap();
        let v = NewVersion {
            app: "packaged",
            version: "1.2",
            sha256: &sha,
            size: 42,
        };
        store.add_version(&v, false, ch).await.unwrap();
        let source = AppSource::Simple(BTreeMap::from([
            ("packaged".to_string(), "1.2".to_string()),
            ("preinstalled".to_string(), "3.0".to_string()),
        ]));
        for ip in ["10.0.0.1", "10.0.0.2"] {
            let got = desired_apps(&store, &source, ip).await.unwrap();
            assert_eq!(
                got,
                BTreeMap::from([
                    ("packaged".to_string(), app("1.2", Some(&sha), 42)),
                    ("preinstalled".to_string(), app("3.0", None, 0)),
                ]),
                "every agent gets the same table"
            );
        }
        let other_version = AppSource::Simple(BTreeMap::from([(
            "packaged".to_string(),
            "1.3".to_string(),
        )]));
        let got = desired_apps(&store, &other_version, "10.0.0.1")
            .await
            .unwrap();
        assert_eq!(got["packaged"], app("1.3", None, 0));
    }
}
