//! The scheduler: every job becomes a run with its own run id and goes to the agent that
//! holds its `ip` through the gateway.
//!
//! Contract:
//! * `rt/exec` reaches the scheduler as [`SyncJob`]; the scheduler answers with the worker's
//!   outcome, or `[410.1]Send Job To Agent Fail` as soon as the agent cannot be reached (never
//!   a long hang).
//! * Queue and cron send [`AsyncJob`]s (casts) with the run id they have already persisted.
//!   When the run cannot be delivered the scheduler reports `[410.1]` back at once; otherwise
//!   the agent's result arrives later as a [`RunResult`] from the gateway and is handed to the
//!   module named by the job's kind (`queue` → [`TaskResult`], `cron` → [`CronResult`]). The
//!   gateway acknowledges the result to the agent only when that module answered `Ok`, i.e.
//!   stored it; until then the agent keeps it spooled and sends it again. Modules de-duplicate
//!   by run id.
//! * [`CancelRun`] asks the agent to kill a run's worker.
//!
//! The scheduler keeps no state of its own.

use std::time::Duration;

use elves_bus::Bus;
use elves_rpc::done::{CronResult, Done, TaskResult};
use elves_rpc::gateway::{Cancel, Dispatch, Instruct};
use elves_rpc::scheduler::{AsyncJob, AsyncJobs, CancelRun, RtResult, RunResult, SyncJob};
use elves_types::{ApiError, ErrorCode, Id};

/// Extra time allowed past the job's own timeout for the trip to the agent and back.
const SLACK: Duration = Duration::from_secs(15);
/// How long a delivery, a hand-over of a result or a cancel may take.
const HOP: Duration = Duration::from_secs(10);
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
        let me = svc.bus.clone();
        svc.bus.serve(move |m: AsyncJob| {
            let bus = me.clone();
            async move { async_job(&bus, m).await }
        });
        // A batch (a cron instant's fires): each job goes through the AsyncJob route, bounded
        // by its slots as if cast alone.
        let me = svc.bus.clone();
        svc.bus.serve(move |m: AsyncJobs| {
            for job in m.jobs {
                let run_id = job.run_id;
                if let Err(e) = me.cast(job) {
                    tracing::error!(%run_id, error = %e, "async job of a batch not queued");
                }
            }
            async {}
        });
        let me = svc.bus.clone();
        svc.bus.serve(move |m: RunResult| {
            let bus = me.clone();
            async move {
                let done = Done {
                    run_id: m.run_id,
                    id: m.id,
                    outcome: Ok(m.outcome),
                };
                hand_back(&bus, &m.kind, done).await
            }
        });
        let me = svc.bus.clone();
        svc.bus.serve(move |m: CancelRun| {
            let bus = me.clone();
            async move {
                match bus
                    .call(
                        Cancel {
                            run_id: m.run_id,
                            ip: m.ip,
                        },
                        HOP,
                    )
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(run_id = %m.run_id, error = %e, "cancel failed");
                        Err(ErrorCode::SendJobFail.into())
                    }
                }
            }
        });
        svc
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

/// Delivers an asynchronous run; a delivery failure goes straight back to its module.
async fn async_job(bus: &Bus, m: AsyncJob) {
    let _timer = elves_telemetry::dispatch("async");
    let kind = m.instruct.kind.clone();
    let (run_id, id, redelivery) = (m.run_id, m.instruct.id, m.redelivery);
    let failure = match bus
        .call(
            Dispatch {
                run_id,
                instruct: m.instruct,
                sync: false,
            },
            HOP,
        )
        .await
    {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e,
        Err(e) => {
            tracing::warn!(%run_id, error = %e, "async dispatch failed");
            ErrorCode::SendJobFail.into()
        }
    };
    if redelivery {
        tracing::debug!(%run_id, "redelivery failed; the run stays with its agent");
        return;
    }
    if let Err(e) = hand_back(
        bus,
        &kind,
        Done {
            run_id,
            id,
            outcome: Err(failure),
        },
    )
    .await
    {
        tracing::error!(%run_id, %kind, error = %e, "could not report a delivery failure");
    }
}

/// Hands a run's result to the module that asked for it; `Ok` once that module stored it.
async fn hand_back(bus: &Bus, kind: &str, done: Done) -> Result<(), ApiError> {
    let run_id = done.run_id;
    let answer = match kind {
        "queue" => bus.call(TaskResult(done), HOP).await,
        "cron" => bus.call(CronResult(done), HOP).await,
        other => {
            tracing::warn!(%run_id, kind = other, "result of an unknown kind dropped");
            return Err(ApiError::internal(format!("unknown job kind {other:?}")));
        }
    };
    answer.unwrap_or_else(|e| {
        tracing::warn!(%run_id, %kind, error = %e, "result not handed back");
        Err(ApiError::internal(e))
    })
}

async fn sync_job(bus: &Bus, m: SyncJob) -> Result<RtResult, ApiError> {
    let _timer = elves_telemetry::dispatch("rt");
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

    fn async_job(kind: &str) -> AsyncJob {
        let id = Id::random();
        AsyncJob {
            run_id: Id::random(),
            instruct: Instruct {
                id,
                ip: "10.0.0.1".into(),
                kind: kind.into(),
                mode: "NP".into(),
                app: "apptest".into(),
                func: "echo".into(),
                param: String::new(),
                timeout: 5,
                proxy: String::new(),
            },
            redelivery: false,
        }
    }

    #[tokio::test]
    async fn undeliverable_async_runs_come_back_as_410_1_to_their_module() {
        let bus = Bus::memory();
        Service::start(Options::default(), &bus);
        bus.serve(|_: Dispatch| async move { Err(ErrorCode::SendJobFail.into()) });
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let t = tx.clone();
        bus.serve(move |m: TaskResult| {
            let t = t.clone();
            async move {
                t.send(("queue", m.0)).await.unwrap();
                Ok(())
            }
        });
        bus.serve(move |m: CronResult| {
            let t = tx.clone();
            async move {
                t.send(("cron", m.0)).await.unwrap();
                Ok(())
            }
        });
        for kind in ["queue", "cron"] {
            let job = async_job(kind);
            let (run_id, id) = (job.run_id, job.instruct.id);
            bus.cast(job).unwrap();
            let (to, done) = rx.recv().await.unwrap();
            assert_eq!(to, kind);
            assert_eq!(
                done,
                Done {
                    run_id,
                    id,
                    outcome: Err(ErrorCode::SendJobFail.into())
                }
            );
        }
    }

    #[tokio::test]
    async fn run_results_reach_the_module_of_their_kind_and_its_answer_comes_back() {
        let bus = Bus::memory();
        Service::start(Options::default(), &bus);
        bus.serve(|m: TaskResult| async move {
            assert_eq!(m.0.outcome.as_ref().map(|o| o.flag), Ok(1));
            Ok(())
        });
        let rr = |kind: &str| RunResult {
            run_id: Id::random(),
            id: Id::random(),
            kind: kind.into(),
            ip: "10.0.0.1".into(),
            outcome: WorkerOutcome {
                flag: 1,
                message: "ok".into(),
                costtime_ms: 1,
            },
        };
        assert_eq!(
            bus.call(rr("queue"), Duration::from_secs(1)).await.unwrap(),
            Ok(())
        );
        // No cron module here: the result is not acknowledged, so the agent keeps it.
        assert!(
            bus.call(rr("cron"), Duration::from_secs(1))
                .await
                .unwrap()
                .is_err()
        );
        assert!(
            bus.call(rr("rt"), Duration::from_secs(1))
                .await
                .unwrap()
                .is_err()
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
