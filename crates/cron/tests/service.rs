//! The cron module on a real bus and a real SQLite store, with a stand-in scheduler that keeps
//! every run "in flight" until the test answers it: what stop, start and delete do to a run
//! already sent, and to the cron's next fires. Real time, every-second rules, bounded waits.

use std::sync::Arc;
use std::time::Duration;

use elves_bus::Bus;
use elves_cron::{Options, Service};
use elves_cron_expr::jiff::tz::TimeZone;
use elves_rpc::cron::{AddCron, CronAction, CronDetail, OperateCron};
use elves_rpc::done::{CronResult, Done};
use elves_rpc::gateway::WorkerOutcome;
use elves_rpc::scheduler::{AsyncJob, AsyncJobs};
use elves_store::Store;
use elves_types::{ApiError, ErrorCode, Id, SystemClock};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct Module {
    bus: Bus,
    jobs: mpsc::UnboundedReceiver<AsyncJob>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn module() -> Module {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("elves.db").display());
    let store = Store::open(&url).await.unwrap();
    let bus = Bus::memory();
    let (tx, jobs) = mpsc::unbounded_channel();
    // The cron module hands each instant's fires over in one batch.
    bus.serve(move |m: AsyncJobs| {
        for job in m.jobs {
            let _ = tx.send(job);
        }
        async {}
    });
    let cancel = CancellationToken::new();
    let opts = Options {
        default_tz: TimeZone::UTC,
        display_tz: TimeZone::UTC,
        ..Options::default()
    };
    Service::start(opts, &bus, store, Arc::new(SystemClock), cancel.clone()).unwrap();
    Module {
        bus,
        jobs,
        cancel,
        _dir: dir,
    }
}

impl Module {
    async fn add(&self) -> Id {
        let m = AddCron {
            ip: "10.0.0.1".into(),
            app: "apptest".into(),
            func: "tick".into(),
            mode: "NP".into(),
            param: String::new(),
            timeout: 90,
            proxy: String::new(),
            rule: "* * * * * ?".into(),
            tz: String::new(),
            misfire: String::new(),
            owner: "K1".into(),
        };
        self.bus.call(m, WAIT).await.unwrap().unwrap()
    }

    async fn operate(&self, cron: Id, action: CronAction) -> Result<(), ApiError> {
        let m = OperateCron {
            cron_id: cron.to_string(),
            action,
        };
        self.bus.call(m, WAIT).await.unwrap()
    }

    async fn detail(&self, cron: Id) -> Result<Value, ApiError> {
        let m = CronDetail {
            cron_id: cron.to_string(),
        };
        self.bus.call(m, WAIT).await.unwrap()
    }

    /// The next run sent to the scheduler.
    async fn next_job(&mut self) -> AsyncJob {
        tokio::time::timeout(WAIT, self.jobs.recv())
            .await
            .expect("a fire within the wait")
            .unwrap()
    }

    /// Runs sent during `d`.
    async fn jobs_during(&mut self, d: Duration) -> Vec<AsyncJob> {
        let mut got = Vec::new();
        let until = tokio::time::Instant::now() + d;
        while let Ok(Some(j)) = tokio::time::timeout_at(until, self.jobs.recv()).await {
            got.push(j);
        }
        got
    }

    /// Answers a run as its agent would (through the scheduler).
    async fn answer(&self, job: &AsyncJob, message: &str) -> Result<(), ApiError> {
        let done = Done {
            run_id: job.run_id,
            id: job.instruct.id,
            outcome: Ok(WorkerOutcome {
                flag: 1,
                message: message.into(),
                costtime_ms: 5,
            }),
        };
        self.bus.call(CronResult(done), WAIT).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_and_delete_while_a_run_is_in_flight() {
    let mut m = module().await;
    let cron = m.add().await;

    // Stop while a run is in flight: no further fire; the run's result still arrives, is
    // stored and becomes the last result.
    let first = m.next_job().await;
    assert_eq!(
        (first.instruct.id, first.instruct.kind.as_str()),
        (cron, "cron")
    );
    m.operate(cron, CronAction::Stop).await.unwrap();
    // A fire recorded just before the stop committed may still be on its way.
    m.jobs_during(Duration::from_millis(300)).await;
    assert!(
        m.jobs_during(Duration::from_millis(2500)).await.is_empty(),
        "a stopped cron fired"
    );
    assert_eq!(m.answer(&first, "first").await, Ok(()));
    let d = m.detail(cron).await.unwrap();
    assert_eq!(d["cron_flag"], 0, "{d}");
    assert_eq!(
        d["last_exec_result"]["result"]["worker_message"], "first",
        "{d}"
    );
    assert_eq!(d["next_fire_time"], "", "{d}");
    // The same result again (the agent re-sends until acknowledged) changes nothing.
    assert_eq!(m.answer(&first, "first, again").await, Ok(()));
    let d = m.detail(cron).await.unwrap();
    assert_eq!(
        d["last_exec_result"]["result"]["worker_message"], "first",
        "{d}"
    );

    // Start: fires again, each with its own run id.
    m.operate(cron, CronAction::Start).await.unwrap();
    let second = m.next_job().await;
    assert_ne!(second.run_id, first.run_id);
    assert!(!second.redelivery);

    // Delete while that run is in flight: nothing fires any more; its late result is
    // acknowledged (so the agent forgets it) and ignored; the cron is gone.
    m.operate(cron, CronAction::Delete).await.unwrap();
    m.jobs_during(Duration::from_millis(300)).await;
    assert!(
        m.jobs_during(Duration::from_millis(2500)).await.is_empty(),
        "a deleted cron fired"
    );
    assert_eq!(m.answer(&second, "second").await, Ok(()));
    assert_eq!(
        m.detail(cron).await.unwrap_err().code,
        ErrorCode::CronNotFound
    );
    assert_eq!(
        m.operate(cron, CronAction::Stop).await.unwrap_err().code,
        ErrorCode::CronNotFound
    );
    m.cancel.cancel();
}
