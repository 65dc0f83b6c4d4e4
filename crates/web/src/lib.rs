//! Layer 3 of Elves: the admin HTTP API, and the web admin UI ([`ui`], under `/ui/`).
//!
//! [`admin_router`] serves JSON under `/admin/api/`, one route per supervisor admin command
//! (`elves_rpc::supervisor::AdminCommand`), sent over the bus as the actor `admin-token`.
//!
//! * **Authentication**: `Authorization: Bearer <admin.token>`, compared in constant time (the
//!   SHA-256 of both sides). No token configured means every request is refused; a missing or
//!   wrong token gets `401 {"error":"..."}`.
//! * **Sessions**: served with the web UI ([`web_router`]), deleting a user or changing their
//!   password here ends that user's UI sessions at once, as doing it in the UI does.
//! * **No CORS**: no `Access-Control-*` header is ever sent, so browsers on other origins
//!   cannot read answers; the web UI is same-origin.
//! * **Bodies**: JSON bodies up to 1 MiB; package uploads (`PUT …/packages/{app}_{version}.zip`)
//!   are streamed to the [`PackageStore`] up to 256 MiB, then recorded with `VersionAdd`.
//! * **Errors**: `{"error": "<one line>"}` with 400 (malformed input), 401 (token), 404 (no
//!   such app, key, user or route), 409 (refused by a rule: a duplicate, a dependent, the last
//!   admin), 413 (package too large), 500 (store failure), 503 (supervisor unavailable). The
//!   status comes from the kind of the supervisor's typed refusal
//!   (`elves_rpc::supervisor::AdminErrorKind`, see [`status_of`]), never from its text.
//!
//! | Route | Command |
//! |---|---|
//! | `POST /admin/api/apps` `{app, title, bind_url?}` | `AppAdd` |
//! | `GET /admin/api/apps` | `AppList` |
//! | `GET /admin/api/apps/{app}` | `AppShow` |
//! | `DELETE /admin/api/apps/{app}` | `AppDelete` |
//! | `PUT /admin/api/apps/{app}/packages/{file_name}?force=true` (zip body) | `VersionAdd` |
//! | `POST /admin/api/apps/{app}/activate` `{version}` | `Activate` |
//! | `POST /admin/api/apps/{app}/bind` `{ips}` | `Bind` |
//! | `POST /admin/api/apps/{app}/unbind` `{ips}` | `Unbind` |
//! | `POST /admin/api/apps/{app}/sync` | `AppSync` (502 when the bind URL fails) |
//! | `POST /admin/api/keys` `{app, name?, expires_at_ms?}` | `KeyAdd` |
//! | `GET /admin/api/keys?app=APP` | `KeyList` |
//! | `DELETE /admin/api/keys/{auth_id}` | `KeyRm` |
//! | `POST /admin/api/keys/{auth_id}/disable` (`/enable`) | `KeyDisable` |
//! | `POST /admin/api/keys/{auth_id}/expire` `{expires_at_ms}` | `KeyExpire` |
//! | `POST /admin/api/users` `{email, password, role}` | `UserAdd` |
//! | `GET /admin/api/users` | `UserList` |
//! | `DELETE /admin/api/users/{email}` | `UserRm` |
//! | `POST /admin/api/users/{email}/password` `{password}` | `UserPassword` |
//! | `GET /admin/api/agents` | `AgentList` |
//! | `POST /admin/api/agents/{ip}/release` | `AgentRelease` |
//! | `GET /admin/api/audit?limit=&before_id=` | `Audit` |

pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use elves_bus::Bus;
use elves_rpc::supervisor::{Admin, AdminCommand, AdminErrorKind};
pub use elves_store::PackageStore;
use elves_supervisor::package_name;
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
pub use ui::{UiOptions, ui_router};

/// The actor admin-token requests are audited as.
pub const ACTOR: &str = "admin-token";
/// The largest package upload, in bytes.
pub const MAX_PACKAGE: u64 = 256 * 1024 * 1024;
/// The largest JSON body, in bytes.
const MAX_JSON: usize = 1024 * 1024;
/// How long a command may take on the supervisor.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);
/// What every zip file starts with (a local file header).
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// The admin API's settings.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// `admin.token`; empty (or blank) refuses every request.
    pub token: String,
    /// Where uploaded packages are kept.
    pub packages: PackageStore,
}

struct St {
    /// SHA-256 of the token, or `None` when no token is configured.
    token: Option<[u8; 32]>,
    packages: PackageStore,
    bus: Bus,
    /// The web UI's sessions: a user deleted or whose password is changed here is logged out
    /// there too.
    sessions: Arc<ui::session::Sessions>,
}

type Shared = State<Arc<St>>;

/// The admin API and the web UI, sharing one session table (what the center serves).
pub fn web_router(admin: AdminOptions, ui: UiOptions, bus: &Bus) -> Router {
    let sessions = Arc::new(ui::session::Sessions::default());
    admin_router_with(admin, bus, sessions.clone()).merge(ui::ui_router_with(ui, bus, sessions))
}

/// The admin API routes (`/admin/api/…`) alone, without the web UI.
pub fn admin_router(opts: AdminOptions, bus: &Bus) -> Router {
    admin_router_with(opts, bus, Arc::default())
}

fn admin_router_with(
    opts: AdminOptions,
    bus: &Bus,
    sessions: Arc<ui::session::Sessions>,
) -> Router {
    let token = opts.token.trim();
    let st = Arc::new(St {
        token: (!token.is_empty()).then(|| digest(token.as_bytes())),
        packages: opts.packages,
        bus: bus.for_module("web"),
        sessions,
    });
    let api = Router::new()
        .route("/apps", post(app_add).get(app_list))
        .route("/apps/{app}", get(app_show).delete(app_delete))
        .route("/apps/{app}/packages/{file_name}", put(upload))
        .route("/apps/{app}/activate", post(activate))
        .route("/apps/{app}/bind", post(bind))
        .route("/apps/{app}/unbind", post(unbind))
        .route("/apps/{app}/sync", post(app_sync))
        .route("/keys", post(key_add).get(key_list))
        .route("/keys/{auth_id}", axum::routing::delete(key_rm))
        .route("/keys/{auth_id}/disable", post(key_disable))
        .route("/keys/{auth_id}/enable", post(key_enable))
        .route("/keys/{auth_id}/expire", post(key_expire))
        .route("/users", post(user_add).get(user_list))
        .route("/users/{email}", axum::routing::delete(user_rm))
        .route("/users/{email}/password", post(user_password))
        .route("/agents", get(agent_list))
        .route("/agents/{ip}/release", post(agent_release))
        .route("/audit", get(audit))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON))
        .with_state(st.clone());
    // Layered after nesting so that unknown routes under /admin/api are authenticated too.
    Router::new()
        .nest("/admin/api", api)
        .layer(middleware::from_fn_with_state(st, authenticate))
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Refuses requests without the admin token.
async fn authenticate(State(st): Shared, req: Request, next: Next) -> Response {
    let Some(want) = st.token else {
        return error(
            StatusCode::UNAUTHORIZED,
            "the admin API is disabled: no admin.token is configured",
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        None => error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <admin token>",
        ),
        Some(t) if bool::from(digest(t.as_bytes()).ct_eq(&want)) => next.run(req).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong admin token"),
    }
}

/// `{"error": msg}` with `status`.
fn error(status: StatusCode, msg: &str) -> Response {
    reply(status, &json!({ "error": msg }))
}

fn reply(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such admin API route")
}

/// The HTTP status of a supervisor's refusal, from its kind (never from its text).
pub fn status_of(kind: AdminErrorKind) -> StatusCode {
    match kind {
        AdminErrorKind::Invalid => StatusCode::BAD_REQUEST,
        AdminErrorKind::NotFound => StatusCode::NOT_FOUND,
        AdminErrorKind::Conflict => StatusCode::CONFLICT,
        AdminErrorKind::Denied => StatusCode::FORBIDDEN,
        AdminErrorKind::Upstream => StatusCode::BAD_GATEWAY,
        AdminErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Runs one command; `ok` is the status of a success.
async fn command(st: &St, ok: StatusCode, cmd: AdminCommand) -> Response {
    match run_admin(&st.bus, ACTOR, cmd).await {
        Ok(v) => reply(ok, &v),
        Err((status, msg)) => error(status, &msg),
    }
}

/// Sends one admin command over the bus as `actor`: the answer, or the HTTP status and one
/// line saying why not.
pub(crate) async fn run_admin(
    bus: &Bus,
    actor: &str,
    cmd: AdminCommand,
) -> Result<Value, (StatusCode, String)> {
    let msg = Admin {
        actor: actor.to_owned(),
        command: cmd,
    };
    match bus.call(msg, DEADLINE).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((status_of(e.kind), e.message)),
        Err(e) => {
            tracing::warn!(error = %e, "admin command not answered");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the supervisor is unavailable".to_owned(),
            ))
        }
    }
}

/// Parses a JSON body, or answers 400.
#[allow(clippy::result_large_err)]
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = format!("bad JSON body: {e}");
        error(StatusCode::BAD_REQUEST, &msg)
    })
}

macro_rules! parse_or_reply {
    ($bytes:expr) => {
        match body(&$bytes) {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    app: String,
    title: String,
    #[serde(default)]
    bind_url: Option<String>,
}

async fn app_add(State(st): Shared, bytes: Bytes) -> Response {
    let b: NewApp = parse_or_reply!(bytes);
    let cmd = AdminCommand::AppAdd {
        app: b.app,
        title: b.title,
        bind_url: b.bind_url,
    };
    command(&st, StatusCode::CREATED, cmd).await
}

async fn app_list(State(st): Shared) -> Response {
    command(&st, StatusCode::OK, AdminCommand::AppList).await
}

async fn app_show(State(st): Shared, Path(app): Path<String>) -> Response {
    command(&st, StatusCode::OK, AdminCommand::AppShow { app }).await
}

async fn app_delete(State(st): Shared, Path(app): Path<String>) -> Response {
    command(&st, StatusCode::OK, AdminCommand::AppDelete { app }).await
}

#[derive(Deserialize)]
struct Force {
    #[serde(default)]
    force: Option<String>,
}

/// Streams a package to the package store, then records it as a version.
async fn upload(
    State(st): Shared,
    Path((app, file_name)): Path<(String, String)>,
    q: Result<Query<Force>, QueryRejection>,
    req: Request,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, "bad query string");
    };
    let force = match q.force.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(_) => return error(StatusCode::BAD_REQUEST, "force must be true or false"),
    };
    let version = match package_name::parse(&file_name, &app) {
        Ok(v) => v.to_owned(),
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PACKAGE) {
        return too_large();
    }
    // Refuse an unknown app before taking the upload.
    let known = command(
        &st,
        StatusCode::OK,
        AdminCommand::AppShow { app: app.clone() },
    )
    .await;
    if !known.status().is_success() {
        return known;
    }
    let (sha256, size) = match store_package(&st.packages, req.into_body()).await {
        Ok(done) => done,
        Err(r) => return r,
    };
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let cmd = AdminCommand::VersionAdd {
        app,
        version,
        sha256,
        size,
        force,
    };
    command(&st, StatusCode::CREATED, cmd).await
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the package is larger than 256 MiB",
    )
}

/// Writes the body to the package store; nothing is left behind on failure.
#[allow(clippy::result_large_err)]
async fn store_package(packages: &PackageStore, body: Body) -> Result<(String, u64), Response> {
    store_stream(packages, body.into_data_stream())
        .await
        .map_err(|(status, msg)| error(status, &msg))
}

/// Writes a stream of chunks (a request body, a multipart field) to the package store, up to
/// [`MAX_PACKAGE`] bytes of zip; answers its SHA-256 and size. Nothing is left behind on
/// failure.
pub(crate) async fn store_stream<S, E>(
    packages: &PackageStore,
    mut stream: S,
) -> Result<(String, u64), (StatusCode, String)>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let failed = |e: std::io::Error| {
        tracing::error!(error = %e, "cannot store a package");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot store the package".to_owned(),
        )
    };
    let mut w = packages.writer().await.map_err(failed)?;
    let mut head: Vec<u8> = Vec::with_capacity(ZIP_MAGIC.len());
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| (StatusCode::BAD_REQUEST, "the upload was cut off".to_owned()))?;
        if w.size() + chunk.len() as u64 > MAX_PACKAGE {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "the package is larger than 256 MiB".to_owned(),
            ));
        }
        if head.len() < ZIP_MAGIC.len() {
            let take = (ZIP_MAGIC.len() - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        w.write(&chunk).await.map_err(failed)?;
    }
    if head != ZIP_MAGIC {
        return Err((
            StatusCode::BAD_REQUEST,
            "the body is not a zip file".to_owned(),
        ));
    }
    w.finish().await.map_err(failed)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    version: String,
}

async fn activate(State(st): Shared, Path(app): Path<String>, bytes: Bytes) -> Response {
    let b: VersionBody = parse_or_reply!(bytes);
    let cmd = AdminCommand::Activate {
        app,
        version: b.version,
    };
    command(&st, StatusCode::OK, cmd).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ips {
    ips: Vec<String>,
}

async fn bind(State(st): Shared, Path(app): Path<String>, bytes: Bytes) -> Response {
    let b: Ips = parse_or_reply!(bytes);
    command(&st, StatusCode::OK, AdminCommand::Bind { app, ips: b.ips }).await
}

async fn unbind(State(st): Shared, Path(app): Path<String>, bytes: Bytes) -> Response {
    let b: Ips = parse_or_reply!(bytes);
    command(
        &st,
        StatusCode::OK,
        AdminCommand::Unbind { app, ips: b.ips },
    )
    .await
}

async fn app_sync(State(st): Shared, Path(app): Path<String>) -> Response {
    command(&st, StatusCode::OK, AdminCommand::AppSync { app }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    app: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_at_ms: Option<i64>,
}

async fn key_add(State(st): Shared, bytes: Bytes) -> Response {
    let b: NewKey = parse_or_reply!(bytes);
    let cmd = AdminCommand::KeyAdd {
        app: b.app,
        name: b.name,
        expires_at_ms: b.expires_at_ms,
    };
    command(&st, StatusCode::CREATED, cmd).await
}

#[derive(Deserialize)]
struct AppQuery {
    app: Option<String>,
}

async fn key_list(State(st): Shared, Query(q): Query<AppQuery>) -> Response {
    match q.app {
        Some(app) if !app.is_empty() => {
            command(&st, StatusCode::OK, AdminCommand::KeyList { app }).await
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "give the app: /admin/api/keys?app=APP",
        ),
    }
}

async fn key_rm(State(st): Shared, Path(auth_id): Path<String>) -> Response {
    command(&st, StatusCode::OK, AdminCommand::KeyRm { auth_id }).await
}

async fn key_disable(State(st): Shared, Path(auth_id): Path<String>) -> Response {
    let cmd = AdminCommand::KeyDisable {
        auth_id,
        disabled: true,
    };
    command(&st, StatusCode::OK, cmd).await
}

async fn key_enable(State(st): Shared, Path(auth_id): Path<String>) -> Response {
    let cmd = AdminCommand::KeyDisable {
        auth_id,
        disabled: false,
    };
    command(&st, StatusCode::OK, cmd).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expiry {
    expires_at_ms: Option<i64>,
}

async fn key_expire(State(st): Shared, Path(auth_id): Path<String>, bytes: Bytes) -> Response {
    let b: Expiry = parse_or_reply!(bytes);
    let cmd = AdminCommand::KeyExpire {
        auth_id,
        expires_at_ms: b.expires_at_ms,
    };
    command(&st, StatusCode::OK, cmd).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    password: String,
    role: String,
}

async fn user_add(State(st): Shared, bytes: Bytes) -> Response {
    let b: NewUser = parse_or_reply!(bytes);
    let cmd = AdminCommand::UserAdd {
        email: b.email,
        password: b.password,
        role: b.role,
    };
    command(&st, StatusCode::CREATED, cmd).await
}

async fn user_list(State(st): Shared) -> Response {
    command(&st, StatusCode::OK, AdminCommand::UserList).await
}

/// Ends the web UI sessions of `email` once `resp` says the change was made.
fn end_sessions_if_done(st: &St, email: &str, resp: Response) -> Response {
    if resp.status().is_success() {
        st.sessions.destroy_user(email);
    }
    resp
}

async fn user_rm(State(st): Shared, Path(email): Path<String>) -> Response {
    let cmd = AdminCommand::UserRm {
        email: email.clone(),
    };
    let resp = command(&st, StatusCode::OK, cmd).await;
    end_sessions_if_done(&st, &email, resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Password {
    password: String,
}

async fn user_password(State(st): Shared, Path(email): Path<String>, bytes: Bytes) -> Response {
    let b: Password = parse_or_reply!(bytes);
    let cmd = AdminCommand::UserPassword {
        email: email.clone(),
        password: b.password,
    };
    let resp = command(&st, StatusCode::OK, cmd).await;
    end_sessions_if_done(&st, &email, resp)
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    before_id: Option<i64>,
}

async fn audit(State(st): Shared, q: Result<Query<AuditQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "limit and before_id must be whole numbers",
        );
    };
    let cmd = AdminCommand::Audit {
        limit: q.limit.unwrap_or(0),
        before_id: q.before_id,
    };
    command(&st, StatusCode::OK, cmd).await
}

async fn agent_list(State(st): Shared) -> Response {
    command(&st, StatusCode::OK, AdminCommand::AgentList).await
}

async fn agent_release(State(st): Shared, Path(ip): Path<String>) -> Response {
    command(&st, StatusCode::OK, AdminCommand::AgentRelease { ip }).await
}
