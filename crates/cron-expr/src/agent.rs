//! The agent's cron dialect (`agent-protocol.md` §7): robfig/cron v1 syntax.
//!
//! `sec min hour dom month [dow]` (day-of-week `*` when omitted), each field a comma list of
//! `*`, `?` (the same as `*`), `a`, `a-b`, `*/n`, `a/n` (= `a-max/n`), `a-b/n`; months
//! `1-12` or `JAN`…`DEC`, days of the week `0-6` or `SUN`…`SAT` (0 = Sunday), names in any
//! case. When both day fields are restricted a day matches either of them; when one of them
//! starts with `*` or `?` a day must match both. Descriptors: `@yearly`/`@annually`,
//! `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`, and `@every DURATION` with a Go
//! duration (`10s`, `1m30s`, `1.5h`).

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::Error;
use crate::calendar::{civil_from_days, days_from_civil, weekday_sunday_one};

/// How far ahead a search looks: long enough for a rule that fires on 29 February only
/// (eight years from 2096 to 2104).
const HORIZON_SECS: i64 = 10 * 366 * 86_400;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    Fields(Fields),
    /// `@every`: whole seconds, at least 1.
    Every(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fields {
    seconds: u64,
    minutes: u64,
    hours: u64,
    dom: u64,
    months: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

#[derive(Clone, Copy)]
struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECONDS: Bounds = Bounds {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTES: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "", "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const DOW: Bounds = Bounds {
    name: "day-of-week",
    min: 0,
    max: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

impl Rule {
    pub(crate) fn parse(text: &str) -> Result<Rule, Error> {
        let text = text.trim();
        if let Some(desc) = text.strip_prefix('@') {
            let lower = desc.to_ascii_lowercase();
            let fields = match lower.as_str() {
                "yearly" | "annually" => "0 0 0 1 1 *",
                "monthly" => "0 0 0 1 * *",
                "weekly" => "0 0 0 * * 0",
                "daily" | "midnight" => "0 0 0 * * *",
                "hourly" => "0 0 * * * *",
                _ => match lower.strip_prefix("every") {
                    Some(d) if d.starts_with(char::is_whitespace) => {
                        return Ok(Rule::Every(every_seconds(d.trim())?));
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "unknown descriptor '@{desc}' (use @every, @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)"
                        )));
                    }
                },
            };
            return Rule::parse(fields);
        }
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 && parts.len() != 6 {
            return Err(Error::invalid(format!(
                "expected 5 or 6 fields (sec min hour day-of-month month [day-of-week]), found {}",
                parts.len()
            )));
        }
        let field = |i: usize, b: Bounds| parse_field(parts.get(i).copied().unwrap_or("*"), b);
        let (seconds, _) = field(0, SECONDS)?;
        let (minutes, _) = field(1, MINUTES)?;
        let (hours, _) = field(2, HOURS)?;
        let (dom, dom_star) = field(3, DOM)?;
        let (months, _) = field(4, MONTHS)?;
        let (dow, dow_star) = field(5, DOW)?;
        Ok(Rule::Fields(Fields {
            seconds,
            minutes,
            hours,
            dom,
            months,
            dow,
            dom_star,
            dow_star,
        }))
    }

    /// The first fire strictly after `after` (whole seconds).
    pub(crate) fn next_after(&self, after: i64, tz: &TimeZone) -> Option<i64> {
        match self {
            Rule::Every(secs) => after.checked_add(*secs),
            Rule::Fields(f) => f.next_after(after, tz),
        }
    }

    /// Whether some wall-clock time matches at all.
    pub(crate) fn can_fire(&self) -> bool {
        match self {
            Rule::Every(_) => true,
            Rule::Fields(f) => {
                let from = days_from_civil(2000, 1, 1) * 86_400;
                f.next_civil(from, from + HORIZON_SECS).is_some()
            }
        }
    }
}

/// A bit set of the field's values, and whether the (last) item started with `*` or `?`.
fn parse_field(text: &str, b: Bounds) -> Result<(u64, bool), Error> {
    let err = |what: String| Error::invalid(format!("{} field: {what}", b.name));
    let mut bits = 0u64;
    let mut star = false;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let single = !range.contains('-');
        let (mut start, mut end);
        if range == "*" || range == "?" {
            start = b.min;
            end = b.max;
            star = true;
        } else {
            let value = |s: &str| -> Result<u32, Error> {
                let upper = s.to_ascii_uppercase();
                if let Some(i) = b.names.iter().position(|n| !n.is_empty() && *n == upper) {
                    return Ok(i as u32);
                }
                if s.is_empty() || s.len() > 9 || !s.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(err(format!("'{s}' is not a number or a name")));
                }
                Ok(s.parse().unwrap_or(0))
            };
            match range.split_once('-') {
                Some((a, z)) => {
                    start = value(a)?;
                    end = value(z)?;
                }
                None => {
                    start = value(range)?;
                    end = start;
                }
            }
        }
        let step = match step {
            None => 1,
            Some(s) => {
                let n: u32 = s
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1 && s.bytes().all(|c| c.is_ascii_digit()))
                    .ok_or_else(|| err(format!("step '{s}' is not a number of at least 1")))?;
                if single && !star {
                    end = b.max;
                }
                n
            }
        };
        if start < b.min || end > b.max {
            return Err(err(format!("'{item}' is out of range {}-{}", b.min, b.max)));
        }
        if start > end {
            return Err(err(format!("range '{item}' ends before it starts")));
        }
        while start <= end {
            bits |= 1 << start;
            start += step;
        }
    }
    Ok((bits, star))
}

/// A Go duration (`300ms`, `1.5h`, `2h45m`) in whole seconds, as robfig's `Every` uses it:
/// the fraction of a second is dropped and anything shorter than a second becomes one second.
fn every_seconds(text: &str) -> Result<i64, Error> {
    let err = |why: &str| Error::invalid(format!("@every: '{text}' {why}"));
    let mut s = text;
    if s.starts_with('-') {
        return Err(err("is negative"));
    }
    s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(1);
    }
    if s.is_empty() {
        return Err(err("is not a duration such as 10s, 1m30s or 1.5h"));
    }
    let mut nanos: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int, rest) = s.split_at(int_len);
        let (frac, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(err("is not a duration such as 10s, 1m30s or 1.5h"));
        }
        let unit_len = rest
            .bytes()
            .take_while(|c| !c.is_ascii_digit() && *c != b'.')
            .count();
        let (unit, rest) = rest.split_at(unit_len);
        let unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("lacks a unit (ns, us, ms, s, m, h)")),
            _ => return Err(err("has an unknown unit")),
        };
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| err("is too long"))?
        };
        let mut part = int.checked_mul(unit).ok_or_else(|| err("is too long"))?;
        let mut scale = unit;
        for digit in frac.bytes().take(20) {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        nanos = nanos.checked_add(part).ok_or_else(|| err("is too long"))?;
        if nanos > i64::MAX as u128 {
            return Err(err("is too long"));
        }
        s = rest;
    }
    Ok(((nanos / 1_000_000_000) as i64).max(1))
}

impl Fields {
    fn day_matches(&self, days: i64, month: u32, day: u32) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let dom = self.dom & (1 << day) != 0;
        let dow = self.dow & (1 << (weekday_sunday_one(days) - 1)) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first matching second of the day at or after `from` (seconds into the day).
    fn time_in_day(&self, from: i64) -> Option<i64> {
        let ceil = |bits: u64, v: i64| -> Option<i64> {
            if v >= 64 {
                return None;
            }
            let w = bits & (!0u64 << v);
            (w != 0).then(|| i64::from(w.trailing_zeros()))
        };
        let (h0, m0, s0) = (from / 3600, from / 60 % 60, from % 60);
        let mut h = ceil(self.hours, h0)?;
        loop {
            let m_from = if h == h0 { m0 } else { 0 };
            let mut m = ceil(self.minutes, m_from);
            while let Some(mm) = m {
                let s_from = if h == h0 && mm == m0 { s0 } else { 0 };
                if let Some(s) = ceil(self.seconds, s_from) {
                    return Some(h * 3600 + mm * 60 + s);
                }
                m = ceil(self.minutes, mm + 1);
            }
            h = ceil(self.hours, h + 1)?;
        }
    }

    /// The first matching wall-clock second in `[from, until)` (seconds since 1970-01-01 on
    /// the wall clock).
    pub(crate) fn next_civil(&self, from: i64, until: i64) -> Option<i64> {
        let mut days = from.div_euclid(86_400);
        let mut tod = from.rem_euclid(86_400);
        while days * 86_400 < until {
            let (_, month, day) = civil_from_days(days);
            if self.day_matches(days, month as u32, day as u32)
                && let Some(s) = self.time_in_day(tod)
            {
                let c = days * 86_400 + s;
                return (c < until).then_some(c);
            }
            days += 1;
            tod = 0;
        }
        None
    }

    /// Every instant whose wall-clock time in `tz` matches fires: a time skipped by a
    /// daylight-saving gap never fires, a time repeated by a fold fires twice.
    fn next_after(&self, after: i64, tz: &TimeZone) -> Option<i64> {
        let mut t = after.checked_add(1)?;
        let end = t + HORIZON_SECS;
        while t < end {
            let ts = Timestamp::from_second(t).ok()?;
            let offset = i64::from(tz.to_offset(ts).seconds());
            let segment_end = tz
                .following(ts)
                .next()
                .map_or(end, |tr| tr.timestamp().as_second())
                .min(end);
            if let Some(c) = self.next_civil(t + offset, segment_end + offset) {
                return Some(c - offset);
            }
            t = segment_end;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            ("10s", 10),
            ("1m30s", 90),
            ("1.5h", 5400),
            ("2h45m", 9900),
            ("300ms", 1),
            ("1500ms", 1),
            ("2.9s", 2),
            ("0", 1),
            ("1h0m0.5s", 3600),
            ("90us", 1),
        ];
        for (text, secs) in cases {
            assert_eq!(every_seconds(text).ok(), Some(secs), "{text}");
        }
        for bad in ["", "10", "s", "1x", "-5s", "1.s.", "."] {
            assert!(every_seconds(bad).is_err(), "{bad}");
        }
    }
}
