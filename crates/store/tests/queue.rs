//! Queue persistence, one rule per test. Every test has its own database file in its own temp
//! directory, so the tests run in parallel.

use std::path::{Path, PathBuf};

use elves_store::{Error, QueueRow, Store, TaskRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

async fn fresh() -> (Store, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elves.db");
    let store = Store::open(&url(&path)).await.unwrap();
    (store, dir, path)
}

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A raw connection to the file, bypassing the store, to look at what it wrote.
async fn peek(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

fn queue(id: &str) -> QueueRow {
    QueueRow {
        id: id.to_owned(),
        app: "ops".to_owned(),
        owner: "00000000000000aa".to_owned(),
        status: "pendding".to_owned(),
        version: 0,
        created_at_ms: 1_700_000_000_000,
        committed_at_ms: None,
        finished_at_ms: None,
    }
}

fn task(queue_id: &str, id: &str, seq: i64) -> TaskRow {
    TaskRow {
        id: id.to_owned(),
        queue_id: queue_id.to_owned(),
        seq,
        ip: "10.0.0.1".to_owned(),
        mode: "sync".to_owned(),
        func: "deploy".to_owned(),
        param: "{}".to_owned(),
        timeout: 30,
        proxy: String::new(),
        depend_on: None,
        status: "pendding".to_owned(),
        run_id: None,
        error: String::new(),
        result_flag: None,
        result_error: String::new(),
        worker_flag: None,
        worker_message: String::new(),
        worker_costtime: None,
        created_at_ms: 1_700_000_000_001 + seq,
        finished_at_ms: None,
    }
}

/// A queue saved once (version 1) at `status` with one `finish`ed task.
async fn saved(store: &Store, id: &str, status: &str, finished_at_ms: Option<i64>) -> QueueRow {
    let mut q = queue(id);
    store.create_queue(&q).await.unwrap();
    q.status = status.to_owned();
    q.finished_at_ms = finished_at_ms;
    let mut t = task(id, &format!("{id}-t0"), 0);
    t.status = "finish".to_owned();
    assert!(store.save_queue(&q, &[t], 0).await.unwrap());
    q.version = 1;
    q
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, Error>, expected: &str) {
    match result {
        Err(e @ Error::Conflict(_)) => {
            let msg = e.to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        other => panic!("expected Error::Conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn the_queues_migration_is_recorded_third() {
    let (store, _dir, path) = fresh().await;
    store.close().await;
    let mut conn = peek(&path).await;
    let versions: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM schema_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(versions[2], (3, "queues".to_owned()));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn create_and_load_round_trip_with_tasks_in_seq_order() {
    let (store, _dir, _path) = fresh().await;
    let q = queue("0123456789abcdef");
    store.create_queue(&q).await.unwrap();
    assert_eq!(store.queue(&q.id).await.unwrap(), Some((q.clone(), vec![])));
    assert_eq!(store.queue("ffffffffffffffff").await.unwrap(), None);

    // Saved out of order; read back by seq.
    let mut t0 = task(&q.id, "task-0", 0);
    t0.param = "{\"msg\":\"héllo wörld — 你好 🚀\"}".to_owned();
    t0.func = "déployer".to_owned();
    let mut t1 = task(&q.id, "task-1", 1);
    t1.depend_on = Some("task-0".to_owned());
    t1.proxy = "socks5://proxy:1080".to_owned();
    let t2 = task(&q.id, "task-2", 2);
    assert!(
        store
            .save_queue(&q, &[t2.clone(), t0.clone(), t1.clone()], 0)
            .await
            .unwrap()
    );
    let (read, tasks) = store.queue(&q.id).await.unwrap().unwrap();
    assert_eq!(read, QueueRow { version: 1, ..q });
    assert_eq!(tasks, vec![t0, t1, t2]);
}

#[tokio::test]
async fn a_second_queue_with_the_same_id_is_refused() {
    let (store, _dir, _path) = fresh().await;
    let q = queue("0123456789abcdef");
    store.create_queue(&q).await.unwrap();
    let other = QueueRow {
        app: "other".to_owned(),
        ..q.clone()
    };
    assert_conflict(store.create_queue(&other).await, "already exists");
    assert_eq!(store.queue(&q.id).await.unwrap().unwrap().0, q);
}

#[tokio::test]
async fn save_with_the_right_version_bumps_it_and_a_wrong_one_writes_nothing() {
    let (store, _dir, _path) = fresh().await;
    let mut q = queue("0123456789abcdef");
    q.version = 7;
    store.create_queue(&q).await.unwrap();

    // Wrong version: nothing changes, neither the queue nor the tasks.
    let mut stale = q.clone();
    stale.status = "running".to_owned();
    let t = task(&q.id, "task-0", 0);
    assert!(
        !store
            .save_queue(&stale, std::slice::from_ref(&t), 6)
            .await
            .unwrap()
    );
    assert_eq!(store.queue(&q.id).await.unwrap(), Some((q.clone(), vec![])));

    // Right version: everything lands and the version is 8, whatever the row said.
    let mut running = q.clone();
    running.status = "running".to_owned();
    running.committed_at_ms = Some(1_700_000_000_500);
    running.version = 123;
    assert!(
        store
            .save_queue(&running, std::slice::from_ref(&t), 7)
            .await
            .unwrap()
    );
    let (read, tasks) = store.queue(&q.id).await.unwrap().unwrap();
    assert_eq!(
        read,
        QueueRow {
            version: 8,
            ..running.clone()
        }
    );
    assert_eq!(tasks, vec![t]);

    // Only status and instants change; id, app, owner and created_at_ms stay.
    let mut renamed = read.clone();
    renamed.app = "other".to_owned();
    renamed.owner = "ffffffffffffffff".to_owned();
    renamed.created_at_ms = 1;
    renamed.status = "finish".to_owned();
    renamed.finished_at_ms = Some(1_700_000_001_000);
    assert!(store.save_queue(&renamed, &[], 8).await.unwrap());
    let (read, _) = store.queue(&q.id).await.unwrap().unwrap();
    assert_eq!(
        read,
        QueueRow {
            status: "finish".to_owned(),
            finished_at_ms: Some(1_700_000_001_000),
            version: 9,
            ..running
        }
    );
}

#[tokio::test]
async fn saving_an_unknown_queue_is_not_found() {
    let (store, _dir, _path) = fresh().await;
    let q = queue("0123456789abcdef");
    match store.save_queue(&q, &[], 0).await {
        Err(Error::NotFound(msg)) => assert!(msg.contains("0123456789abcdef"), "{msg}"),
        other => panic!("expected Error::NotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_saves_of_one_version_have_exactly_one_winner() {
    let (store, _dir, _path) = fresh().await;
    let q = queue("0123456789abcdef");
    store.create_queue(&q).await.unwrap();
    let saves: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let mut q = q.clone();
            q.status = "running".to_owned();
            let t = task(&q.id, &format!("task-of-writer-{i}"), 0);
            tokio::spawn(async move { (i, store.save_queue(&q, &[t], 0).await.unwrap()) })
        })
        .collect();
    let mut winners = Vec::new();
    for save in saves {
        let (i, won) = save.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (read, tasks) = store.queue(&q.id).await.unwrap().unwrap();
    assert_eq!(read.version, 1);
    // Only the winner's task was written.
    assert_eq!(
        tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [format!("task-of-writer-{}", winners[0])]
    );
}

#[tokio::test]
async fn upsert_updates_existing_tasks_and_inserts_new_ones() {
    let (store, _dir, _path) = fresh().await;
    let mut q = queue("0123456789abcdef");
    store.create_queue(&q).await.unwrap();
    let t0 = task(&q.id, "task-0", 0);
    let mut t1 = task(&q.id, "task-1", 1);
    t1.depend_on = Some("task-0".to_owned());
    assert!(
        store
            .save_queue(&q, &[t0.clone(), t1.clone()], 0)
            .await
            .unwrap()
    );

    // Commit: task-0 runs; only the changed task is given.
    q.status = "running".to_owned();
    q.committed_at_ms = Some(1_700_000_000_100);
    let mut r0 = t0.clone();
    r0.status = "running".to_owned();
    r0.run_id = Some("1111111111111111".to_owned());
    assert!(
        store
            .save_queue(&q, std::slice::from_ref(&r0), 1)
            .await
            .unwrap()
    );
    let (_, tasks) = store.queue(&q.id).await.unwrap().unwrap();
    assert_eq!(tasks, vec![r0.clone(), t1.clone()]);

    // Its result: task-0 finishes with every result field; task-1 is stopped.
    let mut f0 = r0.clone();
    f0.status = "finish".to_owned();
    f0.result_flag = Some(false);
    f0.result_error = "[410.1]Send Job To Agent Fail".to_owned();
    f0.worker_flag = Some(-1);
    f0.worker_message = "ne peut pas — 失败".to_owned();
    f0.worker_costtime = Some(1234);
    f0.finished_at_ms = Some(1_700_000_000_200);
    let mut s1 = t1.clone();
    s1.status = "stopped".to_owned();
    s1.error = "dependency task-0 did not succeed".to_owned();
    s1.finished_at_ms = Some(1_700_000_000_200);
    q.status = "finish".to_owned();
    q.finished_at_ms = Some(1_700_000_000_200);
    assert!(
        store
            .save_queue(&q, &[f0.clone(), s1.clone()], 2)
            .await
            .unwrap()
    );
    let (read, tasks) = store.queue(&q.id).await.unwrap().unwrap();
    assert_eq!(read, QueueRow { version: 3, ..q });
    assert_eq!(tasks, vec![f0, s1]);
}

/// A save of more tasks than one statement takes (inserted, then all updated) writes every
/// one; a task of another queue in a later chunk still refuses the whole save.
#[tokio::test]
async fn saves_of_many_tasks_write_every_task() {
    let (store, _dir, _path) = fresh().await;
    let mut q = queue("cccccccccccccccc");
    store.create_queue(&q).await.unwrap();
    let n = 1_201;
    let mut tasks: Vec<TaskRow> = (0..n)
        .map(|i| task(&q.id, &format!("task-{i:04}"), i))
        .collect();
    assert!(store.save_queue(&q, &tasks, 0).await.unwrap());
    for t in &mut tasks {
        t.status = "finish".to_owned();
        t.worker_message = format!("done {}", t.id);
    }
    q.status = "finish".to_owned();
    assert!(store.save_queue(&q, &tasks, 1).await.unwrap());
    let (read, got) = store.queue(&q.id).await.unwrap().unwrap();
    assert_eq!(read.version, 2);
    assert_eq!(got, tasks);

    let other = queue("dddddddddddddddd");
    store.create_queue(&other).await.unwrap();
    let mut mine: Vec<TaskRow> = (0..n)
        .map(|i| task(&other.id, &format!("other-{i:04}"), i))
        .collect();
    mine.push(task(&other.id, "task-1200", n));
    assert_conflict(
        store.save_queue(&other, &mine, 0).await,
        "task task-1200 belongs to another queue",
    );
    assert_eq!(store.queue(&other.id).await.unwrap(), Some((other, vec![])));
}

#[tokio::test]
async fn a_task_never_moves_to_another_queue() {
    let (store, _dir, _path) = fresh().await;
    let a = queue("aaaaaaaaaaaaaaaa");
    let b = queue("bbbbbbbbbbbbbbbb");
    store.create_queue(&a).await.unwrap();
    store.create_queue(&b).await.unwrap();
    let t = task(&a.id, "task-0", 0);
    assert!(
        store
            .save_queue(&a, std::slice::from_ref(&t), 0)
            .await
            .unwrap()
    );

    // A row naming another queue than the one saved.
    assert_conflict(
        store.save_queue(&b, std::slice::from_ref(&t), 0).await,
        "belongs to queue",
    );
    // A row of queue b reusing queue a's task id.
    let stolen = task(&b.id, "task-0", 0);
    assert_conflict(
        store.save_queue(&b, &[stolen], 0).await,
        "belongs to another queue",
    );
    // Nothing was written: b is untouched at version 0 and a keeps its task.
    assert_eq!(store.queue(&b.id).await.unwrap(), Some((b, vec![])));
    assert_eq!(store.queue(&a.id).await.unwrap().unwrap().1, vec![t]);
}

#[tokio::test]
async fn a_run_id_finds_its_queue() {
    let (store, _dir, _path) = fresh().await;
    let mut q = queue("0123456789abcdef");
    store.create_queue(&q).await.unwrap();
    let mut t = task(&q.id, "task-0", 0);
    t.status = "running".to_owned();
    t.run_id = Some("1111111111111111".to_owned());
    q.status = "running".to_owned();
    assert!(store.save_queue(&q, &[t], 0).await.unwrap());
    assert_eq!(
        store.queue_of_run("1111111111111111").await.unwrap(),
        Some(q.id.clone())
    );
    assert_eq!(store.queue_of_run("2222222222222222").await.unwrap(), None);
}

#[tokio::test]
async fn a_duplicate_run_id_is_a_conflict_and_writes_nothing() {
    let (store, _dir, _path) = fresh().await;
    let a = queue("aaaaaaaaaaaaaaaa");
    let b = queue("bbbbbbbbbbbbbbbb");
    store.create_queue(&a).await.unwrap();
    store.create_queue(&b).await.unwrap();
    let mut ta = task(&a.id, "task-a", 0);
    ta.status = "running".to_owned();
    ta.run_id = Some("1111111111111111".to_owned());
    assert!(
        store
            .save_queue(&a, std::slice::from_ref(&ta), 0)
            .await
            .unwrap()
    );
    // Saving the same task with its own run id again is fine.
    assert!(
        store
            .save_queue(&a, std::slice::from_ref(&ta), 1)
            .await
            .unwrap()
    );

    let mut b_running = b.clone();
    b_running.status = "running".to_owned();
    let fine = task(&b.id, "task-b0", 0);
    let mut tb = task(&b.id, "task-b1", 1);
    tb.status = "running".to_owned();
    tb.run_id = Some("1111111111111111".to_owned());
    assert_conflict(
        store.save_queue(&b_running, &[fine, tb], 0).await,
        "run id 1111111111111111",
    );
    // The whole save was rolled back: b keeps its status, version and (no) tasks.
    assert_eq!(store.queue(&b.id).await.unwrap(), Some((b, vec![])));
    assert_eq!(
        store.queue_of_run("1111111111111111").await.unwrap(),
        Some(a.id)
    );
}

#[tokio::test]
async fn queues_with_running_tasks_are_listed_once_each() {
    let (store, _dir, _path) = fresh().await;
    for (id, statuses) in [
        ("cccccccccccccccc", &["running", "running", "pendding"][..]),
        ("aaaaaaaaaaaaaaaa", &["finish", "running"][..]),
        ("bbbbbbbbbbbbbbbb", &["finish", "stopped", "pendding"][..]),
        ("dddddddddddddddd", &[][..]),
    ] {
        let mut q = queue(id);
        store.create_queue(&q).await.unwrap();
        q.status = "running".to_owned();
        let tasks: Vec<TaskRow> = statuses
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut t = task(id, &format!("{id}-{i}"), i as i64);
                t.status = (*s).to_owned();
                if *s == "running" {
                    t.run_id = Some(format!("{id}-run-{i}"));
                }
                t
            })
            .collect();
        assert!(store.save_queue(&q, &tasks, 0).await.unwrap());
    }
    assert_eq!(
        store.queues_with_running_tasks().await.unwrap(),
        ["aaaaaaaaaaaaaaaa", "cccccccccccccccc"]
    );
}

#[tokio::test]
async fn purge_respects_time_status_and_limit_and_removes_tasks() {
    let (store, _dir, path) = fresh().await;
    saved(&store, "0000000000000001", "finish", Some(100)).await;
    saved(&store, "0000000000000002", "stopped", Some(200)).await;
    saved(&store, "0000000000000003", "finish", Some(300)).await;
    saved(&store, "0000000000000004", "finish", Some(1_000)).await; // too recent
    saved(&store, "0000000000000005", "running", None).await; // not done
    saved(&store, "0000000000000006", "pendding", None).await; // not done
    // A running queue never has finished_at_ms in practice, but even if: it is not purged.
    saved(&store, "0000000000000007", "running", Some(50)).await;

    assert_eq!(store.purge_queues(500, 0).await.unwrap(), 0);
    assert_eq!(store.purge_queues(500, -1).await.unwrap(), 0);
    // Oldest first, at most the limit.
    assert_eq!(store.purge_queues(500, 2).await.unwrap(), 2);
    assert_eq!(store.queue("0000000000000001").await.unwrap(), None);
    assert_eq!(store.queue("0000000000000002").await.unwrap(), None);
    assert!(store.queue("0000000000000003").await.unwrap().is_some());
    // `before` is exclusive.
    assert_eq!(store.purge_queues(300, 10).await.unwrap(), 0);
    assert_eq!(store.purge_queues(500, 10).await.unwrap(), 1);
    assert_eq!(store.purge_queues(500, 10).await.unwrap(), 0);
    for id in ["0000000000000004", "0000000000000005", "0000000000000006"] {
        assert!(store.queue(id).await.unwrap().is_some(), "{id}");
    }
    assert!(store.queue("0000000000000007").await.unwrap().is_some());

    // The purged queues' tasks went with them.
    store.close().await;
    let mut conn = peek(&path).await;
    let mut owners: Vec<String> = sqlx::query_scalar("SELECT queue_id FROM queue_tasks")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    owners.sort();
    assert_eq!(
        owners,
        [
            "0000000000000004",
            "0000000000000005",
            "0000000000000006",
            "0000000000000007"
        ]
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn reopening_the_store_keeps_queues_and_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elves.db");
    let mut q = queue("0123456789abcdef");
    let mut t0 = task(&q.id, "task-0", 0);
    t0.param = "{\"π\":\"ünïcødé ✓\"}".to_owned();
    t0.status = "finish".to_owned();
    t0.run_id = Some("1111111111111111".to_owned());
    t0.result_flag = Some(true);
    t0.worker_flag = Some(1);
    t0.worker_message = "ok".to_owned();
    t0.worker_costtime = Some(42);
    t0.finished_at_ms = Some(1_700_000_000_300);
    let mut t1 = task(&q.id, "task-1", 1);
    t1.depend_on = Some("task-0".to_owned());
    t1.status = "running".to_owned();
    t1.run_id = Some("2222222222222222".to_owned());
    {
        let store = Store::open(&url(&path)).await.unwrap();
        store.create_queue(&q).await.unwrap();
        q.status = "running".to_owned();
        q.committed_at_ms = Some(1_700_000_000_100);
        assert!(
            store
                .save_queue(&q, &[t0.clone(), t1.clone()], 0)
                .await
                .unwrap()
        );
        store.close().await;
    }
    let store = Store::open(&url(&path)).await.unwrap();
    q.version = 1;
    assert_eq!(
        store.queue(&q.id).await.unwrap(),
        Some((q.clone(), vec![t0, t1]))
    );
    assert_eq!(
        store.queue_of_run("2222222222222222").await.unwrap(),
        Some(q.id.clone())
    );
    assert_eq!(store.queues_with_running_tasks().await.unwrap(), [q.id]);
    store.close().await;
}
