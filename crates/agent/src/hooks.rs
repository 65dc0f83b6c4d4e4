//! What happens after every worker run, whoever asked for it (the center, agent-side cron or
//! developer mode): the run is recorded for the dashboard, a failure to run is recorded as an
//! error, and an asynchronous run in mode `P` is handed to the app's processor.

use std::sync::Arc;

use crate::exec::{Job, Outcome};
use crate::processor::{Delivery, Ins, Processors, wants_processor};
use crate::stats::{Stats, TaskRecord, flag_name, now_text};

/// The after-run hooks. The default records runs and calls no processor.
#[derive(Default)]
pub struct Hooks {
    pub stats: Arc<Stats>,
    pub processors: Option<Arc<Processors>>,
}

impl Hooks {
    /// Called once per finished run with what the agent reports for it.
    pub fn finished(&self, job: &Job, ip: &str, outcome: &Outcome) {
        self.stats.task(TaskRecord {
            time: now_text(),
            id: job.id.clone(),
            kind: job.kind.clone(),
            mode: job.mode.clone(),
            proxy: job.proxy.clone(),
            app: job.app.clone(),
            func: job.func.clone(),
            costtime: outcome.costtime_ms,
            flag: flag_name(outcome.flag).to_owned(),
            result: outcome.message.clone(),
        });
        if outcome.flag == -1 {
            self.stats.error(&format!(
                "{} {} app [{}] func [{}]: {}",
                job.kind, job.id, job.app, job.func, outcome.message
            ));
        }
        if wants_processor(&job.kind, &job.mode)
            && let Some(p) = &self.processors
        {
            p.submit(&Delivery {
                ins: Ins {
                    id: job.id.clone(),
                    ip: ip.to_owned(),
                    kind: job.kind.clone(),
                    mode: job.mode.clone(),
                    app: job.app.clone(),
                    func: job.func.clone(),
                    param: job.param.clone(),
                    timeout: i32::try_from(job.timeout_secs).unwrap_or(i32::MAX),
                    proxy: job.proxy.clone(),
                },
                flag: outcome.flag,
                costtime: i32::try_from(outcome.costtime_ms).unwrap_or(i32::MAX),
                result: outcome.message.clone(),
            });
        }
    }
}
