//! Binding sources (the original's CMDB hook): an app may name a URL answering
//! `{"data":[{"ip":"…"},…]}`; the supervisor fetches it on a schedule and on demand
//! (`AdminCommand::AppSync`: admin API, `elves admin app sync`, the web UI) and makes that
//! list the app's bindings.
//!
//! * **All or nothing**: every entry must be an object whose `ip` is dotted IPv4; a body that is
//!   not that JSON, an entry that is not valid, more than [`Limits::max_ips`] entries, a body
//!   over [`Limits::max_body`] bytes, a status other than 200, a redirect or a fetch slower
//!   than [`Limits::timeout`] fails the sync and leaves the bindings as they were.
//! * **Audited**: each sync, success or failure, appends an `app.sync` audit row with the
//!   counts (`fetched`, `added`, `removed`) or the reason; a success that changes the
//!   bindings also writes the store's `binding.replace` row in the same transaction as the
//!   change.
//! * **http only**: the center carries no TLS client (no TLS crate in the dependency tree);
//!   `https://` sources are refused when the app is created. Put the CMDB behind a local
//!   http endpoint or proxy.
//! * The HTTP client is reqwest without default features (hyper underneath, already linked by
//!   the `elves` binary), with no proxy from the environment and no redirects.

use std::time::Duration;

use elves_rpc::supervisor::{AdminError, AdminErrorKind};
use elves_store::Change;
use elves_types::validate::is_ipv4;
use serde_json::{Value, json};

use crate::admin::{app_err, require_app, store_fail};
use crate::service::Inner;

/// The actor scheduled syncs are audited as.
pub const SCHEDULE_ACTOR: &str = "bind-sync";

/// Bounds of one fetch.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The whole fetch (connect, headers, body).
    pub timeout: Duration,
    /// The largest body, in bytes.
    pub max_body: usize,
    /// The most entries in `data`.
    pub max_ips: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
            max_ips: 10_000,
        }
    }
}

/// Fetches `url` and returns its ips (deduplicated, in the source's order), or why not.
pub async fn fetch_ips(url: &str, limits: Limits) -> Result<Vec<String>, String> {
    if !url.starts_with("http://") {
        return Err("only http:// bind URLs are supported".into());
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(limits.timeout)
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let fetch = async {
        let mut resp = client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(describe)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "the source answered HTTP {}",
                resp.status().as_u16()
            ));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > limits.max_body as u64)
        {
            return Err(format!("the body is larger than {} bytes", limits.max_body));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > limits.max_body {
                return Err(format!("the body is larger than {} bytes", limits.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    // reqwest's timeout covers the body too; this one also bounds a slow DNS or a client bug.
    let body = tokio::time::timeout(limits.timeout + Duration::from_secs(1), fetch)
        .await
        .map_err(|_| format!("no answer within {:?}", limits.timeout))??;
    parse(&body, limits.max_ips)
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "the source did not answer in time".into()
    } else if e.is_connect() {
        "cannot connect to the source".into()
    } else {
        // Without the URL: it may carry credentials.
        format!("fetch failed: {}", e.without_url())
    }
}

/// Parses `{"data":[{"ip":"…"},…]}`; every entry must be valid.
pub fn parse(body: &[u8], max_ips: usize) -> Result<Vec<String>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the body has no \"data\" array")?;
    if data.len() > max_ips {
        return Err(format!(
            "{} entries, more than the {max_ips} allowed",
            data.len()
        ));
    }
    let mut ips: Vec<String> = Vec::with_capacity(data.len());
    for (i, entry) in data.iter().enumerate() {
        let ip = entry
            .get("ip")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("entry {i} has no \"ip\" string"))?;
        if !is_ipv4(ip) {
            let shown: String = ip.chars().take(64).collect();
            return Err(format!("entry {i}: `{shown}` is not a dotted IPv4 address"));
        }
        if !ips.iter().any(|x| x == ip) {
            ips.push(ip.to_owned());
        }
    }
    Ok(ips)
}

/// Syncs one app's bindings from its bind URL, auditing the outcome as `actor`.
pub(crate) async fn sync_app(
    inner: &Inner,
    app: &str,
    actor: &str,
    now_ms: i64,
) -> Result<Value, AdminError> {
    let a = require_app(inner, app).await?;
    let Some(url) = a.bind_url.filter(|u| !u.trim().is_empty()) else {
        return Err(AdminError::new(
            AdminErrorKind::Invalid,
            format!("app `{app}` has no bind URL"),
        ));
    };
    let change = Change {
        actor,
        at_ms: now_ms,
    };
    let ips = match fetch_ips(&url, inner.sync_limits).await {
        Ok(ips) => ips,
        Err(reason) => {
            let detail = json!({ "app": app, "ok": false, "error": reason });
            if let Err(e) = inner.store.append_audit("app.sync", &detail, change).await {
                tracing::warn!(error = %e, "cannot audit a failed bind sync");
            }
            tracing::warn!(app, error = %reason, "bind sync failed; bindings unchanged");
            return Err(AdminError::new(
                AdminErrorKind::Upstream,
                format!("bind sync of `{app}` failed, bindings unchanged: {reason}"),
            ));
        }
    };
    let done = inner
        .store
        .replace_bindings(app, &ips, change)
        .await
        .map_err(|e| app_err(e, app))?;
    let out = json!({
        "app": app,
        "fetched": ips.len(),
        "added": done.added,
        "removed": done.removed,
    });
    let detail = json!({
        "app": app,
        "ok": true,
        "fetched": ips.len(),
        "added": done.added.len(),
        "removed": done.removed.len(),
    });
    inner
        .store
        .append_audit("app.sync", &detail, change)
        .await
        .map_err(store_fail)?;
    Ok(out)
}

/// One scheduled round: every app with a bind URL, one after the other. Returns the ips whose
/// bindings changed (for `gateway.appsChanged`).
pub(crate) async fn sync_all(inner: &Inner, now_ms: i64) -> Vec<String> {
    let apps = match inner.store.apps().await {
        Ok(apps) => apps,
        Err(e) => {
            tracing::warn!(error = %e, "bind sync: cannot list apps");
            return Vec::new();
        }
    };
    let mut changed = Vec::new();
    for a in apps.into_iter().filter(|a| a.bind_url.is_some()) {
        if let Ok(v) = sync_app(inner, &a.name, SCHEDULE_ACTOR, now_ms).await {
            changed.extend(changed_ips(&v));
        }
    }
    changed
}

/// The ips added or removed by a sync's answer.
pub(crate) fn changed_ips(v: &Value) -> Vec<String> {
    ["added", "removed"]
        .iter()
        .filter_map(|k| v[*k].as_array())
        .flatten()
        .filter_map(|ip| ip.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Name, body, and the ips or a part of the error.
    type ParseCase = (
        &'static str,
        &'static str,
        Result<&'static [&'static str], &'static str>,
    );

    #[test]
    fn parse_rules() {
        let cases: &[ParseCase] = &[
            (
                "two ips",
                r#"{"data":[{"ip":"10.0.0.1"},{"ip":"10.0.0.2"}]}"#,
                Ok(&["10.0.0.1", "10.0.0.2"]),
            ),
            (
                "duplicates kept once",
                r#"{"data":[{"ip":"10.0.0.1"},{"ip":"10.0.0.1"}]}"#,
                Ok(&["10.0.0.1"]),
            ),
            (
                "extra fields ignored",
                r#"{"data":[{"ip":"10.0.0.1","host":"a"}],"total":1}"#,
                Ok(&["10.0.0.1"]),
            ),
            ("empty list", r#"{"data":[]}"#, Ok(&[])),
            ("not json", "<html>", Err("not JSON")),
            ("no data", r#"{"rows":[]}"#, Err("no \"data\" array")),
            (
                "data not a list",
                r#"{"data":{"ip":"10.0.0.1"}}"#,
                Err("no \"data\" array"),
            ),
            (
                "entry without ip",
                r#"{"data":[{"ip":"10.0.0.1"},{"host":"a"}]}"#,
                Err("entry 1 has no"),
            ),
            (
                "ip not a string",
                r#"{"data":[{"ip":167772161}]}"#,
                Err("entry 0 has no"),
            ),
            (
                "bad octet",
                r#"{"data":[{"ip":"10.0.0.1"},{"ip":"10.0.0.256"}]}"#,
                Err("entry 1: `10.0.0.256`"),
            ),
            (
                "ipv6",
                r#"{"data":[{"ip":"::1"}]}"#,
                Err("not a dotted IPv4"),
            ),
            (
                "hostname",
                r#"{"data":[{"ip":"db1"}]}"#,
                Err("not a dotted IPv4"),
            ),
            (
                "too many",
                r#"{"data":[{"ip":"10.0.0.1"},{"ip":"10.0.0.2"},{"ip":"10.0.0.3"}]}"#,
                Err("3 entries, more than the 2 allowed"),
            ),
        ];
        for (name, body, want) in cases {
            let got = parse(body.as_bytes(), 2);
            match (want, &got) {
                (Ok(ips), Ok(g)) => assert_eq!(g, ips, "{name}"),
                (Err(part), Err(e)) => assert!(e.contains(part), "{name}: {e}"),
                _ => panic!("{name}: got {got:?}"),
            }
        }
    }

    /// A local HTTP source: each path answers a canned response; `/slow` never answers.
    async fn source() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (status, body) = match path.as_str() {
                        "/good" => (
                            "200 OK",
                            r#"{"data":[{"ip":"10.0.0.3"},{"ip":"10.0.0.4"}]}"#.to_owned(),
                        ),
                        "/malformed" => ("200 OK", "{\"data\":[".to_owned()),
                        "/partial" => (
                            "200 OK",
                            r#"{"data":[{"ip":"10.0.0.5"},{"ip":"10.0.0.x"}]}"#.to_owned(),
                        ),
                        "/big" => (
                            "200 OK",
                            format!(r#"{{"data":[],"pad":"{}"}}"#, "x".repeat(4096)),
                        ),
                        "/error" => ("500 Internal Server Error", "{}".to_owned()),
                        "/redirect" => ("302 Found", String::new()),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        _ => ("404 Not Found", String::new()),
                    };
                    let big = path == "/big";
                    // The big body comes without a length, so only the streamed count catches it.
                    let len = if big {
                        String::new()
                    } else {
                        format!("Content-Length: {}\r\n", body.len())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nLocation: /good\r\n{len}Connection: close\r\n\r\n{body}"
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (addr, h)
    }

    #[tokio::test]
    async fn bindings_are_replaced_only_by_a_fully_valid_answer_and_each_sync_is_audited() {
        use elves_rpc::supervisor::AdminCommand as C;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("elves.db").display());
        let store = elves_store::Store::open(&url).await.unwrap();
        let mut inner = Inner::for_tests(store, "0123456789ABCDEF0123456789ABCDEF");
        inner.sync_limits = Limits {
            timeout: Duration::from_millis(500),
            max_body: 1024,
            max_ips: 100,
        };
        let (addr, server) = source().await;
        let now = 1_700_000_000_000;
        let run = |cmd: C| crate::admin::run(&inner, "tester", cmd, now);
        for (app, path) in [
            ("good", "good"),
            ("malformed", "malformed"),
            ("partial", "partial"),
            ("big", "big"),
            ("error", "error"),
            ("redirect", "redirect"),
            ("slow", "slow"),
        ] {
            run(C::AppAdd {
                app: app.into(),
                title: app.into(),
                bind_url: Some(format!("http://{addr}/{path}")),
            })
            .await
            .unwrap();
            // Bound before the sync: a failed sync must leave this in place.
            run(C::Bind {
                app: app.into(),
                ips: vec!["10.0.0.1".into()],
            })
            .await
            .unwrap();
        }
        run(C::AppAdd {
            app: "plain".into(),
            title: "p".into(),
            bind_url: None,
        })
        .await
        .unwrap();

        let ok = run(C::AppSync { app: "good".into() }).await.unwrap();
        assert_eq!(
            ok,
            json!({"app": "good", "fetched": 2, "added": ["10.0.0.3", "10.0.0.4"], "removed": ["10.0.0.1"]})
        );
        assert_eq!(
            inner.store.bindings("good").await.unwrap(),
            vec!["10.0.0.3", "10.0.0.4"]
        );

        let failures = [
            ("malformed", "not JSON"),
            ("partial", "entry 1: `10.0.0.x`"),
            ("big", "larger than 1024 bytes"),
            ("error", "HTTP 500"),
            ("redirect", "HTTP 302"),
            ("slow", "in time"),
        ];
        for (app, why) in failures {
            let started = std::time::Instant::now();
            let e = run(C::AppSync { app: app.into() }).await.unwrap_err();
            assert_eq!(e.kind, AdminErrorKind::Upstream, "{app}: {e:?}");
            assert!(e.message.contains(why), "{app}: {e:?}");
            assert!(e.message.contains("bindings unchanged"), "{app}: {e:?}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{app}: not bounded"
            );
            assert_eq!(
                inner.store.bindings(app).await.unwrap(),
                vec!["10.0.0.1"],
                "{app}: bindings changed"
            );
        }
        let none = run(C::AppSync {
            app: "plain".into(),
        })
        .await
        .unwrap_err();
        assert_eq!(none.kind, AdminErrorKind::Invalid);
        let ghost = run(C::AppSync {
            app: "ghost".into(),
        })
        .await
        .unwrap_err();
        assert_eq!(ghost.kind, AdminErrorKind::NotFound);

        // One app.sync row per attempt that reached the source, with counts or the reason.
        let rows = inner.store.audit(100, None).await.unwrap();
        let syncs: Vec<&Value> = rows
            .iter()
            .filter(|r| r.action == "app.sync")
            .map(|r| &r.detail)
            .collect();
        assert_eq!(syncs.len(), 7, "{syncs:?}");
        let good = syncs.iter().find(|d| d["app"] == "good").unwrap();
        assert_eq!(
            **good,
            json!({"app": "good", "ok": true, "fetched": 2, "added": 2, "removed": 1})
        );
        for (app, why) in failures {
            let d = syncs.iter().find(|d| d["app"] == app).unwrap();
            assert_eq!(d["ok"], false, "{app}");
            assert!(d["error"].as_str().unwrap().contains(why), "{app}: {d}");
        }
        assert!(rows.iter().all(|r| r.actor == "tester"));

        // The scheduled round syncs every app with a bind URL and reports the changed ips.
        run(C::Bind {
            app: "good".into(),
            ips: vec!["10.0.0.9".into()],
        })
        .await
        .unwrap();
        let mut changed = sync_all(&inner, now).await;
        changed.sort();
        assert_eq!(changed, vec!["10.0.0.9"]);
        assert_eq!(
            inner.store.bindings("good").await.unwrap(),
            vec!["10.0.0.3", "10.0.0.4"]
        );
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_source_fails_cleanly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = fetch_ips(&format!("http://127.0.0.1:{port}/x"), Limits::default())
            .await
            .unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        let e = fetch_ips("https://example.invalid/x", Limits::default())
            .await
            .unwrap_err();
        assert!(e.contains("only http://"), "{e}");
    }
}
