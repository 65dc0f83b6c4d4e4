//! A center in supervisor mode for the end-to-end and browser tests: `elves center` with a
//! generated config (admin token, center secret, packages dir), and `elves admin` run against
//! it. Included with `#[path]` next to `mod common`.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;

pub const ADMIN_TOKEN: &str = "e2e-admin-token-3f9a";
pub const CENTER_SECRET: &str = "e2e-center-secret-0123456789";

pub struct SupCenter {
    pub procs: Procs,
    pub api: SocketAddr,
    pub agents: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl SupCenter {
    /// Starts a supervisor-mode center on ports the system picks.
    pub fn start() -> SupCenter {
        let dir = tempfile::tempdir().unwrap();
        let center_dir = dir.path().join("center");
        fs::create_dir_all(&center_dir).unwrap();
        let config = center_dir.join("center.toml");
        fs::write(
            &config,
            format!(
                "[server]\nlisten = '127.0.0.1:0'\n[auth]\nmode = 'supervisor'\n\
                 [admin]\ntoken = '{ADMIN_TOKEN}'\n[supervisor]\nsecret = '{CENTER_SECRET}'\npackages_dir = '{pk}'\n\
                 [agents]\nlisten = '127.0.0.1:0'\ntoken = '{TOKEN}'\n[store]\nurl = 'sqlite://{db}'\n",
                pk = center_dir.join("packages").display(),
                db = center_dir.join("elves.db").display()
            ),
        )
        .unwrap();
        let mut procs = Procs::default();
        procs
            .0
            .push(Proc::start("center", "center", &config, &center_dir));
        let (api, agents) = poll("the center to start", READY_LIMIT, || {
            let started = log_events(procs.get("center"), "center started").pop();
            if started.is_none() {
                let exited = procs.get_mut("center").child.try_wait().unwrap();
                assert!(exited.is_none(), "the center exited: {exited:?}");
            }
            let f = &started?["fields"];
            let addr = |k: &str| f[k].as_str()?.parse::<SocketAddr>().ok();
            Some((addr("api")?, addr("agents")?))
        });
        SupCenter {
            procs,
            api,
            agents,
            dir,
        }
    }

    /// Starts an agent with no apps in `dir/name`.
    pub fn start_agent(&mut self, name: &str, ip: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        fs::create_dir_all(home.join("apps")).unwrap();
        let config = write_agent_config(&home, name, ip, self.agents, "");
        self.procs
            .0
            .push(Proc::start(name, "agent", &config, &home));
        home
    }

    /// Runs `elves admin --json ARGS…` (stdin: `input`); the JSON answer, or the error line.
    pub fn admin(&self, args: &[&str], input: Option<&str>) -> Result<Value, String> {
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ELVES_") {
                cmd.env_remove(&k);
            }
        }
        let mut child = cmd
            .args(["admin", "--url", &format!("http://{}", self.api)])
            .args(["--token", ADMIN_TOKEN, "--json"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running elves admin");
        {
            let mut stdin = child.stdin.take().unwrap();
            if let Some(i) = input {
                stdin.write_all(i.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(serde_json::from_str(text.trim())
                .unwrap_or_else(|e| panic!("elves admin {args:?}: not JSON ({e}): {text}")))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// `admin(…)` that must succeed.
    pub fn admin_ok(&self, args: &[&str]) -> Value {
        self.admin(args, None)
            .unwrap_or_else(|e| panic!("elves admin {args:?}: {e}"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
