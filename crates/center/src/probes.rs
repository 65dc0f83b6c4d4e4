//! `/healthz` (the process answers), `/readyz` (the store answers and every module started)
//! and `/metrics` (Prometheus text), served next to the API on `server.listen`.
//!
//! None of them is authenticated, as Prometheus and orchestrators expect: they carry no
//! secret, no caller input and no per-agent or per-app label (see `elves-telemetry`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use elves_store::Store;

/// How long a probe waits for the store.
const STORE_WAIT: Duration = Duration::from_secs(2);

/// Set once [`crate::Center::start`] has started every module and both listeners.
#[derive(Clone, Default)]
pub(crate) struct Ready(Arc<AtomicBool>);

impl Ready {
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The probe routes. `queue` says whether this process runs the queue module (whose task
/// counts `/metrics` reads).
pub(crate) fn router(store: Store, ready: Ready, queue: bool) -> Router {
    let s = store.clone();
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || readyz(s.clone(), ready.clone())),
        )
        .route(
            "/metrics",
            axum::routing::get(move || metrics(store.clone(), queue)),
        )
}

async fn readyz(store: Store, ready: Ready) -> Response {
    if !ready.0.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    }
    match tokio::time::timeout(STORE_WAIT, store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store too slow\n").into_response(),
    }
}

async fn metrics(store: Store, queue: bool) -> Response {
    if queue {
        match tokio::time::timeout(STORE_WAIT, store.queue_task_counts()).await {
            Ok(Ok(counts)) => elves_telemetry::set_queue_tasks(&counts),
            Ok(Err(e)) => tracing::warn!(error = %e, "queue task counts not read for /metrics"),
            Err(_) => tracing::warn!("queue task counts not read for /metrics in time"),
        }
    }
    (
        [(header::CONTENT_TYPE, elves_telemetry::CONTENT_TYPE)],
        elves_telemetry::render(),
    )
        .into_response()
}
