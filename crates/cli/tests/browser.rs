//! The browser tests: `tests/browser/run.mjs` (Playwright from npm `playwright-core`, driving
//! the system's Chromium) against a real supervisor-mode center with an admin user made by
//! `elves admin user add`. Every `tests/browser/*.spec.mjs` runs; screenshots go to
//! `$CARGO_TARGET_DIR/browser/` (never committed).
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
    if std::env::var("ELVES_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("SKIPPED: ELVES_SKIP_BROWSER=1 (the browser tests did not run)");
        return;
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

    let c = SupCenter::start();
    let user = c.admin(
        &["user", "add", EMAIL, "--role", "admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(user.is_ok(), "adding the admin user: {user:?}");

    let out = out_dir();
    let run = Command::new("node")
        .arg(dir.join("run.mjs"))
        .current_dir(&dir)
        .env("ELVES_URL", format!("http://{}", c.api))
        .env("ELVES_BROWSER_OUT", &out)
        .env("ELVES_CHROMIUM", &chromium)
        .env("ELVES_UI_EMAIL", EMAIL)
        .env("ELVES_UI_PASSWORD", PASSWORD)
        .output()
        .expect("running node (is it installed?)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{text}");
    assert!(run.status.success(), "browser specs failed:\n{text}");
    assert!(
        out.join("apps.png").is_file(),
        "no screenshot in {}",
        out.display()
    );
}
