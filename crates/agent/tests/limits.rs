//! Worker limits through the executor: the per-agent cap queues runs and refuses them when
//! the line is full, and workers run as the configured unprivileged user when the agent is
//! root.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use elves_agent::exec::{ExecConfig, Executor, Job};
use elves_agent::limits::{Limiter, worker_user};
use tokio_util::sync::CancellationToken;

const WORKER: &str = "#!/bin/sh\ncase \"$2\" in slow) sleep 1 ;; esac\n\
printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s %s %s</ElvesWResult>' \"$(id -u)\" \"$HOME\" \"$2\"\n";

fn app(dir: &std::path::Path) -> ExecConfig {
    let app = dir.join("apps/limited");
    std::fs::create_dir_all(&app).unwrap();
    let w = app.join("app-worker");
    std::fs::write(&w, WORKER).unwrap();
    for p in [dir, &dir.join("apps"), &app, &w] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    ExecConfig {
        apps_dir: dir.join("apps"),
        ..ExecConfig::default()
    }
}

fn job(func: &str) -> Job {
    Job {
        id: "00000000000000A1".into(),
        kind: "queue".into(),
        mode: "NP".into(),
        app: "limited".into(),
        func: func.into(),
        ..Job::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_cap_queues_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = app(dir.path());
    // One worker at a time, one waiting at most.
    let exec = Executor::new(cfg).with_limiter(Arc::new(Limiter::new(1, 1, BTreeMap::new())));
    let run = |func: &'static str| {
        let e = exec.clone();
        tokio::spawn(async move { e.run(&job(func), true, CancellationToken::new()).await })
    };
    let first = run("slow");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = run("quick");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = exec
        .run(&job("quick"), true, CancellationToken::new())
        .await;
    assert_eq!(third.flag, -1, "{third:?}");
    assert!(
        third.message.contains("too many workers waiting"),
        "{third:?}"
    );
    let first = first.await.unwrap();
    let second = second.await.unwrap();
    assert_eq!(first.flag, 1, "{first:?}");
    assert_eq!(second.flag, 1, "{second:?}");
    // The wait for a slot is not the worker's cost.
    assert!(second.costtime_ms < 800, "{second:?}");
}

/// An asynchronous run keeps its worker slot until its result is spooled and its journal
/// slot freed: the permit taken out of an admission holds the slot after the admission (and
/// its worker) is gone, and only dropping the permit frees it.
#[tokio::test]
async fn a_permit_taken_out_holds_the_slot_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let exec =
        Executor::new(app(dir.path())).with_limiter(Arc::new(Limiter::new(1, 0, BTreeMap::new())));
    let token = CancellationToken::new();
    let quick = job("quick");
    let admit = || exec.admit(&quick, true, &token);

    let Ok(mut first) = admit().await else {
        panic!("the first run is admitted");
    };
    let permit = first.take_permit();
    assert!(permit.is_some(), "a capped admission carries a permit");
    drop(first);
    let Err(refused) = admit().await else {
        panic!("the slot is still held");
    };
    assert!(
        refused.message.contains("too many workers waiting"),
        "{refused:?}"
    );
    drop(permit);
    assert!(admit().await.is_ok(), "the slot is free again");
}

#[tokio::test]
async fn workers_run_as_the_configured_user_when_the_agent_is_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the agent must run as root to switch users");
        return;
    }
    let user = worker_user("nobody")
        .expect("the user nobody exists")
        .expect("root switches users");
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(app(dir.path())).with_user(Some(user.clone()));
    let out = exec.run(&job("who"), true, CancellationToken::new()).await;
    assert_eq!(out.flag, 1, "{out:?}");
    assert_eq!(
        out.message,
        format!("{} {} who", user.uid, user.home.display())
    );
    assert_ne!(user.uid, 0);
}
