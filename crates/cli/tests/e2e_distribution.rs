//! End to end, simple mode: app distribution. Packages built with `elves_agent::pack::pack`
//! are put in the center's package store and recorded as versions; the center's `[apps]`
//! table says which version every agent runs. The agents (which start with no apps) fetch,
//! verify and install it, follow a switch back to the older version, and remove the app when
//! it is no longer listed (rt answers `app [apptest] not install !`).
//!
//! Simple mode has no admin commands, so each change is a center restart with a new `[apps]`
//! table; the agents get the new table right after they re-link (DesiredApps after Welcome).
//! The supervisor-mode variant (upload, activate, bind/unbind pushed through
//! `gateway.appsChanged`) is left for when the admin API is served by the center.

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
