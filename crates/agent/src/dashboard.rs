//! The agent's dashboard and developer mode (agent-protocol §8), on `http.listen` (off when
//! empty; a bare port binds 127.0.0.1).
//!
//! * `GET /` — one server-rendered page: agent info, installed apps, agent-side crons, the
//!   most recent runs and errors (a run that just finished is in the page's HTML; no script
//!   is needed to see it). With developer mode on, a form that builds a signed URL and runs
//!   it.
//! * `GET /stat/{general,apps,crons,tasks,errors}` — the same as JSON, `{"msg":"success",
//!   "data":…}`.
//! * With `devmode.enabled`: `GET|POST /api/v2/rt/exec`, signed with `devmode.authid` /
//!   `devmode.authkey` through `elves-sign` exactly like the center's API (api-v2 §2–§3:
//!   401.1, 401.3, 401.4, 401.8, 401.7, then 401.2 for another `auth_id`, 401.5, 401.9),
//!   then rt/exec's checks (403.3 app, 403.7 func, 403.1 ip — which must be this agent's —,
//!   403.2 param, 403.8 timeout); it runs the worker here and answers like the center's
//!   rt/exec. `GET /dev/sign?app&func[&param&timeout&proxy]` returns a signed URL for the
//!   form; it is served to loopback clients only, since whoever may call it may run workers.
//!
//! No profiling endpoints. Every request body is capped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use elves_sign::{NonceCache, Params, Policy, SignType};
use elves_types::validate::{is_blank, is_ipv4, is_valid_param, parse_timeout};
use elves_types::{ApiError, Envelope, ErrorCode, Id};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::agent_cron::AgentCron;
use crate::apps::Distributor;
use crate::exec::{Executor, Job};
use crate::hooks::Hooks;
use crate::stats::{Stats, now_text};

/// The largest request body read.
const MAX_BODY: usize = 1 << 20;
/// The path of the developer-mode API.
pub const RT_EXEC: &str = "/api/v2/rt/exec";

/// The developer-mode credentials.
#[derive(Clone)]
pub struct DevMode {
    pub authid: String,
    pub authkey: String,
}

/// What the dashboard shows and runs.
pub struct Dashboard {
    pub ip: String,
    pub asset: String,
    pub center: String,
    pub started: String,
    pub apps: Arc<Distributor>,
    pub stats: Arc<Stats>,
    pub cron: Option<Arc<AgentCron>>,
    pub exec: Executor,
    pub hooks: Arc<Hooks>,
    pub devmode: Option<DevMode>,
    nonces: NonceCache,
    /// The worker limiter, for `/metrics` (none: 0 running, 0 waiting).
    limiter: Option<Arc<crate::limits::Limiter>>,
}

/// `http.listen` as an address: a bare port (`19880` or `:19880`) binds loopback.
pub fn listen_addr(listen: &str) -> Result<SocketAddr, String> {
    let l = listen.trim();
    let port_only = l.strip_prefix(':').unwrap_or(l);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    l.parse::<SocketAddr>()
        .map_err(|_| format!("http.listen must be HOST:PORT or a port (loopback), not {listen:?}"))
}

impl Dashboard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ip: String,
        asset: String,
        center: String,
        apps: Arc<Distributor>,
        cron: Option<Arc<AgentCron>>,
        exec: Executor,
        hooks: Arc<Hooks>,
        devmode: Option<DevMode>,
    ) -> Dashboard {
        Dashboard {
            ip,
            asset,
            center,
            started: now_text(),
            apps,
            stats: hooks.stats.clone(),
            cron,
            exec,
            hooks,
            devmode,
            nonces: NonceCache::new(10_000, elves_sign::DEFAULT_WINDOW_SECS),
            limiter: None,
        }
    }

    /// Reports the workers of `limiter` on `/metrics`.
    pub fn with_limiter(mut self, limiter: Arc<crate::limits::Limiter>) -> Dashboard {
        self.limiter = Some(limiter);
        self
    }

    /// The routes.
    pub fn router(self: Arc<Self>) -> Router {
        let mut r = Router::new()
            .route("/", get(page))
            .route("/stat/{what}", get(stat))
            .route("/metrics", get(metrics));
        if self.devmode.is_some() {
            r = r
                .route(RT_EXEC, get(dev_exec).post(dev_exec))
                .route("/dev/sign", get(dev_sign));
        }
        r.with_state(self)
    }

    /// Binds `addr` and serves until `cancel` fires; returns the bound address.
    pub async fn serve(
        self: Arc<Self>,
        addr: SocketAddr,
        cancel: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "the dashboard stopped");
            }
        });
        Ok(bound)
    }

    fn general(&self) -> Value {
        json!({
            "Mode": if self.devmode.is_some() { "DEVELOP" } else { "PRODUCT" },
            "Asset": self.asset,
            "Ip": self.ip,
            "Uptime": self.started,
            "Ver": crate::link::VERSION,
            "Center": self.center,
            "Apps": self.apps.installed(),
        })
    }

    fn crons(&self) -> BTreeMap<String, crate::agent_cron::CronView> {
        self.cron
            .as_ref()
            .map(|c| c.view().into_iter().map(|v| (v.id.clone(), v)).collect())
            .unwrap_or_default()
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn stat_envelope(data: Value) -> Response {
    json_response(
        StatusCode::OK,
        json!({"msg": "success", "data": data}).to_string(),
    )
}

async fn stat(
    State(d): State<Arc<Dashboard>>,
    axum::extract::Path(what): axum::extract::Path<String>,
) -> Response {
    let data = match what.as_str() {
        "general" => d.general(),
        "apps" => json!(d.apps.installed()),
        "crons" => json!(d.crons()),
        "tasks" => json!(d.stats.tasks()),
        "errors" => json!(d.stats.errors()),
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"msg": "not found", "data": null}).to_string(),
            );
        }
    };
    stat_envelope(data)
}

/// `/metrics`: the agent's Prometheus metrics.
async fn metrics(State(d): State<Arc<Dashboard>>) -> Response {
    let now = crate::metrics::Now {
        running: d.limiter.as_ref().map_or(0, |l| l.running()),
        waiting: d.limiter.as_ref().map_or(0, |l| l.waiting()),
        apps: d.apps.installed().len(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        d.stats.metrics.render(now),
    )
        .into_response()
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn table(id: &str, head: &[&str], rows: Vec<Vec<String>>, empty: &str) -> String {
    let mut t = format!("<table id=\"{id}\"><thead><tr>");
    for h in head {
        t.push_str(&format!("<th>{}</th>", esc(h)));
    }
    t.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        t.push_str(&format!(
            "<tr><td colspan=\"{}\" class=\"empty\">{}</td></tr>",
            head.len(),
            esc(empty)
        ));
    }
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            t.push_str(&format!("<td>{}</td>", esc(&c)));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}\
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.empty{color:#888}.error{color:#a00}.success{color:#070}\
form label{display:inline-block;margin-right:1em}pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}";

const DEV_SCRIPT: &str = r#"<script>
document.getElementById('devform').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const q = new URLSearchParams(new FormData(ev.target));
  const out = document.getElementById('devout');
  out.textContent = 'signing…';
  const s = await (await fetch('/dev/sign?' + q)).json();
  if (s.msg !== 'success') { out.textContent = JSON.stringify(s); return; }
  document.getElementById('devurl').textContent = s.data.uri;
  out.textContent = 'running…';
  const r = await (await fetch(s.data.uri)).json();
  out.textContent = JSON.stringify(r, null, 2);
});
</script>"#;

async fn page(State(d): State<Arc<Dashboard>>) -> Response {
    let g = d.general();
    let info = table(
        "general",
        &["Ip", "Asset", "Mode", "Version", "Started", "Center"],
        vec![vec![
            d.ip.clone(),
            d.asset.clone(),
            g["Mode"].as_str().unwrap_or_default().to_owned(),
            crate::link::VERSION.to_owned(),
            d.started.clone(),
            d.center.clone(),
        ]],
        "",
    );
    let apps = table(
        "apps",
        &["App", "Version"],
        d.apps
            .installed()
            .into_iter()
            .map(|(a, v)| vec![a, v])
            .collect(),
        "no app installed",
    );
    let crons = table(
        "crons",
        &[
            "Id", "App", "Func", "Mode", "Rule", "Comment", "Enabled", "Last run", "Next run",
        ],
        d.crons()
            .into_values()
            .map(|c| {
                vec![
                    c.id,
                    c.app,
                    c.func,
                    c.mode,
                    c.rule,
                    c.comment,
                    c.enabled.to_string(),
                    c.lastexec,
                    c.next,
                ]
            })
            .collect(),
        "no agent cron",
    );
    let tasks = table(
        "tasks",
        &[
            "Time",
            "Id",
            "Type",
            "Mode",
            "App",
            "Func",
            "Proxy",
            "Costtime (ms)",
            "Flag",
            "Result",
        ],
        d.stats
            .tasks()
            .into_iter()
            .map(|t| {
                vec![
                    t.time,
                    t.id,
                    t.kind,
                    t.mode,
                    t.app,
                    t.func,
                    t.proxy,
                    t.costtime.to_string(),
                    t.flag,
                    t.result,
                ]
            })
            .collect(),
        "no task yet",
    );
    let errors = table(
        "errors",
        &["Time", "Error"],
        d.stats
            .errors()
            .into_iter()
            .map(|e| match e.split_once('|') {
                Some((t, m)) => vec![t.to_owned(), m.to_owned()],
                None => vec![String::new(), e],
            })
            .collect(),
        "no error",
    );
    let dev = if d.devmode.is_some() {
        format!(
            "<h2>Developer mode</h2>\
             <form id=\"devform\" action=\"/dev/sign\" method=\"get\">\
             <label>app <input name=\"app\" required></label>\
             <label>func <input name=\"func\" required></label>\
             <label>param <input name=\"param\" placeholder='{{\"my\":\"hello\"}}'></label>\
             <label>timeout <input name=\"timeout\" size=\"4\"></label>\
             <label>proxy <input name=\"proxy\"></label>\
             <button type=\"submit\">Sign and run</button></form>\
             <p>Signed URL: <code id=\"devurl\"></code></p><pre id=\"devout\"></pre>{DEV_SCRIPT}"
        )
    } else {
        String::new()
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Elves agent {ip}</title><style>{STYLE}</style></head><body>\
         <h1>Elves agent {ip}</h1>{info}<h2>Installed apps</h2>{apps}\
         <h2>Agent crons</h2>{crons}<h2>Recent tasks</h2>{tasks}<h2>Recent errors</h2>{errors}\
         {dev}</body></html>",
        ip = esc(&d.ip),
    );
    let mut resp = (StatusCode::OK, html).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// Query parameters, then (POST) form parameters.
async fn params_of(req: Request<Body>) -> Result<(String, Params), ApiError> {
    let path = req.uri().path().to_owned();
    let mut params = Params::new();
    if let Some(q) = req.uri().query() {
        params.extend_urlencoded(q.as_bytes());
    }
    if req.method() == Method::POST {
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| ApiError::internal(format!("request body over {MAX_BODY} bytes")))?;
        params.extend_urlencoded(&body);
    }
    Ok((path, params))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// api-v2 §3 steps 1–8 against the developer-mode credentials, then rt/exec's checks.
fn dev_check(d: &Dashboard, dev: &DevMode, path: &str, params: &Params) -> Result<Job, ApiError> {
    let now = now_secs();
    let pre = elves_sign::precheck(params, &Policy::default(), now)?;
    if pre.auth_id != dev.authid {
        return Err(ErrorCode::AuthIdIllegal.into());
    }
    elves_sign::verify(path, params, &pre, &dev.authkey, &d.nonces, now)?;
    let get = |k: &str| params.get(k);
    if is_blank(get("app")) {
        return Err(ErrorCode::AppIllegal.into());
    }
    if is_blank(get("func")) {
        return Err(ErrorCode::FuncIllegal.into());
    }
    let ip = get("ip").unwrap_or_default();
    if !is_ipv4(ip) || ip != d.ip {
        return Err(ErrorCode::IpIllegal.into());
    }
    if !is_valid_param(get("param")) {
        return Err(ErrorCode::ParamIllegal.into());
    }
    let timeout = parse_timeout(get("timeout")).ok_or(ErrorCode::TimeoutIllegal)?;
    Ok(Job {
        id: Id::random().to_string(),
        kind: "rt".into(),
        mode: "NP".into(),
        app: get("app").unwrap_or_default().trim().to_owned(),
        func: get("func").unwrap_or_default().trim().to_owned(),
        param: if is_blank(get("param")) {
            String::new()
        } else {
            get("param").unwrap_or_default().to_owned()
        },
        timeout_secs: u64::from(timeout),
        proxy: get("proxy").unwrap_or_default().trim().to_owned(),
    })
}

async fn dev_exec(State(d): State<Arc<Dashboard>>, req: Request<Body>) -> Response {
    let Some(dev) = d.devmode.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let result = match params_of(req).await {
        Ok((path, params)) => dev_check(&d, &dev, &path, &params),
        Err(e) => Err(e),
    };
    let env = match result {
        Err(e) => Envelope::err(&e),
        Ok(job) => {
            let installed = d.apps.is_installed(&job.app);
            let outcome = d.exec.run(&job, installed, CancellationToken::new()).await;
            d.hooks.finished(&job, &d.ip, &outcome);
            Envelope::ok(Some(json!({
                "id": job.id,
                "worker_flag": outcome.flag,
                "worker_message": outcome.message,
                "worker_costtime": outcome.costtime_ms,
            })))
        }
    };
    json_response(StatusCode::OK, env.to_json())
}

async fn dev_sign(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let Some(dev) = d.devmode.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !peer.ip().is_loopback() {
        return json_response(
            StatusCode::FORBIDDEN,
            json!({"msg": "/dev/sign answers loopback clients only", "data": null}).to_string(),
        );
    }
    let mut params = Params::new();
    if let Some(q) = req.uri().query() {
        params.extend_urlencoded(q.as_bytes());
    }
    if is_blank(params.get("app")) || is_blank(params.get("func")) {
        return json_response(
            StatusCode::OK,
            json!({"msg": "app and func are required", "data": null}).to_string(),
        );
    }
    let mut pairs: Vec<(&str, &str)> = vec![("ip", d.ip.as_str())];
    for k in ["app", "func", "param", "timeout", "proxy"] {
        if let Some(v) = params.get(k).filter(|v| !v.is_empty()) {
            pairs.push((k, v));
        }
    }
    let query = elves_sign::signed_query(
        RT_EXEC,
        &pairs,
        &dev.authid,
        &dev.authkey,
        SignType::Md5,
        now_secs(),
        None,
    );
    stat_envelope(json!({"uri": format!("{RT_EXEC}?{query}")}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let ok = [
            ("19880", "127.0.0.1:19880"),
            (":19880", "127.0.0.1:19880"),
            ("0.0.0.0:1", "0.0.0.0:1"),
            ("127.0.0.5:0", "127.0.0.5:0"),
        ];
        for (l, want) in ok {
            assert_eq!(listen_addr(l).unwrap().to_string(), want, "{l}");
        }
        for bad in ["", "host", "1.2.3.4", "99999"] {
            assert!(listen_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
