//! Layer 0 of Elves: cron rules — Quartz rules for the center and the agent's own dialect.
//!
//! # Quartz rules
//!
//! [`Schedule::parse_quartz`] reads a rule of six or seven fields separated by spaces,
//! `sec min hour day-of-month month day-of-week [year]` (`api-v2.md`, "Crons"):
//!
//! | field | values | forms |
//! |---|---|---|
//! | second, minute | 0–59 | `*` `a` `a-b` `*/n` `a/n` `a-b/n`, comma lists |
//! | hour | 0–23 | the same |
//! | day-of-month | 1–31 | the same, or `?`, or alone: `L`, `L-n` (n ≤ 30), `LW`, `L-nW` (n ≤ 27), `nW` |
//! | month | 1–12, `JAN`–`DEC` | the same (no step after a name) |
//! | day-of-week | 1–7 = `SUN`–`SAT` | the same, or `?`, or alone: `L` (= Saturday), `nL`, `n#k` (k 1–5) |
//! | year (optional) | 1970–2199 | the same |
//!
//! Names and letters may be in any case. Exactly one of day-of-month and day-of-week must be
//! `?`. A range whose end is below its start wraps around (`22-2` hours, `FRI-MON`,
//! `NOV-FEB`; the end may also be 0: day-of-month `5-0` is 5–31), and `a/n` means `a`,
//! `a+n`, … up to the field's maximum, both exactly as Quartz builds them. A step after `*`
//! or a single value may not exceed the field's size (59, 23, 31, 12, 7), as in Quartz;
//! after a range any step of at least 1 is allowed (`0-59/100` is just 0).
//!
//! [`Schedule::next_after`] then gives the same instants as Quartz 2.3.2's
//! `CronExpression.getNextValidTimeAfter` with `setTimeZone`: the first fire strictly after
//! the given instant, at whole seconds. It is computed by the same walk as Quartz's
//! `getTimeAfter`, over a model of Java's lenient `GregorianCalendar` in that zone (a wall
//! time in a gap is read with the offset before the transition, a wall time in a fold with
//! the offset after it, and every field change re-reads the wall time). We wrote this walk
//! instead of building on croner because croner differs from Quartz on `L-n`, on rules with
//! both day fields, and on daylight saving, and the walk is what decides Quartz's answers.
//! Its daylight-saving behaviour, as the oracle shows:
//!
//! * A wall-clock time that does not exist (spring forward) does not fire that day:
//!   `0 30 2 * * ?` in Europe/Berlin skips 31 March 2024. Rules that fire every few minutes
//!   continue after the gap (01:45 +01:00, then 03:00 +02:00).
//! * A wall-clock time that occurs twice (fall back) fires once, at its second occurrence:
//!   `0 30 2 * * ?` fires at 02:30 +01:00 on 27 October 2024, and `0 0/15 * * * ?` goes from
//!   01:45 +02:00 straight to 02:00 +01:00, so the first pass of 02:00–02:59 never fires.
//!   A search that starts inside the first pass also moves to the second one.
//!
//! This is checked against the real Quartz by `tests/quartz_oracle.rs`, which runs the
//! Debian package `libquartz2-java` on a hand-written corpus of corner cases, the rules most
//! sensitive to daylight saving around every transition of ten zones (2015–2027 and
//! 2038–2040), and five thousand random rules, and requires zero mismatches.
//!
//! ## Deliberate differences from Quartz
//!
//! Elves is stricter than Quartz where Quartz accepts a rule that it then mishandles; every
//! rule accepted here is accepted by Quartz with identical fire times (up to the year limit
//! below). Rejected here, accepted by Quartz:
//!
//! * A rule that can never fire (`0 0 0 30 2 ?`, `0 0 0 29 2 ? 2100`,
//!   `0 0 0 ? 2 2#5 2026`): Quartz accepts it and then never fires. Here it is an
//!   [`ErrorKind::NeverFires`] error. Only the calendar counts: a rule whose fires all lie in
//!   the past (`0 0 0 1 1 ? 2020`) is accepted; callers compare with "now".
//! * `L-nW` with n from 28 to 30: once that day falls before the 1st (in February), Quartz's
//!   search loops forever.
//! * Characters Quartz silently ignores: anything after a valid value (`12X`, `JANUARY`,
//!   `1-15W`, `?X`, `6L2`), a step after a name (`MON-FRI/2`, `JAN/2`: Quartz drops the
//!   step), empty list items (`1,,2`), more than seven fields, `/5` without `*`, `L-W`.
//! * `W`, `L`, `#` or `?` inside a list (`1,15W`, `6#3,2`, `1,?`): Quartz applies the flag
//!   to the smallest value of the list. `L` in a field that does not take it (Quartz accepts
//!   `L` in the second field and then throws while computing).
//! * A step of 0 (Quartz reads `*/0` as `*`, and `a/0` and `a-b/0` as `a`).
//! * Values out of range that Quartz does not check: `0W`, `8#2`, and years outside
//!   1970–2199 (Quartz accepts any year and never fires past its own limit).
//!
//! One difference in results: Quartz stops searching after the year in which its JVM
//! started plus 100 (2126 for a JVM started in 2026); here the limit is the fixed year
//! [`MAX_YEAR`] (2199, the largest year Quartz documents), so results never depend on the
//! current date. The oracle test compares fires before Quartz's limit only.
//!
//! Fire times are whole seconds: the sub-second part of the start instant is ignored, as
//! Quartz does. (For `W`, Quartz compares a candidate that carries the milliseconds of the
//! current wall clock with the start instant; with a start at a whole second that never
//! changes the answer, and here those milliseconds are zero.)
//!
//! Time zones come from the IANA database compiled into this crate (jiff's
//! `tzdb-bundle-always`), not from the host's `/usr/share/zoneinfo`, so every machine gives
//! the same answers for the same build. Quartz uses the JDK's own copy; where the two
//! releases differ for a zone, so can the answers (the oracle's zones agree).
//!
//! # The agent's dialect
//!
//! [`Schedule::parse_agent`] reads the rules of the agent's `cron.json`
//! (`agent-protocol.md` §7): robfig/cron v1 syntax with five or six fields, seconds first,
//! `sec min hour day-of-month month [day-of-week]`, day-of-week `*` when omitted and `0–6`
//! = `SUN`–`SAT`, `?` the same as `*`, no `L`, `W`, `#` or year; and the descriptors
//! `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly` and
//! `@every DURATION` with a Go duration (`10s`, `1m30s`, `1.5h`). When both day fields are
//! restricted, a day matching either fires; when one starts with `*` or `?`, both must match.
//! Such a rule fires at every instant whose wall-clock time in the zone matches, so a time in
//! a spring-forward gap does not fire and a time in a fall-back fold fires twice. `@every D`
//! fires D after the start instant (truncated to the second) and then every D; a duration
//! under one second counts as one second, as robfig does (a negative one is rejected).
//! Descriptors may be in any case. A rule that can never fire is rejected here too (robfig
//! would accept it and never run it).
//!
//! This crate does no I/O apart from reading the name of the machine's zone when a caller
//! asks jiff for it, and depends on no runtime.

mod agent;
mod calendar;
mod quartz;
#[cfg(test)]
mod tests;

pub use jiff;
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The first year a Quartz year field may name.
pub const MIN_YEAR: i64 = 1970;
/// The last year a rule can fire in (and may name). See the crate documentation.
pub const MAX_YEAR: i64 = 2199;

/// Why a rule was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text is not a rule of the dialect (syntax, range, or field combination).
    Invalid,
    /// The rule is well formed but no date of the calendar matches it.
    NeverFires,
}

/// A rejected rule, with a one-line reason for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Error {
    kind: ErrorKind,
    reason: String,
}

impl Error {
    pub(crate) fn invalid(reason: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Invalid,
            reason: reason.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// A parsed cron rule of either dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Quartz(quartz::Rule),
    Agent(agent::Rule),
}

impl Schedule {
    /// Parses and validates a Quartz rule (see the crate documentation).
    ///
    /// ```
    /// use elves_cron_expr::{ErrorKind, Schedule};
    /// assert!(Schedule::parse_quartz("0 0/15 * * * ?").is_ok());
    /// let err = Schedule::parse_quartz("*/5 * * * * *").unwrap_err();
    /// assert_eq!(err.to_string(), "exactly one of day-of-month and day-of-week must be '?'");
    /// let err = Schedule::parse_quartz("0 0 0 30 2 ?").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NeverFires);
    /// ```
    pub fn parse_quartz(rule: &str) -> Result<Schedule, Error> {
        let parsed = quartz::Rule::parse(rule)?;
        // Quartz's own walk from the start of the range decides whether anything matches.
        if parsed
            .next_after(MIN_EPOCH_MS - 1000, &TimeZone::UTC)
            .is_none()
        {
            return Err(never_fires());
        }
        Ok(Schedule {
            kind: Kind::Quartz(parsed),
        })
    }

    /// Parses and validates a rule of the agent's dialect (see the crate documentation).
    ///
    /// ```
    /// use elves_cron_expr::Schedule;
    /// assert!(Schedule::parse_agent("*/15 * * * * *").is_ok());
    /// assert!(Schedule::parse_agent("@every 1m30s").is_ok());
    /// assert!(Schedule::parse_agent("0 0 12 * *").is_ok());
    /// ```
    pub fn parse_agent(rule: &str) -> Result<Schedule, Error> {
        let parsed = agent::Rule::parse(rule)?;
        if !parsed.can_fire() {
            return Err(never_fires());
        }
        Ok(Schedule {
            kind: Kind::Agent(parsed),
        })
    }

    /// The first fire strictly after `after`, in the zone `tz`, at a whole second; `None` when
    /// the rule does not fire again (its years are over, or [`MAX_YEAR`] is reached).
    ///
    /// ```
    /// use elves_cron_expr::{jiff::Timestamp, jiff::tz::TimeZone, Schedule};
    /// let s = Schedule::parse_quartz("0 30 2 * * ?").unwrap();
    /// let berlin = TimeZone::get("Europe/Berlin").unwrap();
    /// let after: Timestamp = "2024-10-26T12:00:00Z".parse().unwrap();
    /// // The repeated 02:30 fires once, at its second occurrence (+01:00).
    /// assert_eq!(
    ///     s.next_after(after, &berlin).unwrap().to_string(),
    ///     "2024-10-27T01:30:00Z"
    /// );
    /// ```
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let after_secs = after.as_millisecond().div_euclid(1000);
        let next = match &self.kind {
            Kind::Quartz(rule) => rule
                .next_after(after_secs.checked_mul(1000)?, tz)
                .map(|ms| ms.div_euclid(1000)),
            Kind::Agent(rule) => rule.next_after(after_secs, tz),
        }?;
        Timestamp::from_second(next).ok()
    }

    /// The fires after `after`, in order: `next_after` applied again and again.
    pub fn fires_after<'a>(
        &'a self,
        after: Timestamp,
        tz: &'a TimeZone,
    ) -> impl Iterator<Item = Timestamp> + 'a {
        std::iter::successors(self.next_after(after, tz), move |t| self.next_after(*t, tz))
    }
}

/// 1970-01-01T00:00:00Z in milliseconds.
const MIN_EPOCH_MS: i64 = 0;

fn never_fires() -> Error {
    Error {
        kind: ErrorKind::NeverFires,
        reason: "the rule never fires: no date of the calendar matches it".into(),
    }
}
