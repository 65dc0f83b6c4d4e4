//! The v2 HTTP API.
//!
//! Every route under `/api/v2/` accepts GET and POST (`application/x-www-form-urlencoded`);
//! query and form parameters are merged into one [`Params`] by one extractor. Every outcome,
//! success or error, is HTTP 200 with the JSON [`Envelope`]; an unknown path under `/api/` is
//! HTTP 404 with the same envelope; a panic is a 500 envelope, never a stack trace.
//!
//! Checks run in the order of api-v2 §3, and the first failure wins:
//! signing parameters (401.1, 401.3, 401.4, 401.8, 401.7), key lookup (401.2), signature and
//! repeated parameters (401.5), nonce (401.9), module switches (402.x), the route's own
//! parameters in its documented order (403.x), permissions (401.6), then the business call
//! over the bus.
//!
//! Every v2 request gets a request id — the caller's `X-Request-Id` when it is a valid one
//! (`elves_bus::is_valid_request_id`), else a fresh [`elves_types::Id`] — sent back in the
//! `X-Request-Id` response header and carried by every bus message the request causes (and from
//! there to the agent), and is counted in the metrics by route and outcome.

mod access;
mod cron;
mod routes;

pub use access::AuthMode;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use elves_bus::Bus;
use elves_sign::{NonceCache, Params, Policy};
use elves_types::{ApiError, Clock, Envelope};

/// The largest request body read, in bytes.
pub const MAX_BODY: usize = 1 << 20;
/// How many nonces are remembered at most.
const NONCE_CAPACITY: usize = 100_000;

/// Which modules this center runs (api-v2 §5).
#[derive(Clone, Debug, Default)]
pub struct Modules {
    pub queue: bool,
    pub cron: bool,
    /// Supervisor mode (`auth.mode = "supervisor"`).
    pub supervisor: bool,
}

/// The openapi module's settings. (No `Debug`: it holds the key.)
#[derive(Clone)]
pub struct Options {
    pub auth: AuthMode,
    pub policy: Policy,
    pub modules: Modules,
}

struct AppState {
    opts: Options,
    gate: access::Gate,
    bus: Bus,
    clock: Arc<dyn Clock>,
    nonces: NonceCache,
}

/// The API's routes: `/api/…` only; the caller merges them with the rest of the site.
pub fn router(opts: Options, bus: &Bus, clock: Arc<dyn Clock>) -> Router {
    let nonces = NonceCache::new(NONCE_CAPACITY, opts.policy.window_secs);
    let state = Arc::new(AppState {
        gate: access::Gate::new(opts.auth.clone()),
        opts,
        bus: bus.for_module(elves_rpc::module::OPENAPI),
        clock,
        nonces,
    });
    Router::new()
        .route("/api/v2/{*route}", axum::routing::any(v2))
        .route("/api/{*rest}", axum::routing::any(not_found))
        .route("/api", axum::routing::any(not_found))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            envelope(
                StatusCode::OK,
                &Envelope::err(&ApiError::internal("the request handler failed")),
            )
        }))
        .with_state(state)
}

/// Writes an envelope with the v2 content type.
pub fn envelope(status: StatusCode, env: &Envelope) -> Response {
    let mut resp = (status, env.to_json()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

async fn not_found() -> Response {
    envelope(
        StatusCode::NOT_FOUND,
        &Envelope {
            flag: "false".into(),
            error: "not found".into(),
            result: None,
        },
    )
}

fn is_form(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The one extractor: query parameters, then (POST) form parameters, decoded.
async fn params_of(req: Request) -> Result<(String, Params), ApiError> {
    let path = req.uri().path().to_owned();
    let mut params = Params::new();
    if let Some(q) = req.uri().query() {
        params.extend_urlencoded(q.as_bytes());
    }
    if req.method() == Method::POST && is_form(&req) {
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| ApiError::internal(format!("request body over {MAX_BODY} bytes")))?;
        params.extend_urlencoded(&body);
    }
    Ok((path, params))
}

/// The response header (and accepted request header) carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

async fn v2(State(app): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let started = std::time::Instant::now();
    let rid = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| elves_bus::is_valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| elves_types::Id::random().to_string());
    let (label, code, mut resp) = elves_bus::with_request_id(&rid, v2_inner(app, req)).await;
    elves_telemetry::api_request(label, code, started);
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// The request's answer with its metric labels: the route (`other` when unknown) and the
/// outcome (`0`, or the error code).
async fn v2_inner(
    app: Arc<AppState>,
    req: Request<Body>,
) -> (&'static str, &'static str, Response) {
    if req.method() != Method::GET && req.method() != Method::POST {
        let env = Envelope {
            flag: "false".into(),
            error: "method not allowed: use GET or POST".into(),
            result: None,
        };
        return (
            "other",
            "405",
            envelope(StatusCode::METHOD_NOT_ALLOWED, &env),
        );
    }
    let route = req
        .uri()
        .path()
        .strip_prefix("/api/v2/")
        .unwrap_or_default();
    let Some(route) = routes::Route::parse(route) else {
        return ("other", "404", not_found().await);
    };
    let result = match params_of(req).await {
        Ok((path, params)) => handle(&app, route, &path, &params).await,
        Err(e) => Err(e),
    };
    let code = match &result {
        Ok(_) => "0",
        Err(e) => {
            tracing::debug!(route = ?route, error = %e, "v2 request refused");
            e.code.code()
        }
    };
    (
        route.label(),
        code,
        envelope(StatusCode::OK, &Envelope::from(result)),
    )
}

async fn handle(
    app: &AppState,
    route: routes::Route,
    path: &str,
    params: &Params,
) -> Result<Option<Box<serde_json::value::RawValue>>, ApiError> {
    let now = app.clock.now_secs();
    // §3 steps 1–5.
    let pre = elves_sign::precheck(params, &app.opts.policy, now)?;
    // Step 6: the key (simple mode: the one configured; supervisor mode: the module's).
    let (key, caller) = app
        .gate
        .key(&app.bus, &pre.auth_id, app.clock.now_ms())
        .await?;
    // Steps 7–8.
    elves_sign::verify(path, params, &pre, &key, &app.nonces, now)?;
    // Step 9.
    route.check_module(&app.opts.modules)?;
    // Steps 10–12: each route validates its parameters, then asks the gate, then works.
    let ctx = routes::Ctx {
        caller: &caller,
        gate: &app.gate,
        bus: &app.bus,
        modules: &app.opts.modules,
    };
    routes::serve(route, params, &ctx).await
}

#[cfg(test)]
mod tests;
