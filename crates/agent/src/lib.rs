//! The Elves agent.
//!
//! It dials the center and keeps one gRPC stream open ([`link`]), runs app workers as child
//! processes ([`exec`]) and answers with their results. It opens no listening port for
//! instructions. The `elves-agent` binary is this crate alone: it links no SQL driver,
//! broker client or template engine.

pub mod agent_cron;
pub mod apps;
pub mod dashboard;
pub mod exec;
pub mod hooks;
pub mod install;
pub mod limits;
pub mod link;
pub mod metrics;
pub mod pack;
pub mod processor;
pub mod runs;
pub mod spool;
pub mod stats;

mod local;

use std::sync::Arc;

use elves_config::AgentConfig;
use tokio_util::sync::CancellationToken;

/// Runs the agent until `cancel` fires.
pub async fn run(cfg: AgentConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data_dir {}: {e}", cfg.data_dir.display()))?;
    let exec = exec::Executor::new(exec::ExecConfig {
        apps_dir: cfg.apps_dir.clone(),
        allowed_interpreters: cfg.allowed_interpreters.clone(),
        output_cap: cfg.limits.output_cap,
        python: cfg.python.clone(),
    });
    let local = local::start(&cfg, exec, &cancel)?;
    let exec = local.exec.clone();
    // What an interrupted install or removal left behind, before any install starts.
    match install::cleanup_staging(&cfg.apps_dir) {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "cleaned up after an interrupted install"),
        Err(e) => tracing::warn!(error = %e, "cannot clean up after interrupted installs"),
    }
    let _ = std::fs::remove_dir_all(cfg.data_dir.join("downloads"));
    let apps = Arc::new(apps::Distributor::new(
        &cfg.apps_dir,
        &cfg.data_dir,
        cfg.apps.clone(),
    ));
    tokio::spawn(apps.clone().run(cancel.clone()));
    local.start_with_apps(&cfg, apps.clone(), &cancel)?;
    let spool = spool::Spool::open(&cfg.data_dir.join("spool")).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the result spool in {}: {e}",
            cfg.data_dir.display()
        )
    })?;
    let journal = runs::Journal::open(&cfg.data_dir.join("runs")).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the run journal in {}: {e}",
            cfg.data_dir.display()
        )
    })?;
    journal.prepare(cfg.limits.max_workers);
    let agent =
        Arc::new(link::Agent::new(cfg, exec, apps, spool, journal).with_hooks(local.hooks.clone()));
    agent.run(cancel).await;
    Ok(())
}

/// The whole `agent` role: load the configuration, run until SIGINT or SIGTERM.
pub fn main_with(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            c.cancel();
        });
        run(cfg, cancel).await
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
