//! The queue module over an in-process bus and a real SQLite store, with a stand-in
//! scheduler that records what the module dispatches: reconciliation when an agent links,
//! the give-up deadline, and results that find their queue after the module's copy of it was
//! dropped.

use std::time::{Duration, Instant};

use elves_bus::Bus;
use elves_rpc::done::{Done, TaskResult};
use elves_rpc::gateway::WorkerOutcome;
use elves_rpc::queue::{AddTask, AgentLinked, CommitQueue, CreateQueue, QueueResult, TaskSpec};
use elves_rpc::scheduler::AsyncJob;
use elves_store::Store;
use elves_types::Id;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

struct World {
    bus: Bus,
    store: Store,
    jobs: mpsc::Receiver<AsyncJob>,
    _cancel: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

async fn world(opts: elves_queue::Options) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("q.db").display()))
        .await
        .unwrap();
    let bus = Bus::memory();
    let (tx, jobs) = mpsc::channel(64);
    bus.for_module("scheduler").serve(move |m: AsyncJob| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(m).await;
        }
    });
    let cancel = CancellationToken::new();
    elves_queue::Service::start(opts, &bus, store.clone(), cancel.clone());
    World {
        bus,
        store,
        jobs,
        _cancel: cancel.drop_guard(),
        _dir: dir,
    }
}

fn spec(ip: &str, mode: &str, depend: &str) -> TaskSpec {
    TaskSpec {
        ip: ip.into(),
        func: "f".into(),
        mode: mode.into(),
        param: "{\"a\":1}".into(),
        timeout: 30,
        proxy: String::new(),
        depend_task_id: depend.into(),
    }
}

impl World {
    async fn queue(&self, tasks: &[(&str, &str, Option<usize>)]) -> (String, Vec<Id>) {
        let q = self
            .bus
            .call(
                CreateQueue {
                    app: "apptest".into(),
                    owner: "me".into(),
                },
                WAIT,
            )
            .await
            .unwrap()
            .unwrap()
            .to_string();
        let mut ids: Vec<Id> = Vec::new();
        for (ip, mode, dep) in tasks {
            let dep = dep.map(|d| ids[d].to_string()).unwrap_or_default();
            let id = self
                .bus
                .call(
                    AddTask {
                        queue_id: q.clone(),
                        task: spec(ip, mode, &dep),
                    },
                    WAIT,
                )
                .await
                .unwrap()
                .unwrap();
            ids.push(id);
        }
        self.bus
            .call(
                CommitQueue {
                    queue_id: q.clone(),
                },
                WAIT,
            )
            .await
            .unwrap()
            .unwrap();
        (q, ids)
    }

    async fn next_job(&mut self) -> AsyncJob {
        tokio::time::timeout(WAIT, self.jobs.recv())
            .await
            .expect("a dispatch in time")
            .expect("scheduler channel open")
    }

    async fn result(&self, q: &str) -> Value {
        let raw = self
            .bus
            .call(QueueResult { queue_id: q.into() }, WAIT)
            .await
            .unwrap()
            .unwrap();
        serde_json::from_str(raw.get()).expect("the result is JSON")
    }

    async fn result_when(&self, q: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let r = self.result(q).await;
            if done(&r) {
                return r;
            }
            assert!(start.elapsed() < WAIT, "gave up waiting; last result {r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_linked_agent_is_offered_its_running_tasks_again_at_once_with_their_mode() {
    // Periodic reconciliation far away: only the link event can explain a redelivery.
    let mut w = world(elves_queue::Options {
        maintenance_every: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    // The first maintenance pass runs at start: let it go by.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, ids) = w
        .queue(&[
            ("10.0.0.1", "P", None),
            ("10.0.0.2", "NP", None),
            ("10.0.0.1", "NP", Some(0)),
        ])
        .await;
    let first = [w.next_job().await, w.next_job().await];
    let on_a = first
        .iter()
        .find(|j| j.instruct.ip == "10.0.0.1")
        .expect("the root on 10.0.0.1 dispatched");
    assert!(!on_a.redelivery);
    assert_eq!(
        (
            on_a.instruct.id,
            on_a.instruct.mode.as_str(),
            on_a.instruct.kind.as_str()
        ),
        (ids[0], "P", "queue"),
        "mode P travels with the task"
    );
    w.bus
        .cast(AgentLinked {
            ip: "10.0.0.1".into(),
        })
        .unwrap();
    let again = w.next_job().await;
    assert!(again.redelivery, "{again:?}");
    assert_eq!(again.run_id, on_a.run_id, "the same run id");
    assert_eq!(
        again.instruct, on_a.instruct,
        "the same instruct, mode included"
    );
    // Only that agent's running task: nothing for 10.0.0.2, nothing for the pending one.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), w.jobs.recv())
            .await
            .is_err(),
        "nothing else is offered"
    );
}

#[tokio::test]
async fn a_task_whose_agent_never_comes_back_is_given_up_and_its_dependants_stopped() {
    let mut w = world(elves_queue::Options {
        maintenance_every: Duration::from_millis(50),
        give_up: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let (q, ids) = w
        .queue(&[("10.0.0.9", "NP", None), ("10.0.0.9", "NP", Some(0))])
        .await;
    let job = w.next_job().await;
    assert_eq!(job.instruct.id, ids[0]);
    let r = w
        .result_when(&q, |r| r[ids[0].as_str()]["status"] == "finish")
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "given up only after the deadline"
    );
    let t0 = &r[ids[0].as_str()];
    assert_eq!(t0["flag"], "false");
    assert_eq!(t0["error"], "[410.1]Send Job To Agent Fail");
    assert_eq!(t0["worker_flag"], -1);
    assert!(
        t0["worker_message"]
            .as_str()
            .unwrap()
            .contains("agent 10.0.0.9 not heard of"),
        "{t0}"
    );
    let t1 = &r[ids[1].as_str()];
    assert_eq!(t1["status"], "stopped");
    assert_eq!(
        t1["error"],
        format!("dependency {} did not succeed", ids[0]).as_str()
    );
    // A result that comes in afterwards changes nothing and is acknowledged.
    let late = w
        .bus
        .call(
            TaskResult(Done {
                run_id: job.run_id,
                id: ids[0],
                outcome: Ok(WorkerOutcome {
                    flag: 1,
                    message: "late".into(),
                    costtime_ms: 1,
                }),
            }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(late, Ok(()));
    assert_eq!(w.result(&q).await, r);
}

#[tokio::test]
async fn results_drive_a_chain_to_its_end_and_duplicates_change_nothing() {
    let mut w = world(elves_queue::Options::default()).await;
    let (q, ids) = w
        .queue(&[
            ("10.0.0.1", "NP", None),
            ("10.0.0.1", "NP", Some(0)),
            ("10.0.0.1", "NP", Some(1)),
        ])
        .await;
    for (i, id) in ids.iter().enumerate() {
        let job = w.next_job().await;
        assert_eq!(job.instruct.id, *id, "task {i} dispatched in order");
        let done = TaskResult(Done {
            run_id: job.run_id,
            id: *id,
            outcome: Ok(WorkerOutcome {
                flag: 1,
                message: format!("r{i}"),
                costtime_ms: 3,
            }),
        });
        for _ in 0..2 {
            assert_eq!(w.bus.call(done.clone(), WAIT).await.unwrap(), Ok(()));
        }
    }
    let r = w
        .result_when(&q, |r| {
            r.as_object()
                .unwrap()
                .values()
                .all(|t| t["status"] == "finish")
        })
        .await;
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(r[id.as_str()]["worker_message"], format!("r{i}").as_str());
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), w.jobs.recv())
            .await
            .is_err(),
        "no task dispatched twice"
    );
}

#[tokio::test]
async fn a_burst_of_results_is_stored_whole_before_it_is_answered() {
    let mut w = world(elves_queue::Options::default()).await;
    let tasks: Vec<(&str, &str, Option<usize>)> = (0..60)
        .map(|i| (if i % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" }, "NP", None))
        .collect();
    let (q, ids) = w.queue(&tasks).await;
    let mut jobs = Vec::new();
    for _ in &ids {
        jobs.push(w.next_job().await);
    }
    // Every result at once, each twice (an agent re-sends until acknowledged): they are
    // stored in as few transactions as arrive together, and each call answers only then.
    let calls = jobs.iter().flat_map(|job| {
        let done = TaskResult(Done {
            run_id: job.run_id,
            id: job.instruct.id,
            outcome: Ok(WorkerOutcome {
                flag: 1,
                message: format!("r-{}", job.instruct.id),
                costtime_ms: 1,
            }),
        });
        [done.clone(), done].map(|d| w.bus.call(d, WAIT))
    });
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer.unwrap(), Ok(()));
    }
    // Read from the store itself, not from the module's copy.
    let (row, stored) = w.store.queue(&q).await.unwrap().unwrap();
    assert_eq!(row.status, "finish");
    assert_eq!(stored.len(), ids.len());
    for t in &stored {
        assert_eq!(t.status, "finish", "task {}", t.id);
        assert_eq!(t.worker_flag, Some(1));
        assert_eq!(t.worker_message, format!("r-{}", t.id));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), w.jobs.recv())
            .await
            .is_err(),
        "nothing dispatched again"
    );
}
