//! End to end, supervisor mode, over the real binaries: an admin (`elves admin`) creates an
//! app, uploads its package, activates it, binds one agent of two and creates a key. That key
//! runs rt/exec on the bound agent (which installed the package), gets 401.6 on the other agent
//! and on another app, 413.2 for an unknown app; a disabled key gets 401.2; after `key rm` the
//! key gets 413.1; the info routes answer what was bound.

mod common;
#[path = "common/supervisor_center.rs"]
mod sup;

use std::path::Path;
use std::time::Duration;

use common::*;
use elves_sign::{SignType, signed_query};
use serde_json::{Value, json};
use sup::SupCenter;

const SUP_APP: &str = "supapp";
const OTHER_APP: &str = "otherapp";

/// Builds `supapp_1.0.0.zip` whose worker answers its version.
fn build(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    write_file(
        &src.join("app-worker"),
        "#!/bin/sh\nprintf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>supapp 1.0.0</ElvesWResult>'\n",
        0o755,
    );
    elves_agent::pack::pack(&src, SUP_APP, "1.0.0", dir).unwrap()
}

/// A signed GET of `/api/v2/{route}` with this key.
fn call(api: &Api, id: &str, key: &str, route: &str, params: &[(&str, &str)]) -> Value {
    let path = format!("/api/v2/{route}");
    let q = signed_query(&path, params, id, key, SignType::Md5, now_secs(), None);
    envelope(route, api.get(&format!("{path}?{q}")))
}

fn refused(v: &Value, code: &str, text: &str, what: &str) {
    assert_eq!(v["flag"], "false", "{what}: {v}");
    assert_eq!(v["error"], format!("[{code}]{text}"), "{what}: {v}");
}

const DENIED: (&str, &str) = ("401.6", "Unauthorized AuthId Permission Denied");

#[test]
fn an_app_key_runs_only_its_app_on_its_bound_agents() {
    let mut c = SupCenter::start();
    c.start_agent("agent-a", IP_A);
    c.start_agent("agent-b", IP_B);
    let api = Api { addr: c.api };

    c.admin_ok(&["app", "add", SUP_APP, "--name", "Supervisor e2e"]);
    c.admin_ok(&["app", "add", OTHER_APP, "--name", "Another app"]);
    let zip = build(c.dir());
    let up = c.admin_ok(&["app", "upload", SUP_APP, zip.to_str().unwrap()]);
    assert_eq!(up["version"], "1.0.0", "{up}");
    let again = c.admin(&["app", "upload", SUP_APP, zip.to_str().unwrap()], None);
    assert!(
        again.as_ref().is_err_and(|e| e.contains("409")),
        "re-upload without --force: {again:?}"
    );
    c.admin_ok(&["app", "activate", SUP_APP, "1.0.0"]);
    let bound = c.admin_ok(&["app", "bind", SUP_APP, IP_A]);
    assert_eq!(bound["added"], json!([IP_A]));
    let key = c.admin_ok(&["key", "add", "--app", SUP_APP, "--name", "e2e"]);
    let (id, secret) = (
        key["auth_id"].as_str().unwrap().to_owned(),
        key["auth_key"].as_str().unwrap().to_owned(),
    );
    let run = |ip: &str, app: &str| {
        call(
            &api,
            &id,
            &secret,
            "rt/exec",
            &[("ip", ip), ("app", app), ("func", "version")],
        )
    };

    // The bound agent gets the package pushed, installs it and runs it.
    let ok = poll(
        "the bound agent to run supapp 1.0.0",
        Duration::from_secs(20),
        || {
            let v = run(IP_A, SUP_APP);
            (v["result"]["worker_message"] == "supapp 1.0.0").then_some(v)
        },
    );
    assert_eq!(ok["flag"], "true", "{ok}");

    // §4: another agent, another app, an unknown app.
    refused(&run(IP_B, SUP_APP), DENIED.0, DENIED.1, "unbound agent");
    refused(&run(IP_A, OTHER_APP), DENIED.0, DENIED.1, "another app");
    refused(
        &run(IP_A, "ghostapp"),
        "413.2",
        "App Not Found",
        "unknown app",
    );

    // Info routes: what was bound.
    let info = call(&api, &id, &secret, "info/app", &[]);
    assert_eq!(info["flag"], "true", "{info}");
    assert_eq!(info["result"]["app"], SUP_APP);
    assert_eq!(info["result"]["app_name"], "Supervisor e2e");
    assert_eq!(info["result"]["app_ver"], "1.0.0");
    let alias = call(&api, &id, &secret, "info/apps", &[]);
    assert_eq!(alias["result"], info["result"]);
    let agents = call(&api, &id, &secret, "info/agents", &[]);
    assert_eq!(agents["result"], json!([IP_A]), "{agents}");
    let detail = call(&api, &id, &secret, "info/agents/detail", &[("ip", IP_A)]);
    assert_eq!(detail["result"]["ip"], IP_A, "{detail}");
    assert_eq!(detail["result"]["asset"], "agent-a", "{detail}");
    assert!(detail["result"].get("cron_list").is_none(), "{detail}");
    let cron = call(
        &api,
        &id,
        &secret,
        "cron/add",
        &[
            ("ip", IP_A),
            ("app", SUP_APP),
            ("func", "version"),
            ("rule", "0 0 0 1 1 ? 2099"),
        ],
    );
    assert_eq!(cron["flag"], "true", "{cron}");
    let with_crons = call(
        &api,
        &id,
        &secret,
        "info/agents/detail",
        &[("ip", IP_A), ("showcron", "true")],
    );
    assert_eq!(
        with_crons["result"]["cron_list"],
        json!([cron["result"]["id"]]),
        "{with_crons}"
    );
    refused(
        &call(&api, &id, &secret, "info/agents/detail", &[("ip", IP_B)]),
        DENIED.0,
        DENIED.1,
        "detail of an unbound agent",
    );

    // A disabled key: 401.2; enabled again it works.
    c.admin_ok(&["key", "disable", &id]);
    let disabled = poll(
        "the disable to reach openapi",
        Duration::from_secs(10),
        || {
            let v = run(IP_A, SUP_APP);
            (v["flag"] == "false").then_some(v)
        },
    );
    refused(
        &disabled,
        "401.2",
        "Unauthorized AuthId Is Illegal",
        "disabled key",
    );
    c.admin_ok(&["key", "enable", &id]);
    poll(
        "the enable to reach openapi",
        Duration::from_secs(10),
        || (run(IP_A, SUP_APP)["flag"] == "true").then_some(()),
    );

    // After key rm: 413.1.
    c.admin_ok(&["key", "rm", &id]);
    let gone = poll(
        "the removal to reach openapi",
        Duration::from_secs(10),
        || {
            let v = run(IP_A, SUP_APP);
            (v["flag"] == "false").then_some(v)
        },
    );
    refused(&gone, "413.1", "AuthId Not Found", "removed key");

    // The audit log names every change.
    let audit = c.admin_ok(&["audit", "--limit", "100"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in ["app.create", "binding.add", "key.create", "key.delete"] {
        assert!(actions.contains(&a), "no {a} in {actions:?}");
    }
}

/// The registry row of `ip` in `elves admin agent list`, if any.
fn agent_row(c: &SupCenter, ip: &str) -> Option<Value> {
    let v = c.admin_ok(&["agent", "list"]);
    v.as_array()?.iter().find(|r| r["ip"] == ip).cloned()
}

/// A reinstalled host (same ip, a new data directory, so no credential) cannot take over the
/// ip pinned by the old one; `elves admin agent release IP` lets it enroll and link.
#[test]
fn a_reinstalled_host_enrolls_again_only_after_its_ip_is_released() {
    let mut c = SupCenter::start();
    c.start_agent("host-old", IP_A);
    let old = poll(
        "the agent to enroll and link",
        Duration::from_secs(20),
        || agent_row(&c, IP_A).filter(|r| r["pinned"] == true && r["linked"] == true),
    );
    assert_eq!(old["asset"], "host-old", "{old}");
    c.procs.stop("host-old");

    c.start_agent("host-new", IP_A);
    poll(
        "the new host's enrollment to be refused",
        Duration::from_secs(20),
        || (!log_events(c.procs.get("host-new"), "enrollment refused").is_empty()).then_some(()),
    );
    let held = agent_row(&c, IP_A).unwrap();
    assert_eq!(
        held["asset"], "host-old",
        "the refused host changed the record: {held}"
    );

    // (args, the error's status) for refusals; nothing changes.
    for (ip, status) in [("127.0.0.300", "400"), (IP_UNKNOWN, "404")] {
        let r = c.admin(&["agent", "release", ip], None);
        assert!(
            r.as_ref().is_err_and(|e| e.contains(status)),
            "release {ip}: {r:?}"
        );
    }
    let released = c.admin_ok(&["agent", "release", IP_A]);
    assert_eq!(released["released"], true, "{released}");
    let twice = c.admin(&["agent", "release", IP_A], None);
    assert!(
        twice.as_ref().is_err_and(|e| e.contains("404")),
        "{twice:?}"
    );

    let new = poll(
        "the new host to enroll and link",
        Duration::from_secs(45),
        || {
            agent_row(&c, IP_A)
                .filter(|r| r["asset"] == "host-new" && r["pinned"] == true && r["linked"] == true)
        },
    );
    assert_eq!(new["version"], env!("CARGO_PKG_VERSION"), "{new}");
    let audit = c.admin_ok(&["audit", "--limit", "10"]);
    let release = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "agent.release")
        .unwrap_or_else(|| panic!("no agent.release in {audit}"));
    assert_eq!(release["detail"]["ip"], IP_A);
    assert_eq!(release["actor"], "admin-token");
}
