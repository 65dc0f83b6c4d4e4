//! The browser tests: `tests/browser/run.mjs` (Playwright from npm `playwright-core`, driving
//! the system's Chromium) against a real supervisor-mode center with an admin user made by
//! `elves admin user add`. Every `tests/browser/*.spec.mjs` runs; screenshots go to
//! `$CARGO_TARGET_DIR/browser/` (never committed). A second test runs
//! `agent-dashboard.spec.mjs` against a standalone agent's dashboard (developer mode on).
//!
//! Needs `node`, `/usr/bin/chromium` (or `ELVES_CHROMIUM`) and `npm ci` in tests/browser
//! (`.ci/run` does both). Their absence fails the test; `ELVES_SKIP_BROWSER=1` skips it.

mod common;
#[path = "common/supervisor_center.rs"]
mod sup;

use std::path::PathBuf;
use std::process::Command;

use sup::SupCenter;

const EMAIL: &str = "browser@example.com";
const PASSWORD: &str = "browser test password 42";

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// `$CARGO_TARGET_DIR/browser`, from the test binary's path (target/debug/deps/…).
fn out_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    target.join("browser")
}

#[test]
fn web_ui_specs_pass_in_chromium() {
    if !browser_ready() {
        return;
    }
    let c = SupCenter::start();
    let user = c.admin(
        &["user", "add", EMAIL, "--role", "admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(user.is_ok(), "adding the admin user: {user:?}");

    let out = out_dir();
    run_specs(
        &["admin-ui.spec.mjs"],
        &format!("http://{}", c.api),
        &[("ELVES_UI_EMAIL", EMAIL), ("ELVES_UI_PASSWORD", PASSWORD)],
    );
    assert!(
        out.join("apps.png").is_file(),
        "no screenshot in {}",
        out.display()
    );
}

/// Checks node's packages and Chromium are there (panics if not); `false` when skipped.
fn browser_ready() -> bool {
    if std::env::var("ELVES_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("SKIPPED: ELVES_SKIP_BROWSER=1 (the browser tests did not run)");
        return false;
    }
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in {} (.ci/run does), or set ELVES_SKIP_BROWSER=1",
        dir.display()
    );
    let chromium = std::env::var("ELVES_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: apt-get install chromium (.ci/run does), or set ELVES_SKIP_BROWSER=1"
    );
    true
}

/// Runs the named specs of tests/browser against `url`; panics with their output on failure.
fn run_specs(specs: &[&str], url: &str, env: &[(&str, &str)]) {
    let chromium = std::env::var("ELVES_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let dir = browser_dir();
    let run = Command::new("node")
        .arg(dir.join("run.mjs"))
        .args(specs)
        .current_dir(&dir)
        .env("ELVES_URL", url)
        .env("ELVES_BROWSER_OUT", out_dir())
        .env("ELVES_CHROMIUM", &chromium)
        .envs(env.iter().copied())
        .output()
        .expect("running node (is it installed?)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{text}");
    assert!(run.status.success(), "browser specs failed:\n{text}");
}

/// `$1` app, `$2` func, `$3` base64 param: answers `FUNC|TASK_ID|PARAM`.
const SH_WORKER: &str = r#"#!/bin/sh
param=$(printf '%s' "$3" | base64 -d)
printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s|%s|%s</ElvesWResult>' "$2" "$ELVES_TASK_ID" "$param"
"#;

#[test]
fn the_agent_dashboard_shows_a_task_run_from_its_developer_form_in_chromium() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    common::write_file(&home.join("apps/shapp/app-worker"), SH_WORKER, 0o755);
    let port = common::free_port();
    let config = home.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "ip = '127.0.0.9'\ntoken = 'unused'\ncenter = 'http://127.0.0.1:{closed}'\n\
             data_dir = '{data}'\napps_dir = '{apps}'\n[apps]\nshapp = '1.0.0'\n\
             [http]\nlisten = '127.0.0.1:{port}'\n\
             [devmode]\nenabled = true\nauthid = 'DEV0123456789ABC'\nauthkey = 'dev-mode-key-e2e-4f2a'\n",
            closed = common::free_port(),
            data = home.join("data").display(),
            apps = home.join("apps").display(),
        ),
    )
    .unwrap();
    let mut agent = common::Proc::start("agent", "agent", &config, home);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    common::poll("the dashboard", std::time::Duration::from_secs(30), || {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).ok()
    });
    run_specs(
        &["agent-dashboard.spec.mjs"],
        &format!("http://{addr}"),
        &[],
    );
    agent.stop();
    assert!(out_dir().join("agent-dashboard.png").is_file());
}
