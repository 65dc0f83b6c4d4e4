//! The process's metrics, in the Prometheus text format.
//!
//! One registry per process, created on first use ([`metrics`]); every module records into it
//! with a one-line call (a timer guard or a counter), so instrumenting a module never changes
//! its `Options` or its start-up. The center renders the registry at `/metrics` ([`render`]).
//!
//! Label values are bounded sets chosen by the code (route names, error codes, bus keys, store
//! operations, dispatch kinds, task states), never caller input such as ips, app names or ids:
//! the number of series stays fixed and nothing a client sends appears in them.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Key {
    key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 50 µs … ~1.6 s, doubling: API requests, bus calls, store operations, dispatches.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// 0.5 ms … ~8 s, doubling: how late a cron fired after its instant.
fn lag() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 15))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteCode, Counter>,
    request_seconds: Histograms<Route>,
    bus_seconds: Histograms<Key>,
    store_seconds: Histograms<Op>,
    dispatch_seconds: Histograms<Kind>,
    cron_lag_seconds: Histogram,
    agents_online: Gauge,
    tasks: Family<State, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("elves");
        let requests = Family::<RouteCode, Counter>::default();
        registry.register(
            "api_requests",
            "v2 API requests by route and outcome (0 = success, else the error code)",
            requests.clone(),
        );
        let request_seconds: Histograms<Route> = Family::new_with_constructor(latency);
        registry.register(
            "api_request_seconds",
            "v2 API request handling time by route, in seconds",
            request_seconds.clone(),
        );
        let bus_seconds: Histograms<Key> = Family::new_with_constructor(latency);
        registry.register(
            "bus_call_seconds",
            "bus call latency (send to decoded answer) by module.action, in seconds",
            bus_seconds.clone(),
        );
        let store_seconds: Histograms<Op> = Family::new_with_constructor(latency);
        registry.register(
            "store_seconds",
            "store operation latency by operation, in seconds",
            store_seconds.clone(),
        );
        let dispatch_seconds: Histograms<Kind> = Family::new_with_constructor(latency);
        registry.register(
            "dispatch_seconds",
            "scheduler dispatch latency by kind, in seconds: rt = sent to the agent until its \
             outcome is back, async = until the agent's link took the run",
            dispatch_seconds.clone(),
        );
        let cron_lag_seconds = lag();
        registry.register(
            "cron_fire_lag_seconds",
            "how long after its scheduled instant a cron was dispatched, in seconds",
            cron_lag_seconds.clone(),
        );
        let agents_online = Gauge::default();
        registry.register(
            "agents_online",
            "agents whose link to this center is up",
            agents_online.clone(),
        );
        let tasks = Family::<State, Gauge>::default();
        registry.register(
            "queue_tasks",
            "queue tasks in the store by state (read at scrape time)",
            tasks.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            bus_seconds,
            store_seconds,
            dispatch_seconds,
            cron_lag_seconds,
            agents_online,
            tasks,
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Every metric in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

/// Records its elapsed time into a histogram when dropped. Holding one costs a clock read.
#[must_use = "the time is recorded when the timer is dropped"]
pub struct Timer {
    histogram: Histogram,
    started: Instant,
}

impl Timer {
    fn start(histogram: Histogram) -> Timer {
        Timer {
            histogram,
            started: Instant::now(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// One v2 API request on `route` (`rt/exec`, …; `other` for an unknown one) that ended with
/// `code` (`0` for success, else the bare error code such as `401.5`), started at `started`.
pub fn api_request(route: &str, code: &str, started: Instant) {
    let m = metrics();
    m.requests
        .get_or_create(&RouteCode {
            route: route.to_owned(),
            code: code.to_owned(),
        })
        .inc();
    m.request_seconds
        .get_or_create(&Route {
            route: route.to_owned(),
        })
        .observe(started.elapsed().as_secs_f64());
}

/// Times one bus call to `key` (`module.action`) until dropped.
pub fn bus_call(key: &str) -> Timer {
    Timer::start(
        metrics()
            .bus_seconds
            .get_or_create(&Key {
                key: key.to_owned(),
            })
            .clone(),
    )
}

/// Times one store operation until dropped.
pub fn store_op(op: &'static str) -> Timer {
    Timer::start(metrics().store_seconds.get_or_create(&Op { op }).clone())
}

/// Times one dispatch of `kind` (`rt` or `async`) until dropped.
pub fn dispatch(kind: &'static str) -> Timer {
    Timer::start(
        metrics()
            .dispatch_seconds
            .get_or_create(&Kind { kind })
            .clone(),
    )
}

/// A cron was dispatched `lag_ms` milliseconds after its scheduled instant (clamped at 0).
pub fn cron_fire_lag_ms(lag_ms: i64) {
    metrics()
        .cron_lag_seconds
        .observe(lag_ms.max(0) as f64 / 1000.0);
}

/// An agent's link came up (`true`) or went down (`false`).
pub fn agent_link(up: bool) {
    if up {
        metrics().agents_online.inc();
    } else {
        metrics().agents_online.dec();
    }
}

/// Replaces the queue-task counts by state (read from the store just before a scrape).
pub fn set_queue_tasks(counts: &[(String, i64)]) {
    let tasks = &metrics().tasks;
    tasks.clear();
    for (state, n) in counts {
        tasks
            .get_or_create(&State {
                state: state.clone(),
            })
            .set(*n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first sample line that starts with `series` (name and labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn recorded_values_appear_in_the_exposition() {
        let t = Instant::now();
        api_request("rt/exec", "0", t);
        api_request("rt/exec", "0", t);
        api_request("rt/exec", "410.1", t);
        drop(bus_call("scheduler.syncJob"));
        drop(store_op("queue_load"));
        drop(dispatch("rt"));
        cron_fire_lag_ms(3);
        cron_fire_lag_ms(-5);
        agent_link(true);
        agent_link(true);
        agent_link(false);
        set_queue_tasks(&[("finish".into(), 7), ("running".into(), 2)]);
        set_queue_tasks(&[("finish".into(), 9)]);
        let text = render();
        let checks: &[(&str, f64)] = &[
            (r#"elves_api_requests_total{route="rt/exec",code="0"}"#, 2.0),
            (
                r#"elves_api_requests_total{route="rt/exec",code="410.1"}"#,
                1.0,
            ),
            (r#"elves_api_request_seconds_count{route="rt/exec"}"#, 3.0),
            (
                r#"elves_bus_call_seconds_count{key="scheduler.syncJob"}"#,
                1.0,
            ),
            (r#"elves_store_seconds_count{op="queue_load"}"#, 1.0),
            (r#"elves_dispatch_seconds_count{kind="rt"}"#, 1.0),
            ("elves_cron_fire_lag_seconds_count", 2.0),
            (r#"elves_cron_fire_lag_seconds_bucket{le="0.004"}"#, 2.0),
            (r#"elves_cron_fire_lag_seconds_bucket{le="0.002"}"#, 1.0),
            ("elves_agents_online", 1.0),
            (r#"elves_queue_tasks{state="finish"}"#, 9.0),
        ];
        for (series, want) in checks {
            assert_eq!(sample(&text, series), Some(*want), "{series} in\n{text}");
        }
        assert!(
            !text.contains(r#"state="running""#),
            "a state no longer present is dropped:\n{text}"
        );
        assert!(text.contains("# TYPE elves_api_request_seconds histogram"));
    }
}
