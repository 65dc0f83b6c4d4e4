//! `elves cron next RULE [--from RFC3339] [--count N] [--tz ZONE]` (operations.md): the next
//! fire times of a Quartz rule, as the center will compute them.

use anyhow::{Context, anyhow};
use elves_cron_expr::Schedule;
use elves_cron_expr::jiff::Timestamp;
use elves_cron_expr::jiff::tz::TimeZone;

#[derive(clap::Args, Debug)]
pub struct CronNextArgs {
    /// A Quartz rule: `sec min hour day-of-month month day-of-week [year]`, e.g. "0 0/15 * * * ?".
    pub rule: String,
    /// Print fire times strictly after this instant (RFC 3339, e.g. 2024-10-26T12:00:00Z);
    /// default: now.
    #[arg(long)]
    pub from: Option<String>,
    /// How many fire times to print.
    #[arg(long, default_value_t = 5)]
    pub count: usize,
    /// IANA time zone the rule is read in, e.g. Europe/Berlin; default: this machine's zone.
    #[arg(long)]
    pub tz: Option<String>,
}

pub fn run(args: CronNextArgs) -> anyhow::Result<()> {
    let from = match &args.from {
        Some(s) => s
            .parse::<Timestamp>()
            .map_err(|e| anyhow!("--from {s:?} is not an RFC 3339 instant: {e}"))?,
        None => Timestamp::now(),
    };
    let tz = match &args.tz {
        Some(name) => TimeZone::get(name).with_context(|| format!("--tz {name:?}"))?,
        None => TimeZone::system(),
    };
    for line in next_lines(&args.rule, from, args.count, &tz)? {
        println!("{line}");
    }
    Ok(())
}

/// The lines `elves cron next` prints: up to `count` fire times of `rule` strictly after
/// `from`, as RFC 3339 with the offset of `tz` at that instant. Fewer lines when the rule
/// stops firing (its last year).
pub fn next_lines(
    rule: &str,
    from: Timestamp,
    count: usize,
    tz: &TimeZone,
) -> anyhow::Result<Vec<String>> {
    let schedule =
        Schedule::parse_quartz(rule).map_err(|e| anyhow!("invalid rule {rule:?}: {e}"))?;
    Ok(schedule
        .fires_after(from, tz)
        .take(count)
        .map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(rule: &str, from: &str, count: usize, tz: &str) -> anyhow::Result<Vec<String>> {
        next_lines(
            rule,
            from.parse().unwrap(),
            count,
            &TimeZone::get(tz).unwrap(),
        )
    }

    #[test]
    fn prints_fire_times_with_the_zone_offset() {
        assert_eq!(
            lines("0 0/15 * * * ?", "2024-10-26T23:40:00Z", 3, "Europe/Berlin").unwrap(),
            [
                "2024-10-27T01:45:00+02:00",
                "2024-10-27T02:00:00+01:00",
                "2024-10-27T02:15:00+01:00",
            ]
        );
        assert_eq!(
            lines("0 0 12 * * ?", "2024-01-01T12:00:00Z", 2, "UTC").unwrap(),
            ["2024-01-02T12:00:00+00:00", "2024-01-03T12:00:00+00:00"]
        );
    }

    #[test]
    fn stops_when_the_rule_stops_firing() {
        assert_eq!(
            lines("0 0 0 1 1 ? 2030", "2024-01-01T00:00:00Z", 5, "UTC").unwrap(),
            ["2030-01-01T00:00:00+00:00"]
        );
    }

    #[test]
    fn an_invalid_rule_gives_one_line_with_the_reason() {
        let e = lines("*/5 * * * * *", "2024-01-01T00:00:00Z", 1, "UTC").unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "invalid rule \"*/5 * * * * *\": exactly one of day-of-month and day-of-week must be '?'"
        );
        let e = lines("0 0 0 30 2 ?", "2024-01-01T00:00:00Z", 1, "UTC").unwrap_err();
        assert!(format!("{e:#}").contains("never fires"), "{e:#}");
    }
}
