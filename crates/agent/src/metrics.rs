//! The agent's own Prometheus metrics, served as `/metrics` by the dashboard (`[http] listen`;
//! off when the dashboard is off).
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `elves_agent_runs_total` | counter | `kind` (`rt`, developer mode included; `queue`, `cron`, `agentcron`), `flag` (`success`, `failure`, `error`) |
//! | `elves_agent_run_seconds` | histogram (worker spawn → exit) | `kind` |
//! | `elves_agent_errors_total` | counter | |
//! | `elves_agent_workers_running`, `elves_agent_workers_waiting` | gauge | |
//! | `elves_agent_apps_installed` | gauge | |
//!
//! Label values come from the agent's own fixed sets, so the series are bounded. Each agent
//! process has its own registry (tests run several in one process).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindFlag {
    kind: String,
    flag: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

type Histograms = Family<Kind, Histogram, fn() -> Histogram>;

/// 1 ms to about 16 min, doubling.
fn run_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// What an agent counts.
pub struct Metrics {
    registry: Registry,
    runs: Family<KindFlag, Counter>,
    run_seconds: Histograms,
    errors: Counter,
    running: Gauge,
    waiting: Gauge,
    apps: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("elves_agent");
        let runs = Family::<KindFlag, Counter>::default();
        registry.register(
            "runs",
            "Worker runs finished, by kind and flag",
            runs.clone(),
        );
        let run_seconds: Histograms = Family::new_with_constructor(run_seconds);
        registry.register(
            "run_seconds",
            "Worker run time, spawn to exit",
            run_seconds.clone(),
        );
        let errors = Counter::default();
        registry.register("errors", "Errors shown on the dashboard", errors.clone());
        let running = Gauge::default();
        registry.register("workers_running", "Workers running now", running.clone());
        let waiting = Gauge::default();
        registry.register(
            "workers_waiting",
            "Runs waiting for a worker slot",
            waiting.clone(),
        );
        let apps = Gauge::default();
        registry.register("apps_installed", "Apps installed", apps.clone());
        Metrics {
            registry,
            runs,
            run_seconds,
            errors,
            running,
            waiting,
            apps,
        }
    }
}

/// What is read at scrape time rather than counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    pub running: usize,
    pub waiting: usize,
    pub apps: usize,
}

impl Metrics {
    /// A finished run of `kind` with the dashboard's `flag` name, `cost_ms` long.
    pub fn run(&self, kind: &str, flag: &str, cost_ms: i64) {
        let labels = KindFlag {
            kind: kind.to_owned(),
            flag: flag.to_owned(),
        };
        self.runs.get_or_create(&labels).inc();
        let kind = Kind {
            kind: kind.to_owned(),
        };
        let secs = cost_ms.max(0) as f64 / 1000.0;
        self.run_seconds.get_or_create(&kind).observe(secs);
    }

    /// An error shown on the dashboard.
    pub fn error(&self) {
        self.errors.inc();
    }

    /// Every metric in the Prometheus text format, with the gauges set to `now`.
    pub fn render(&self, now: Now) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.running.set(gauge(now.running));
        self.waiting.set(gauge(now.waiting));
        self.apps.set(gauge(now.apps));
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `series ` in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn runs_errors_and_gauges_are_exposed() {
        let m = Metrics::default();
        // (kind, flag, cost ms) of finished runs.
        let runs = [
            ("rt", "success", 3),
            ("rt", "success", 2_000),
            ("rt", "error", 1),
            ("queue", "failure", 10),
        ];
        for (kind, flag, ms) in runs {
            m.run(kind, flag, ms);
        }
        m.error();
        let now = Now {
            running: 2,
            waiting: 1,
            apps: 3,
        };
        let text = m.render(now);
        let want = [
            (r#"elves_agent_runs_total{kind="rt",flag="success"}"#, 2.0),
            (r#"elves_agent_runs_total{kind="rt",flag="error"}"#, 1.0),
            (
                r#"elves_agent_runs_total{kind="queue",flag="failure"}"#,
                1.0,
            ),
            (r#"elves_agent_run_seconds_count{kind="rt"}"#, 3.0),
            (r#"elves_agent_run_seconds_sum{kind="rt"}"#, 2.004),
            ("elves_agent_errors_total", 1.0),
            ("elves_agent_workers_running", 2.0),
            ("elves_agent_workers_waiting", 1.0),
            ("elves_agent_apps_installed", 3.0),
        ];
        for (series, value) in want {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
        assert_eq!(
            sample(
                &text,
                r#"elves_agent_runs_total{kind="cron",flag="success"}"#
            ),
            None
        );
        let later = m.render(Now::default());
        assert_eq!(sample(&later, "elves_agent_workers_running"), Some(0.0));
    }
}
