//! The web UI's security rules over a real supervisor module on an in-process bus: headers,
//! login CSRF and rate limit, session cookies, CSRF on state changes, foreign origins, roles,
//! logout, and a key's secret shown once.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use elves_rpc::supervisor::{Admin, AdminCommand};
use elves_store::PackageStore;
use elves_web::{AdminOptions, UiOptions, web_router};
use http_body_util::BodyExt;
use tower::ServiceExt;

const ADMIN: &str = "ann@example.com";
const OPERATOR: &str = "olly@example.com";
const PW: &str = "correct horse battery staple";
const ADMIN_TOKEN: &str = "ui-test-admin-token-42";

struct T {
    router: Router,
    _dir: tempfile::TempDir,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn start() -> T {
    let dir = tempfile::tempdir().unwrap();
    let (bus, _store) = common::supervisor(dir.path()).await;
    for (email, role) in [(ADMIN, "admin"), (OPERATOR, "operator")] {
        let cmd = AdminCommand::UserAdd {
            email: email.into(),
            password: PW.into(),
            role: role.into(),
        };
        let msg = Admin {
            actor: "test".into(),
            command: cmd,
        };
        bus.call(msg, std::time::Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
    }
    let packages = PackageStore::open(dir.path().join("packages")).unwrap();
    // As the center serves them: the admin API and the UI over one session table.
    let admin = AdminOptions {
        token: ADMIN_TOKEN.into(),
        packages: packages.clone(),
    };
    T {
        router: web_router(admin, UiOptions { packages }, &bus),
        _dir: dir,
    }
}

/// `name=value` of a Set-Cookie header named `name`, with its attributes.
fn set_cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set: &str) -> String {
    set.split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

/// The `csrf` hidden field of a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 64].to_owned()
}

impl T {
    async fn send(
        &self,
        method: Method,
        path: &str,
        cookies: &[String],
        extra: &[(&str, &str)],
        form: Option<String>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1:9091");
        if !cookies.is_empty() {
            req = req.header(header::COOKIE, cookies.join("; "));
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(f)
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, session: &str) -> Resp {
        self.send(Method::GET, path, &[session.to_owned()], &[], None)
            .await
    }

    async fn post(&self, path: &str, session: &str, form: &str) -> Resp {
        self.send(
            Method::POST,
            path,
            &[session.to_owned()],
            &[],
            Some(form.to_owned()),
        )
        .await
    }

    /// Logs in; answers the answer and the `elves_session=…` cookie pair.
    async fn login(&self, email: &str, password: &str) -> (Resp, Option<String>) {
        let page = self.send(Method::GET, "/ui/login", &[], &[], None).await;
        let login_cookie = set_cookie(&page.headers, "elves_login").expect("a login cookie");
        let token = csrf_of(&page.body);
        let form = format!(
            "csrf={token}&email={}&password={}",
            enc(email),
            enc(password)
        );
        let pair = format!("elves_login={}", cookie_value(&login_cookie));
        let r = self
            .send(Method::POST, "/ui/login", &[pair], &[], Some(form))
            .await;
        let session = set_cookie(&r.headers, "elves_session")
            .map(|c| format!("elves_session={}", cookie_value(&c)));
        (r, session)
    }

    /// The CSRF token of a logged-in page.
    async fn csrf(&self, session: &str) -> String {
        csrf_of(&self.get("/ui/apps", session).await.body)
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn every_answer_has_the_security_headers_and_no_cors() {
    let t = start().await;
    for path in ["/ui/login", "/ui/apps", "/ui/static/htmx.min.js"] {
        let r = t
            .send(
                Method::GET,
                path,
                &[],
                &[("origin", "http://evil.example")],
                None,
            )
            .await;
        let h = &r.headers;
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert!(
            !h.keys().any(|k| k.as_str().starts_with("access-control-")),
            "{path}: {h:?}"
        );
    }
    let js = t
        .send(Method::GET, "/ui/static/htmx.min.js", &[], &[], None)
        .await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(
        js.body.starts_with("var htmx="),
        "the vendored htmx is served"
    );
}

#[tokio::test]
async fn login_sets_a_strict_session_cookie_and_rotates_it() {
    let t = start().await;
    // Without a session: the login page.
    let r = t.send(Method::GET, "/ui/apps", &[], &[], None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/ui/login");

    let (r, session) = t.login(ADMIN, PW).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let set = set_cookie(&r.headers, "elves_session").unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attr), "{set}");
    }
    let session = session.unwrap();
    assert_eq!(cookie_value(&session).len(), 64);
    assert_eq!(t.get("/ui/apps", &session).await.status, StatusCode::OK);

    // A second login gets another id.
    let (_, again) = t.login(ADMIN, PW).await;
    assert_ne!(again.unwrap(), session);

    // The login form's own CSRF: without its cookie the login is refused.
    let page = t.send(Method::GET, "/ui/login", &[], &[], None).await;
    let form = format!(
        "csrf={}&email={}&password={}",
        csrf_of(&page.body),
        enc(ADMIN),
        enc(PW)
    );
    let r = t
        .send(Method::POST, "/ui/login", &[], &[], Some(form))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(set_cookie(&r.headers, "elves_session").is_none());
}

#[tokio::test]
async fn logins_are_rate_limited() {
    let t = start().await;
    for i in 0..5 {
        let (r, s) = t.login(OPERATOR, "wrong password 123").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "attempt {i}");
        assert!(s.is_none());
        assert!(r.body.contains("wrong email or password"), "{}", r.body);
    }
    let (r, s) = t.login(OPERATOR, PW).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(s.is_none(), "even the right password waits");
    let (r, _) = t.login(ADMIN, PW).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "other users are not locked"
    );
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_the_same_origin() {
    let t = start().await;
    let (_, s) = t.login(ADMIN, PW).await;
    let s = s.unwrap();
    let csrf = t.csrf(&s).await;
    let cases = [
        (
            "no token",
            "app=a1&title=A".to_owned(),
            vec![],
            StatusCode::FORBIDDEN,
        ),
        (
            "wrong token",
            format!("csrf={}&app=a2&title=A", "0".repeat(64)),
            vec![],
            StatusCode::FORBIDDEN,
        ),
        (
            "foreign origin",
            format!("csrf={csrf}&app=a3&title=A"),
            vec![("origin", "http://evil.example")],
            StatusCode::FORBIDDEN,
        ),
        (
            "right token",
            format!("csrf={csrf}&app=a4&title=A"),
            vec![],
            StatusCode::SEE_OTHER,
        ),
        (
            "right header",
            "app=a5&title=A".to_owned(),
            vec![("x-csrf-token", csrf.as_str())],
            StatusCode::SEE_OTHER,
        ),
        (
            "same origin",
            format!("csrf={csrf}&app=a6&title=A"),
            vec![("origin", "http://127.0.0.1:9091")],
            StatusCode::SEE_OTHER,
        ),
    ];
    for (name, form, headers, want) in cases {
        let r = t
            .send(
                Method::POST,
                "/ui/apps",
                std::slice::from_ref(&s),
                &headers,
                Some(form),
            )
            .await;
        assert_eq!(r.status, want, "{name}: {}", r.body);
    }
    let apps = t.get("/ui/apps", &s).await.body;
    for (app, there) in [
        ("a1", false),
        ("a2", false),
        ("a3", false),
        ("a4", true),
        ("a5", true),
        ("a6", true),
    ] {
        assert_eq!(apps.contains(&format!("/ui/apps/{app}\"")), there, "{app}");
    }
}

#[tokio::test]
async fn a_new_keys_secret_is_shown_once_and_only_to_admins() {
    let t = start().await;
    let (_, s) = t.login(ADMIN, PW).await;
    let s = s.unwrap();
    let csrf = t.csrf(&s).await;
    t.post("/ui/apps", &s, &format!("csrf={csrf}&app=demo&title=Demo"))
        .await;
    let r = t
        .post("/ui/apps/demo/keys", &s, &format!("csrf={csrf}&name=ci"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = t.get("/ui/apps/demo", &s).await.body;
    let marker = "id=\"new-auth-key\">";
    let at = page.find(marker).expect("the secret once") + marker.len();
    let secret = &page[at..at + 32];
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    let again = t.get("/ui/apps/demo", &s).await.body;
    assert!(!again.contains(secret), "the secret is shown only once");
    assert!(again.contains("ci"), "the key is listed");

    // An operator: apps yes, keys and users no.
    let (_, o) = t.login(OPERATOR, PW).await;
    let o = o.unwrap();
    let ocsrf = t.csrf(&o).await;
    let cases = [
        (
            "/ui/apps",
            format!("csrf={ocsrf}&app=ops&title=Ops"),
            StatusCode::SEE_OTHER,
        ),
        (
            "/ui/apps/demo/keys",
            format!("csrf={ocsrf}&name=x"),
            StatusCode::FORBIDDEN,
        ),
        (
            "/ui/users",
            format!("csrf={ocsrf}&email=x%40y.z&role=admin&password={}", enc(PW)),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (path, form, want) in cases {
        assert_eq!(t.post(path, &o, &form).await.status, want, "{path}");
    }
    assert_eq!(t.get("/ui/users", &o).await.status, StatusCode::FORBIDDEN);
    assert!(!t.get("/ui/apps/demo", &o).await.body.contains("API keys"));
}

#[tokio::test]
async fn logout_and_password_change_end_sessions() {
    let t = start().await;
    let (_, s1) = t.login(ADMIN, PW).await;
    let (_, s2) = t.login(ADMIN, PW).await;
    let (s1, s2) = (s1.unwrap(), s2.unwrap());
    let c1 = t.csrf(&s1).await;
    let r = t.post("/ui/logout", &s1, &format!("csrf={c1}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        set_cookie(&r.headers, "elves_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(t.get("/ui/apps", &s1).await.status, StatusCode::SEE_OTHER);
    assert_eq!(t.get("/ui/apps", &s2).await.status, StatusCode::OK);

    let c2 = t.csrf(&s2).await;
    let new = "another long password 77";
    let wrong = format!(
        "csrf={c2}&current=nope&new={}&confirm={}",
        enc(new),
        enc(new)
    );
    t.post("/ui/password", &s2, &wrong).await;
    assert_eq!(
        t.get("/ui/apps", &s2).await.status,
        StatusCode::OK,
        "a wrong current password changes nothing"
    );
    let right = format!(
        "csrf={c2}&current={}&new={}&confirm={}",
        enc(PW),
        enc(new),
        enc(new)
    );
    let r = t.post("/ui/password", &s2, &right).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/ui/login");
    assert_eq!(
        t.get("/ui/apps", &s2).await.status,
        StatusCode::SEE_OTHER,
        "ended"
    );
    assert_eq!(t.login(ADMIN, PW).await.0.status, StatusCode::FORBIDDEN);
    assert_eq!(t.login(ADMIN, new).await.0.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn admin_api_user_changes_end_that_users_ui_sessions() {
    let t = start().await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (_, admin) = t.login(ADMIN, PW).await;
    let (_, operator) = t.login(OPERATOR, PW).await;
    let (admin, operator) = (admin.unwrap(), operator.unwrap());
    assert_eq!(t.get("/ui/apps", &operator).await.status, StatusCode::OK);

    // (request, whose session must end, whose must survive); the second names the user in
    // other letter case, as emails are compared.
    let body = r#"{"password":"a brand new long password"}"#;
    let password = format!("/admin/api/users/{ADMIN}/password");
    let remove = format!("/admin/api/users/{}", OPERATOR.to_uppercase());
    let steps = [
        (Method::POST, &password, Some(body), &admin, Some(&operator)),
        (Method::DELETE, &remove, None, &operator, None),
    ];
    for (method, path, json, ended, kept) in steps {
        let mut req = Request::builder()
            .method(method)
            .uri(path.as_str())
            .header(header::AUTHORIZATION, &bearer);
        if json.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = json.map_or_else(Body::empty, |b| Body::from(b.to_owned()));
        let resp = t
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let after = t.get("/ui/apps", ended).await.status;
        assert_eq!(
            after,
            StatusCode::SEE_OTHER,
            "{path}: the user's session must end"
        );
        if let Some(kept) = kept {
            let other = t.get("/ui/apps", kept).await.status;
            assert_eq!(
                other,
                StatusCode::OK,
                "{path}: another user's session survives"
            );
        }
    }
    // A refused change ends nothing.
    let (_, again) = t.login(ADMIN, "a brand new long password").await;
    let again = again.unwrap();
    let req = Request::builder()
        .method(Method::DELETE)
        .uri(format!("/admin/api/users/{ADMIN}"))
        .header(header::AUTHORIZATION, &bearer)
        .body(Body::empty())
        .unwrap();
    let last = t.router.clone().oneshot(req).await.unwrap();
    assert_eq!(last.status(), StatusCode::CONFLICT, "the last admin stays");
    assert_eq!(t.get("/ui/apps", &again).await.status, StatusCode::OK);
}

/// A multipart upload to `/ui/apps/demo/upload` whose `csrf` field is `csrf`.
async fn upload(t: &T, session: Option<&str>, csrf: &str) -> Resp {
    let b = "elves-test-boundary";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"package\"; filename=\"demo_1.0.zip\"\r\n\
         Content-Type: application/zip\r\n\r\nPK\x03\x04not really a zip\r\n--{b}--\r\n"
    );
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/ui/apps/demo/upload")
        .header(header::HOST, "127.0.0.1:9091")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={b}"),
        );
    if let Some(s) = session {
        req = req.header(header::COOKIE, s);
    }
    let resp = t
        .router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    Resp {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: String::new(),
    }
}

#[tokio::test]
async fn uploads_need_a_session_before_the_body_is_read_and_small_fields_stay_small() {
    let t = start().await;
    let anonymous = upload(&t, None, &"x".repeat(100_000)).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers[header::LOCATION], "/ui/login");

    let (_, s) = t.login(ADMIN, PW).await;
    let s = s.unwrap();
    let csrf = t.csrf(&s).await;
    let long = upload(&t, Some(&s), &"x".repeat(100_000)).await;
    assert_eq!(long.status, StatusCode::PAYLOAD_TOO_LARGE);
    let wrong = upload(&t, Some(&s), &"0".repeat(64)).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "a wrong token");
    // The right token gets as far as the app (none here): back to its page with a message.
    let right = upload(&t, Some(&s), &csrf).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    assert_eq!(right.headers[header::LOCATION], "/ui/apps/demo");
}
