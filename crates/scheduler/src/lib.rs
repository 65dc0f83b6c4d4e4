//! The scheduler: every job becomes a run with its own run id and goes to the agent that
//! holds its `ip` through the gateway.
//!
//! Contract: `rt/exec` reaches the scheduler as [`SyncJob`]; the scheduler answers with the
//! worker's outcome, or `[410.1]Send Job To Agent Fail` as soon as the agent cannot be
//! reached (never a long hang). It keeps no state of its own for synchronous jobs.

use std::time::Duration;

use elves_bus::Bus;
use elves_rpc::gateway::{Dispatch, Instruct};
use elves_rpc::scheduler::{RtResult, SyncJob};
use elves_types::{ApiError, ErrorCode, Id};

/// Extra time allowed past the job's own timeout for the trip to the agent and back.
const SLACK: Duration = Duration::from_secs(15);
/// The wait when a job has no timeout.
const NO_LIMIT_WAIT: Duration = Duration::from_secs(86_400 + 120);

/// The scheduler module's settings (none yet).
#[derive(Clone, Debug, Default)]
pub struct Options {}

/// The scheduler module.
pub struct Service {
    bus: Bus,
}

impl Service {
    /// Offers the scheduler's messages on `bus`.
    pub fn start(_opts: Options, bus: &Bus) -> Service {
        let svc = Service {
            bus: bus.for_module(elves_rpc::module::SCHEDULER),
        };
        let me = svc.bus.clone();
        svc.bus.serve(move |m: SyncJob| {
            let bus = me.clone();
            async move { sync_job(&bus, m).await }
        });
        svc
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

async fn sync_job(bus: &Bus, m: SyncJob) -> Result<RtResult, ApiError> {
    let job = m.job;
    let id = Id::random();
    let timeout = job.timeout;
    let dispatch = Dispatch {
        run_id: id,
        instruct: Instruct {
            id,
            ip: job.ip,
            kind: "rt".into(),
            mode: "NP".into(),
            app: job.app,
            func: job.func,
            param: job.param,
            timeout,
            proxy: job.proxy,
        },
        sync: true,
    };
    let deadline = if timeout == 0 {
        NO_LIMIT_WAIT
    } else {
        Duration::from_secs(timeout.into()) + SLACK
    };
    match bus.call(dispatch, deadline).await {
        Ok(Ok(Some(o))) => Ok(RtResult {
            id,
            worker_flag: o.flag,
            worker_message: o.message,
            worker_costtime: o.costtime_ms,
        }),
        Ok(Ok(None)) => Err(ApiError::internal(
            "the gateway returned no outcome for a synchronous job",
        )),
        Ok(Err(e)) => Err(e),
        Err(e) => {
            tracing::warn!(run_id = %id, error = %e, "dispatch failed");
            Err(ErrorCode::SendJobFail.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elves_rpc::gateway::WorkerOutcome;
    use elves_rpc::scheduler::JobSpec;

    fn job(ip: &str) -> SyncJob {
        SyncJob {
            job: JobSpec {
                ip: ip.into(),
                app: "apptest".into(),
                func: "echo".into(),
                param: "{}".into(),
                timeout: 5,
                proxy: String::new(),
            },
        }
    }

    #[tokio::test]
    async fn no_gateway_means_send_job_fail() {
        let bus = Bus::memory();
        Service::start(Options::default(), &bus);
        let got = bus
            .call(job("10.0.0.1"), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(got, Err(ErrorCode::SendJobFail.into()));
    }

    #[tokio::test]
    async fn outcome_becomes_rt_result_and_the_instruct_is_rt() {
        let bus = Bus::memory();
        Service::start(Options::default(), &bus);
        bus.for_module("gateway").serve(|d: Dispatch| async move {
            assert!(d.sync);
            assert_eq!(d.instruct.kind, "rt");
            assert_eq!(d.instruct.mode, "NP");
            assert_eq!(d.instruct.id, d.run_id);
            Ok(Some(WorkerOutcome {
                flag: 1,
                message: d.instruct.param,
                costtime_ms: 7,
            }))
        });
        let got = bus
            .call(job("10.0.0.1"), Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                got.worker_flag,
                got.worker_message.as_str(),
                got.worker_costtime
            ),
            (1, "{}", 7)
        );
    }

    #[tokio::test]
    async fn gateway_errors_pass_through() {
        let bus = Bus::memory();
        Service::start(Options::default(), &bus);
        bus.serve(|_: Dispatch| async move { Err(ErrorCode::SendJobFail.into()) });
        let got = bus
            .call(job("10.0.0.1"), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(got, Err(ErrorCode::SendJobFail.into()));
    }
}
