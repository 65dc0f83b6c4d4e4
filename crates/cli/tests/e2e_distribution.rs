//! End to end: app distribution to real agents.
//!
//! **Simple mode**: packages built with `elves_agent::pack::pack` are put in the center's
//! package store and recorded as versions; the center's `[apps]` table says which version
//! every agent runs. The agents (which start with no apps) fetch, verify and install it,
//! follow a switch back to the older version, and remove the app when it is no longer listed
//! (rt answers `app [apptest] not install !`). Simple mode has no admin commands, so each
//! change is a center restart with a new `[apps]` table; the agents get the new table right
//! after they re-link (DesiredApps after Welcome).
//!
//! **Supervisor mode**: `elves admin` uploads the packages, activates versions, binds and
//! unbinds the agent through the center's admin API; each change is pushed to the linked
//! agent (`gateway.appsChanged`). The agent's periodic heartbeat is set to an hour, so the
//! registry can only learn an install's outcome (success or failure) from the heartbeat the
//! agent sends as soon as the install ends. Killing the agent in the middle of extracting a
//! big package leaves one whole version, and the restarted agent converges.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const DIST_APP: &str = "apptest";

/// Agents start with no apps (the harness's readiness probe gets "not install", not 410.1).
fn no_apps(home: &Path, _ip: &str) -> String {
    std::fs::create_dir_all(home.join("apps")).unwrap();
    String::new()
}

/// Builds `apptest_{version}.zip` whose `version` func answers the version.
fn build(dir: &Path, version: &str) -> std::path::PathBuf {
    let src = dir.join(format!("src-{version}"));
    write_file(
        &src.join("app-worker"),
        &format!(
            "#!/bin/sh\nprintf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>{version}</ElvesWResult>'\n"
        ),
        0o755,
    );
    elves_agent::pack::pack(&src, DIST_APP, version, dir).unwrap()
}

fn rt(c: &Cluster, ip: &str) -> serde_json::Value {
    c.api
        .get(
            &c.api
                .signed(&[("ip", ip), ("app", DIST_APP), ("func", "version")]),
        )
        .json
}

fn wait_for(c: &Cluster, what: &str, want: impl Fn(&serde_json::Value) -> bool) {
    for ip in [IP_A, IP_B] {
        poll(&format!("{what} on {ip}"), Duration::from_secs(15), || {
            want(&rt(c, ip)).then_some(())
        });
    }
}

#[test]
fn agents_install_switch_and_remove_distributed_apps() {
    let mut c = Cluster::start_on(no_apps, free_port(), free_port());
    let center_dir = c.center_config.parent().unwrap().to_owned();
    let packages = center_dir.join("packages");
    let base = std::fs::read_to_string(&c.center_config).unwrap();

    // Packages in the store, recorded as versions (the center's store, opened beside it).
    let rt_ = tokio::runtime::Runtime::new().unwrap();
    rt_.block_on(async {
        let pkgs = elves_store::PackageStore::open(&packages).unwrap();
        let store = elves_store::Store::open(&format!(
            "sqlite://{}",
            center_dir.join("elves.db").display()
        ))
        .await
        .unwrap();
        let ch = elves_store::Change {
            actor: "e2e",
            at_ms: 1,
        };
        store.create_app(DIST_APP, "t", None, ch).await.unwrap();
        for v in ["1.0.0", "2.0.0"] {
            let zip = build(c.dir.path(), v);
            let (sha256, size) = pkgs.put_file(&zip).await.unwrap();
            let nv = elves_store::NewVersion {
                app: DIST_APP,
                version: v,
                sha256: &sha256,
                size,
            };
            store.add_version(&nv, false, ch).await.unwrap();
        }
        store.close().await;
    });

    let restart = |c: &mut Cluster, n: u32, apps: &str| {
        c.procs.stop(&format!(
            "center{}",
            if n == 1 {
                String::new()
            } else {
                format!("-{}", n - 1)
            }
        ));
        std::fs::write(
            &c.center_config,
            format!(
                "{base}[supervisor]\npackages_dir = '{}'\n[apps]\n{apps}",
                packages.display()
            ),
        )
        .unwrap();
        c.start_center(&format!("center-{n}"));
    };

    restart(&mut c, 1, "apptest = '2.0.0'\n");
    wait_for(&c, "version 2.0.0", |v| {
        v["result"]["worker_message"] == "2.0.0"
    });

    restart(&mut c, 2, "apptest = '1.0.0'\n");
    wait_for(&c, "version 1.0.0", |v| {
        v["result"]["worker_message"] == "1.0.0"
    });

    restart(&mut c, 3, "");
    wait_for(&c, "apptest removed", |v| {
        v["result"]["worker_message"] == "app [apptest] not install !"
    });
    for agent in ["agent-a", "agent-b"] {
        assert!(
            !c.dir
                .path()
                .join(agent)
                .join("apps")
                .join(DIST_APP)
                .exists(),
            "{agent} still has the app's files"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Supervisor mode: the admin API (`elves admin`) drives the versions and bindings.

const ADMIN_TOKEN: &str = "e2e-admin-token-4b9d";
const SUPERVISOR_SECRET: &str = "e2e-supervisor-secret-0f3a";
const PERMISSION_DENIED: &str = "[401.6]Unauthorized AuthId Permission Denied";

/// A supervisor-mode center and its agents, with an API key of `apptest`.
struct Supervised {
    procs: Procs,
    api: Api,
    agents: std::net::SocketAddr,
    auth_id: String,
    auth_key: String,
    store: elves_store::Store,
    rt: tokio::runtime::Runtime,
    // Declared last: removed after the processes are stopped.
    dir: tempfile::TempDir,
}

impl Supervised {
    /// Starts the center and waits for its "center started" line.
    fn start() -> Supervised {
        let dir = tempfile::tempdir().unwrap();
        let center_dir = dir.path().join("center");
        std::fs::create_dir_all(&center_dir).unwrap();
        let config = center_dir.join("center.toml");
        let db = center_dir.join("elves.db");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = '127.0.0.1:0'\n[auth]\nmode = 'supervisor'\n\
                 [admin]\ntoken = '{ADMIN_TOKEN}'\n\
                 [supervisor]\nsecret = '{SUPERVISOR_SECRET}'\npackages_dir = '{packages}'\n\
                 [agents]\nlisten = '127.0.0.1:0'\ntoken = '{TOKEN}'\n[store]\nurl = 'sqlite://{db}'\n",
                packages = center_dir.join("packages").display(),
                db = db.display(),
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
            let addr = |k: &str| f[k].as_str()?.parse::<std::net::SocketAddr>().ok();
            Some((addr("api")?, addr("agents")?))
        });
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = rt
            .block_on(elves_store::Store::open(&format!(
                "sqlite://{}",
                db.display()
            )))
            .unwrap();
        Supervised {
            procs,
            api: Api { addr: api },
            agents,
            auth_id: String::new(),
            auth_key: String::new(),
            store,
            rt,
            dir,
        }
    }

    /// `elves admin --json ARGS…` against the center; its JSON answer (it must succeed).
    fn admin(&self, args: &[&str]) -> serde_json::Value {
        let mut cmd = std::process::Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ELVES_") {
                cmd.env_remove(&k);
            }
        }
        let out = cmd
            .args(["admin", "--url", &format!("http://{}", self.api.addr)])
            .args(["--token", ADMIN_TOKEN, "--json"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "elves admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("elves admin {args:?} printed no JSON: {e}"))
    }

    /// Creates `apptest`, uploads its packages and takes an API key for it.
    fn setup_app(&mut self, packages: &[std::path::PathBuf]) {
        self.admin(&["app", "add", DIST_APP, "--name", "distribution e2e"]);
        for zip in packages {
            let v = self.admin(&["app", "upload", DIST_APP, zip.to_str().unwrap()]);
            assert_eq!(v["app"], DIST_APP, "{v}");
        }
        let key = self.admin(&["key", "add", "--app", DIST_APP, "--name", "e2e"]);
        self.auth_id = key["auth_id"].as_str().unwrap().to_owned();
        self.auth_key = key["auth_key"].as_str().unwrap().to_owned();
    }

    /// Starts an agent with no apps whose periodic heartbeat never comes during the test,
    /// so whatever reaches the registry after its hello was sent on an install's outcome.
    fn start_agent(&mut self, name: &str, ip: &str) -> std::path::PathBuf {
        let home = self.dir.path().join(name.trim_end_matches("-again"));
        std::fs::create_dir_all(home.join("apps")).unwrap();
        let config = write_agent_config(
            &home,
            name,
            ip,
            self.agents,
            "\n[heartbeat]\ninterval_secs = 3600\n",
        );
        self.procs
            .0
            .push(Proc::start(name, "agent", &config, &home));
        home
    }

    /// rt/exec of `apptest.version` on `ip`, signed with the app's key.
    fn rt(&self, ip: &str) -> serde_json::Value {
        let q = elves_sign::signed_query(
            RT,
            &[("ip", ip), ("app", DIST_APP), ("func", "version")],
            &self.auth_id,
            &self.auth_key,
            elves_sign::SignType::Md5,
            now_secs(),
            None,
        );
        self.api.get(&format!("{RT}?{q}")).json
    }

    /// Polls rt/exec on `ip` until the worker answers `version`.
    fn wait_version(&self, ip: &str, version: &str, limit: Duration) {
        poll(&format!("version {version} on {ip}"), limit, || {
            (self.rt(ip)["result"]["worker_message"] == version).then_some(())
        });
    }

    /// The registry's record of `ip`: installed apps and install errors.
    fn registry(
        &self,
        ip: &str,
    ) -> (
        std::collections::BTreeMap<String, String>,
        std::collections::BTreeMap<String, String>,
    ) {
        self.rt.block_on(async {
            let apps = self
                .store
                .agent(ip)
                .await
                .unwrap()
                .map(|r| r.apps)
                .unwrap_or_default();
            (apps, self.store.agent_app_errors(ip).await.unwrap())
        })
    }

    /// Polls the registry until `want` holds for `ip`'s apps and errors.
    fn wait_registry(
        &self,
        what: &str,
        ip: &str,
        want: impl Fn(
            &std::collections::BTreeMap<String, String>,
            &std::collections::BTreeMap<String, String>,
        ) -> bool,
    ) {
        // A heartbeat sent on the outcome is recorded within a moment; the periodic one
        // (every hour here) never comes during the test.
        poll(what, Duration::from_secs(5), || {
            let (apps, errors) = self.registry(ip);
            want(&apps, &errors).then_some(())
        });
    }
}

fn installed(apps: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    apps.get(DIST_APP).map(String::as_str)
}

#[test]
fn supervisor_upload_activate_switch_and_unbind_reach_the_agent() {
    let mut c = Supervised::start();
    let zips: Vec<_> = ["1.0.0", "2.0.0"]
        .iter()
        .map(|v| build(c.dir.path(), v))
        .collect();
    c.setup_app(&zips);
    c.admin(&["app", "bind", DIST_APP, IP_A]);
    c.admin(&["app", "activate", DIST_APP, "1.0.0"]);
    let home = c.start_agent("agent-a", IP_A);
    c.wait_version(IP_A, "1.0.0", Duration::from_secs(15));
    c.wait_registry("1.0.0 in the registry", IP_A, |apps, errors| {
        installed(apps) == Some("1.0.0") && errors.is_empty()
    });

    // A new active version reaches the linked agent at once (pushed, not at a heartbeat).
    c.admin(&["app", "activate", DIST_APP, "2.0.0"]);
    c.wait_version(IP_A, "2.0.0", Duration::from_secs(5));
    c.wait_registry("2.0.0 in the registry", IP_A, |apps, _| {
        installed(apps) == Some("2.0.0")
    });

    c.admin(&["app", "activate", DIST_APP, "1.0.0"]);
    c.wait_version(IP_A, "1.0.0", Duration::from_secs(5));

    // A failed install is reported at once; the installed version keeps serving, and the
    // retry succeeds once the cause is gone. (A file where the download directory should be.)
    let downloads = home.join("data").join("downloads");
    let _ = std::fs::remove_dir_all(&downloads);
    std::fs::write(&downloads, "not a directory").unwrap();
    c.admin(&["app", "activate", DIST_APP, "2.0.0"]);
    c.wait_registry("the install error in the registry", IP_A, |apps, errors| {
        installed(apps) == Some("1.0.0")
            && errors
                .get(DIST_APP)
                .is_some_and(|e| e.contains("downloads"))
    });
    assert_eq!(
        c.rt(IP_A)["result"]["worker_message"],
        "1.0.0",
        "the installed version keeps serving"
    );
    std::fs::remove_file(&downloads).unwrap();
    c.wait_version(IP_A, "2.0.0", Duration::from_secs(15));
    c.wait_registry("the error cleared", IP_A, |apps, errors| {
        installed(apps) == Some("2.0.0") && errors.is_empty()
    });

    // Unbound: the app leaves the agent. rt answers the agent's not-installed -1 while the
    // API still has the binding cached (5 s), then refuses with 401.6 (the key's app is no
    // longer bound to this ip); it never runs the app again.
    c.admin(&["app", "unbind", DIST_APP, IP_A]);
    c.wait_registry("apptest gone from the registry", IP_A, |apps, _| {
        installed(apps).is_none()
    });
    assert!(
        !home.join("apps").join(DIST_APP).exists(),
        "the files are still there"
    );
    poll("rt refused with 401.6", Duration::from_secs(15), || {
        let v = c.rt(IP_A);
        if v["error"] == PERMISSION_DENIED {
            return Some(());
        }
        assert_eq!(v["result"]["worker_flag"], -1, "{v}");
        assert_eq!(
            v["result"]["worker_message"], "app [apptest] not install !",
            "{v}"
        );
        None
    });
    c.rt.block_on(c.store.close());
}

// ---------------------------------------------------------------------------------------
// Killing the agent in the middle of an install.

/// Files of a big version: the worker and `files` data files of 4 KiB, each naming the
/// version, so that extracting it takes a while and every file tells which version it is of.
fn build_big(dir: &Path, version: &str, files: usize) -> (std::path::PathBuf, Tree) {
    let src = dir.join(format!("big-{version}"));
    write_file(
        &src.join("app-worker"),
        &format!(
            "#!/bin/sh\nprintf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>{version}</ElvesWResult>'\n"
        ),
        0o755,
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ files as u64;
    for i in 0..files {
        // Not compressible: the package stays under the installer's ratio cap.
        let mut body = format!("{version} file {i}\n");
        while body.len() < 4096 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            body.push_str(&format!("{seed:016x}"));
        }
        write_file(&src.join(format!("data/d{}/f{i}", i % 16)), &body, 0o644);
    }
    let zip = elves_agent::pack::pack(&src, DIST_APP, version, dir).unwrap();
    (zip, tree_of(&src))
}

/// Relative path → content of every file under `root` (directories implied).
type Tree = std::collections::BTreeMap<String, String>;

fn tree_of(root: &Path) -> Tree {
    fn walk(dir: &Path, prefix: &str, out: &mut Tree) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let rel = format!("{prefix}{name}");
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &format!("{rel}/"), out);
            } else {
                out.insert(rel, std::fs::read_to_string(entry.path()).unwrap());
            }
        }
    }
    let mut out = Tree::new();
    walk(root, "", &mut out);
    out
}

/// The version the installed tree is entirely made of; panics on a mixed or partial tree.
fn whole_version(app_dir: &Path, versions: &[(&str, &Tree)]) -> String {
    let mut got = tree_of(app_dir);
    let marker = got
        .remove(".elves-version")
        .expect("an installed app has its version marker");
    let version = marker.trim();
    let (_, want) = versions
        .iter()
        .find(|(v, _)| *v == version)
        .unwrap_or_else(|| panic!("unknown version {version:?} in the marker"));
    assert!(
        &got == *want,
        "the tree of {} is not exactly version {version}: {} files, {} expected",
        app_dir.display(),
        got.len(),
        want.len()
    );
    version.to_owned()
}

/// Whether `apps` holds a staging directory with something extracted in it.
fn extracting(apps: &Path) -> bool {
    std::fs::read_dir(apps).unwrap().flatten().any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".staging-"))
            && std::fs::read_dir(e.path()).is_ok_and(|mut l| l.next().is_some())
    })
}

#[test]
fn killing_the_agent_mid_install_leaves_one_whole_version_and_it_converges_after_restart() {
    let mut c = Supervised::start();
    let (zip1, tree1) = build_big(c.dir.path(), "1.0.0", 400);
    let (zip2, tree2) = build_big(c.dir.path(), "2.0.0", 3000);
    let versions = [("1.0.0", &tree1), ("2.0.0", &tree2)];
    c.setup_app(&[zip1, zip2]);
    c.admin(&["app", "bind", DIST_APP, IP_A]);
    c.admin(&["app", "activate", DIST_APP, "1.0.0"]);
    let home = c.start_agent("agent-a", IP_A);
    let apps = home.join("apps");
    let app_dir = apps.join(DIST_APP);
    c.wait_version(IP_A, "1.0.0", Duration::from_secs(30));
    assert_eq!(whole_version(&app_dir, &versions), "1.0.0");

    // Activate 2.0.0 and kill the agent (SIGKILL) as soon as its extraction has begun.
    c.admin(&["app", "activate", DIST_APP, "2.0.0"]);
    let start = std::time::Instant::now();
    while !extracting(&apps) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent never started extracting 2.0.0"
        );
        assert!(
            c.procs
                .get_mut("agent-a")
                .child
                .try_wait()
                .unwrap()
                .is_none(),
            "the agent exited"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    c.procs.get_mut("agent-a").kill9();
    let after_kill = whole_version(&app_dir, &versions);
    eprintln!("after the kill, the app is entirely version {after_kill}");

    // Restarted, the agent cleans up and converges to the desired version.
    c.start_agent("agent-a-again", IP_A);
    c.wait_version(IP_A, "2.0.0", Duration::from_secs(30));
    assert_eq!(whole_version(&app_dir, &versions), "2.0.0");
    poll("no leftovers in apps_dir", Duration::from_secs(10), || {
        let names: Vec<String> = std::fs::read_dir(&apps)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        (names == [DIST_APP]).then_some(())
    });
    c.rt.block_on(c.store.close());
}
