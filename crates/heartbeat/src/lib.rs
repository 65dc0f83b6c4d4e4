//! The heartbeat module: the agent registry.
//!
//! The gateway records every agent's hello and heartbeats in the store (ip, asset, version,
//! installed apps, which gateway holds its link, last heartbeat, first seen). This module
//! answers questions about them. An agent is **online** while its link is up or until
//! `online_secs` after its last heartbeat (api-v2 `info/agents/detail`, agent-protocol §1).
//! The registry is in the store, so it survives a center restart.

use std::sync::Arc;

use elves_bus::Bus;
use elves_rpc::heartbeat::AgentInfo;
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
}

/// Whether `r` is online at `now_ms`.
pub fn is_online(r: &AgentRecord, now_ms: i64, online_secs: u64) -> bool {
    !r.connected_to.is_empty()
        || now_ms.saturating_sub(r.last_heartbeat_ms) <= (online_secs as i64).saturating_mul(1000)
}

/// The running heartbeat module.
pub struct Service;

impl Service {
    /// Offers the heartbeat messages on `bus`.
    pub fn start(opts: Options, bus: &Bus, store: Store) -> Service {
        let bus = bus.for_module(elves_rpc::module::HEARTBEAT);
        let opts = Arc::new(opts);
        bus.serve(move |m: AgentInfo| {
            let (store, opts) = (store.clone(), opts.clone());
            async move { agent_info(&store, &opts, &m.ip, SystemClock.now_ms()).await }
        });
        Service
    }
}

async fn agent_info(
    store: &Store,
    opts: &Options,
    ip: &str,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let rec = store.agent(ip).await.map_err(|e| {
        tracing::error!(error = %e, "agent registry unavailable");
        ApiError::internal("agent registry unavailable")
    })?;
    match rec {
        Some(r) if is_online(&r, now_ms, opts.online_secs) => Ok(json!({
            "ip": r.ip,
            "asset": r.asset,
            "last_hb_time": (opts.time_format)(r.last_heartbeat_ms),
        })),
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
        };
        let now = 5_000_000;
        store
            .record_agent(&AgentRecord {
                last_heartbeat_ms: now - 1000,
                ..record("", 0)
            })
            .await
            .unwrap();
        let v = agent_info(&store, &opts, "10.0.0.5", now).await.unwrap();
        assert_eq!(
            v,
            json!({"ip": "10.0.0.5", "asset": "web-5", "last_hb_time": format!("t{}", now - 1000)})
        );
        let later = now + 700_000;
        assert_eq!(
            agent_info(&store, &opts, "10.0.0.5", later).await,
            Err(ErrorCode::AgentInfoNotFound.into())
        );
        assert_eq!(
            agent_info(&store, &opts, "10.9.9.9", now).await,
            Err(ErrorCode::AgentInfoNotFound.into())
        );
    }
}
