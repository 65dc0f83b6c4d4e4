//! End to end: queues (api-v2 §6 "Queues", §7) over the real `elves center` and two real
//! `elves agent` processes (`127.0.0.2` and `127.0.0.3`), driven over the v2 HTTP API.
//!
//! One cluster is started once for every case of [`queues_end_to_end`]. The center listens on
//! fixed ports picked free at the start, so that the last case can kill it with SIGKILL and
//! start it again on the same config (same database, same ports) while the agents reconnect.
//! Every run of the test app's worker appends `start FUNC` and `end FUNC` lines to one run
//! log, which gives the order in which tasks ran and how often. Every wait is a bounded poll.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Map, Value, json};

/// The worker of the test app. `$1` app, `$2` func, `$3` base64 of the param. What it does
/// depends on the func's prefix; the rest of the func names the task in the run log.
const WORKER: &str = r#"#!/bin/sh
log='@DIR@/runs.log'
echo "start $2" >> "$log"
case "$2" in
  ok_*) f=true; r="ok $2 on @IP@" ;;
  bad_*) f=false; r="bad $2 on @IP@" ;;
  slow_*) sleep 3; f=true; r="slow $2 on @IP@" ;;
  grand_*) sleep 30 & echo $! > "@DIR@/$2.pid"; sleep 30; f=true; r=grand ;;
  echo_*) f=true; r=$(printf '%s' "$3" | base64 -d) ;;
  mode_*) f=true; r="$ELVES_MODE $ELVES_TASK_TYPE" ;;
  *) f=false; r="unknown func $2" ;;
esac
echo "end $2" >> "$log"
printf '<ElvesWFlag>%s</ElvesWFlag><ElvesWResult>%s</ElvesWResult>' "$f" "$r"
"#;

/// How long a queue may take to become terminal.
const QUEUE_LIMIT: Duration = Duration::from_secs(10);

/// Writes an agent's app (see [`PrepareAgent`]); the run log is in the cluster's directory.
fn prepare_agent(home: &Path, ip: &str) -> String {
    let worker = WORKER
        .replace("@DIR@", &home.parent().unwrap().display().to_string())
        .replace("@IP@", ip);
    write_file(
        &home.join("apps").join(APP).join("app-worker"),
        &worker,
        0o755,
    );
    format!("{APP} = '1.0.0'\n")
}

// ---------------------------------------------------------------------------------------
// Queue calls.

/// Checks a successful envelope and returns its result.
fn ok(what: &str, r: Resp) -> Value {
    let env = envelope(what, r);
    assert_eq!(env["flag"], "true", "{what}: {env}");
    assert_eq!(env["error"], "", "{what}: {env}");
    env["result"].clone()
}

fn create(c: &Cluster) -> String {
    let r = ok("queue/create", c.api.call("queue/create", &[("app", APP)]));
    let id = r["id"].as_str().unwrap_or_default().to_owned();
    assert!(is_id(&id), "queue/create: {r}");
    id
}

/// Adds a task running `func` on `ip`, depending on `dep` ("" for none), and returns its id.
fn add(c: &Cluster, queue: &str, ip: &str, func: &str, dep: &str) -> String {
    let mut p = vec![("queue_id", queue), ("ip", ip), ("func", func)];
    if !dep.is_empty() {
        p.push(("depend_task_id", dep));
    }
    let what = format!("queue/addtask {func}");
    let r = ok(&what, c.api.call("queue/addtask", &p));
    let id = r["id"].as_str().unwrap_or_default().to_owned();
    assert!(is_id(&id), "{what}: {r}");
    id
}

fn commit(c: &Cluster, queue: &str) {
    ok(
        "queue/commit",
        c.api.call("queue/commit", &[("queue_id", queue)]),
    );
}

fn result(c: &Cluster, queue: &str) -> Map<String, Value> {
    let r = ok(
        "queue/result",
        c.api.call("queue/result", &[("queue_id", queue)]),
    );
    r.as_object()
        .unwrap_or_else(|| panic!("queue/result is not a map: {r}"))
        .clone()
}

/// Polls queue/result until `done` holds for it.
fn result_when(
    c: &Cluster,
    queue: &str,
    what: &str,
    done: impl Fn(&Map<String, Value>) -> bool,
) -> Map<String, Value> {
    let mut last = Map::new();
    let start = Instant::now();
    loop {
        last = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| result(c, queue))) {
            Ok(r) => r,
            // The center may be restarting: keep polling.
            Err(_) => last,
        };
        if done(&last) {
            return last;
        }
        assert!(
            start.elapsed() < QUEUE_LIMIT,
            "gave up after {QUEUE_LIMIT:?} waiting for {what}; last result {}",
            Value::Object(last)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls queue/result until every task is `finish` or `stopped`.
fn terminal(c: &Cluster, queue: &str) -> Map<String, Value> {
    result_when(c, queue, "every task to be terminal", |m| {
        !m.is_empty()
            && m.values()
                .all(|t| t["status"] == "finish" || t["status"] == "stopped")
    })
}

/// The expected fields of a task; `worker_costtime` is checked apart.
fn finished(dep: &str, flag: &str, error: &str, worker_flag: i64, message: &str) -> Value {
    json!({
        "status": "finish", "depend_task_id": dep, "flag": flag, "error": error,
        "worker_flag": worker_flag, "worker_message": message,
    })
}

fn stopped(dep: &str, error: &str) -> Value {
    json!({
        "status": "stopped", "depend_task_id": dep, "flag": "", "error": error,
        "worker_flag": "", "worker_message": "", "worker_costtime": "",
    })
}

/// Checks every task of a result against `want` (task id → fields), and that the result has
/// exactly those tasks.
fn check_tasks(what: &str, got: &Map<String, Value>, want: &[(&str, Value)]) {
    let got_ids: Vec<&String> = got.keys().collect();
    let mut want_ids: Vec<&str> = want.iter().map(|(id, _)| *id).collect();
    want_ids.sort_unstable();
    assert_eq!(got_ids, want_ids, "{what}: the tasks of the result");
    for (id, fields) in want {
        let task = &got[*id];
        assert_eq!(task["id"], *id, "{what}: task {id}: {task}");
        for (k, v) in fields.as_object().unwrap() {
            assert_eq!(task[k], *v, "{what}: task {id}, field {k}: {task}");
        }
        if task["status"] == "finish" && task["error"] == "" {
            assert!(
                task["worker_costtime"].as_i64().is_some_and(|ms| ms >= 0),
                "{what}: task {id}: worker_costtime: {task}"
            );
        }
    }
}

/// The run log's lines.
fn runs(c: &Cluster) -> Vec<String> {
    fs::read_to_string(c.dir.path().join("runs.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// The position of a line in the run log; panics when it is not there exactly once.
fn line_at(log: &[String], line: &str) -> usize {
    let at: Vec<usize> = (0..log.len()).filter(|&i| log[i] == line).collect();
    assert_eq!(at.len(), 1, "{line:?} once in the run log:\n{log:#?}");
    at[0]
}

fn refused(c: &Cluster, what: &str, route: &str, params: &[(&str, &str)], code: &str) {
    check_refused(what, c.api.call(route, params), code);
}

// ---------------------------------------------------------------------------------------
// The cases.

/// One case of [`queues_end_to_end`].
type Case = fn(&mut Cluster);

#[test]
fn queues_end_to_end() {
    let started = Instant::now();
    let mut c = Cluster::start_on(prepare_agent, free_port(), free_port());
    eprintln!("cluster up in {:?}", started.elapsed());
    let cases: [(&str, Case); 8] = [
        ("tree", a_tree_with_a_failing_branch),
        ("stop", stop_kills_a_running_task_at_once),
        ("qksqueue", qksqueue_runs_one_task),
        ("refusals", refusals_in_check_order),
        ("delivery", undeliverable_task_stops_its_dependant),
        ("restart", center_killed_mid_queue_runs_each_task_once),
        ("agent-restart", agent_killed_mid_task_adopts_its_worker),
        ("cut", link_cut_while_the_task_finishes),
    ];
    let mut took = BTreeMap::new();
    for (name, case) in cases {
        let t = Instant::now();
        case(&mut c);
        took.insert(name, t.elapsed());
    }
    eprintln!("cases {took:?}; whole test in {:?}", started.elapsed());
}

/// Case 1: six tasks on two agents; the branch below a task whose worker reports failure is
/// stopped, each task naming its own dependency; dependants start only after their
/// dependency ended.
fn a_tree_with_a_failing_branch(c: &mut Cluster) {
    let q = create(c);
    let t1 = add(c, &q, IP_A, "ok_t1", "");
    let t2 = add(c, &q, IP_B, "ok_t2", &t1);
    let t3 = add(c, &q, IP_A, "ok_t3", &t2);
    let t4 = add(c, &q, IP_B, "bad_t4", &t1);
    let t5 = add(c, &q, IP_A, "ok_t5", &t4);
    let t6 = add(c, &q, IP_B, "ok_t6", &t5);
    let before = result(c, &q);
    assert!(
        before.values().all(|t| t["status"] == "pendding"
            && t["worker_flag"] == ""
            && t["worker_costtime"] == ""),
        "before commit: {}",
        Value::Object(before)
    );
    commit(c, &q);
    let r = terminal(c, &q);
    let a = IP_A;
    let b = IP_B;
    check_tasks(
        "tree",
        &r,
        &[
            (
                &t1,
                finished("", "true", "", 1, &format!("ok ok_t1 on {a}")),
            ),
            (
                &t2,
                finished(&t1, "true", "", 1, &format!("ok ok_t2 on {b}")),
            ),
            (
                &t3,
                finished(&t2, "true", "", 1, &format!("ok ok_t3 on {a}")),
            ),
            (
                &t4,
                finished(&t1, "true", "", 0, &format!("bad bad_t4 on {b}")),
            ),
            (
                &t5,
                stopped(&t4, &format!("dependency {t4} did not succeed")),
            ),
            (
                &t6,
                stopped(&t5, &format!("dependency {t5} did not succeed")),
            ),
        ],
    );
    let log = runs(c);
    for (dep, task) in [("ok_t1", "ok_t2"), ("ok_t2", "ok_t3"), ("ok_t1", "bad_t4")] {
        assert!(
            line_at(&log, &format!("end {dep}")) < line_at(&log, &format!("start {task}")),
            "{task} must start after {dep} ended:\n{log:#?}"
        );
    }
    for never in ["ok_t5", "ok_t6"] {
        assert!(
            !log.iter().any(|l| l.ends_with(never)),
            "{never} must not run:\n{log:#?}"
        );
    }
}

/// Case 2: stopping a queue whose task runs a 30 s worker answers at once with the task
/// `stopped`, the worker's process group (with a background grandchild) dies, and the
/// pending dependant is `stopped` too.
fn stop_kills_a_running_task_at_once(c: &mut Cluster) {
    let q = create(c);
    let g = add(c, &q, IP_B, "grand_s2", "");
    let d = add(c, &q, IP_A, "ok_s2", &g);
    commit(c, &q);
    let pid_file = c.dir.path().join("grand_s2.pid");
    result_when(c, &q, "the 30 s task to run", |m| {
        m[&g]["status"] == "running" && pid_file.exists()
    });
    let pid: u32 = poll("the grandchild's pid", READY_LIMIT, || {
        fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    let t = Instant::now();
    let reply = ok("queue/stop", c.api.call("queue/stop", &[("queue_id", &q)]));
    let took = t.elapsed();
    assert_eq!(reply, json!({ &g: "stopped", &d: "stopped" }), "queue/stop");
    assert!(took < Duration::from_secs(2), "queue/stop took {took:?}");
    poll(
        &format!("grandchild {pid} to die"),
        Duration::from_secs(1),
        || is_dead(pid).then_some(()),
    );
    let r = result(c, &q);
    assert_eq!(r[&g]["status"], "stopped", "{}", r[&g]);
    assert_eq!(r[&d]["status"], "stopped", "{}", r[&d]);
    assert!(
        !runs(c)
            .iter()
            .any(|l| l == "end grand_s2" || l == "start ok_s2"),
        "the stopped task must not end normally, its dependant must not run"
    );
}

/// Case 3: qksqueue creates, fills and commits a one-task queue.
fn qksqueue_runs_one_task(c: &mut Cluster) {
    let param = r#"{"k":"v 中 & +"}"#;
    let r = ok(
        "queue/qksqueue",
        c.api.call(
            "queue/qksqueue",
            &[
                ("ip", IP_A),
                ("app", APP),
                ("func", "echo_s3"),
                ("param", param),
            ],
        ),
    );
    let (q, task) = (r["id"].as_str().unwrap(), r["task_id"].as_str().unwrap());
    assert!(is_id(q) && is_id(task) && q != task, "qksqueue: {r}");
    assert_eq!(r.as_object().unwrap().len(), 2, "qksqueue: {r}");
    let got = terminal(c, q);
    check_tasks(
        "qksqueue",
        &got,
        &[(task, finished("", "true", "", 1, param))],
    );
    // Mode P travels with the task to the agent and its worker (ELVES_MODE).
    for mode in ["P", "NP"] {
        let r = ok(
            "queue/qksqueue mode",
            c.api.call(
                "queue/qksqueue",
                &[
                    ("ip", IP_B),
                    ("app", APP),
                    ("func", "mode_s3"),
                    ("mode", mode),
                ],
            ),
        );
        let (q, task) = (r["id"].as_str().unwrap(), r["task_id"].as_str().unwrap());
        let got = terminal(c, q);
        let want = format!("{mode} queue");
        check_tasks(
            "qksqueue mode",
            &got,
            &[(task, finished("", "true", "", 1, &want))],
        );
    }
}

/// Case 4: the queue refusals (412.x) and the addtask checks in their order (api-v2 §6).
fn refusals_in_check_order(c: &mut Cluster) {
    let q1 = create(c);
    let a = add(c, &q1, IP_A, "ok_s4", "");
    let q2 = create(c);
    let unknown = "0123456789ABCDEF";
    let addtask = |q: &str, dep: &str| {
        c.api.call(
            "queue/addtask",
            &[
                ("queue_id", q),
                ("ip", IP_A),
                ("func", "ok_s4b"),
                ("depend_task_id", dep),
            ],
        )
    };
    check_refused("a dependency of another queue", addtask(&q2, &a), "412.4");
    check_refused("an unknown dependency", addtask(&q2, unknown), "412.4");
    commit(c, &q1);
    check_refused("addtask after commit", addtask(&q1, ""), "412.2");
    refused(
        c,
        "commit twice",
        "queue/commit",
        &[("queue_id", &q1)],
        "412.2",
    );
    for route in ["addtask", "commit", "stop", "result"] {
        let route = format!("queue/{route}");
        let base = [("queue_id", unknown), ("ip", IP_A), ("func", "ok_s4b")];
        refused(
            c,
            &format!("{route} of an unknown queue"),
            &route,
            &base,
            "412.1",
        );
        let blank = overridden(&base, &[("queue_id", " ")]);
        refused(
            c,
            &format!("{route} with a blank queue_id"),
            &route,
            &blank,
            "403.6",
        );
        let missing = overridden(&base, &[("queue_id", "<absent>")]);
        refused(
            c,
            &format!("{route} without queue_id"),
            &route,
            &missing,
            "403.6",
        );
    }
    // Two things wrong each time: the earlier check wins.
    let good: &[(&str, &str)] = &[("queue_id", &q2), ("ip", IP_A), ("func", "ok_s4b")];
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("403.6", &[("queue_id", ""), ("func", "")]),
        ("403.7", &[("func", " "), ("ip", "127.0.0")]),
        ("403.1", &[("ip", "127.0.0.256"), ("param", "{")]),
        ("403.2", &[("param", "{bad"), ("timeout", "x")]),
        ("403.8", &[("timeout", "86401"), ("mode", "Q")]),
        ("403.4", &[("mode", "Q")]),
    ];
    for (code, extra) in cases {
        let p = overridden(good, extra);
        refused(c, &format!("addtask {p:?}"), "queue/addtask", &p, code);
    }
    // The refused calls added nothing; a good one still can.
    assert!(result(c, &q2).is_empty(), "q2 after the refusals");
    add(c, &q2, IP_A, "ok_s4b", "");
    refused(c, "stop q2", "queue/stop", &[("queue_id", "")], "403.6");
    ok("stop q2", c.api.call("queue/stop", &[("queue_id", &q2)]));
    terminal(c, &q1);
}

/// Case 5: a task for an ip without an agent finishes with 410.1 and its dependant is
/// stopped.
fn undeliverable_task_stops_its_dependant(c: &mut Cluster) {
    let q = create(c);
    let u = add(c, &q, IP_UNKNOWN, "ok_s5", "");
    let d = add(c, &q, IP_A, "ok_s5b", &u);
    commit(c, &q);
    let r = terminal(c, &q);
    let mut lost = finished("", "false", SEND_FAIL, -1, "");
    lost["worker_costtime"] = json!("");
    check_tasks(
        "undeliverable",
        &r,
        &[
            (&u, lost),
            (&d, stopped(&u, &format!("dependency {u} did not succeed"))),
        ],
    );
    assert!(!runs(c).iter().any(|l| l.ends_with("ok_s5b")));
}

/// Case 6: the center is killed (SIGKILL) while a task runs and started again on the same
/// config; the running task's result is not lost, its dependant then runs, and each runs
/// exactly once.
fn center_killed_mid_queue_runs_each_task_once(c: &mut Cluster) {
    let q = create(c);
    let s = add(c, &q, IP_A, "slow_s6", "");
    let d = add(c, &q, IP_B, "ok_s6", &s);
    commit(c, &q);
    poll("the slow task to start", READY_LIMIT, || {
        runs(c).iter().any(|l| l == "start slow_s6").then_some(())
    });
    let (api, agents) = (c.api.addr, c.agents);
    c.procs.get_mut("center").kill9();
    c.start_center("center-2");
    assert_eq!((c.api.addr, c.agents), (api, agents), "the same ports");
    let r = terminal(c, &q);
    check_tasks(
        "after the restart",
        &r,
        &[
            (
                &s,
                finished("", "true", "", 1, &format!("slow slow_s6 on {IP_A}")),
            ),
            (
                &d,
                finished(&s, "true", "", 1, &format!("ok ok_s6 on {IP_B}")),
            ),
        ],
    );
    let log = runs(c);
    assert!(
        line_at(&log, "end slow_s6") < line_at(&log, "start ok_s6"),
        "{log:#?}"
    );
    line_at(&log, "start slow_s6");
    line_at(&log, "end ok_s6");
}

/// Case 7: the agent is killed (SIGKILL) while its task runs, another of its tasks waits
/// for a worker slot (the agent runs one worker at most) and a dependant waits; then it is
/// started again on the same data directory: it adopts the worker that outlived it, collects
/// its answer, runs the task that was waiting (never started, so redelivered), and each task
/// runs exactly once.
fn agent_killed_mid_task_adopts_its_worker(c: &mut Cluster) {
    // Agent A again, with one worker at most.
    c.procs.get_mut("agent-a").kill9();
    let home = c.dir.path().join("agent-a");
    let config = home.join("agent.toml");
    let mut text = fs::read_to_string(&config).unwrap();
    // Its dashboard too, whose /metrics shows the run waiting for the worker slot.
    let dash = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    text.push_str(&format!(
        "\n[limits]\nmax_workers = 1\n[http]\nlisten = \"{dash}\"\n"
    ));
    fs::write(&config, text).unwrap();
    c.procs
        .0
        .push(Proc::start("agent-a-1", "agent", &config, &home));
    c.wait_agent(IP_A);
    // The slow task first, alone: the waiting one comes in a second queue once the slow one
    // holds the only worker slot (two roots of one queue reach the agent in either order).
    let q = create(c);
    let s = add(c, &q, IP_A, "slow_s7", "");
    let d = add(c, &q, IP_B, "ok_s7", &s);
    commit(c, &q);
    poll("the slow task to start", READY_LIMIT, || {
        runs(c).iter().any(|l| l == "start slow_s7").then_some(())
    });
    let qw = create(c);
    let w = add(c, &qw, IP_A, "ok_w7", "");
    commit(c, &qw);
    poll(
        "the second task to wait for the worker slot",
        READY_LIMIT,
        || {
            let (status, metrics) = get_text(dash, "/metrics");
            (status == 200
                && metrics
                    .lines()
                    .any(|l| l == "elves_agent_workers_waiting 1"))
            .then_some(())
        },
    );
    assert!(
        !runs(c).iter().any(|l| l == "start ok_w7"),
        "the second task waits for the only worker slot: {:?}",
        runs(c)
    );
    c.procs.get_mut("agent-a-1").kill9();
    c.procs
        .0
        .push(Proc::start("agent-a-2", "agent", &config, &home));
    let r = terminal(c, &q);
    check_tasks(
        "after the agent's restart",
        &r,
        &[
            (
                &s,
                finished("", "true", "", 1, &format!("slow slow_s7 on {IP_A}")),
            ),
            (
                &d,
                finished(&s, "true", "", 1, &format!("ok ok_s7 on {IP_B}")),
            ),
        ],
    );
    let rw = terminal(c, &qw);
    check_tasks(
        "the waiting task after the agent's restart",
        &rw,
        &[(
            &w,
            finished("", "true", "", 1, &format!("ok ok_w7 on {IP_A}")),
        )],
    );
    let log = runs(c);
    for task in ["slow_s7", "ok_w7", "ok_s7"] {
        let starts = log
            .iter()
            .filter(|l| **l == format!("start {task}"))
            .count();
        assert_eq!(starts, 1, "{task} ran once: {log:#?}");
    }
    assert!(
        line_at(&log, "end slow_s7") < line_at(&log, "start ok_s7"),
        "{log:#?}"
    );
    line_at(&log, "start slow_s7");
    line_at(&log, "end ok_s7");
    let adopted = log_events(
        c.procs.get("agent-a-2"),
        "worker of a previous agent adopted",
    );
    assert_eq!(adopted.len(), 1, "the new agent adopted the running worker");
    // The adopted run left no record behind on the agent once acknowledged (its journal
    // slot's files stay for the next run, the record blanked: a free slot).
    poll("the run journal to empty", READY_LIMIT, || {
        let left = fs::read_dir(home.join("data").join("runs"))
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter(|e| fs::read(e.path()).is_ok_and(|b| !b.iter().all(u8::is_ascii_whitespace)))
            .count();
        (left == 0).then_some(())
    });
}

/// A TCP proxy between an agent and the center that can cut every connection and refuse new
/// ones (accepted and closed at once) while cut.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, k) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(to) else {
                    continue;
                };
                let mut held = k.lock().unwrap();
                for s in [&inbound, &outbound] {
                    held.push(s.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, cut, conns }
    }

    /// Closes every connection and refuses new ones until [`Proxy::mend`].
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Case 8: the link of a third agent (behind a proxy) is cut for 10 s while its task
/// finishes: the result arrives after the agent reconnects, exactly once, and the dependant
/// then runs.
fn link_cut_while_the_task_finishes(c: &mut Cluster) {
    const IP_C: &str = "127.0.0.4";
    let proxy = Proxy::start(c.agents);
    let home = c.dir.path().join("agent-c");
    let apps = prepare_agent(&home, IP_C);
    let config = write_agent_config(&home, "agent-c", IP_C, proxy.addr, &apps);
    c.procs
        .0
        .push(Proc::start("agent-c", "agent", &config, &home));
    c.wait_agent(IP_C);
    let q = create(c);
    let s = add(c, &q, IP_C, "slow_s8", "");
    let d = add(c, &q, IP_A, "ok_s8", &s);
    commit(c, &q);
    poll("the slow task to start", READY_LIMIT, || {
        runs(c).iter().any(|l| l == "start slow_s8").then_some(())
    });
    proxy.cut();
    let cut_at = Instant::now();
    // The task ends (3 s) while the link is cut; nothing can reach the center.
    poll("the slow task to end", READY_LIMIT, || {
        runs(c).iter().any(|l| l == "end slow_s8").then_some(())
    });
    assert_eq!(result(c, &q)[&s]["status"], "running", "while cut");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(cut_at.elapsed()));
    assert_eq!(result(c, &q)[&s]["status"], "running", "still cut");
    proxy.mend();
    // The agent's back-off after 10 s of failures is at most 12.8 s.
    let r = poll(
        "the queue to finish after the reconnection",
        Duration::from_secs(40),
        || {
            let r = result(c, &q);
            r.values()
                .all(|t| t["status"] == "finish" || t["status"] == "stopped")
                .then_some(r)
        },
    );
    check_tasks(
        "after the cut",
        &r,
        &[
            (
                &s,
                finished("", "true", "", 1, &format!("slow slow_s8 on {IP_C}")),
            ),
            (
                &d,
                finished(&s, "true", "", 1, &format!("ok ok_s8 on {IP_A}")),
            ),
        ],
    );
    let log = runs(c);
    line_at(&log, "start slow_s8");
    assert!(
        line_at(&log, "end slow_s8") < line_at(&log, "start ok_s8"),
        "{log:#?}"
    );
    line_at(&log, "end ok_s8");
}
