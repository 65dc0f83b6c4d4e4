//! The web admin UI under `/ui/`: server-rendered askama templates (`crates/web/templates`),
//! htmx (vendored, embedded, served from `/ui/static/`) boosting links and forms, and the same
//! supervisor commands on the bus as the admin API, run as the logged-in user (the audit log
//! names them).
//!
//! Security (see also [`session`]):
//! * **Sessions** are server-side; the cookie `elves_session` holds only a random 256-bit id,
//!   `HttpOnly; Secure; SameSite=Strict; Path=/ui`. A login always starts a new session (the
//!   id rotates); logout ends it; a password change or deleting a user ends all of theirs.
//!   `Secure` cookies are kept by browsers on `https://` and on `http://127.0.0.1` /
//!   `http://localhost` (secure contexts); anywhere else, put the center behind a TLS proxy.
//! * **CSRF**: every POST must carry the session's token, as the `csrf` form field or the
//!   `X-CSRF-Token` header (htmx sends it from `hx-headers`), compared in constant time; a
//!   POST whose `Origin` is not this host is refused too. The login form uses a double-submit
//!   token (a short-lived cookie and a field).
//! * **Headers** on every `/ui` answer: a CSP without inline script (`script-src 'self'`),
//!   `X-Frame-Options: DENY`, `frame-ancestors 'none'`, `nosniff`, `Referrer-Policy: same-origin`
//!   (with `no-referrer` Chromium sends `Origin: null` on same-origin form posts), and
//!   `Cache-Control: no-store`. No CORS header is ever sent.
//! * **Roles**: admins do everything; operators manage apps (create, upload, activate,
//!   bind/unbind, sync) and see agents and the audit log, but get 403 on keys and users.
//! * A new key's secret is kept in the session only until the next page shows it once.

// Handlers' helpers return the refusal page itself as the error (an axum Response).
#![allow(clippy::result_large_err)]

pub mod session;

use std::sync::Arc;
use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use elves_bus::Bus;
use elves_rpc::heartbeat::{AgentSummary, ListAgents};
use elves_rpc::supervisor::AdminCommand;
use elves_store::PackageStore;
use elves_supervisor::package_name;
use serde::Deserialize;
use serde_json::Value;

use self::session::{Current, Flash, LoginLimiter, Role, Sessions, same};
use crate::{DEADLINE, MAX_PACKAGE, run_admin};

const SESSION_COOKIE: &str = "elves_session";
const LOGIN_COOKIE: &str = "elves_login";
const HTMX: &[u8] = include_bytes!("../../assets/htmx.min.js");
const CSS: &str = include_str!("../../assets/app.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The largest form body (not uploads), in bytes.
const MAX_FORM: usize = 64 * 1024;

/// The UI's settings.
#[derive(Clone, Debug)]
pub struct UiOptions {
    /// Where uploaded packages are kept (the admin API's store).
    pub packages: PackageStore,
}

struct Ui {
    bus: Bus,
    sessions: Arc<Sessions>,
    limiter: LoginLimiter,
    packages: PackageStore,
}

type St = State<Arc<Ui>>;

/// The UI's routes (`/ui/…`), ready to be merged into the center's router, with a session
/// table of their own (`crate::web_router` shares it with the admin API).
pub fn ui_router(opts: UiOptions, bus: &Bus) -> Router {
    ui_router_with(opts, bus, Arc::default())
}

/// The UI's routes over the session table `sessions`.
pub(crate) fn ui_router_with(opts: UiOptions, bus: &Bus, sessions: Arc<Sessions>) -> Router {
    let st = Arc::new(Ui {
        bus: bus.for_module("web"),
        sessions,
        limiter: LoginLimiter::new(Instant::now()),
        packages: opts.packages,
    });
    let upload = Router::new()
        .route("/ui/apps/{app}/upload", post(upload))
        .layer(DefaultBodyLimit::max(MAX_PACKAGE as usize + 64 * 1024));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/apps") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/apps") }))
        .route("/ui/static/htmx.min.js", get(htmx_js))
        .route("/ui/static/app.css", get(app_css))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/password", get(password_page).post(password))
        .route("/ui/apps", get(apps_page).post(app_add))
        .route("/ui/apps/{app}", get(app_page))
        .route("/ui/apps/{app}/delete", post(app_delete))
        .route("/ui/apps/{app}/activate", post(activate))
        .route("/ui/apps/{app}/bind", post(bind))
        .route("/ui/apps/{app}/unbind", post(unbind))
        .route("/ui/apps/{app}/sync", post(sync))
        .route("/ui/apps/{app}/keys", post(key_add))
        .route("/ui/keys/{auth_id}/{action}", post(key_change))
        .route("/ui/agents", get(agents_page))
        .route("/ui/agents/rows", get(agents_rows))
        .route("/ui/users", get(users_page).post(user_add))
        .route("/ui/users/{email}/delete", post(user_rm))
        .route("/ui/audit", get(audit_page))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .merge(upload)
        .layer(middleware::from_fn(guard))
        .with_state(st)
}

// ---------------------------------------------------------------------------------------
// Headers, cookies, sessions.

/// Security headers on every answer; POSTs from another origin are refused.
async fn guard(req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(req.headers()) {
        return plain(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    // A boosted navigation (also one that followed a POST's redirect) puts the page it landed
    // on in the address bar, so a reload shows that page again.
    let boosted_get = req.method() == Method::GET && req.headers().contains_key("hx-boosted");
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if boosted_get
        && !path.starts_with("/ui/static/")
        && let Ok(v) = HeaderValue::from_str(&path)
    {
        h.insert("hx-push-url", v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// No `Origin`, or an `Origin` whose host:port is the request's `Host`.
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let o = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && o.eq_ignore_ascii_case(host)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_owned(),
    )
        .into_response()
}

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<u64>) -> String {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    format!("{name}={value}; Path={path}; HttpOnly; Secure; SameSite=Strict{age}")
}

/// The request's live session: its id and what it holds.
fn session(ui: &Ui, h: &HeaderMap) -> Option<(String, Current)> {
    let id = cookie(h, SESSION_COOKIE)?;
    let cur = ui.sessions.get(&id, Instant::now())?;
    Some((id, cur))
}

/// The page a request without a session gets.
fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

/// The session of a state-changing request whose CSRF token (header or field) is right.
fn checked(ui: &Ui, h: &HeaderMap, field: Option<&str>) -> Result<(String, Current), Response> {
    let (id, cur) = session(ui, h).ok_or_else(to_login)?;
    // Either may be right: after a boosted logout and login, the page's body still carries the
    // old session's header while the forms carry the new token.
    let header = h.get("x-csrf-token").and_then(|v| v.to_str().ok());
    let ok = [header, field]
        .into_iter()
        .flatten()
        .any(|given| same(given, &cur.csrf));
    if ok {
        Ok((id, cur))
    } else {
        Err(plain(StatusCode::FORBIDDEN, "missing or wrong CSRF token"))
    }
}

/// Form fields, in order (a field may repeat).
struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(body: &[u8]) -> Fields {
        Fields(form_urlencoded::parse(body).into_owned().collect())
    }

    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A checked form POST: the session and the fields.
fn form(ui: &Ui, h: &HeaderMap, body: &[u8]) -> Result<(String, Current, Fields), Response> {
    let f = Fields::parse(body);
    let (id, cur) = checked(ui, h, Some(f.get("csrf")))?;
    Ok((id, cur, f))
}

macro_rules! try_resp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

fn forbidden_unless_admin(cur: &Current) -> Result<(), Response> {
    if cur.role == Role::Admin {
        Ok(())
    } else {
        Err(plain(
            StatusCode::FORBIDDEN,
            "only admins manage keys and users",
        ))
    }
}

/// Runs a command as the user; the outcome becomes the next page's message.
async fn act(ui: &Ui, id: &str, cur: &Current, cmd: AdminCommand, ok: &str) -> Option<Value> {
    match run_admin(&ui.bus, &cur.email, cmd).await {
        Ok(v) => {
            ui.sessions.set_flash(id, true, ok.to_owned());
            Some(v)
        }
        Err((_, msg)) => {
            ui.sessions.set_flash(id, false, msg);
            None
        }
    }
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

fn app_url(app: &str) -> String {
    format!("/ui/apps/{}", enc(app))
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---------------------------------------------------------------------------------------
// Rendering.

/// What the layout shows on every page.
struct Chrome {
    title: String,
    email: String,
    role: &'static str,
    admin: bool,
    csrf: String,
    flash: Option<Flash>,
}

fn chrome(ui: &Ui, id: &str, cur: &Current, title: &str) -> Chrome {
    Chrome {
        title: title.to_owned(),
        email: cur.email.clone(),
        role: cur.role.as_str(),
        admin: cur.role == Role::Admin,
        csrf: cur.csrf.clone(),
        flash: ui.sessions.take_flash(id),
    }
}

fn html<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a page");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render the page")
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    c: Chrome,
    heading: String,
    message: String,
}

fn error_page(c: Chrome, status: StatusCode, message: String) -> Response {
    let heading = status.canonical_reason().unwrap_or("Error").to_owned();
    html(
        status,
        &ErrorPage {
            c,
            heading,
            message,
        },
    )
}

/// `2026-11-27 18:40:00` (UTC) of a Unix-ms instant.
pub fn fmt_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn opt_ms(v: &Value) -> String {
    v.as_i64().map(fmt_ms).unwrap_or_default()
}

// Howard Hinnant's civil-date algorithms.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A `datetime-local` value (`YYYY-MM-DDTHH:MM[:SS]`, read as UTC) in Unix ms; `Ok(None)`
/// when blank.
pub fn parse_local(s: &str) -> Result<Option<i64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("`{s}` is not a date and time (YYYY-MM-DDTHH:MM)");
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let num = |t: &str, len: usize| -> Result<i64, String> {
        if t.len() == len && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || !(2..=3).contains(&t.len()) {
        return Err(bad());
    }
    let (y, mo, da) = (num(d[0], 4)?, num(d[1], 2)?, num(d[2], 2)?);
    let (h, mi) = (num(t[0], 2)?, num(t[1], 2)?);
    let sec = if t.len() == 3 { num(t[2], 2)? } else { 0 };
    let days_in = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if da < 1 || da > days_in || h > 23 || mi > 59 || sec > 59 {
        return Err(bad());
    }
    Ok(Some(
        ((days_from_civil(y, mo, da) * 86_400) + h * 3600 + mi * 60 + sec) * 1000,
    ))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Static assets.

async fn htmx_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        HTMX,
    )
        .into_response()
}

async fn app_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        CSS,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Login, logout, password.

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    email: String,
    error: String,
}

fn login_form(status: StatusCode, email: &str, error: &str) -> Response {
    let token = session::random_token();
    let mut r = html(
        status,
        &LoginPage {
            csrf: token.clone(),
            email: email.to_owned(),
            error: error.to_owned(),
        },
    );
    if let Ok(v) = HeaderValue::from_str(&set_cookie(LOGIN_COOKIE, &token, "/ui/login", Some(3600)))
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn login_page(State(ui): St, h: HeaderMap) -> Response {
    if session(&ui, &h).is_some() {
        return see_other("/ui/apps");
    }
    login_form(StatusCode::OK, "", "")
}

async fn login(State(ui): St, h: HeaderMap, body: Bytes) -> Response {
    let f = Fields::parse(&body);
    let email = f.get("email").trim().to_owned();
    let expected = cookie(&h, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(f.get("csrf"), &expected) {
        return login_form(
            StatusCode::FORBIDDEN,
            &email,
            "The login form expired: try again.",
        );
    }
    let now = Instant::now();
    if !ui.limiter.allow(&email, now) {
        return login_form(
            StatusCode::TOO_MANY_REQUESTS,
            &email,
            "Too many login attempts: wait a few minutes.",
        );
    }
    let cmd = AdminCommand::Login {
        email: email.clone(),
        password: f.get("password").to_owned(),
    };
    let user = match run_admin(&ui.bus, &email, cmd).await {
        Ok(u) => u,
        Err((status, msg)) => {
            if status == StatusCode::FORBIDDEN {
                ui.limiter.failed(&email, now);
            }
            return login_form(status, &email, &msg);
        }
    };
    ui.limiter.succeeded(&email);
    let Some(role) = user["role"].as_str().and_then(Role::parse) else {
        return login_form(StatusCode::FORBIDDEN, &email, "this user has no UI role");
    };
    // Rotation: whatever session the browser had ends; the login gets a fresh id.
    if let Some(old) = cookie(&h, SESSION_COOKIE) {
        ui.sessions.destroy(&old);
    }
    let stored = user["email"].as_str().unwrap_or(&email).to_owned();
    let id = ui.sessions.create(&stored, role, now);
    let mut r = see_other("/ui/apps");
    for c in [
        set_cookie(SESSION_COOKIE, &id, "/ui", None),
        set_cookie(LOGIN_COOKIE, "", "/ui/login", Some(0)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

fn logged_out() -> Response {
    let mut r = see_other("/ui/login");
    if let Ok(v) = HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", "/ui", Some(0))) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(ui): St, h: HeaderMap, body: Bytes) -> Response {
    let (id, _, _) = try_resp!(form(&ui, &h, &body));
    ui.sessions.destroy(&id);
    logged_out()
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    c: Chrome,
}

async fn password_page(State(ui): St, h: HeaderMap) -> Response {
    let Some((id, cur)) = session(&ui, &h) else {
        return to_login();
    };
    let c = chrome(&ui, &id, &cur, "Password");
    html(StatusCode::OK, &PasswordPage { c })
}

async fn password(State(ui): St, h: HeaderMap, body: Bytes) -> Response {
    let (id, cur, f) = try_resp!(form(&ui, &h, &body));
    let back = |ok: bool, msg: &str| {
        ui.sessions.set_flash(&id, ok, msg.to_owned());
        see_other("/ui/password")
    };
    if f.get("new") != f.get("confirm") {
        return back(false, "the new passwords differ");
    }
    let now = Instant::now();
    if !ui.limiter.allow(&cur.email, now) {
        return back(false, "too many attempts: wait a few minutes");
    }
    let check = AdminCommand::Login {
        email: cur.email.clone(),
        password: f.get("current").to_owned(),
    };
    if run_admin(&ui.bus, &cur.email, check).await.is_err() {
        ui.limiter.failed(&cur.email, now);
        return back(false, "the current password is wrong");
    }
    let cmd = AdminCommand::UserPassword {
        email: cur.email.clone(),
        password: f.get("new").to_owned(),
    };
    match run_admin(&ui.bus, &cur.email, cmd).await {
        Ok(_) => {
            ui.sessions.destroy_user(&cur.email);
            logged_out()
        }
        Err((_, msg)) => back(false, &msg),
    }
}

// ---------------------------------------------------------------------------------------
// Apps.

struct AppRow {
    name: String,
    title: String,
    active: String,
    versions: String,
    agents: String,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    c: Chrome,
    apps: Vec<AppRow>,
}

async fn apps_page(State(ui): St, h: HeaderMap) -> Response {
    let Some((id, cur)) = session(&ui, &h) else {
        return to_login();
    };
    let c = chrome(&ui, &id, &cur, "Apps");
    let list = match run_admin(&ui.bus, &cur.email, AdminCommand::AppList).await {
        Ok(v) => v,
        Err((status, msg)) => return error_page(c, status, msg),
    };
    let apps = rows(&list)
        .iter()
        .map(|a| AppRow {
            name: s(&a["name"]),
            title: s(&a["title"]),
            active: s(&a["active_version"]),
            versions: rows(&a["versions"])
                .iter()
                .map(s)
                .collect::<Vec<_>>()
                .join(", "),
            agents: s(&a["agents"]),
        })
        .collect();
    html(StatusCode::OK, &AppsPage { c, apps })
}

async fn app_add(State(ui): St, h: HeaderMap, body: Bytes) -> Response {
    let (id, cur, f) = try_resp!(form(&ui, &h, &body));
    let app = f.get("app").trim().to_owned();
    let bind_url = Some(f.get("bind_url").trim().to_owned()).filter(|u| !u.is_empty());
    let cmd = AdminCommand::AppAdd {
        app: app.clone(),
        title: f.get("title").to_owned(),
        bind_url,
    };
    match act(&ui, &id, &cur, cmd, &format!("app {app} created")).await {
        Some(_) => see_other(&app_url(&app)),
        None => see_other("/ui/apps"),
    }
}

struct AppHead {
    name: String,
    title: String,
    active: String,
    creator: String,
    bind_url: String,
}

struct VersionRow {
    version: String,
    size: String,
    sha256: String,
    uploader: String,
    when: String,
}

struct KeyRow {
    auth_id: String,
    name: String,
    state: String,
    expires: String,
    disabled: bool,
}

struct Reveal {
    auth_id: String,
    auth_key: String,
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    c: Chrome,
    app: AppHead,
    versions: Vec<VersionRow>,
    bindings: Vec<String>,
    candidates: Vec<AgentSummary>,
    keys: Vec<KeyRow>,
    reveal: Option<Reveal>,
}

async fn list_agents(ui: &Ui) -> Vec<AgentSummary> {
    match ui.bus.call(ListAgents, DEADLINE).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::warn!(error = ?e, "the agent list is unavailable");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "the agent list is unavailable");
            Vec::new()
        }
    }
}

async fn app_page(State(ui): St, h: HeaderMap, Path(app): Path<String>) -> Response {
    let Some((id, cur)) = session(&ui, &h) else {
        return to_login();
    };
    let c = chrome(&ui, &id, &cur, &app);
    let v = match run_admin(&ui.bus, &cur.email, AdminCommand::AppShow { app }).await {
        Ok(v) => v,
        Err((status, msg)) => return error_page(c, status, msg),
    };
    let bindings: Vec<String> = rows(&v["bindings"]).iter().map(s).collect();
    let candidates = list_agents(&ui)
        .await
        .into_iter()
        .filter(|a| a.online && !bindings.contains(&a.ip))
        .collect();
    // Shown once: taken from the session by this page.
    let reveal = ui.sessions.take_reveal(&id).and_then(|k| {
        (k["app"] == v["name"]).then(|| Reveal {
            auth_id: s(&k["auth_id"]),
            auth_key: s(&k["auth_key"]),
        })
    });
    let page = AppPage {
        app: AppHead {
            name: s(&v["name"]),
            title: s(&v["title"]),
            active: s(&v["active_version"]),
            creator: s(&v["creator"]),
            bind_url: s(&v["bind_url"]),
        },
        versions: rows(&v["versions"])
            .iter()
            .map(|r| VersionRow {
                version: s(&r["version"]),
                size: s(&r["size"]),
                sha256: s(&r["sha256"]),
                uploader: s(&r["uploader"]),
                when: opt_ms(&r["created_at_ms"]),
            })
            .collect(),
        bindings,
        candidates,
        keys: rows(&v["keys"])
            .iter()
            .map(|k| KeyRow {
                auth_id: s(&k["auth_id"]),
                name: s(&k["name"]),
                state: s(&k["state"]),
                expires: opt_ms(&k["expires_at_ms"]),
                disabled: k["disabled"] == true,
            })
            .collect(),
        reveal,
        c,
    };
    html(StatusCode::OK, &page)
}

async fn app_delete(State(ui): St, h: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (id, cur, _) = try_resp!(form(&ui, &h, &body));
    let cmd = AdminCommand::AppDelete { app: app.clone() };
    match act(&ui, &id, &cur, cmd, &format!("app {app} deleted")).await {
        Some(_) => see_other("/ui/apps"),
        None => see_other(&app_url(&app)),
    }
}

async fn activate(State(ui): St, h: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (id, cur, f) = try_resp!(form(&ui, &h, &body));
    let version = f.get("version").to_owned();
    let ok = format!("version {version} is now active");
    act(
        &ui,
        &id,
        &cur,
        AdminCommand::Activate {
            app: app.clone(),
            version,
        },
        &ok,
    )
    .await;
    see_other(&app_url(&app))
}

async fn bind(State(ui): St, h: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (id, cur, f) = try_resp!(form(&ui, &h, &body));
    let ips = f.all("ips");
    if ips.is_empty() {
        ui.sessions
            .set_flash(&id, false, "pick at least one agent".into());
    } else {
        let ok = format!("bound {}", ips.join(", "));
        act(
            &ui,
            &id,
            &cur,
            AdminCommand::Bind {
                app: app.clone(),
                ips,
            },
            &ok,
        )
        .await;
    }
    see_other(&app_url(&app))
}

async fn unbind(State(ui): St, h: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (id, cur, f) = try_resp!(form(&ui, &h, &body));
    let ips = f.all("ips");
    let ok = format!("unbound {}", ips.join(", "));
    act(
        &ui,
        &id,
        &cur,
        AdminCommand::Unbind {
            app: app.clone(),
            ips,
        },
        &ok,
    )
    .await;
    see_other(&app_url(&app))
}

async fn sync(State(ui): St, h: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (id, cur, _) = try_resp!(form(&ui, &h, &body));
    let cmd = AdminCommand::AppSync { app: app.clone() };
    match run_admin(&ui.bus, &cur.email, cmd).await {
        Ok(v) => {
            let msg = format!(
                "synced: {} ips from the bind URL, {} bound, {} unbound",
                s(&v["fetched"]),
                rows(&v["added"]).len(),
                rows(&v["removed"]).len()
            );
            ui.sessions.set_flash(&id, true, msg);
        }
        Err((_, msg)) => ui.sessions.set_flash(&id, false, msg),
    }
    see_other(&app_url(&app))
}

/// Streams the multipart `package` field to the package store and records the version.
async fn upload(
    State(ui): St,
    h: HeaderMap,
    Path(app): Path<String>,
    mut mp: Multipart,
) -> Response {
    // No session, no reading of the body.
    if session(&ui, &h).is_none() {
        return to_login();
    }
    // The CSRF token: the htmx header, or a `csrf` field before the file.
    let mut token: Option<String> = None;
    let mut force = false;
    let back = app_url(&app);
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad upload: {e}")),
        };
        match field.name().unwrap_or("") {
            "csrf" => token = Some(try_resp!(small_field(field).await)),
            "force" => force = try_resp!(small_field(field).await) == "true",
            "package" => {
                let (id, cur) = try_resp!(checked(&ui, &h, token.as_deref()));
                let file_name = field.file_name().unwrap_or("").to_owned();
                let version = match package_name::parse(&file_name, &app) {
                    Ok(v) => v.to_owned(),
                    Err(e) => {
                        ui.sessions.set_flash(&id, false, e.to_string());
                        return see_other(&back);
                    }
                };
                let known = AdminCommand::AppShow { app: app.clone() };
                if let Err((_, msg)) = run_admin(&ui.bus, &cur.email, known).await {
                    ui.sessions.set_flash(&id, false, msg);
                    return see_other(&back);
                }
                let stored = crate::store_stream(&ui.packages, field).await;
                let (sha256, size) = match stored {
                    Ok(done) => done,
                    Err((_, msg)) => {
                        ui.sessions.set_flash(&id, false, msg);
                        return see_other(&back);
                    }
                };
                let cmd = AdminCommand::VersionAdd {
                    app: app.clone(),
                    version: version.clone(),
                    sha256,
                    size: i64::try_from(size).unwrap_or(i64::MAX),
                    force,
                };
                act(&ui, &id, &cur, cmd, &format!("version {version} uploaded")).await;
                return see_other(&back);
            }
            _ => {}
        }
    }
    plain(StatusCode::BAD_REQUEST, "the upload has no package file")
}

/// The most bytes a small multipart field (`csrf`, `force`) may hold.
const MAX_SMALL_FIELD: usize = 256;

/// Reads a small text field, refusing one longer than [`MAX_SMALL_FIELD`] without reading
/// the rest of it.
#[allow(clippy::result_large_err)]
async fn small_field(mut field: axum::extract::multipart::Field<'_>) -> Result<String, Response> {
    let mut buf = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(c)) if buf.len() + c.len() <= MAX_SMALL_FIELD => buf.extend_from_slice(&c),
            Ok(Some(_)) => {
                return Err(plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "a form field is too long",
                ));
            }
            Ok(None) => break,
            Err(e) => return Err(plain(StatusCode::BAD_REQUEST, &format!("bad upload: {e}"))),
        }
    }
    String::from_utf8(buf).map_err(|_| plain(StatusCode::BAD_REQUEST, "a form field is not UTF-8"))
}

// ---------------------------------------------------------------------------------------
// Keys (admins only).

async fn key_add(State(ui): St, h: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (id, cur, f) = try_resp!(form(&ui, &h, &body));
    try_resp!(forbidden_unless_admin(&cur));
    let expires_at_ms = match parse_local(f.get("expires")) {
        Ok(v) => v,
        Err(e) => {
            ui.sessions.set_flash(&id, false, e);
            return see_other(&app_url(&app));
        }
    };
    let cmd = AdminCommand::KeyAdd {
        app: app.clone(),
        name: f.get("name").to_owned(),
        expires_at_ms,
    };
    if let Some(k) = act(&ui, &id, &cur, cmd, "key created").await {
        ui.sessions.set_reveal(&id, k);
    }
    see_other(&app_url(&app))
}

async fn key_change(
    State(ui): St,
    h: HeaderMap,
    Path((auth_id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (id, cur, f) = try_resp!(form(&ui, &h, &body));
    try_resp!(forbidden_unless_admin(&cur));
    let back = match f.get("app") {
        "" => "/ui/apps".to_owned(),
        app => app_url(app),
    };
    let (cmd, ok) = match action.as_str() {
        "disable" | "enable" => (
            AdminCommand::KeyDisable {
                auth_id: auth_id.clone(),
                disabled: action == "disable",
            },
            format!("key {auth_id} {action}d"),
        ),
        "expire" => match parse_local(f.get("expires")) {
            Ok(expires_at_ms) => (
                AdminCommand::KeyExpire {
                    auth_id: auth_id.clone(),
                    expires_at_ms,
                },
                format!("key {auth_id}: expiry set"),
            ),
            Err(e) => {
                ui.sessions.set_flash(&id, false, e);
                return see_other(&back);
            }
        },
        "delete" => (
            AdminCommand::KeyRm {
                auth_id: auth_id.clone(),
            },
            format!("key {auth_id} deleted"),
        ),
        _ => return plain(StatusCode::NOT_FOUND, "no such key action"),
    };
    act(&ui, &id, &cur, cmd, &ok).await;
    see_other(&back)
}

// ---------------------------------------------------------------------------------------
// Agents, users, audit.

struct AgentRow {
    ip: String,
    asset: String,
    version: String,
    online: bool,
    last_heartbeat: String,
    apps: String,
}

fn agent_rows(all: Vec<AgentSummary>) -> Vec<AgentRow> {
    all.into_iter()
        .map(|a| AgentRow {
            last_heartbeat: if a.last_heartbeat_ms > 0 {
                fmt_ms(a.last_heartbeat_ms)
            } else {
                String::new()
            },
            apps: a
                .apps
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            ip: a.ip,
            asset: a.asset,
            version: a.version,
            online: a.online,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    c: Chrome,
    agents: Vec<AgentRow>,
}

#[derive(Template)]
#[template(path = "agents_rows.html")]
struct AgentsRows {
    agents: Vec<AgentRow>,
}

async fn agents_page(State(ui): St, h: HeaderMap) -> Response {
    let Some((id, cur)) = session(&ui, &h) else {
        return to_login();
    };
    let c = chrome(&ui, &id, &cur, "Agents");
    let agents = agent_rows(list_agents(&ui).await);
    html(StatusCode::OK, &AgentsPage { c, agents })
}

/// The agents table's rows (htmx polls them).
async fn agents_rows(State(ui): St, h: HeaderMap) -> Response {
    if session(&ui, &h).is_none() {
        return plain(StatusCode::UNAUTHORIZED, "log in again");
    }
    let agents = agent_rows(list_agents(&ui).await);
    html(StatusCode::OK, &AgentsRows { agents })
}

struct UserRow {
    email: String,
    role: String,
    created: String,
    last_login: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    c: Chrome,
    users: Vec<UserRow>,
}

async fn users_page(State(ui): St, h: HeaderMap) -> Response {
    let Some((id, cur)) = session(&ui, &h) else {
        return to_login();
    };
    try_resp!(forbidden_unless_admin(&cur));
    let c = chrome(&ui, &id, &cur, "Users");
    let list = match run_admin(&ui.bus, &cur.email, AdminCommand::UserList).await {
        Ok(v) => v,
        Err((status, msg)) => return error_page(c, status, msg),
    };
    let users = rows(&list)
        .iter()
        .map(|u| UserRow {
            email: s(&u["email"]),
            role: s(&u["role"]),
            created: opt_ms(&u["created_at_ms"]),
            last_login: opt_ms(&u["last_login_ms"]),
        })
        .collect();
    html(StatusCode::OK, &UsersPage { c, users })
}

async fn user_add(State(ui): St, h: HeaderMap, body: Bytes) -> Response {
    let (id, cur, f) = try_resp!(form(&ui, &h, &body));
    try_resp!(forbidden_unless_admin(&cur));
    let email = f.get("email").trim().to_owned();
    let cmd = AdminCommand::UserAdd {
        email: email.clone(),
        password: f.get("password").to_owned(),
        role: f.get("role").to_owned(),
    };
    act(&ui, &id, &cur, cmd, &format!("user {email} added")).await;
    see_other("/ui/users")
}

async fn user_rm(State(ui): St, h: HeaderMap, Path(email): Path<String>, body: Bytes) -> Response {
    let (id, cur, _) = try_resp!(form(&ui, &h, &body));
    try_resp!(forbidden_unless_admin(&cur));
    let cmd = AdminCommand::UserRm {
        email: email.clone(),
    };
    if act(&ui, &id, &cur, cmd, &format!("user {email} deleted"))
        .await
        .is_some()
    {
        ui.sessions.destroy_user(&email);
        if email.eq_ignore_ascii_case(&cur.email) {
            return logged_out();
        }
    }
    see_other("/ui/users")
}

struct AuditRow {
    id: i64,
    when: String,
    actor: String,
    action: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    rows: Vec<AuditRow>,
    older: Option<i64>,
}

#[derive(Deserialize)]
struct AuditQuery {
    before: Option<i64>,
}

const AUDIT_PAGE: u32 = 50;

async fn audit_page(
    State(ui): St,
    h: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some((id, cur)) = session(&ui, &h) else {
        return to_login();
    };
    let c = chrome(&ui, &id, &cur, "Audit log");
    let before_id = q.ok().and_then(|Query(q)| q.before);
    let cmd = AdminCommand::Audit {
        limit: AUDIT_PAGE,
        before_id,
    };
    let list = match run_admin(&ui.bus, &cur.email, cmd).await {
        Ok(v) => v,
        Err((status, msg)) => return error_page(c, status, msg),
    };
    let rows: Vec<AuditRow> = rows(&list)
        .iter()
        .map(|r| AuditRow {
            id: r["id"].as_i64().unwrap_or_default(),
            when: opt_ms(&r["at_ms"]),
            actor: s(&r["actor"]),
            action: s(&r["action"]),
            detail: r["detail"].to_string(),
        })
        .collect();
    let older = (rows.len() == AUDIT_PAGE as usize)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    html(StatusCode::OK, &AuditPage { c, rows, older })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_and_parse_as_utc() {
        assert_eq!(fmt_ms(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_ms(1_795_000_000_000), "2026-11-18 11:06:40");
        let cases: &[(&str, Result<Option<i64>, ()>)] = &[
            ("", Ok(None)),
            ("  ", Ok(None)),
            ("1970-01-01T00:00", Ok(Some(0))),
            ("2026-11-18T11:06:40", Ok(Some(1_795_000_000_000))),
            ("2024-02-29T12:00", Ok(Some(1_709_208_000_000))),
            ("2023-02-29T12:00", Err(())),
            ("2026-13-01T00:00", Err(())),
            ("2026-11-18 09:46", Err(())),
            ("2026-11-18T24:00", Err(())),
            ("2026-1-18T09:46", Err(())),
            ("tomorrow", Err(())),
        ];
        for (text, want) in cases {
            match (parse_local(text), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, *w, "{text}"),
                (Err(e), Err(())) => assert!(e.contains("not a date"), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn origins_must_match_the_host() {
        let h = |origin: Option<&str>, host: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            if let Some(o) = origin {
                m.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            m
        };
        let cases = [
            (None, "127.0.0.1:9091", true),
            (Some("http://127.0.0.1:9091"), "127.0.0.1:9091", true),
            (Some("https://elves.example"), "elves.example", true),
            (Some("http://evil.example"), "127.0.0.1:9091", false),
            (Some("http://127.0.0.1:9092"), "127.0.0.1:9091", false),
            (Some("null"), "127.0.0.1:9091", false),
        ];
        for (origin, host, want) in cases {
            assert_eq!(same_origin(&h(origin, host)), want, "{origin:?} {host}");
        }
    }
}
