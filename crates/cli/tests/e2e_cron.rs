//! End to end: center-side crons (api-v2 §6 "Crons") over the real `elves center` and two
//! real `elves agent` processes, driven over the v2 HTTP API. Every run of the test app's
//! worker appends a line to one run log. Every wait is a bounded poll.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The worker of the test app: logs `run FUNC NANOS` and answers with that line.
const WORKER: &str = r#"#!/bin/sh
line="run $2 $(date +%s%N)"
echo "$line" >> '@DIR@/runs.log'
printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s</ElvesWResult>' "$line"
"#;

fn prepare_agent(home: &Path, _ip: &str) -> String {
    let worker = WORKER.replace("@DIR@", &home.parent().unwrap().display().to_string());
    write_file(
        &home.join("apps").join(APP).join("app-worker"),
        &worker,
        0o755,
    );
    format!("{APP} = '1.0.0'\n")
}

fn runs(c: &Cluster, func: &str) -> usize {
    fs::read_to_string(c.dir.path().join("runs.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(func))
        .count()
}

fn ok(what: &str, r: Resp) -> Value {
    let env = envelope(what, r);
    assert_eq!(env["flag"], "true", "{what}: {env}");
    assert_eq!(env["error"], "", "{what}: {env}");
    env["result"].clone()
}

fn refused(what: &str, r: Resp, error: &str) {
    let env = envelope(what, r);
    assert_eq!(env["flag"], "false", "{what}: {env}");
    assert_eq!(env["error"], error, "{what}: {env}");
}

fn add(c: &Cluster, ip: &str, func: &str, rule: &str) -> String {
    let r = ok(
        "cron/add",
        c.api.call(
            "cron/add",
            &[("ip", ip), ("app", APP), ("func", func), ("rule", rule)],
        ),
    );
    let id = r["id"].as_str().unwrap_or_default().to_owned();
    assert!(is_id(&id), "cron/add: {r}");
    id
}

fn detail(c: &Cluster, id: &str) -> Value {
    ok("cron/detail", c.api.call("cron/detail", &[("cron_id", id)]))
}

fn is_time(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 19 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b' ' && s.as_bytes()[13] == b':'
}

#[test]
fn crons_end_to_end() {
    let started = Instant::now();
    let c = Cluster::start(prepare_agent);
    eprintln!("cluster up in {:?}", started.elapsed());

    // An every-second cron on a real agent: the last result changes every second.
    let id = add(&c, IP_A, "tick", "* * * * * ?");
    let d = detail(&c, &id);
    assert_eq!(
        (
            &d["ip"],
            &d["app"],
            &d["func"],
            &d["mode"],
            &d["rule"],
            &d["cron_flag"],
            &d["timeout"]
        ),
        (
            &Value::from(IP_A),
            &Value::from(APP),
            &Value::from("tick"),
            &Value::from("NP"),
            &Value::from("* * * * * ?"),
            &Value::from(1),
            &Value::from(90)
        ),
        "{d}"
    );
    assert!(
        is_time(&d["create_time"]) && is_time(&d["next_fire_time"]),
        "{d}"
    );
    assert_eq!(d["misfire"], "fire_once", "{d}");
    let mut seen = Vec::<String>::new();
    poll(
        "four distinct results of the every-second cron",
        Duration::from_secs(10),
        || {
            let d = detail(&c, &id);
            let r = &d["last_exec_result"];
            if r["flag"] == "true" {
                assert_eq!(r["error"], "", "{d}");
                assert_eq!(r["result"]["worker_flag"], 1, "{d}");
                assert!(is_time(&d["last_exec_time"]), "{d}");
                let msg = r["result"]["worker_message"].as_str().unwrap().to_owned();
                if seen.last() != Some(&msg) {
                    seen.push(msg);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            (seen.len() >= 4).then_some(())
        },
    );
    // One run per second, give or take the edges.
    let n = runs(&c, "tick");
    assert!((4..=8).contains(&n), "{n} runs: {seen:?}");

    // Stop: nothing fires for 3 s. Start again: it fires again. Both are idempotent.
    ok("cron/stop", c.api.call("cron/stop", &[("cron_id", &id)]));
    ok(
        "cron/stop again",
        c.api.call("cron/stop", &[("cron_id", &id)]),
    );
    let d = detail(&c, &id);
    assert_eq!(
        (&d["cron_flag"], &d["next_fire_time"]),
        (&Value::from(0), &Value::from("")),
        "{d}"
    );
    std::thread::sleep(Duration::from_millis(1500)); // a run in flight may still finish
    let stopped_at = runs(&c, "tick");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs(&c, "tick"), stopped_at, "a stopped cron fired");
    ok("cron/start", c.api.call("cron/start", &[("cron_id", &id)]));
    ok(
        "cron/start again",
        c.api.call("cron/start", &[("cron_id", &id)]),
    );
    poll("the restarted cron to fire", Duration::from_secs(5), || {
        (runs(&c, "tick") > stopped_at).then_some(())
    });

    // An agent that is not connected: the delivery failure is the last result.
    let off = add(&c, IP_UNKNOWN, "tick", "* * * * * ?");
    poll("410.1 as the last result", Duration::from_secs(10), || {
        let d = detail(&c, &off);
        let r = &d["last_exec_result"];
        (r["error"] == SEND_FAIL).then(|| {
            assert_eq!(r["flag"], "false", "{d}");
            assert_eq!(r["result"]["worker_flag"], -1, "{d}");
            assert!(is_time(&d["last_exec_time"]), "{d}");
        })
    });

    // list: the caller's crons, newest first; by ip.
    let all = ok("cron/list", c.api.call("cron/list", &[]));
    assert_eq!(all, serde_json::json!([off, id]));
    let by_ip = ok(
        "cron/list ip",
        c.api.call("cron/list", &[("ip", IP_UNKNOWN)]),
    );
    assert_eq!(by_ip, serde_json::json!([off]));
    refused(
        "cron/list bad ip",
        c.api.call("cron/list", &[("ip", "1.2.3")]),
        &err("403.1"),
    );

    // delete, then 411.1 for every operation on it.
    for cron in [&off, &id] {
        ok(
            "cron/delete",
            c.api.call("cron/delete", &[("cron_id", cron)]),
        );
    }
    let not_found = "[411.1]Not Find Cron Job To Operate";
    for route in [
        "cron/detail",
        "cron/info",
        "cron/start",
        "cron/stop",
        "cron/delete",
    ] {
        refused(route, c.api.call(route, &[("cron_id", &id)]), not_found);
    }
    assert_eq!(
        ok("cron/list empty", c.api.call("cron/list", &[])),
        serde_json::json!([])
    );

    // 403.9: cron_id missing or not 16 characters.
    let bad_id = "[403.9]Request Params (cron_id) Illegal";
    for route in ["cron/detail", "cron/start", "cron/stop", "cron/delete"] {
        refused(route, c.api.call(route, &[]), bad_id);
        refused(route, c.api.call(route, &[("cron_id", "ABC")]), bad_id);
    }

    // cron/add checks in order: app, func, ip, param, timeout, rule, mode.
    let rule_bad = "[403.5]Request Params (cron-rule) Illegal";
    let base = [
        ("ip", IP_A),
        ("app", APP),
        ("func", "tick"),
        ("rule", "* * * * * ?"),
    ];
    let cases: [(&[(&str, &str)], String); 9] = [
        (&[("app", "<absent>"), ("rule", "bad")], err("403.3")),
        (&[("func", " "), ("ip", "x")], err("403.7")),
        (&[("ip", "1.2.3.256"), ("param", "{")], err("403.1")),
        (&[("param", "{"), ("timeout", "-1")], err("403.2")),
        (&[("timeout", "86401"), ("rule", "bad")], err("403.8")),
        (&[("rule", "*/5 * * * * *"), ("mode", "X")], rule_bad.into()),
        (&[("rule", "0 0 0 30 2 ?")], rule_bad.into()),
        (&[("rule", "0 0 0 1 1 ? 2020")], rule_bad.into()),
        (&[("mode", "X")], err("403.4")),
    ];
    for (extra, want) in cases {
        let p = overridden(&base, extra);
        refused(
            &format!("cron/add {extra:?}"),
            c.api.call("cron/add", &p),
            &want,
        );
    }
    eprintln!("whole test in {:?}", started.elapsed());
}

/// The kept runs of a cron, oldest first: `(instant, catch-up, late by ms)`, read from the
/// center's store once the center stopped.
fn history(c: &Cluster, id: &str) -> Vec<(i64, bool, i64)> {
    let db = c.center_config.parent().unwrap().join("elves.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = elves_store::Store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let mut runs: Vec<_> = store
            .cron_runs(id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.fire_at_ms, r.catch_up, r.recorded_at_ms - r.fire_at_ms))
            .collect();
        store.close().await;
        runs.reverse();
        runs
    })
}

/// The center is killed (SIGKILL) under two every-second crons on a real agent, stays down a
/// few seconds and starts again on the same data directory. No instant fires twice, and no
/// recorded run runs twice on the agent; the missed seconds follow each cron's misfire policy
/// (`fire_once`: exactly one catch-up fire, the latest missed instant; `skip`: none); then
/// both fire every second again.
#[test]
fn a_killed_center_restarts_without_duplicates_and_follows_the_misfire_policies() {
    let mut c = Cluster::start_on(prepare_agent, free_port(), free_port());
    let mut crons = Vec::new();
    for (func, misfire) in [("fire-once", "fire_once"), ("skip", "skip")] {
        let r = ok(
            "cron/add",
            c.api.call(
                "cron/add",
                &[
                    ("ip", IP_A),
                    ("app", APP),
                    ("func", func),
                    ("rule", "* * * * * ?"),
                    ("misfire", misfire),
                ],
            ),
        );
        let id = r["id"].as_str().unwrap().to_owned();
        assert_eq!(detail(&c, &id)["misfire"], misfire);
        crons.push((func, misfire, id));
    }
    poll("three runs of each cron", Duration::from_secs(15), || {
        crons
            .iter()
            .all(|(func, _, _)| runs(&c, func) >= 3)
            .then_some(())
    });
    let (api, agents) = (c.api.addr, c.agents);
    c.procs.get_mut("center").kill9();
    let before: Vec<usize> = crons.iter().map(|(f, _, _)| runs(&c, f)).collect();
    std::thread::sleep(Duration::from_secs(4));
    c.start_center("center-2");
    assert_eq!((c.api.addr, c.agents), (api, agents), "the same ports");
    // The new firer waits for the killed one's lease to expire (15 s at most), then fires.
    poll(
        "four more runs of each cron after the restart",
        Duration::from_secs(45),
        || {
            crons
                .iter()
                .zip(&before)
                .all(|((f, _, _), n)| runs(&c, f) >= n + 4)
                .then_some(())
        },
    );
    for (_, _, id) in &crons {
        ok("cron/stop", c.api.call("cron/stop", &[("cron_id", id)]));
    }
    std::thread::sleep(Duration::from_millis(1500)); // the runs in flight finish
    c.procs.stop("center-2");

    for (func, misfire, id) in &crons {
        let h = history(&c, id);
        let what = format!("{misfire}: {h:?}");
        // Each instant once, in order, on whole seconds.
        assert!(h.windows(2).all(|w| w[0].0 < w[1].0), "{what}");
        assert!(h.iter().all(|r| r.0 % 1000 == 0), "{what}");
        // Every recorded fire ran once on the agent, and nothing else ran.
        assert_eq!(runs(&c, func), h.len(), "{what}");
        // The down time is the one gap; it is at least the 4 s the center was down.
        let gaps: Vec<usize> = (1..h.len())
            .filter(|&i| h[i].0 - h[i - 1].0 > 1000)
            .collect();
        assert_eq!(gaps.len(), 1, "one gap in {what}");
        let g = gaps[0];
        assert!(h[g].0 - h[g - 1].0 >= 4000, "{what}");
        let caught: Vec<_> = h.iter().filter(|r| r.1).collect();
        match *misfire {
            "fire_once" => {
                // Exactly one catch-up: the first fire after the gap, for the latest missed
                // instant (so the next fire is the next second, on time).
                assert_eq!(caught.len(), 1, "{what}");
                assert!(h[g].1, "{what}");
                assert_eq!(h[g + 1].0, h[g].0 + 1000, "{what}");
                assert!(!h[g + 1].1, "{what}");
            }
            _ => {
                // Nothing of the down time fires: after the gap the fires are on time.
                assert!(caught.is_empty(), "{what}");
                assert!(h[g].2 <= 2000, "{what}");
            }
        }
        // Normal firing resumed: every second, on time, after the gap.
        assert!(h.len() - g >= 4, "{what}");
        assert!(
            h[g + 1..].windows(2).all(|w| w[1].0 - w[0].0 == 1000),
            "{what}"
        );
        assert!(h[g + 1..].iter().all(|r| !r.1 && r.2 <= 2000), "{what}");
    }
}
