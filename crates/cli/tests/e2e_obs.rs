//! End to end: the center's probes and metrics, and the request id, over the real `elves
//! center` and `elves agent` processes on loopback.
//!
//! One cluster (a center and the agents `127.0.0.2` and `127.0.0.3`): `/healthz` and
//! `/readyz` answer; after an rt/exec, a refused rt/exec, a one-task queue and a cron fire,
//! `/metrics` shows each expected series, with the values those requests moved; the rt/exec's
//! `X-Request-Id` comes back and appears on the agent's log line for the run.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const WORKER: &str =
    "#!/bin/sh\nprintf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s</ElvesWResult>' \"$2\"\n";

fn prepare_agent(home: &Path, _ip: &str) -> String {
    write_file(
        &home.join("apps").join(APP).join("app-worker"),
        WORKER,
        0o755,
    );
    format!("{APP} = '1.0.0'\n")
}

/// A plain GET: (status, headers lower-cased, body). `Connection: close`, bounded waits.
fn get(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut hs = BTreeMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').unwrap();
        hs.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let body = if hs.get("transfer-encoding").is_some_and(|v| v == "chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, hs, body)
}

/// Every sample of a scrape: series (name and labels, as written) → value.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, hs, body) = get(addr, "/metrics", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(hs["content-type"].starts_with("text/plain"), "{hs:?}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_probes_and_request_ids() {
    let c = Cluster::start(prepare_agent);
    let addr = c.api.addr;

    let (status, _, body) = get(addr, "/healthz", &[]);
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _, body) = get(addr, "/readyz", &[]);
    assert_eq!((status, body.trim()), (200, "ready"));

    let before = scrape(addr);
    assert_eq!(
        value(&before, "elves_agents_online"),
        2.0,
        "both agents linked"
    );

    // One rt/exec that succeeds, with the caller's request id, and one refused by the agent's
    // absence.
    let rid = "e2e-obs-7f3a";
    let target = c
        .api
        .signed(&[("ip", IP_A), ("app", APP), ("func", "hello")]);
    let (status, hs, body) = get(addr, &target, &[("X-Request-Id", rid)]);
    assert_eq!(status, 200);
    assert_eq!(hs.get("x-request-id").map(String::as_str), Some(rid));
    let env: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["flag"], "true", "{env}");
    assert_eq!(env["result"]["worker_message"], "hello", "{env}");
    let target = c
        .api
        .signed(&[("ip", IP_UNKNOWN), ("app", APP), ("func", "hello")]);
    let (_, hs, body) = get(addr, &target, &[]);
    assert!(body.contains(SEND_FAIL), "{body}");
    let fresh = &hs["x-request-id"];
    assert!(is_id(fresh), "a fresh request id: {fresh:?}");

    // A one-task queue, and a cron firing every second.
    let q = envelope(
        "queue/qksqueue",
        c.api.call(
            "queue/qksqueue",
            &[("ip", IP_B), ("app", APP), ("func", "q")],
        ),
    );
    assert_eq!(q["flag"], "true", "{q}");
    let cron = envelope(
        "cron/add",
        c.api.call(
            "cron/add",
            &[
                ("ip", IP_B),
                ("app", APP),
                ("func", "tick"),
                ("rule", "* * * * * ?"),
            ],
        ),
    );
    assert_eq!(cron["flag"], "true", "{cron}");

    // Polled until the queue's task is finished and the cron fired (bounded).
    let after = poll(
        "the queue task and a cron fire in /metrics",
        Duration::from_secs(15),
        || {
            let m = scrape(addr);
            (value(&m, r#"elves_queue_tasks{state="finish"}"#) >= 1.0
                && value(&m, "elves_cron_fire_lag_seconds_count") >= 1.0)
                .then_some(m)
        },
    );
    let moved = |series: &str| value(&after, series) - value(&before, series);
    // (series, by how much it must have moved at least; exact where nothing else can move it)
    let exact: &[(&str, f64)] = &[
        (r#"elves_api_requests_total{route="rt/exec",code="0"}"#, 1.0),
        (
            r#"elves_api_requests_total{route="rt/exec",code="410.1"}"#,
            1.0,
        ),
        (r#"elves_api_request_seconds_count{route="rt/exec"}"#, 2.0),
        (
            r#"elves_api_requests_total{route="queue/qksqueue",code="0"}"#,
            1.0,
        ),
        (
            r#"elves_api_requests_total{route="cron/add",code="0"}"#,
            1.0,
        ),
        (r#"elves_dispatch_seconds_count{kind="rt"}"#, 2.0),
        (
            r#"elves_bus_call_seconds_count{key="scheduler.syncJob"}"#,
            2.0,
        ),
    ];
    for (series, want) in exact {
        assert_eq!(moved(series), *want, "{series}: {before:?} → {after:?}");
    }
    let at_least: &[(&str, f64)] = &[
        (r#"elves_dispatch_seconds_count{kind="async"}"#, 2.0),
        (
            r#"elves_bus_call_seconds_count{key="gateway.dispatch"}"#,
            3.0,
        ),
        (r#"elves_store_seconds_count{op="queue_save"}"#, 1.0),
        (r#"elves_store_seconds_count{op="cron_record_fires"}"#, 1.0),
        (r#"elves_dispatch_seconds_sum{kind="rt"}"#, 1e-9),
        (
            r#"elves_api_request_seconds_bucket{le="+Inf",route="rt/exec"}"#,
            2.0,
        ),
    ];
    for (series, want) in at_least {
        assert!(
            moved(series) >= *want,
            "{series} moved {} < {want}",
            moved(series)
        );
    }
    assert_eq!(value(&after, r#"elves_queue_tasks{state="finish"}"#), 1.0);
    assert_eq!(value(&after, "elves_agents_online"), 2.0);

    // The agent logged the run under the caller's request id.
    let agent = c.procs.get("agent-a");
    let runs = poll("the agent's job line", READY_LIMIT, || {
        let lines = log_events(agent, "job finished");
        let ours: Vec<Value> = lines
            .into_iter()
            .filter(|l| l["fields"]["func"] == "hello")
            .collect();
        (!ours.is_empty()).then_some(ours)
    });
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["span"]["rid"], rid, "{}", runs[0]);
}
