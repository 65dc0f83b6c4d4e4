//! Tidy check: the layer rules of ARCHITECTURE.md, read from `cargo metadata`.
//!
//! 1. Layer-0 crates depend (transitively) on no runtime, database, HTTP or broker crate.
//! 2. A crate depends only on workspace crates of lower layers (layers 0 and 1 also on their
//!    peers); layer-2 modules never on each other.
//! 3. Only `store` uses SQL, only `bus` brokers, only `gateway` and `agent` the agent wire
//!    protocol, only `openapi` and `agent` verify signatures server-side (`sign` is shared).
//! 4. The `elves-agent` binary links no SQL driver, broker client or template engine.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Workspace crates and their layers.
const LAYERS: &[(&str, u8)] = &[
    ("elves-types", 0),
    ("elves-sign", 0),
    ("elves-worker-output", 0),
    ("elves-rpc", 0),
    ("elves-cron-expr", 0),
    ("elves-proto", 1),
    ("elves-bus", 1),
    ("elves-store", 1),
    ("elves-config", 1),
    ("elves-telemetry", 1),
    ("elves-gateway", 2),
    ("elves-scheduler", 2),
    ("elves-queue", 2),
    ("elves-cron", 2),
    ("elves-heartbeat", 2),
    ("elves-supervisor", 2),
    ("elves-openapi", 3),
    ("elves-web", 3),
    ("elves-center", 4),
    ("elves-agent", 4),
    ("elves-cli", 4),
    ("elves-bench", 5),
];

/// Crates no layer-0 crate may pull in, even indirectly.
const RUNTIME_IO: &[&str] = &[
    "tokio",
    "mio",
    "hyper",
    "axum",
    "tonic",
    "reqwest",
    "sqlx",
    "sqlx-core",
    "libsqlite3-sys",
    "lapin",
    "async-nats",
    "rumqttc",
    "redis",
];
/// Crates the lean agent may not link.
const NOT_IN_AGENT: &[&str] = &[
    "sqlx",
    "sqlx-core",
    "sqlx-sqlite",
    "sqlx-postgres",
    "sqlx-mysql",
    "libsqlite3-sys",
    "rusqlite",
    "lapin",
    "amqprs",
    "async-nats",
    "askama",
    "tera",
    "minijinja",
    "handlebars",
];

struct Graph {
    /// package id → name
    names: BTreeMap<String, String>,
    /// name → package id (workspace crates only, unique names)
    ids: BTreeMap<String, String>,
    /// package id → ids of its normal (non-dev, non-build) dependencies
    normal: BTreeMap<String, Vec<String>>,
    members: BTreeSet<String>,
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

fn graph() -> Graph {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            &host_triple(),
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: BTreeSet<String> = v["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    let mut names = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for p in v["packages"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap().to_owned();
        let name = p["name"].as_str().unwrap().to_owned();
        if members.contains(&id) {
            ids.insert(name.clone(), id.clone());
        }
        names.insert(id, name);
    }
    let mut normal = BTreeMap::new();
    for n in v["resolve"]["nodes"].as_array().unwrap() {
        let deps = n["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap().to_owned())
            .collect();
        normal.insert(n["id"].as_str().unwrap().to_owned(), deps);
    }
    Graph {
        names,
        ids,
        normal,
        members,
    }
}

impl Graph {
    fn direct(&self, name: &str) -> BTreeSet<String> {
        self.normal[&self.ids[name]]
            .iter()
            .map(|d| self.names[d].clone())
            .collect()
    }

    fn closure(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![self.ids[name].clone()];
        while let Some(id) = todo.pop() {
            for d in &self.normal[&id] {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen.into_iter().map(|id| self.names[&id].clone()).collect()
    }

    fn member_names(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|id| self.names[id].clone())
            .collect()
    }
}

fn layer(name: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| {
            panic!(
                "workspace crate {name} has no layer: add it to LAYERS here and to ARCHITECTURE.md"
            )
        })
}

#[test]
fn every_workspace_crate_has_a_layer_and_depends_only_downwards() {
    let g = graph();
    for name in g.member_names() {
        let l = layer(&name);
        for dep in g.direct(&name).iter().filter(|d| d.starts_with("elves-")) {
            let dl = layer(dep);
            // Layer-0 and layer-1 crates may build on their peers (everything uses `types`);
            // modules (layer 2) and edges (layer 3) never do; the `elves` binary composes
            // the other layer-4 crates (center, agent).
            let allowed = dl < l || (dl == l && l <= 1) || (name == "elves-cli" && dl == 4);
            assert!(allowed, "{name} (layer {l}) depends on {dep} (layer {dl})");
        }
    }
}

#[test]
fn layer_0_crates_pull_no_runtime_db_http_or_broker_crate() {
    let g = graph();
    for (name, l) in LAYERS {
        if *l != 0 || !g.ids.contains_key(*name) {
            continue;
        }
        let bad: Vec<String> = g
            .closure(name)
            .into_iter()
            .filter(|d| RUNTIME_IO.contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "{name} is layer 0 but pulls {bad:?}");
    }
}

#[test]
fn only_the_owning_crate_knows_each_technology() {
    let g = graph();
    let owners: &[(&str, &[&str])] = &[
        ("sqlx", &["elves-store"]),
        ("lapin", &["elves-bus"]),
        // elves-bench: agent-scale simulates agents over the real protocol.
        (
            "elves-proto",
            &["elves-gateway", "elves-agent", "elves-bench"],
        ),
        ("askama", &["elves-web"]),
    ];
    for name in g.member_names() {
        let direct = g.direct(&name);
        for (tech, allowed) in owners {
            if direct.contains(*tech) {
                assert!(
                    allowed.contains(&name.as_str()),
                    "{name} uses {tech}; only {allowed:?} may"
                );
            }
        }
    }
}

#[test]
fn the_agent_links_no_sql_driver_broker_client_or_template_engine() {
    let g = graph();
    let bad: Vec<String> = g
        .closure("elves-agent")
        .into_iter()
        .filter(|d| NOT_IN_AGENT.contains(&d.as_str()))
        .collect();
    assert!(bad.is_empty(), "elves-agent links {bad:?}");
}
