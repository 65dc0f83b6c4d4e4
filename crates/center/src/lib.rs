//! The center: which modules run is configuration.
//!
//! [`Center::start`] opens the store, creates the bus, starts every module this process is
//! configured to run, binds the HTTP listener (v2 API, `/healthz`, `/readyz`, `/metrics`) and
//! the agents' listener, and returns once both accept connections. [`Center::wait`] runs until
//! cancelled.

mod probes;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use elves_bus::Bus;
use elves_config::CenterConfig;
use elves_sign::{Policy, SignType};
use elves_store::Store;
use elves_types::SystemClock;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// `yyyy-MM-dd HH:mm:ss` in the configured zone (`local` = the host's), for API results.
fn time_format(zone: &str) -> anyhow::Result<elves_supervisor::TimeFormat> {
    use elves_cron_expr::jiff::{Timestamp, tz::TimeZone};
    let tz = if zone == "local" {
        TimeZone::system()
    } else {
        TimeZone::get(zone).map_err(|e| anyhow::anyhow!("server.time_zone {zone:?}: {e}"))?
    };
    Ok(std::sync::Arc::new(move |ms: i64| {
        Timestamp::from_millisecond(ms)
            .map(|t| {
                t.to_zoned_datetime(tz.clone())
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default()
    }))
}

/// A running center.
pub struct Center {
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    /// Where agents connect.
    pub agents_addr: SocketAddr,
    tasks: JoinSet<anyhow::Result<()>>,
    cancel: CancellationToken,
    bus: Bus,
}

fn policy(cfg: &CenterConfig) -> Policy {
    Policy {
        window_secs: cfg.auth.window_secs,
        enabled: cfg
            .auth
            .sign_types
            .iter()
            .filter_map(|t| SignType::parse(t))
            .collect(),
    }
}

impl Center {
    /// Starts every configured module. `cancel` stops them all.
    pub async fn start(cfg: CenterConfig, cancel: CancellationToken) -> anyhow::Result<Center> {
        let store = Store::open(&cfg.store.url)
            .await
            .context("opening the store")?;
        let bus = Bus::memory();
        let mut tasks = JoinSet::new();

        let supervisor_mode = cfg.auth.mode == "supervisor";
        let time_format = time_format(&cfg.server.time_zone)?;
        if cfg.modules.heartbeat {
            let opts = elves_heartbeat::Options {
                online_secs: cfg.agents.online_secs,
                time_format: time_format.clone(),
                apps: if supervisor_mode {
                    elves_heartbeat::AppSource::Supervisor
                } else {
                    elves_heartbeat::AppSource::Simple(cfg.apps.clone())
                },
            };
            elves_heartbeat::Service::start(opts, &bus, store.clone());
        }
        if cfg.modules.supervisor && supervisor_mode {
            let opts = elves_supervisor::Options {
                center_secret: cfg.supervisor.secret.clone(),
                time_format: time_format.clone(),
                bind_sync_every: (cfg.supervisor.bind_sync_secs > 0)
                    .then(|| std::time::Duration::from_secs(cfg.supervisor.bind_sync_secs)),
                bind_sync_limits: Default::default(),
            };
            elves_supervisor::Service::start(opts, &bus, store.clone(), cancel.clone())
                .map_err(|e| anyhow::anyhow!("supervisor.secret: {e}"))?;
        }

        if cfg.modules.scheduler {
            elves_scheduler::Service::start(elves_scheduler::Options::default(), &bus);
        }
        if cfg.modules.queue {
            let opts = elves_queue::Options {
                retention: std::time::Duration::from_secs(cfg.queue.retention_secs),
                give_up: std::time::Duration::from_secs(cfg.queue.give_up_secs),
                ..elves_queue::Options::default()
            };
            elves_queue::Service::start(opts, &bus, store.clone(), cancel.clone());
        }
        if cfg.modules.cron {
            let zone =
                |name: &str, what: &str| -> anyhow::Result<elves_cron_expr::jiff::tz::TimeZone> {
                    use elves_cron_expr::jiff::tz::TimeZone;
                    if name == "local" {
                        Ok(TimeZone::system())
                    } else {
                        TimeZone::get(name).map_err(|e| anyhow::anyhow!("{what} {name:?}: {e}"))
                    }
                };
            let opts = elves_cron::Options {
                history: cfg.cron.history,
                default_tz: zone(&cfg.cron.default_tz, "cron.default_tz")?,
                display_tz: zone(&cfg.server.time_zone, "server.time_zone")?,
                misfire_window: std::time::Duration::from_secs(cfg.cron.misfire_window_secs),
                // Unique per process: a restarted center waits for the old lease to expire.
                holder: format!("center@{}/{}", cfg.agents.listen, elves_types::Id::random()),
                ..elves_cron::Options::default()
            };
            elves_cron::Service::start(
                opts,
                &bus,
                store.clone(),
                Arc::new(SystemClock),
                cancel.clone(),
            )
            .context("starting the cron firer's thread")?;
        }

        let agents_listen: SocketAddr = cfg.agents.listen.parse().context("agents.listen")?;
        let gateway = elves_gateway::Service::bind(
            elves_gateway::Options {
                listen: agents_listen,
                token: cfg.agents.token.clone(),
                instance: format!("center@{}", cfg.agents.listen),
                heartbeat_secs: cfg.agents.heartbeat_secs as u32,
                packages_dir: cfg.supervisor.packages_dir.clone(),
            },
            store.clone(),
            &bus,
        )
        .await
        .with_context(|| format!("binding agents.listen {}", cfg.agents.listen))?;
        let agents_addr = gateway.local_addr()?;
        let c = cancel.clone();
        tasks.spawn(async move { gateway.run(c).await.context("gateway") });

        let ready = probes::Ready::default();
        let mut app = probes::router(store.clone(), ready.clone(), cfg.modules.queue);
        if supervisor_mode && cfg.modules.supervisor {
            let packages = elves_store::PackageStore::open(&cfg.supervisor.packages_dir)
                .with_context(|| {
                    format!(
                        "opening supervisor.packages_dir {}",
                        cfg.supervisor.packages_dir.display()
                    )
                })?;
            let ui = elves_web::UiOptions {
                packages: packages.clone(),
            };
            let opts = elves_web::AdminOptions {
                token: cfg.admin.token.clone(),
                packages,
            };
            app = app.merge(elves_web::web_router(opts, ui, &bus));
        }
        if cfg.modules.openapi {
            let opts = elves_openapi::Options {
                auth: if supervisor_mode {
                    elves_openapi::AuthMode::Supervisor
                } else {
                    elves_openapi::AuthMode::Simple {
                        auth_id: cfg.auth.id.clone(),
                        key: cfg.auth.key.clone(),
                    }
                },
                policy: policy(&cfg),
                modules: elves_openapi::Modules {
                    queue: cfg.modules.queue,
                    cron: cfg.modules.cron,
                    supervisor: supervisor_mode,
                },
            };
            app = app.merge(elves_openapi::router(opts, &bus, Arc::new(SystemClock)));
        }
        let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
            .await
            .with_context(|| format!("binding server.listen {}", cfg.server.listen))?;
        let api_addr = listener.local_addr()?;
        let c = cancel.clone();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(c.cancelled_owned())
                .await
                .context("http server")
        });
        ready.set();
        tracing::info!(api = %api_addr, agents = %agents_addr, "center started");
        Ok(Center {
            api_addr,
            agents_addr,
            tasks,
            cancel,
            bus,
        })
    }

    /// The center's bus, speaking as `module` (for an embedding binary such as `elves up`).
    pub fn bus(&self, module: &'static str) -> Bus {
        self.bus.for_module(module)
    }

    /// Runs until cancelled or until a part of the center fails.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            let r = done.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = r {
                if result.is_ok() {
                    result = Err(e);
                }
                self.cancel.cancel();
            }
        }
        tracing::info!("center stopped");
        result
    }
}
