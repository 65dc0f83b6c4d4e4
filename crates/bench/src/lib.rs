//! The pure parts of `elves-bench`: percentiles, summaries, the markdown rows, the
//! time-of-day arithmetic used to line the agent's log up with the client's clock, and for
//! `queue-throughput` the task plan, the check of `queue/result` and of the agents' runs, and
//! the `/proc` figures of a process.
//!
//! Samples are microseconds (`f64`); tables print milliseconds with three decimals.

/// The nearest-rank percentile `p` (0–100] of `sorted` (ascending, not empty).
///
/// The smallest sample such that at least `p` % of the samples are less than or equal to it:
/// `sorted[ceil(p / 100 × n) − 1]`. No interpolation, so every figure is a measured sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    assert!(p > 0.0 && p <= 100.0, "percentile {p} out of (0, 100]");
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// The figures reported for one series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Summarises `samples` (any order); `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Some(Summary {
            n: s.len(),
            p50: percentile(&s, 50.0),
            p90: percentile(&s, 90.0),
            p99: percentile(&s, 99.0),
            max: s[s.len() - 1],
            mean: s.iter().sum::<f64>() / s.len() as f64,
        })
    }
}

/// Microseconds as milliseconds with three decimals.
pub fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

/// A markdown table row: `| name | n | p50 | p90 | p99 | max | mean |` in milliseconds.
pub fn row(name: &str, s: &Summary) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} |",
        s.n,
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max),
        ms(s.mean)
    )
}

/// The header of the tables [`row`] fills.
pub const TABLE_HEAD: &str = "| measure (ms) | n | p50 | p90 | p99 | max | mean |\n\
                              |---|--:|--:|--:|--:|--:|--:|";

/// Microseconds in a day.
pub const DAY_US: i64 = 86_400_000_000;

/// The UTC time of day, in microseconds, of an RFC 3339 timestamp ending in `Z`
/// (`2025-06-01T12:34:56.123456Z`, as `tracing-subscriber` writes them). `None` for anything
/// else (an offset other than `Z`, a missing time).
pub fn rfc3339_micros_of_day(ts: &str) -> Option<i64> {
    let t = ts.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = t.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec = parts.next()?;
    let (s, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: i64 = s.parse().ok()?;
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..=60).contains(&s) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Keep microseconds: pad or cut the fraction to six digits.
    let mut us = 0i64;
    for i in 0..6 {
        us = us * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + us)
}

/// The UTC time of day, in microseconds, of Unix time `unix_us`.
pub fn unix_micros_of_day(unix_us: i64) -> i64 {
    unix_us.rem_euclid(DAY_US)
}

/// `later − earlier` for two times of day, taking the shortest way round midnight.
pub fn tod_diff(later: i64, earlier: i64) -> i64 {
    let d = (later - earlier).rem_euclid(DAY_US);
    if d > DAY_US / 2 { d - DAY_US } else { d }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC, proleptic Gregorian calendar).
pub fn utc_rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// What the agent logs around a worker run: its executor at debug level, the end of an
/// asynchronous run at info level (the level an agent runs at by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerEvent {
    /// "starting worker" (debug)
    Start,
    /// "worker finished" (debug)
    Finish,
    /// "job finished" (info): an asynchronous run ended, its result about to be spooled.
    Done,
}

/// One line of the agent's JSON log: `(event, task id, UTC time of day in µs)` when it is a
/// "starting worker", "worker finished" or "job finished" line, `None` for anything else.
pub fn worker_log_event(line: &str) -> Option<(WorkerEvent, String, i64)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let ts = v["timestamp"].as_str().and_then(rfc3339_micros_of_day)?;
    let f = &v["fields"];
    let task = f["task"].as_str()?;
    let event = match f["message"].as_str()? {
        "starting worker" => WorkerEvent::Start,
        "worker finished" => WorkerEvent::Finish,
        "job finished" => WorkerEvent::Done,
        _ => return None,
    };
    Some((event, task.to_owned(), ts))
}

/// `total` split into `parts` shares that differ by at most one, the larger first.
pub fn split_evenly(total: usize, parts: usize) -> Vec<usize> {
    assert!(parts > 0, "split into no parts");
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// One task of a queue in the plan of `queue-throughput`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedTask {
    /// Index of the agent that runs it.
    pub agent: usize,
    /// Index (in the same queue) of the task it depends on.
    pub depend: Option<usize>,
}

/// `total` tasks over `queues` queues (split evenly), task `i` of a queue on agent
/// `i mod agents`. With `chain_depth` ≤ 1 every task is a root; otherwise the tasks of a
/// queue form chains of `chain_depth` (the last one shorter): task `i` depends on `i − 1`
/// unless `i` is a multiple of `chain_depth`.
pub fn plan_queues(
    total: usize,
    queues: usize,
    agents: usize,
    chain_depth: usize,
) -> Vec<Vec<PlannedTask>> {
    assert!(agents > 0, "no agents");
    split_evenly(total, queues)
        .into_iter()
        .map(|n| {
            (0..n)
                .map(|i| PlannedTask {
                    agent: i % agents,
                    depend: (chain_depth > 1 && i % chain_depth != 0).then(|| i - 1),
                })
                .collect()
        })
        .collect()
}

/// How the tasks of one queue ended, from its `queue/result`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Added tasks that are `finish` with `worker_flag` 1.
    pub ok: usize,
    /// Added tasks that are `finish` otherwise (another flag, an error).
    pub failed: usize,
    /// Added tasks not yet terminal (`pendding`, `running`).
    pub unfinished: usize,
    /// Added tasks that are `stopped`.
    pub stopped: usize,
    /// Added tasks absent from the result.
    pub missing: usize,
    /// Tasks in the result that were never added (or the same id twice).
    pub unexpected: usize,
}

impl Tally {
    /// Every added task is `finish` with `worker_flag` 1 and nothing else is there.
    pub fn all_ok(&self) -> bool {
        self.failed + self.unfinished + self.stopped + self.missing + self.unexpected == 0
    }

    /// Nothing will change any more: no task is still pending or running.
    pub fn settled(&self) -> bool {
        self.unfinished == 0
    }

    pub fn add(&mut self, o: &Tally) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.unfinished += o.unfinished;
        self.stopped += o.stopped;
        self.missing += o.missing;
        self.unexpected += o.unexpected;
    }
}

/// Checks a `queue/result` (`{TASK_ID: {status, worker_flag, …}}`) against the ids added.
pub fn tally(added: &[String], result: &serde_json::Value) -> Tally {
    let mut t = Tally::default();
    let empty = serde_json::Map::new();
    let map = result.as_object().unwrap_or(&empty);
    let mut seen = std::collections::HashSet::new();
    for id in added {
        if !seen.insert(id.as_str()) {
            t.unexpected += 1;
            continue;
        }
        match map.get(id) {
            None => t.missing += 1,
            Some(task) => match task["status"].as_str() {
                Some("finish") if task["worker_flag"] == 1 => t.ok += 1,
                Some("finish") => t.failed += 1,
                Some("stopped") => t.stopped += 1,
                _ => t.unfinished += 1,
            },
        }
    }
    t.unexpected += map.keys().filter(|k| !seen.contains(k.as_str())).count();
    t
}

/// Counts of worker runs per task: tasks run more than once and tasks never run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runs {
    pub started: usize,
    /// Tasks started more than once.
    pub duplicated: usize,
    /// Tasks never started.
    pub never: usize,
    /// Tasks started on another agent than the one they were added for.
    pub wrong_agent: usize,
}

/// `expected` = (task id, agent index); `started_on` = for each agent, the task ids of its
/// runs, one entry per run (other tasks in them are ignored).
pub fn count_runs(expected: &[(String, usize)], started_on: &[Vec<String>]) -> Runs {
    use std::collections::HashMap;
    let want: HashMap<&str, usize> = expected.iter().map(|(t, a)| (t.as_str(), *a)).collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    let mut r = Runs::default();
    for (agent, tasks) in started_on.iter().enumerate() {
        for t in tasks {
            let Some((&id, &a)) = want.get_key_value(t.as_str()) else {
                continue;
            };
            r.started += 1;
            *count.entry(id).or_default() += 1;
            if a != agent {
                r.wrong_agent += 1;
            }
        }
    }
    r.duplicated = count.values().filter(|&&c| c > 1).count();
    r.never = want.keys().filter(|k| !count.contains_key(*k)).count();
    r
}

/// `utime + stime` (clock ticks) from the text of `/proc/PID/stat`: fields 14 and 15, counted
/// after the command name in parentheses (which may itself hold spaces and parentheses).
pub fn proc_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The whole machine's busy time (clock ticks, all cores) from the text of `/proc/stat`: the
/// `cpu` line's user, nice, system, irq, softirq and steal (everything but idle and iowait).
pub fn machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
    let at = |i: usize| f.get(i).copied();
    Some(at(0)? + at(1)? + at(2)? + at(5)? + at(6)? + at(7).unwrap_or(0))
}

/// A `kB` figure of `/proc/PID/status` (`VmHWM`, `VmRSS`, …), in kB.
pub fn proc_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k != key {
            return None;
        }
        v.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 90.0), 90.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&s, 0.1), 1.0);
        // Small series: the rank rounds up, never interpolates.
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 51.0), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
    }

    #[test]
    fn summary_sorts_and_averages() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(s.n, 5);
        assert_eq!(s.p50, 3.0);
        assert_eq!(s.p90, 5.0);
        assert_eq!(s.p99, 5.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.mean, 3.0);
        assert!(Summary::of(&[]).is_none());
        assert_eq!(
            row("x", &Summary::of(&[1500.0]).unwrap()),
            "| x | 1 | 1.500 | 1.500 | 1.500 | 1.500 | 1.500 |"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(utc_rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(utc_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn time_of_day() {
        assert_eq!(
            rfc3339_micros_of_day("2025-06-01T00:00:01.000002Z"),
            Some(1_000_002)
        );
        assert_eq!(
            rfc3339_micros_of_day("2025-06-01T01:02:03.4Z"),
            Some(3_723_400_000)
        );
        assert_eq!(
            rfc3339_micros_of_day("2025-06-01T01:02:03.123456789Z"),
            Some(3_723_123_456)
        );
        assert_eq!(rfc3339_micros_of_day("2025-06-01T01:02:03+02:00"), None);
        assert_eq!(rfc3339_micros_of_day("garbage"), None);
        // 1970-01-02T00:00:00.5Z
        assert_eq!(unix_micros_of_day(DAY_US + 500_000), 500_000);
        assert_eq!(tod_diff(10, 4), 6);
        assert_eq!(tod_diff(4, 10), -6);
        // Across midnight.
        assert_eq!(tod_diff(5, DAY_US - 5), 10);
        assert_eq!(tod_diff(DAY_US - 5, 5), -10);
    }

    #[test]
    fn worker_log_lines() {
        let l = r#"{"timestamp":"2025-06-01T00:00:01.000002Z","level":"DEBUG","fields":{"message":"starting worker","task":"T1","app":"noop"},"target":"elves_agent::exec"}"#;
        assert_eq!(
            worker_log_event(l),
            Some((WorkerEvent::Start, "T1".into(), 1_000_002))
        );
        let l = r#"{"timestamp":"2025-06-01T00:00:02Z","fields":{"message":"worker finished","task":"T1"}}"#;
        assert_eq!(
            worker_log_event(l),
            Some((WorkerEvent::Finish, "T1".into(), 2_000_000))
        );
        let l = r#"{"timestamp":"2025-06-01T00:00:03Z","level":"INFO","fields":{"message":"job finished","run_id":"R1","task":"T1","flag":1}}"#;
        assert_eq!(
            worker_log_event(l),
            Some((WorkerEvent::Done, "T1".into(), 3_000_000))
        );
        let other =
            r#"{"timestamp":"2025-06-01T00:00:02Z","fields":{"message":"linked","task":"T1"}}"#;
        assert_eq!(worker_log_event(other), None);
        assert_eq!(worker_log_event("not json"), None);
    }

    #[test]
    fn even_splits() {
        assert_eq!(split_evenly(10, 3), vec![4, 3, 3]);
        assert_eq!(split_evenly(9, 3), vec![3, 3, 3]);
        assert_eq!(split_evenly(1, 2), vec![1, 0]);
        assert_eq!(split_evenly(0, 1), vec![0]);
        assert_eq!(split_evenly(1001, 2).iter().sum::<usize>(), 1001);
    }

    #[test]
    fn plans() {
        let flat = plan_queues(5, 1, 2, 0);
        assert_eq!(flat.len(), 1);
        assert_eq!(
            flat[0].iter().map(|t| t.agent).collect::<Vec<_>>(),
            vec![0, 1, 0, 1, 0]
        );
        assert!(flat[0].iter().all(|t| t.depend.is_none()));
        assert_eq!(plan_queues(5, 1, 2, 1), flat);

        let chains = plan_queues(25, 2, 2, 10);
        assert_eq!(chains.len(), 2);
        assert_eq!(chains[0].len(), 13);
        assert_eq!(chains[1].len(), 12);
        let deps: Vec<Option<usize>> = chains[0].iter().map(|t| t.depend).collect();
        assert_eq!(deps[0], None);
        assert_eq!(deps[1], Some(0));
        assert_eq!(deps[9], Some(8));
        assert_eq!(deps[10], None);
        assert_eq!(deps[12], Some(11));
        let roots = chains
            .iter()
            .flatten()
            .filter(|t| t.depend.is_none())
            .count();
        assert_eq!(roots, 4);
    }

    #[test]
    fn tallies() {
        let added: Vec<String> = ["A", "B", "C", "D", "E"].map(String::from).to_vec();
        let r = serde_json::json!({
            "A": {"status": "finish", "worker_flag": 1},
            "B": {"status": "finish", "worker_flag": 0},
            "C": {"status": "running", "worker_flag": ""},
            "D": {"status": "stopped", "worker_flag": ""},
            "X": {"status": "finish", "worker_flag": 1},
        });
        let t = tally(&added, &r);
        assert_eq!(
            t,
            Tally {
                ok: 1,
                failed: 1,
                unfinished: 1,
                stopped: 1,
                missing: 1,
                unexpected: 1
            }
        );
        assert!(!t.all_ok());
        assert!(!t.settled());
        let done = serde_json::json!({
            "A": {"status": "finish", "worker_flag": 1},
            "B": {"status": "finish", "worker_flag": 1},
        });
        let t = tally(&added[..2], &done);
        assert!(t.all_ok() && t.settled());
        assert_eq!(t.ok, 2);
        let mut sum = t;
        sum.add(&Tally {
            missing: 2,
            ..Tally::default()
        });
        assert_eq!((sum.ok, sum.missing), (2, 2));
        assert!(!sum.all_ok());
        // Not an object: everything is missing.
        assert_eq!(tally(&added, &serde_json::Value::Null).missing, 5);
    }

    #[test]
    fn run_counts() {
        let expected: Vec<(String, usize)> = vec![
            ("A".into(), 0),
            ("B".into(), 1),
            ("C".into(), 0),
            ("D".into(), 1),
        ];
        let started = vec![
            vec!["A".into(), "A".into(), "rt-probe".into(), "B".into()],
            vec!["D".into()],
        ];
        let r = count_runs(&expected, &started);
        assert_eq!(
            r,
            Runs {
                started: 4,
                duplicated: 1,
                never: 1,
                wrong_agent: 1
            }
        );
    }

    #[test]
    fn proc_figures() {
        // Fields 14 and 15 are 250 and 50; the name holds a space and a parenthesis.
        let stat = "4242 (elves (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 \
                    9 0 12345 100000000 2500 18446744073709551615";
        assert_eq!(proc_stat_cpu_ticks(stat), Some(300));
        assert_eq!(proc_stat_cpu_ticks("garbage"), None);
        assert_eq!(proc_stat_cpu_ticks("1 (x) S 1 2"), None);
        let stat = "cpu  100 5 50 9000 40 3 7 2 0 0\ncpu0 50 2 25 4500 20 1 3 1 0 0\nintr 1\n";
        assert_eq!(machine_busy_ticks(stat), Some(100 + 5 + 50 + 3 + 7 + 2));
        // Older kernels without steal.
        assert_eq!(
            machine_busy_ticks("cpu  1 2 3 4 5 6 7\n"),
            Some(1 + 2 + 3 + 6 + 7)
        );
        assert_eq!(machine_busy_ticks("cpu  1 2 x\n"), None);
        assert_eq!(machine_busy_ticks("intr 5\n"), None);
        let status =
            "Name:\telves\nVmPeak:\t  200000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(proc_status_kb(status, "VmHWM"), Some(51_234));
        assert_eq!(proc_status_kb(status, "VmRSS"), Some(40_000));
        assert_eq!(proc_status_kb(status, "VmSwap"), None);
    }
}
