//! Quartz rules: the parser and the next-fire search.
//!
//! The parser accepts the documented Quartz grammar only (see the crate documentation) and
//! builds the same value sets and flags as Quartz 2.3.2's `CronExpression`. The search
//! ([`Rule::next_after`]) follows `CronExpression.getTimeAfter` step by step over a model of
//! Java's lenient `GregorianCalendar` ([`JavaCalendar`]), because Quartz's answers, including
//! its daylight-saving behaviour and the corners of `W`, `L` and `#`, are a property of that
//! exact walk and not of a simpler "matching wall-clock times" definition.

use jiff::tz::TimeZone;

use crate::calendar::{CalField, JavaCalendar, days_in_month};
use crate::{Error, MAX_YEAR, MIN_YEAR};

use CalField::{DayOfMonth as DAY, HourOfDay as HOUR, Minute as MINUTE, Month as MONTH};
use CalField::{Millisecond as MILLI, Second as SECOND, Year as YEAR};

/// Upper bound on search steps; a real search needs a few thousand at most (a rule that
/// never fires walks month by month to [`MAX_YEAR`]).
const MAX_STEPS: usize = 1_000_000;

/// A sorted set of small integers (`base ..= base + 255`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Set {
    base: i64,
    bits: [u64; 4],
}

impl Set {
    fn new(base: i64) -> Set {
        Set { base, bits: [0; 4] }
    }

    fn insert(&mut self, v: i64) {
        let i = (v - self.base) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
    }

    fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// The smallest element `>= v`, like Java's `tailSet(v).first()`.
    pub(crate) fn ceil(&self, v: i64) -> Option<i64> {
        let from = (v - self.base).max(0);
        if from >= 256 {
            return None;
        }
        let from = from as usize;
        let mut word = from / 64;
        let mut w = self.bits[word] & (!0u64 << (from % 64));
        loop {
            if w != 0 {
                return Some(self.base + (word * 64) as i64 + i64::from(w.trailing_zeros()));
            }
            word += 1;
            if word == 4 {
                return None;
            }
            w = self.bits[word];
        }
    }

    /// The smallest element. The parser never builds an empty set that the search reads.
    pub(crate) fn first(&self) -> i64 {
        self.ceil(self.base).unwrap_or(self.base)
    }
}

/// How the day is chosen: by day of month (day-of-week is `?`) or by day of week.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Days {
    OfMonth {
        days: Set,
        /// `L`, `L-n`, `LW`, `L-nW`.
        last: bool,
        /// The `n` of `L-n`.
        offset: i64,
        /// `W`: the weekday nearest to the day (or to the last day).
        nearest_weekday: bool,
    },
    OfWeek {
        /// 1 = Sunday … 7 = Saturday.
        days: Set,
        /// `nL`: the last such weekday of the month.
        last: bool,
        /// `n#k`: the k-th such weekday of the month (0 = not used).
        nth: i64,
    },
}

/// A parsed Quartz rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    seconds: Set,
    minutes: Set,
    hours: Set,
    days: Days,
    months: Set,
    years: Set,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

impl Field {
    const ALL: [Field; 7] = [
        Field::Second,
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
        Field::Year,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
            Field::Year => "year",
        }
    }

    fn bounds(self) -> (i64, i64) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (1, 7),
            Field::Year => (MIN_YEAR, MAX_YEAR),
        }
    }

    /// The largest step Quartz allows after `*` or a single value (`*/n`, `a/n`).
    fn max_step(self) -> i64 {
        match self {
            Field::Second | Field::Minute => 59,
            Field::Hour => 23,
            Field::DayOfMonth => 31,
            Field::Month => 12,
            Field::DayOfWeek => 7,
            Field::Year => i64::from(i32::MAX),
        }
    }

    /// The modulus of a range whose end is below its start (`22-2`, `FRI-MON`), and whether
    /// the field counts from 1.
    fn wrap(self) -> Option<(i64, bool)> {
        match self {
            Field::Second | Field::Minute => Some((60, false)),
            Field::Hour => Some((24, false)),
            Field::DayOfMonth => Some((31, true)),
            Field::Month => Some((12, true)),
            Field::DayOfWeek => Some((7, true)),
            Field::Year => None,
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Month => &[
                "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
            ],
            Field::DayOfWeek => &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
            _ => &[],
        }
    }

    fn err(self, what: impl std::fmt::Display) -> Error {
        Error::invalid(format!("{} field: {what}", self.name()))
    }
}

/// What the day fields said, before they are combined.
enum DaySpec {
    NoSpec,
    Month {
        days: Set,
        last: bool,
        offset: i64,
        nearest_weekday: bool,
    },
    Week {
        days: Set,
        last: bool,
        nth: i64,
    },
}

impl Rule {
    pub(crate) fn parse(text: &str) -> Result<Rule, Error> {
        let upper = text.to_ascii_uppercase();
        let parts: Vec<&str> = upper.split_whitespace().collect();
        if parts.len() != 6 && parts.len() != 7 {
            return Err(Error::invalid(format!(
                "expected 6 or 7 fields (sec min hour day-of-month month day-of-week [year]), found {}",
                parts.len()
            )));
        }
        let mut sets = [Set::new(0); 7];
        let mut dom = DaySpec::NoSpec;
        let mut dow = DaySpec::NoSpec;
        for (i, field) in Field::ALL.iter().copied().enumerate() {
            let part = parts.get(i).copied().unwrap_or("*");
            match field {
                Field::DayOfMonth => dom = parse_day_of_month(part)?,
                Field::DayOfWeek => dow = parse_day_of_week(part)?,
                _ => sets[i] = parse_plain(field, part)?,
            }
        }
        let days = match (dom, dow) {
            (
                DaySpec::Month {
                    days,
                    last,
                    offset,
                    nearest_weekday,
                },
                DaySpec::NoSpec,
            ) => Days::OfMonth {
                days,
                last,
                offset,
                nearest_weekday,
            },
            (DaySpec::NoSpec, DaySpec::Week { days, last, nth }) => {
                Days::OfWeek { days, last, nth }
            }
            _ => {
                return Err(Error::invalid(
                    "exactly one of day-of-month and day-of-week must be '?'",
                ));
            }
        };
        Ok(Rule {
            seconds: sets[0],
            minutes: sets[1],
            hours: sets[2],
            days,
            months: sets[4],
            years: sets[6],
        })
    }
}

/// A decimal number of at most nine digits.
fn number(field: Field, s: &str) -> Result<i64, Error> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(field.err(format_args!("'{s}' is not a number")));
    }
    Ok(s.parse().unwrap_or(0))
}

/// A number or, in the month and day-of-week fields, a three-letter name. Returns the value
/// and whether it was a name.
fn value(field: Field, s: &str) -> Result<(i64, bool), Error> {
    if let Some(i) = field.names().iter().position(|n| *n == s) {
        return Ok((i as i64 + 1, true));
    }
    if !field.names().is_empty() && s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()) {
        return Err(field.err(format_args!("unknown name '{s}'")));
    }
    Ok((number(field, s)?, false))
}

fn check_bounds(field: Field, v: i64) -> Result<(), Error> {
    let (lo, hi) = field.bounds();
    if v < lo || v > hi {
        return Err(field.err(format_args!("{v} is out of range {lo}-{hi}")));
    }
    Ok(())
}

/// A comma-separated list of `*`, `*/n`, `a`, `a-b`, `a/n`, `a-b/n` (names allowed for `a`
/// and `a-b` in the month and day-of-week fields).
fn parse_plain(field: Field, text: &str) -> Result<Set, Error> {
    let mut set = Set::new(if field == Field::Year { MIN_YEAR } else { 0 });
    for item in text.split(',') {
        parse_item(field, item, &mut set)?;
    }
    Ok(set)
}

fn parse_item(field: Field, item: &str, set: &mut Set) -> Result<(), Error> {
    let (lo, hi) = field.bounds();
    if item.is_empty() {
        return Err(field.err("empty list item"));
    }
    if item == "?" {
        return Err(field.err("'?' is only allowed alone, in day-of-month or day-of-week"));
    }
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => {
            let step = number(field, step)?;
            if step == 0 {
                return Err(field.err("a step must be at least 1"));
            }
            (range, Some(step))
        }
        None => (item, None),
    };
    if range == "*" {
        let step = step.unwrap_or(1);
        if step > field.max_step() {
            return Err(field.err(format_args!(
                "step {step} is larger than {}",
                field.max_step()
            )));
        }
        add_range(field, set, lo, hi, step);
        return Ok(());
    }
    match range.split_once('-') {
        Some((a, b)) => {
            let (a, a_name) = value(field, a)?;
            let (b, b_name) = value(field, b)?;
            if a_name != b_name {
                return Err(field.err(format_args!("'{range}' mixes a name and a number")));
            }
            if a_name && step.is_some() {
                return Err(field.err(format_args!(
                    "a step after a range of names ('{item}') is not supported"
                )));
            }
            check_bounds(field, a)?;
            // As in Quartz, the end of a range may also be 0, which wraps (`5-0` days =
            // 5-31, `6-0` days of the week = FRI-SAT).
            if b != 0 || field == Field::Year {
                check_bounds(field, b)?;
            }
            if b < a && field.wrap().is_none() {
                return Err(field.err(format_args!("range {a}-{b} ends before it starts")));
            }
            add_range(field, set, a, b, step.unwrap_or(1));
        }
        None => {
            let (a, is_name) = value(field, range)?;
            check_bounds(field, a)?;
            match step {
                None => set.insert(a),
                Some(_) if is_name => {
                    return Err(field.err(format_args!(
                        "a step after a name ('{item}') is not supported"
                    )));
                }
                Some(step) => {
                    if step > field.max_step() {
                        return Err(field.err(format_args!(
                            "step {step} is larger than {}",
                            field.max_step()
                        )));
                    }
                    add_range(field, set, a, hi, step);
                }
            }
        }
    }
    Ok(())
}

/// Adds `start, start+step, … <= stop`; a range whose stop is below its start wraps around
/// the field, exactly as Quartz's `addToSet` does (`50-10/5` seconds = 50,55,0,5,10).
fn add_range(field: Field, set: &mut Set, start: i64, stop: i64, step: i64) {
    let wrap = if stop < start { field.wrap() } else { None };
    let stop = stop + wrap.map_or(0, |(max, _)| max);
    let mut i = start;
    while i <= stop {
        let v = match wrap {
            Some((max, one_based)) => {
                let r = i % max;
                if r == 0 && one_based { max } else { r }
            }
            None => i,
        };
        set.insert(v);
        i += step;
    }
}

fn parse_day_of_month(text: &str) -> Result<DaySpec, Error> {
    let field = Field::DayOfMonth;
    if text == "?" {
        return Ok(DaySpec::NoSpec);
    }
    let special = |last, offset, nearest_weekday, days| DaySpec::Month {
        days,
        last,
        offset,
        nearest_weekday,
    };
    if let Some(rest) = text.strip_prefix('L') {
        let (rest, nearest) = match rest.strip_suffix('W') {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let offset = match rest {
            "" => 0,
            _ => match rest.strip_prefix('-') {
                Some(n) => number(field, n)?,
                None => {
                    return Err(field.err(format_args!(
                        "'{text}' is not L, LW, L-n or L-nW (and L cannot be in a list)"
                    )));
                }
            },
        };
        if offset > 30 {
            return Err(field.err("the offset of L-n must be at most 30"));
        }
        if nearest && offset > 27 {
            // Quartz loops forever once L-n falls before the 1st of February.
            return Err(field.err("the offset of L-nW must be at most 27"));
        }
        return Ok(special(true, offset, nearest, Set::new(0)));
    }
    if text.contains('L') {
        return Err(field.err("L must stand alone (L, LW, L-n or L-nW)"));
    }
    if let Some(day) = text.strip_suffix('W') {
        let day = number(field, day).map_err(|_| {
            field.err(format_args!(
                "W must follow a single day of the month, as in 15W, not '{text}'"
            ))
        })?;
        check_bounds(field, day)?;
        let mut days = Set::new(0);
        days.insert(day);
        return Ok(special(false, 0, true, days));
    }
    if text.contains('W') {
        return Err(field.err("W must follow a single day of the month, as in 15W"));
    }
    Ok(special(false, 0, false, parse_plain(field, text)?))
}

fn parse_day_of_week(text: &str) -> Result<DaySpec, Error> {
    let field = Field::DayOfWeek;
    if text == "?" {
        return Ok(DaySpec::NoSpec);
    }
    let single = |v| {
        let mut days = Set::new(0);
        days.insert(v);
        days
    };
    if text == "L" {
        // Alone, L is simply Saturday.
        return Ok(DaySpec::Week {
            days: single(7),
            last: false,
            nth: 0,
        });
    }
    if text.contains(',') && (text.contains('L') || text.contains('#')) {
        return Err(field.err("L and # cannot be combined with other values"));
    }
    if let Some((day, nth)) = text.split_once('#') {
        let (day, _) = value(field, day)?;
        check_bounds(field, day)?;
        let nth = number(field, nth)?;
        if !(1..=5).contains(&nth) {
            return Err(field.err("the number after '#' must be 1 to 5"));
        }
        return Ok(DaySpec::Week {
            days: single(day),
            last: false,
            nth,
        });
    }
    if let Some(day) = text.strip_suffix('L') {
        let (day, _) = value(field, day)?;
        check_bounds(field, day)?;
        return Ok(DaySpec::Week {
            days: single(day),
            last: true,
            nth: 0,
        });
    }
    let days = parse_plain(field, text)?;
    debug_assert!(!days.is_empty());
    Ok(DaySpec::Week {
        days,
        last: false,
        nth: 0,
    })
}

impl Rule {
    /// Quartz's `getTimeAfter`: the first fire time strictly after `after_ms` (a whole
    /// second, Unix milliseconds) in `tz`, or `None` when there is none up to [`MAX_YEAR`].
    pub(crate) fn next_after(&self, after_ms: i64, tz: &TimeZone) -> Option<i64> {
        let after_time = after_ms.checked_add(1000)?;
        let mut cl = JavaCalendar::at(tz, after_time);
        cl.set(MILLI, 0);
        for _ in 0..MAX_STEPS {
            match self.step(&mut cl, after_time, tz) {
                Step::Again => continue,
                Step::Done(t) => return t,
            }
        }
        None
    }

    /// One pass of Quartz's loop: either the calendar is moved and the pass starts again, or
    /// every field matches (or the search is over).
    fn step(&self, cl: &mut JavaCalendar<'_>, after_time: i64, tz: &TimeZone) -> Step {
        if cl.get(YEAR) > 2999 {
            return Step::Done(None);
        }
        // Second.
        let mut sec = cl.get(SECOND);
        let mut min = cl.get(MINUTE);
        match self.seconds.ceil(sec) {
            Some(s) => sec = s,
            None => {
                sec = self.seconds.first();
                min += 1;
                cl.set(MINUTE, min);
            }
        }
        cl.set(SECOND, sec);

        // Minute.
        min = cl.get(MINUTE);
        let mut hr = cl.get(HOUR);
        let mut t = -1;
        match self.minutes.ceil(min) {
            Some(m) => {
                t = min;
                min = m;
            }
            None => {
                min = self.minutes.first();
                hr += 1;
            }
        }
        if min != t {
            cl.set(SECOND, 0);
            cl.set(MINUTE, min);
            set_hour(cl, hr);
            return Step::Again;
        }
        cl.set(MINUTE, min);

        // Hour.
        hr = cl.get(HOUR);
        let mut day = cl.get(DAY);
        t = -1;
        match self.hours.ceil(hr) {
            Some(h) => {
                t = hr;
                hr = h;
            }
            None => {
                hr = self.hours.first();
                day += 1;
            }
        }
        if hr != t {
            cl.set(SECOND, 0);
            cl.set(MINUTE, 0);
            cl.set(DAY, day);
            set_hour(cl, hr);
            return Step::Again;
        }
        cl.set(HOUR, hr);

        // Day.
        day = cl.get(DAY);
        let mut mon = cl.get(MONTH) + 1;
        t = -1;
        let mut tmon = mon;
        let clock = (sec, min, hr);
        match &self.days {
            Days::OfMonth {
                days,
                last,
                offset,
                nearest_weekday,
            } => {
                if *last {
                    t = day;
                    let year = cl.get(YEAR);
                    day = days_in_month(mon, year) - offset;
                    if !nearest_weekday {
                        if t > day {
                            mon += 1;
                            if mon > 12 {
                                mon = 1;
                                tmon = 3333;
                                cl.add_years(1);
                            }
                            day = 1;
                        }
                    } else {
                        let (d, before) = nearest_weekday_of(tz, year, mon, day, clock, after_time);
                        day = d;
                        if before {
                            day = 1;
                            mon += 1;
                        }
                    }
                } else if *nearest_weekday {
                    t = day;
                    day = days.first();
                    let year = cl.get(YEAR);
                    let (d, before) = nearest_weekday_of(tz, year, mon, day, clock, after_time);
                    day = d;
                    if before {
                        day = days.first();
                        mon += 1;
                    }
                } else if let Some(d) = days.ceil(day) {
                    t = day;
                    day = d;
                    if day > days_in_month(mon, cl.get(YEAR)) {
                        day = days.first();
                        mon += 1;
                    }
                } else {
                    day = days.first();
                    mon += 1;
                }
                if day != t || mon != tmon {
                    set_midnight(cl);
                    cl.set(DAY, day);
                    cl.set(MONTH, mon - 1);
                    return Step::Again;
                }
            }
            Days::OfWeek { days, last, nth } => {
                let cdow = cl.day_of_week();
                if *last {
                    let dow = days.first();
                    let mut add = days_forward(cdow, dow);
                    let last_day = days_in_month(mon, cl.get(YEAR));
                    if day + add > last_day {
                        set_midnight(cl);
                        cl.set(DAY, 1);
                        cl.set(MONTH, mon);
                        return Step::Again;
                    }
                    while day + add + 7 <= last_day {
                        add += 7;
                    }
                    day += add;
                    if add > 0 {
                        set_midnight(cl);
                        cl.set(DAY, day);
                        cl.set(MONTH, mon - 1);
                        return Step::Again;
                    }
                } else if *nth != 0 {
                    let dow = days.first();
                    let add = days_forward(cdow, dow);
                    let shifted = add > 0;
                    day += add;
                    let mut week = day / 7;
                    if day % 7 > 0 {
                        week += 1;
                    }
                    let add = (nth - week) * 7;
                    day += add;
                    if add < 0 || day > days_in_month(mon, cl.get(YEAR)) {
                        set_midnight(cl);
                        cl.set(DAY, 1);
                        cl.set(MONTH, mon);
                        return Step::Again;
                    } else if add > 0 || shifted {
                        set_midnight(cl);
                        cl.set(DAY, day);
                        cl.set(MONTH, mon - 1);
                        return Step::Again;
                    }
                } else {
                    let dow = days.ceil(cdow).unwrap_or_else(|| days.first());
                    let add = days_forward(cdow, dow);
                    let last_day = days_in_month(mon, cl.get(YEAR));
                    if day + add > last_day {
                        set_midnight(cl);
                        cl.set(DAY, 1);
                        cl.set(MONTH, mon);
                        return Step::Again;
                    } else if add > 0 {
                        set_midnight(cl);
                        cl.set(DAY, day + add);
                        cl.set(MONTH, mon - 1);
                        return Step::Again;
                    }
                }
            }
        }
        cl.set(DAY, day);

        // Month.
        mon = cl.get(MONTH) + 1;
        let mut year = cl.get(YEAR);
        t = -1;
        if year > MAX_YEAR {
            return Step::Done(None);
        }
        match self.months.ceil(mon) {
            Some(m) => {
                t = mon;
                mon = m;
            }
            None => {
                mon = self.months.first();
                year += 1;
            }
        }
        if mon != t {
            set_midnight(cl);
            cl.set(DAY, 1);
            cl.set(MONTH, mon - 1);
            cl.set(YEAR, year);
            return Step::Again;
        }
        cl.set(MONTH, mon - 1);

        // Year.
        year = cl.get(YEAR);
        let Some(y) = self.years.ceil(year) else {
            return Step::Done(None);
        };
        if y != year {
            year = y;
            set_midnight(cl);
            cl.set(DAY, 1);
            cl.set(MONTH, 0);
            cl.set(YEAR, year);
            return Step::Again;
        }
        cl.set(YEAR, year);
        Step::Done(cl.time())
    }
}

enum Step {
    Again,
    Done(Option<i64>),
}

/// Days from weekday `from` forward to weekday `to` (both 1–7), 0 when equal.
fn days_forward(from: i64, to: i64) -> i64 {
    if from < to {
        to - from
    } else if from > to {
        to + (7 - from)
    } else {
        0
    }
}

fn set_midnight(cl: &mut JavaCalendar<'_>) {
    cl.set(SECOND, 0);
    cl.set(MINUTE, 0);
    cl.set(HOUR, 0);
}

/// Quartz's `setCalendarHour`: when the hour does not exist (a gap), take the next one.
fn set_hour(cl: &mut JavaCalendar<'_>, hour: i64) {
    cl.set(HOUR, hour);
    if cl.get(HOUR) != hour && hour != 24 {
        cl.set(HOUR, hour + 1);
    }
}

/// The `W` rule for `day` of `mon`/`year`: the weekday nearest to it without leaving the
/// month. Returns that day and whether it falls, at `clock` (second, minute, hour), before
/// `after_time`: then Quartz moves on to the next month.
///
/// Quartz builds this date on a second calendar that starts at the current time; only its
/// milliseconds survive, which we take as zero (see the crate documentation).
fn nearest_weekday_of(
    tz: &TimeZone,
    year: i64,
    mon: i64,
    day: i64,
    (sec, min, hr): (i64, i64, i64),
    after_time: i64,
) -> (i64, bool) {
    let mut tcal = JavaCalendar::from_fields(tz, [year, mon - 1, day, 0, 0, 0, 0]);
    let last_day = days_in_month(mon, year);
    let dow = tcal.day_of_week();
    let day = match dow {
        7 if day == 1 => day + 2,
        7 => day - 1,
        1 if day == last_day => day - 2,
        1 => day + 1,
        _ => day,
    };
    tcal.set(SECOND, sec);
    tcal.set(MINUTE, min);
    tcal.set(HOUR, hr);
    tcal.set(DAY, day);
    tcal.set(MONTH, mon - 1);
    let before = tcal.time().is_some_and(|n| n < after_time);
    (day, before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ceil_and_first() {
        let mut s = Set::new(MIN_YEAR);
        s.insert(1970);
        s.insert(2100);
        s.insert(2199);
        assert_eq!(s.first(), 1970);
        assert_eq!(s.ceil(1971), Some(2100));
        assert_eq!(s.ceil(2199), Some(2199));
        assert_eq!(s.ceil(2200), None);
        assert_eq!(s.ceil(5000), None);
        let mut s = Set::new(0);
        s.insert(63);
        s.insert(64);
        assert_eq!(s.ceil(0), Some(63));
        assert_eq!(s.ceil(64), Some(64));
        assert_eq!(s.ceil(65), None);
    }

    fn values(s: &Set) -> Vec<i64> {
        (0..256)
            .filter_map(|i| s.ceil(s.base + i).filter(|v| *v == s.base + i))
            .collect()
    }

    #[test]
    fn wrapping_ranges_follow_quartz_add_to_set() {
        let plain = |f, t| values(&parse_plain(f, t).unwrap());
        assert_eq!(plain(Field::Second, "50-10/5"), vec![0, 5, 10, 50, 55]);
        assert_eq!(plain(Field::Hour, "22-2"), vec![0, 1, 2, 22, 23]);
        assert_eq!(plain(Field::DayOfMonth, "25-5/3"), vec![3, 25, 28, 31]);
        assert_eq!(plain(Field::Month, "NOV-FEB"), vec![1, 2, 11, 12]);
        assert_eq!(plain(Field::DayOfWeek, "FRI-MON"), vec![1, 2, 6, 7]);
        assert_eq!(plain(Field::Second, "0-59/100"), vec![0]);
        assert_eq!(plain(Field::Month, "7/6"), vec![7]);
    }
}
