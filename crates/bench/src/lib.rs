//! The pure parts of `elves-bench`: percentiles, summaries, the markdown rows and the
//! time-of-day arithmetic used to line the agent's log up with the client's clock.
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
}
