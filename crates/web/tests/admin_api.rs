//! The admin API over a real supervisor module on an in-process bus with a temp store.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use elves_store::{PackageStore, Store};
use elves_web::{AdminOptions, admin_router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token-0123456789";

struct T {
    router: Router,
    packages: PackageStore,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn start(token: &str) -> T {
    let dir = tempfile::tempdir().unwrap();
    let (bus, store) = common::supervisor(dir.path()).await;
    let packages = PackageStore::open(dir.path().join("packages")).unwrap();
    let router = admin_router(
        AdminOptions {
            token: token.into(),
            packages: packages.clone(),
        },
        &bus,
    );
    T {
        router,
        packages,
        store,
        _dir: dir,
    }
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

impl T {
    async fn send(&self, method: Method, path: &str, auth: Option<&str>, body: Body) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        Resp {
            status,
            headers,
            json,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
        self.send(method, path, Some(&format!("Bearer {TOKEN}")), body)
            .await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let r = self.call(method.clone(), path, body).await;
        assert!(
            r.status.is_success(),
            "{method} {path}: {} {}",
            r.status,
            r.json
        );
        r.json
    }

    async fn upload(&self, path: &str, bytes: &[u8]) -> Resp {
        self.send(
            Method::PUT,
            path,
            Some(&format!("Bearer {TOKEN}")),
            Body::from(bytes.to_vec()),
        )
        .await
    }
}

fn zip_bytes(n: u8) -> Vec<u8> {
    let mut v = b"PK\x03\x04".to_vec();
    v.extend(std::iter::repeat_n(n, 100));
    v
}

#[tokio::test]
async fn the_token_is_required_and_compared_exactly() {
    let t = start(TOKEN).await;
    let cases: &[(&str, Option<&str>)] = &[
        ("no header", None),
        ("empty bearer", Some("Bearer ")),
        ("wrong token", Some("Bearer nope")),
        ("token prefix", Some(&format!("Bearer {}", &TOKEN[..10]))),
        ("token plus", Some(&format!("Bearer {TOKEN}x"))),
        ("basic scheme", Some(&format!("Basic {TOKEN}"))),
        ("bare token", Some(TOKEN)),
    ];
    for (name, auth) in cases {
        for path in ["/admin/api/apps", "/admin/api/nowhere"] {
            let r = t.send(Method::GET, path, *auth, Body::empty()).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name} {path}");
            assert!(
                r.json["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{name}"
            );
        }
    }
    let r = t
        .send(
            Method::GET,
            "/admin/api/apps",
            Some(&format!("bearer {TOKEN}")),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, json!([]));
    let r = t.call(Method::GET, "/admin/api/nowhere", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_configured_token_every_request_is_refused() {
    for token in ["", "  "] {
        let t = start(token).await;
        for auth in [None, Some("Bearer "), Some("Bearer  "), Some("Bearer x")] {
            let r = t
                .send(Method::GET, "/admin/api/apps", auth, Body::empty())
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert!(r.json["error"].as_str().unwrap().contains("admin.token"));
        }
    }
}

#[tokio::test]
async fn no_cors_headers_ever() {
    let t = start(TOKEN).await;
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri("/admin/api/apps")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let resp = t.router.clone().oneshot(preflight).await.unwrap();
    assert!(!resp.status().is_success());
    let mut all = vec![resp.headers().clone()];
    all.push(t.call(Method::GET, "/admin/api/apps", None).await.headers);
    for h in all {
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("access-control-")),
            "{h:?}"
        );
    }
}

#[tokio::test]
async fn apps_packages_bindings_and_keys_end_to_end() {
    let t = start(TOKEN).await;
    let made = t
        .call(
            Method::POST,
            "/admin/api/apps",
            Some(json!({"app": "demo", "title": "Demo"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.json);
    assert_eq!(made.json["creator"], "admin-token");
    let dup = t
        .call(
            Method::POST,
            "/admin/api/apps",
            Some(json!({"app": "demo", "title": "Demo"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = t
        .call(
            Method::POST,
            "/admin/api/apps",
            Some(json!({"app": "a/b", "title": "x"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad_json = t
        .call(Method::POST, "/admin/api/apps", Some(json!({"app": "x"})))
        .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert!(bad_json.json["error"].as_str().unwrap().contains("title"));

    // Uploads: the file name must be the app's, the body a zip.
    let p1 = zip_bytes(1);
    let up = t
        .upload("/admin/api/apps/demo/packages/demo_1.0.zip", &p1)
        .await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.json);
    let sha = up.json["sha256"].as_str().unwrap().to_owned();
    assert_eq!(up.json["size"], p1.len());
    assert_eq!(up.json["version"], "1.0");
    assert_eq!(std::fs::read(t.packages.path(&sha).unwrap()).unwrap(), p1);
    let again = t
        .upload("/admin/api/apps/demo/packages/demo_1.0.zip", &zip_bytes(2))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.json);
    assert!(again.json["error"].as_str().unwrap().contains("force"));
    let forced = t
        .upload(
            "/admin/api/apps/demo/packages/demo_1.0.zip?force=true",
            &zip_bytes(2),
        )
        .await;
    assert_eq!(forced.status, StatusCode::CREATED, "{}", forced.json);
    assert_eq!(forced.json["replaced"], true);
    for (path, body, status) in [
        (
            "/admin/api/apps/demo/packages/other_1.0.zip",
            zip_bytes(3),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/api/apps/demo/packages/demo_1.0.tar",
            zip_bytes(3),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/api/apps/demo/packages/demo_..zip",
            zip_bytes(3),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/api/apps/demo/packages/demo_2.zip",
            b"not a zip".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/api/apps/demo/packages/demo_2.zip",
            Vec::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/api/apps/ghost/packages/ghost_1.zip",
            zip_bytes(3),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = t.upload(path, &body).await;
        assert_eq!(r.status, status, "{path}: {}", r.json);
    }
    let huge = Request::builder()
        .method(Method::PUT)
        .uri("/admin/api/apps/demo/packages/demo_9.zip")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-length", (300u64 << 20).to_string())
        .body(Body::empty())
        .unwrap();
    let resp = t.router.clone().oneshot(huge).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Refused uploads leave no package behind (only the two accepted ones).
    let stored = std::fs::read_dir(t.packages.dir()).unwrap().count();
    assert_eq!(stored, 2);

    let act = t
        .ok(
            Method::POST,
            "/admin/api/apps/demo/activate",
            Some(json!({"version": "1.0"})),
        )
        .await;
    assert_eq!(act["changed"], true);
    let bound = t
        .ok(
            Method::POST,
            "/admin/api/apps/demo/bind",
            Some(json!({"ips": ["10.0.0.1", "10.0.0.2"]})),
        )
        .await;
    assert_eq!(bound["added"], json!(["10.0.0.1", "10.0.0.2"]));
    let bad_ip = t
        .call(
            Method::POST,
            "/admin/api/apps/demo/bind",
            Some(json!({"ips": ["10.0.0.3", "x"]})),
        )
        .await;
    assert_eq!(bad_ip.status, StatusCode::BAD_REQUEST);
    t.ok(
        Method::POST,
        "/admin/api/apps/demo/unbind",
        Some(json!({"ips": ["10.0.0.2"]})),
    )
    .await;

    let key = t
        .call(
            Method::POST,
            "/admin/api/keys",
            Some(json!({"app": "demo", "name": "ci"})),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED);
    let auth_id = key.json["auth_id"].as_str().unwrap().to_owned();
    let secret = key.json["auth_key"].as_str().unwrap().to_owned();
    let keys = t.ok(Method::GET, "/admin/api/keys?app=demo", None).await;
    assert_eq!(keys[0]["auth_id"], auth_id.as_str());
    assert!(!keys.to_string().contains(&secret));
    assert_eq!(
        t.call(Method::GET, "/admin/api/keys", None).await.status,
        StatusCode::BAD_REQUEST
    );
    let off = t
        .ok(
            Method::POST,
            &format!("/admin/api/keys/{auth_id}/disable"),
            None,
        )
        .await;
    assert_eq!(off["disabled"], true);
    t.ok(
        Method::POST,
        &format!("/admin/api/keys/{auth_id}/expire"),
        Some(json!({"expires_at_ms": null})),
    )
    .await;

    let list = t.ok(Method::GET, "/admin/api/apps", None).await;
    assert_eq!(
        list,
        json!([{"name": "demo", "title": "Demo", "active_version": "1.0", "agents": 1, "versions": ["1.0"]}])
    );
    let del = t.call(Method::DELETE, "/admin/api/apps/demo", None).await;
    assert_eq!(del.status, StatusCode::CONFLICT);
    assert!(
        del.json["error"].as_str().unwrap().contains("still has"),
        "{}",
        del.json
    );
    t.ok(Method::DELETE, &format!("/admin/api/keys/{auth_id}"), None)
        .await;
    let gone = t
        .call(Method::DELETE, &format!("/admin/api/keys/{auth_id}"), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        t.call(Method::GET, "/admin/api/apps/ghost", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let audit = t.ok(Method::GET, "/admin/api/audit?limit=3", None).await;
    assert_eq!(audit.as_array().unwrap().len(), 3);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"] == "admin-token")
    );
    let bad_q = t.call(Method::GET, "/admin/api/audit?limit=x", None).await;
    assert_eq!(bad_q.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn users() {
    let t = start(TOKEN).await;
    let pw = "correct horse battery";
    let made = t
        .call(
            Method::POST,
            "/admin/api/users",
            Some(json!({"email": "ann@x.io", "password": pw, "role": "admin"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.json);
    let short = t
        .call(
            Method::POST,
            "/admin/api/users",
            Some(json!({"email": "bob@x.io", "password": "short", "role": "admin"})),
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    let users = t.ok(Method::GET, "/admin/api/users", None).await;
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert!(!users.to_string().contains("argon2"));
    t.ok(
        Method::POST,
        "/admin/api/users/ann@x.io/password",
        Some(json!({"password": "another long password"})),
    )
    .await;
    let last = t
        .call(Method::DELETE, "/admin/api/users/ann@x.io", None)
        .await;
    assert_eq!(last.status, StatusCode::CONFLICT);
    let ghost = t
        .call(Method::DELETE, "/admin/api/users/ghost@x.io", None)
        .await;
    assert_eq!(ghost.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn agents_are_listed_and_a_pinned_ip_released_once() {
    let t = start(TOKEN).await;
    let secret = "c".repeat(64);
    let pin = elves_store::Credential {
        ip: "10.1.2.3".into(),
        secret_sha256: secret.clone(),
        asset: "host-a".into(),
        enrolled_at_ms: 1,
    };
    assert!(t.store.pin_credential(&pin).await.unwrap());
    let list = t.ok(Method::GET, "/admin/api/agents", None).await;
    assert_eq!(list[0]["ip"], "10.1.2.3");
    assert_eq!(list[0]["pinned"], true);
    assert!(!list.to_string().contains(&secret), "{list}");
    // (path, expected status) in order: a release, its repeat, malformed and unknown ips.
    let cases = [
        ("/admin/api/agents/10.1.2.3/release", StatusCode::OK),
        ("/admin/api/agents/10.1.2.3/release", StatusCode::NOT_FOUND),
        ("/admin/api/agents/10.9.9.9/release", StatusCode::NOT_FOUND),
        ("/admin/api/agents/nope/release", StatusCode::BAD_REQUEST),
    ];
    for (path, want) in cases {
        let r = t.call(Method::POST, path, None).await;
        assert_eq!(r.status, want, "{path}: {}", r.json);
    }
    assert_eq!(t.store.credential("10.1.2.3").await.unwrap(), None);
    let unauth = t
        .send(Method::GET, "/admin/api/agents", None, Body::empty())
        .await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
}
