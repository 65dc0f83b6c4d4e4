//! Wiring of what the agent does on its own host besides the link: worker limits, the
//! processor deliverer, agent-side cron and the dashboard.

use std::sync::Arc;
use std::time::Duration;

use elves_config::AgentConfig;
use tokio_util::sync::CancellationToken;

use crate::agent_cron::{AgentCron, cron_path};
use crate::apps::Distributor;
use crate::dashboard::{Dashboard, DevMode, listen_addr};
use crate::exec::Executor;
use crate::hooks::Hooks;
use crate::limits::{Limiter, worker_user};
use crate::processor::{Options, Processors};
use crate::stats::Stats;

/// The local services that run beside the link.
pub(crate) struct Local {
    pub exec: Executor,
    pub hooks: Arc<Hooks>,
    limiter: Arc<Limiter>,
}

/// Applies the worker limits to `exec` and starts the processor deliverer.
pub(crate) fn start(
    cfg: &AgentConfig,
    exec: Executor,
    cancel: &CancellationToken,
) -> anyhow::Result<Local> {
    let limiter = Arc::new(Limiter::new(
        cfg.limits.max_workers,
        cfg.limits.max_waiting,
        cfg.limits.app_workers.clone(),
    ));
    let user = worker_user(&cfg.limits.worker_user).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(u) = &user {
        tracing::info!(user = %u.name, uid = u.uid, "workers run as an unprivileged user");
    }
    let exec = exec.with_limiter(limiter.clone()).with_user(user);
    let stats = Arc::new(Stats::default());
    let errors = stats.clone();
    let processors = Arc::new(
        Processors::open(
            Options {
                dir: cfg.data_dir.join("processor"),
                apps_dir: cfg.apps_dir.clone(),
                retry_base: Duration::from_secs(1),
                retry_cap: Duration::from_secs(60),
            },
            Box::new(move |e| errors.error(e)),
        )
        .map_err(|e| anyhow::anyhow!("cannot open the processor spool: {e}"))?,
    );
    tokio::spawn({
        let p = processors.clone();
        let c = cancel.clone();
        async move { p.run(c).await }
    });
    Ok(Local {
        exec,
        hooks: Arc::new(Hooks {
            stats,
            processors: Some(processors),
        }),
        limiter,
    })
}

impl Local {
    /// Starts agent-side cron and the dashboard, which need the installed apps.
    pub(crate) fn start_with_apps(
        &self,
        cfg: &AgentConfig,
        apps: Arc<Distributor>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let cron = cron_path(&cfg.cron.file).map(|path| {
            let cron = Arc::new(AgentCron::new(
                path,
                cfg.ip.clone(),
                self.exec.clone(),
                apps.clone(),
                self.hooks.clone(),
            ));
            tokio::spawn(cron.clone().run(cancel.clone()));
            cron
        });
        if !cfg.http.listen.trim().is_empty() {
            let addr = listen_addr(&cfg.http.listen).map_err(|e| anyhow::anyhow!(e))?;
            let devmode = cfg.devmode.enabled.then(|| DevMode {
                authid: cfg.devmode.authid.clone(),
                authkey: cfg.devmode.authkey.clone(),
            });
            let dash = Arc::new(
                Dashboard::new(
                    cfg.ip.clone(),
                    cfg.asset.clone(),
                    cfg.center.clone(),
                    apps,
                    cron,
                    self.exec.clone(),
                    self.hooks.clone(),
                    devmode,
                )
                .with_limiter(self.limiter.clone()),
            );
            let cancel = cancel.clone();
            let devmode = cfg.devmode.enabled;
            tokio::spawn(async move {
                match dash.serve(addr, cancel).await {
                    Ok(bound) => {
                        tracing::info!(addr = %bound, devmode, "dashboard listening");
                    }
                    Err(e) => {
                        tracing::error!(addr = %addr, error = %e, "cannot start the dashboard")
                    }
                }
            });
        } else if cfg.devmode.enabled {
            tracing::warn!("devmode.enabled needs http.listen: developer mode is off");
        }
        Ok(())
    }
}
