//! The supervisor module's bus handlers.

use std::sync::Arc;

use elves_bus::Bus;
use elves_rpc::supervisor::{AccessFacts, Admin, AgentList, AppInfo, Facts, GetKey, KeyInfo};
use elves_store::Store;
use elves_types::{ApiError, Clock, ErrorCode, Id, SystemClock};
use serde_json::{Value, json};

use crate::secrets::{CenterKey, decrypt_secret};

/// The supervisor module's settings.
#[derive(Clone)]
pub struct Options {
    /// The center secret that encrypts API-key secrets at rest (at least 16 bytes).
    pub center_secret: String,
    /// Formats instants (Unix ms) for API results: `yyyy-MM-dd HH:mm:ss` in the center's zone.
    pub time_format: TimeFormat,
    /// How often every app with a bind URL is synced (`supervisor.bind_sync_secs`); `None`
    /// syncs only on demand.
    pub bind_sync_every: Option<std::time::Duration>,
    /// Bounds of one bind-URL fetch.
    pub bind_sync_limits: crate::bind_sync::Limits,
}

/// Formats a Unix-ms instant for API results.
pub type TimeFormat = Arc<dyn Fn(i64) -> String + Send + Sync>;

/// The running supervisor module.
pub struct Service;

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) key: CenterKey,
    pub(crate) clock: SystemClock,
    pub(crate) time_format: TimeFormat,
    pub(crate) sync_limits: crate::bind_sync::Limits,
}

pub(crate) fn store_err(e: elves_store::Error) -> ApiError {
    match e {
        elves_store::Error::NotFound(m) | elves_store::Error::Conflict(m) => ApiError::internal(m),
        other => {
            tracing::error!(error = %other, "supervisor store failure");
            ApiError::internal("supervisor store failure")
        }
    }
}

impl Service {
    /// Offers the supervisor's messages on `bus`; the scheduled bind sync runs until `cancel`
    /// fires (a sync cut short leaves the app's bindings as they were: each is one
    /// transaction).
    pub fn start(
        opts: Options,
        bus: &Bus,
        store: Store,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<Service, String> {
        let key = CenterKey::derive(&opts.center_secret).map_err(|e| e.to_string())?;
        let inner = Arc::new(Inner {
            store,
            key,
            clock: SystemClock,
            time_format: opts.time_format,
            sync_limits: opts.bind_sync_limits,
        });
        let bus = bus.for_module(elves_rpc::module::SUPERVISOR);
        elves_bus::serve_methods!(bus, inner;
            GetKey => get_key,
            AccessFacts => access_facts,
            AppInfo => app_info,
            AgentList => agent_list,
        );
        {
            // After a change of what agents should run, the gateway pushes it within a second.
            let (me, b) = (inner.clone(), bus.clone());
            bus.serve(move |m: Admin| {
                let (me, b) = (me.clone(), b.clone());
                async move {
                    let cmd = m.command.clone();
                    let out = me.admin(m).await;
                    if let Ok(v) = &out {
                        me.apps_changed(&b, &cmd, v).await;
                    }
                    out
                }
            });
        }
        if let Some(every) = opts.bind_sync_every.filter(|d| !d.is_zero()) {
            // One app at a time, until the center stops.
            let (me, b) = (inner.clone(), bus.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let ips = tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => tokio::select! {
                            _ = cancel.cancelled() => break,
                            ips = crate::bind_sync::sync_all(&me, me.clock.now_ms()) => ips,
                        },
                    };
                    if !ips.is_empty()
                        && let Err(e) = b.cast(elves_rpc::gateway::AppsChanged { ips: Some(ips) })
                    {
                        tracing::debug!(error = %e, "apps change not announced to the gateway");
                    }
                }
            });
        }
        Ok(Service)
    }
}

impl Inner {
    /// An `Inner` on `store` for unit tests (times formatted as plain numbers).
    #[cfg(test)]
    pub(crate) fn for_tests(store: Store, center_secret: &str) -> Inner {
        Inner {
            store,
            key: CenterKey::derive(center_secret).expect("a test center secret of 16+ bytes"),
            clock: SystemClock,
            time_format: Arc::new(|ms| ms.to_string()),
            sync_limits: crate::bind_sync::Limits::default(),
        }
    }

    async fn get_key(&self, m: GetKey) -> Result<KeyInfo, ApiError> {
        let Some(auth_id) = Id::parse(m.auth_id.trim()) else {
            return Err(ErrorCode::AuthIdNotFound.into());
        };
        let key = self
            .store
            .key(&auth_id)
            .await
            .map_err(store_err)?
            .ok_or(ErrorCode::AuthIdNotFound)?;
        let secret = decrypt_secret(&self.key, &auth_id, &key.secret_enc).map_err(|e| {
            tracing::error!(%auth_id, error = %e, "an API key cannot be decrypted with this center secret");
            ApiError::internal("key unavailable")
        })?;
        Ok(KeyInfo {
            app: key.app,
            secret,
            disabled: key.disabled,
            expires_at_ms: key.expires_at_ms,
        })
    }

    async fn access_facts(&self, m: AccessFacts) -> Result<Facts, ApiError> {
        let app_exists = match &m.app {
            Some(app) => self.store.app(app).await.map_err(store_err)?.is_some(),
            None => true,
        };
        let ip_bound = match &m.ip {
            Some(ip) => self
                .store
                .is_bound(&m.binding_app, ip)
                .await
                .map_err(store_err)?,
            None => true,
        };
        Ok(Facts {
            app_exists,
            ip_bound,
        })
    }

    async fn app_info(&self, m: AppInfo) -> Result<Value, ApiError> {
        let app = self
            .store
            .app(&m.app)
            .await
            .map_err(store_err)?
            .ok_or(ErrorCode::AppNotFound)?;
        let mut v = json!({
            "app": app.name,
            "app_name": app.title,
            "last_update_time": (self.time_format)(app.updated_at_ms),
        });
        if let Some(ver) = app.active_version {
            v["app_ver"] = json!(ver);
        }
        Ok(v)
    }

    async fn agent_list(&self, m: AgentList) -> Result<Vec<String>, ApiError> {
        self.store.bindings(&m.app).await.map_err(store_err)
    }

    /// Casts `gateway.appsChanged` for the agents an activation or a bindings change affects.
    async fn apps_changed(
        &self,
        bus: &Bus,
        cmd: &elves_rpc::supervisor::AdminCommand,
        out: &Value,
    ) {
        use elves_rpc::supervisor::AdminCommand as C;
        let ips = match cmd {
            // Without the bindings, every linked agent recomputes.
            C::Activate { app, .. } => self.store.bindings(app).await.ok(),
            C::Bind { ips, .. } | C::Unbind { ips, .. } => Some(ips.clone()),
            C::AppSync { .. } => {
                let ips = crate::bind_sync::changed_ips(out);
                if ips.is_empty() {
                    return;
                }
                Some(ips)
            }
            _ => return,
        };
        if let Err(e) = bus.cast(elves_rpc::gateway::AppsChanged { ips }) {
            tracing::debug!(error = %e, "apps change not announced to the gateway");
        }
    }

    async fn admin(&self, m: Admin) -> Result<Value, elves_rpc::supervisor::AdminError> {
        crate::admin::run(self, &m.actor, m.command, self.clock.now_ms()).await
    }
}
