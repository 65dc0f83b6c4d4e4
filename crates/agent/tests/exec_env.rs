//! The worker's environment is an allowlist: a secret in the agent's environment never leaks.
//!
//! This test lives in its own test binary because it changes the process environment, which
//! must not race with other tests spawning processes.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use elves_agent::exec::{ExecConfig, Executor, Job};
use tokio_util::sync::CancellationToken;

#[test]
fn environment_is_an_allowlist() {
    // SAFETY: this is the only test in this binary and no other thread exists yet.
    unsafe {
        std::env::set_var("ELVES_TEST_SECRET", "hunter2");
        std::env::set_var("LANG", "C.UTF-8");
    }
    let tmp = tempfile::tempdir().unwrap();
    let apps = tmp.path().join("apps");
    let dir = apps.join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let script = "#!/bin/sh\nprintf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>'\nenv\nprintf '</ElvesWResult>'\n";
    let worker = dir.join("app-worker");
    std::fs::write(&worker, script).unwrap();
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exec = Executor::new(ExecConfig {
        apps_dir: apps,
        ..ExecConfig::default()
    });
    let job = Job {
        id: "ID1".into(),
        kind: "cron".into(),
        mode: "NP".into(),
        app: "app".into(),
        func: "f".into(),
        param: "{}".into(),
        timeout_secs: 5,
        proxy: String::new(),
    };
    let out = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(20),
            exec.run(&job, true, CancellationToken::new()),
        )
        .await
        .expect("executor hung")
    });
    assert_eq!(out.flag, 1, "{out:?}");
    let mut names: Vec<&str> = out
        .message
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    names.sort_unstable();
    assert!(
        !out.message.contains("hunter2"),
        "secret leaked: {}",
        out.message
    );
    assert!(!names.contains(&"ELVES_TEST_SECRET"));
    for want in [
        "ELVES_APP=app",
        "ELVES_FUNC=f",
        "ELVES_TASK_ID=ID1",
        "ELVES_TASK_TYPE=cron",
        "ELVES_MODE=NP",
        "LANG=C.UTF-8",
    ] {
        assert!(
            out.message.lines().any(|l| l == want),
            "missing {want}: {}",
            out.message
        );
    }
    // Only allowlisted names and ELVES_* appear (the shell itself may add PWD, SHLVL and _).
    let allowed = [
        "PATH",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "HOME",
        "TZ",
        "USER",
        "LOGNAME",
        "TMPDIR",
        "ELVES_APP",
        "ELVES_FUNC",
        "ELVES_TASK_ID",
        "ELVES_TASK_TYPE",
        "ELVES_MODE",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    for name in names {
        assert!(allowed.contains(&name), "unexpected variable {name}");
    }
}
