//! End to end: what the agent does beyond running a task (issue 7), on the real binaries.
//!
//! * A Python app written in the original SDK's style (module and class named after the app,
//!   methods returning `(flag, result)`), run by the SDK's `app-worker.py`, answers rt/exec,
//!   a queue task and a center cron; the mode-P runs reach its HTTP processor (the SDK's
//!   Python server).
//! * A standalone agent (no center) with a dashboard and developer mode: agent-side cron
//!   follows `cron.json` as it is edited (add, change by rename, delete) within 2 s, the
//!   dashboard's JSON and page show the runs, and developer mode runs a signed request and
//!   refuses badly signed ones with the right code.
//!
//! Every wait is a bounded poll; every port is free when chosen.

mod common;
#[path = "../../agent/tests/support/python_server.rs"]
mod python_server;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use elves_sign::{SignType, signed_query};
use serde_json::{Value, json};

const SDK_WORKER: &str = include_str!("../../../sdk/python/elves_app/worker.py");

/// The app, exactly as an app for the original Elves was written.
const PYAPP: &str = r#"# -*- coding: utf-8 -*-
import json


class pyapp:
    def hello(self, param):
        return ("true", "hello " + param["who"])

    def echo(self, param):
        return ("true", json.dumps(param, ensure_ascii=False, sort_keys=True))

    def refuse(self, param):
        return ("false", "refused")

    def boom(self, param):
        raise ValueError("boom from the app")
"#;

static PROCESSOR_PORT: OnceLock<u16> = OnceLock::new();

fn prepare_py(home: &Path, _ip: &str) -> String {
    let app = home.join("apps").join("pyapp");
    write_file(&app.join("app-worker.py"), SDK_WORKER, 0o644);
    write_file(&app.join("pyapp.py"), PYAPP, 0o644);
    let port = PROCESSOR_PORT.get().copied().unwrap_or(1);
    write_file(
        &app.join("appcfg.json"),
        &format!(r#"{{"Processor": {{"Url": "http://127.0.0.1:{port}/result", "Timeout": 5}}}}"#),
        0o644,
    );
    "pyapp = '1.0.0'\n".to_owned()
}

/// The SDK's HTTP processor in a Python process, printing each delivery as a JSON line.
struct Processor {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl Processor {
    fn start() -> Processor {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python");
        let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
from elves_app import processor
def handler(ins, flag, costtime, result):
    print(json.dumps({"ins": ins, "flag": flag, "costtime": costtime, "result": result}), flush=True)
s = processor.make_http_server(handler, "127.0.0.1", 0, "/result")
print("PORT %d" % s.server_address[1], flush=True)
s.serve_forever()
"#;
        let mut cmd = Command::new("python3");
        cmd.args(["-B", "-c", script]).arg(&sdk);
        let (child, lines, port) = python_server::spawn(cmd, "the processor did not start");
        Processor { child, lines, port }
    }

    /// The next delivery that satisfies `want`, within `limit`.
    fn wait_for(&self, what: &str, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no processor delivery for {what} within {limit:?}"));
            let v: Value = serde_json::from_str(&line).unwrap();
            if want(&v) {
                return v;
            }
        }
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn worker_result(what: &str, r: Resp) -> Value {
    let env = envelope(what, r);
    assert_eq!(env["flag"], "true", "{what}: {env}");
    env["result"].clone()
}

#[test]
fn python_app_in_the_original_style_runs_through_rt_queue_and_cron_and_mode_p_reaches_its_processor()
 {
    let processor = Processor::start();
    PROCESSOR_PORT.set(processor.port).unwrap();
    let c = Cluster::start(prepare_py);

    // rt: the param is UTF-8 JSON, non-ASCII included (the original worker failed on it).
    let r = worker_result(
        "rt hello",
        c.api.get(&c.api.signed(&[
            ("ip", IP_A),
            ("app", "pyapp"),
            ("func", "hello"),
            ("param", r#"{"who":"世界 \"q\" \\ n"}"#),
        ])),
    );
    assert_eq!(r["worker_flag"], 1, "{r}");
    assert_eq!(r["worker_message"], "hello 世界 \"q\" \\ n", "{r}");
    let cases = [
        ("refuse", "", 0, "refused"),
        ("boom", "", 0, "ValueError: boom from the app"),
        ("nosuch", "", 0, "AttributeError"),
        (
            "echo",
            r#"{"b":[1,2],"a":"é"}"#,
            1,
            r#"{"a": "é", "b": [1, 2]}"#,
        ),
    ];
    for (func, param, flag, text) in cases {
        let r = worker_result(
            func,
            c.api.get(&c.api.signed(&[
                ("ip", IP_A),
                ("app", "pyapp"),
                ("func", func),
                ("param", param),
            ])),
        );
        assert_eq!(r["worker_flag"], flag, "{func}: {r}");
        let msg = r["worker_message"].as_str().unwrap();
        assert!(msg.contains(text), "{func}: {r}");
    }

    // queue, mode P: the task finishes and the processor receives the same result.
    let q = worker_result(
        "qksqueue",
        c.api.call(
            "queue/qksqueue",
            &[
                ("ip", IP_A),
                ("app", "pyapp"),
                ("func", "hello"),
                ("mode", "P"),
                ("param", r#"{"who":"queue 中"}"#),
            ],
        ),
    );
    let task = q["task_id"].as_str().unwrap().to_owned();
    let d = processor.wait_for("the queue task", Duration::from_secs(30), |d| {
        d["ins"]["id"] == task.as_str()
    });
    assert_eq!(d["ins"]["type"], "queue", "{d}");
    assert_eq!(d["ins"]["mode"], "P", "{d}");
    assert_eq!(d["ins"]["app"], "pyapp", "{d}");
    assert_eq!(d["ins"]["ip"], IP_A, "{d}");
    assert_eq!(d["ins"]["param"], r#"{"who":"queue 中"}"#, "{d}");
    assert_eq!(d["flag"], 1, "{d}");
    assert_eq!(d["result"], "hello queue 中", "{d}");

    // A center cron, mode P: its runs reach the processor too.
    let cron = worker_result(
        "cron/add",
        c.api.call(
            "cron/add",
            &[
                ("ip", IP_B),
                ("app", "pyapp"),
                ("func", "hello"),
                ("mode", "P"),
                ("param", r#"{"who":"cron"}"#),
                ("rule", "* * * * * ?"),
            ],
        ),
    );
    let cron_id = cron["id"].as_str().unwrap().to_owned();
    let d = processor.wait_for("a cron run", Duration::from_secs(30), |d| {
        d["ins"]["type"] == "cron"
    });
    assert_eq!(d["ins"]["ip"], IP_B, "{d}");
    assert_eq!(d["result"], "hello cron", "{d}");
    worker_result(
        "cron/delete",
        c.api.call("cron/delete", &[("cron_id", &cron_id)]),
    );
}

// ---------------------------------------------------------------------------------------
// A standalone agent: agent cron, dashboard, developer mode.

const DEV_ID: &str = "DEV0123456789ABC";
const DEV_KEY: &str = "dev-mode-key-e2e-4f2a";
const AGENT_IP: &str = "127.0.0.9";

/// `$1` app, `$2` func, `$3` base64 param: answers `FUNC|TASK_ID|PARAM`.
const SH_WORKER: &str = r#"#!/bin/sh
param=$(printf '%s' "$3" | base64 -d)
case "$2" in
  slow) sleep 2 ;;
esac
printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s|%s|%s</ElvesWResult>' "$2" "$ELVES_TASK_ID" "$param"
"#;

fn stat(dash: &Api, what: &str) -> Value {
    let r = dash.get(&format!("/stat/{what}"));
    assert_eq!(r.status, 200, "/stat/{what}");
    assert_eq!(r.json["msg"], "success", "/stat/{what}: {}", r.json);
    r.json["data"].clone()
}

fn dev_query(params: &[(&str, &str)], id: &str, key: &str, ts: i64) -> String {
    signed_query(RT, params, id, key, SignType::Md5, ts, None)
}

/// Writes `text` to `path` the way many editors save: a new file renamed over the old one.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("swp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn cron_tasks(dash: &Api, id: &str) -> Vec<Value> {
    stat(dash, "tasks")
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["ID"] == id)
        .cloned()
        .collect()
}

#[test]
fn agent_cron_dashboard_and_developer_mode_on_a_standalone_agent() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    write_file(&home.join("apps/shapp/app-worker"), SH_WORKER, 0o755);
    let port = free_port();
    let cron_file = home.join("cron.json");
    let config = home.join("agent.toml");
    fs::write(
        &config,
        format!(
            "ip = '{AGENT_IP}'\ntoken = 'unused'\ncenter = 'http://127.0.0.1:{closed}'\n\
             data_dir = '{data}'\napps_dir = '{apps}'\n[apps]\nshapp = '1.0.0'\n\
             [cron]\nfile = '{cron}'\n[http]\nlisten = '127.0.0.1:{port}'\n\
             [devmode]\nenabled = true\nauthid = '{DEV_ID}'\nauthkey = '{DEV_KEY}'\n",
            closed = free_port(),
            data = home.join("data").display(),
            apps = home.join("apps").display(),
            cron = cron_file.display(),
        ),
    )
    .unwrap();
    let mut procs = Procs::default();
    procs.0.push(Proc::start("agent", "agent", &config, home));
    let dash = Api {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    poll("the dashboard", READY_LIMIT, || {
        TcpStream::connect_timeout(&dash.addr, Duration::from_millis(200)).ok()
    });

    // /stat/general and /stat/apps.
    let g = stat(&dash, "general");
    assert_eq!(g["Ip"], AGENT_IP, "{g}");
    assert_eq!(g["Mode"], "DEVELOP", "{g}");
    assert_eq!(g["Apps"], json!({"shapp": "1.0.0"}), "{g}");
    assert_eq!(stat(&dash, "apps"), json!({"shapp": "1.0.0"}));
    assert_eq!(stat(&dash, "crons"), json!({}));
    assert_eq!(dash.get("/stat/nosuch").status, 404);

    // Add: a valid entry, an invalid one, a disabled one.
    let entry = |comment: &str, param: &str| {
        json!({"Flag": "true", "Comment": comment, "App": "shapp", "Func": "tick",
               "Param": {"v": param}, "Timeout": 0, "Proxy": "", "Mode": "NP",
               "Rule": "@every 1s"})
    };
    let file = json!({
        "AAAA": entry("first", "a1"),
        "BBBB": {"Flag": "true", "App": "shapp", "Func": "tick", "Rule": "not a rule"},
        "CCCC": {"Flag": "false", "App": "shapp", "Func": "tick", "Rule": "* * * * * *"},
    });
    let t0 = Instant::now();
    fs::write(&cron_file, file.to_string()).unwrap();
    let crons = poll("the new entries", Duration::from_secs(2), || {
        let c = stat(&dash, "crons");
        (c.as_object().unwrap().len() == 2).then_some(c)
    });
    assert_eq!(crons["AAAA"]["Comment"], "first", "{crons}");
    assert_eq!(crons["AAAA"]["Enabled"], true, "{crons}");
    assert_eq!(crons["CCCC"]["Enabled"], false, "{crons}");
    assert!(crons.get("BBBB").is_none(), "{crons}");
    let errors = stat(&dash, "errors");
    assert!(
        errors
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("entry [BBBB] skipped")),
        "{errors}"
    );
    let run = poll("a run of AAAA", Duration::from_secs(4), || {
        cron_tasks(&dash, "AAAA").into_iter().next()
    });
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert_eq!(run["Result"], r#"tick|AAAA|{"v":"a1"}"#, "{run}");
    assert_eq!(run["Type"], "cron", "{run}");
    assert_eq!(run["Flag"], "success", "{run}");
    let lastexec = poll("lastexec", Duration::from_secs(2), || {
        let c = stat(&dash, "crons");
        let l = c["AAAA"]["Lastexec"].as_str()?.to_owned();
        (l != "0000/00/00 00:00:00").then_some(l)
    });
    assert_eq!(lastexec.len(), 19, "{lastexec}");

    // Change, saved by rename: the new parameter is used from then on.
    let file = json!({"AAAA": entry("second", "a2"), "CCCC": file["CCCC"]});
    save_by_rename(&cron_file, &file.to_string());
    poll("the changed entry", Duration::from_secs(2), || {
        (stat(&dash, "crons")["AAAA"]["Comment"] == "second").then_some(())
    });
    poll("a run with the new param", Duration::from_secs(4), || {
        cron_tasks(&dash, "AAAA")
            .into_iter()
            .find(|t| t["Result"] == r#"tick|AAAA|{"v":"a2"}"#)
    });

    // Delete: the entry stops.
    save_by_rename(&cron_file, &json!({"CCCC": file["CCCC"]}).to_string());
    poll("the deleted entry to go", Duration::from_secs(2), || {
        stat(&dash, "crons").get("AAAA").is_none().then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = cron_tasks(&dash, "AAAA").len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        cron_tasks(&dash, "AAAA").len(),
        before,
        "a deleted entry must not run again"
    );
    // Deleting the file removes every entry.
    fs::remove_file(&cron_file).unwrap();
    poll("no entry left", Duration::from_secs(2), || {
        (stat(&dash, "crons") == json!({})).then_some(())
    });

    // Developer mode: a signed request runs the worker here.
    let params = [
        ("ip", AGENT_IP),
        ("app", "shapp"),
        ("func", "dev"),
        ("param", r#"{"x":"中 & +"}"#),
    ];
    let r = worker_result(
        "devmode GET",
        dash.get(&format!(
            "{RT}?{}",
            dev_query(&params, DEV_ID, DEV_KEY, now_secs())
        )),
    );
    assert_eq!(r["worker_flag"], 1, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    assert!(is_id(&id), "{r}");
    assert_eq!(
        r["worker_message"],
        format!(r#"dev|{id}|{{"x":"中 & +"}}"#),
        "{r}"
    );
    let r = worker_result(
        "devmode POST",
        dash.post(RT, &dev_query(&params, DEV_ID, DEV_KEY, now_secs())),
    );
    assert_eq!(r["worker_flag"], 1, "{r}");

    // The page shows the run that just happened, the app and the error.
    let (status, html) = get_text(dash.addr, "/");
    assert_eq!(status, 200);
    for want in [
        id.as_str(),
        "shapp",
        "entry [BBBB] skipped",
        "id=\"devform\"",
    ] {
        assert!(html.contains(want), "the page lacks {want:?}");
    }

    // The form's signer gives a URL that runs.
    let (status, body) = get_text(dash.addr, "/dev/sign?app=shapp&func=signed&param=%7B%7D");
    assert_eq!(status, 200, "{body}");
    let signed: Value = serde_json::from_str(&body).unwrap();
    let uri = signed["data"]["uri"].as_str().unwrap().to_owned();
    let r = worker_result("signed uri", dash.get(&uri));
    assert_eq!(r["worker_flag"], 1, "{r}");
    assert!(
        r["worker_message"].as_str().unwrap().starts_with("signed|"),
        "{r}"
    );

    // /metrics counts what ran: three developer-mode runs (kind rt), the skipped entry's error.
    let (status, text) = get_text(dash.addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    let sample = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    let dev_runs = r#"elves_agent_runs_total{kind="rt",flag="success"}"#;
    assert_eq!(sample(dev_runs), Some(3.0), "{text}");
    assert!(
        sample("elves_agent_errors_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(sample("elves_agent_apps_installed"), Some(1.0), "{text}");
    assert_eq!(sample("elves_agent_workers_running"), Some(0.0), "{text}");

    // Badly signed requests, in the center's check order (api-v2 §3).
    let now = now_secs();
    let good = dev_query(&params, DEV_ID, DEV_KEY, now);
    let replace = |q: &str, name: &str, value: &str| -> String {
        q.split('&')
            .map(|kv| {
                if kv.split('=').next() == Some(name) {
                    format!("{name}={value}")
                } else {
                    kv.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    };
    let without = |q: &str, name: &str| -> String {
        q.split('&')
            .filter(|kv| kv.split('=').next() != Some(name))
            .collect::<Vec<_>>()
            .join("&")
    };
    let with_nonce = signed_query(
        RT,
        &params,
        DEV_ID,
        DEV_KEY,
        SignType::Md5,
        now,
        Some("n-1"),
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("no sign", without(&good, "sign"), "401.1"),
        ("no auth_id", without(&good, "auth_id"), "401.1"),
        (
            "unknown sign_type",
            replace(&good, "sign_type", "SHA1"),
            "401.3",
        ),
        ("short sign", replace(&good, "sign", "abc"), "401.4"),
        (
            "timestamp not a number",
            replace(&good, "timestamp", "12x"),
            "401.8",
        ),
        (
            "old timestamp",
            dev_query(&params, DEV_ID, DEV_KEY, now - 3600),
            "401.7",
        ),
        (
            "another auth_id",
            dev_query(&params, "OTHER0123456789A", DEV_KEY, now),
            "401.2",
        ),
        (
            "wrong key",
            dev_query(&params, DEV_ID, "not-the-key", now),
            "401.5",
        ),
        ("a repeated parameter", format!("{good}&app=shapp"), "401.5"),
        (
            "a parameter changed after signing",
            replace(&good, "func", "other"),
            "401.5",
        ),
        (
            "another agent's ip",
            dev_query(
                &[("ip", "127.0.0.10"), ("app", "shapp"), ("func", "f")],
                DEV_ID,
                DEV_KEY,
                now,
            ),
            "403.1",
        ),
        (
            "no app",
            dev_query(&[("ip", AGENT_IP), ("func", "f")], DEV_ID, DEV_KEY, now),
            "403.3",
        ),
        (
            "no func",
            dev_query(&[("ip", AGENT_IP), ("app", "shapp")], DEV_ID, DEV_KEY, now),
            "403.7",
        ),
        (
            "bad param",
            dev_query(
                &[
                    ("ip", AGENT_IP),
                    ("app", "shapp"),
                    ("func", "f"),
                    ("param", "{x"),
                ],
                DEV_ID,
                DEV_KEY,
                now,
            ),
            "403.2",
        ),
        (
            "bad timeout",
            dev_query(
                &[
                    ("ip", AGENT_IP),
                    ("app", "shapp"),
                    ("func", "f"),
                    ("timeout", "-1"),
                ],
                DEV_ID,
                DEV_KEY,
                now,
            ),
            "403.8",
        ),
    ];
    for (what, query, code) in cases {
        check_refused(what, dash.get(&format!("{RT}?{query}")), code);
    }
    // A nonce is accepted once.
    let first = worker_result("nonce, first use", dash.get(&format!("{RT}?{with_nonce}")));
    assert_eq!(first["worker_flag"], 1, "{first}");
    check_refused(
        "nonce reused",
        dash.get(&format!("{RT}?{with_nonce}")),
        "401.9",
    );
}
