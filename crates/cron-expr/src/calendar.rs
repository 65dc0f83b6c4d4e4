//! Civil-date arithmetic and a model of `java.util.GregorianCalendar` in lenient mode.
//!
//! Quartz computes fire times by setting and reading the fields of a `GregorianCalendar`.
//! Its behaviour around daylight-saving transitions comes entirely from how that calendar
//! turns a set of wall-clock fields into an instant, so [`JavaCalendar`] reproduces exactly
//! that:
//!
//! * `set` only stores a field; the next read (`get`, `time`) recomputes the instant from all
//!   fields at once, normalising out-of-range values (day 32, month 12, hour 24, …) the way
//!   lenient Java does, and then recomputes every field from that instant.
//! * A wall-clock time that does not exist (in a gap) is read with the offset in force
//!   *before* the transition, so it lands after the gap (02:30 becomes 03:30 in Berlin).
//! * A wall-clock time that occurs twice (in a fold) is read with the offset in force
//!   *after* the transition: the second occurrence.
//! * Any `set`, even of the value a field already has, makes the next read recompute, so an
//!   instant in the first occurrence of a fold moves to the second occurrence.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

pub(crate) const DAY_MS: i64 = 86_400_000;

/// Days from 1970-01-01 to the given proleptic Gregorian date (month 1–12).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month 1–12, day)` of a day count from 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Day of the week of a day count from 1970-01-01, Java style: 1 = Sunday … 7 = Saturday.
pub(crate) fn weekday_sunday_one(days: i64) -> i64 {
    // 1970-01-01 was a Thursday (5).
    (days + 4).rem_euclid(7) + 1
}

pub(crate) fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Length of a month (1–12) of a year.
pub(crate) fn days_in_month(month: i64, year: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Indexes of the calendar fields Quartz uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CalField {
    Year = 0,
    /// Zero-based, as in Java.
    Month = 1,
    DayOfMonth = 2,
    HourOfDay = 3,
    Minute = 4,
    Second = 5,
    Millisecond = 6,
}

/// A lenient Gregorian calendar in one time zone (see the module documentation).
pub(crate) struct JavaCalendar<'a> {
    tz: &'a TimeZone,
    fields: [i64; 7],
    day_of_week: i64,
    millis: i64,
    dirty: bool,
    /// Set when an instant fell outside the supported range; every later read then reports
    /// the year 10000, which ends any search.
    overflow: bool,
}

impl<'a> JavaCalendar<'a> {
    /// A calendar showing the instant `millis` (Unix milliseconds).
    pub(crate) fn at(tz: &'a TimeZone, millis: i64) -> Self {
        let mut cal = JavaCalendar {
            tz,
            fields: [0; 7],
            day_of_week: 1,
            millis,
            dirty: false,
            overflow: false,
        };
        cal.set_time(millis);
        cal
    }

    /// A calendar whose fields are the given wall-clock values, not yet normalised.
    pub(crate) fn from_fields(tz: &'a TimeZone, fields: [i64; 7]) -> Self {
        JavaCalendar {
            tz,
            fields,
            day_of_week: 1,
            millis: 0,
            dirty: true,
            overflow: false,
        }
    }

    pub(crate) fn set(&mut self, field: CalField, value: i64) {
        self.fields[field as usize] = value;
        self.dirty = true;
    }

    pub(crate) fn get(&mut self, field: CalField) -> i64 {
        self.complete();
        self.fields[field as usize]
    }

    /// 1 = Sunday … 7 = Saturday.
    pub(crate) fn day_of_week(&mut self) -> i64 {
        self.complete();
        self.day_of_week
    }

    /// The instant in Unix milliseconds, or `None` outside the supported range.
    pub(crate) fn time(&mut self) -> Option<i64> {
        self.complete();
        (!self.overflow).then_some(self.millis)
    }

    /// `Calendar.add(YEAR, n)`: normalise, move the year, and pin the day of the month to the
    /// length of the month in the new year.
    pub(crate) fn add_years(&mut self, n: i64) {
        self.complete();
        let year = self.fields[CalField::Year as usize] + n;
        self.set(CalField::Year, year);
        let month = self.fields[CalField::Month as usize] + 1;
        let len = days_in_month(month, year);
        if self.fields[CalField::DayOfMonth as usize] > len {
            self.set(CalField::DayOfMonth, len);
        }
    }

    fn set_time(&mut self, millis: i64) {
        self.millis = millis;
        self.dirty = false;
        let Ok(ts) = Timestamp::from_millisecond(millis) else {
            self.set_overflow();
            return;
        };
        let dt = self.tz.to_datetime(ts);
        self.fields = [
            i64::from(dt.year()),
            i64::from(dt.month()) - 1,
            i64::from(dt.day()),
            i64::from(dt.hour()),
            i64::from(dt.minute()),
            i64::from(dt.second()),
            millis.rem_euclid(1000),
        ];
        self.day_of_week = i64::from(dt.weekday().to_sunday_one_offset());
    }

    fn set_overflow(&mut self) {
        self.overflow = true;
        self.dirty = false;
        self.fields = [10_000, 0, 1, 0, 0, 0, 0];
    }

    fn complete(&mut self) {
        if !self.dirty {
            return;
        }
        match self.wall_to_instant() {
            Some(millis) => self.set_time(millis),
            None => self.set_overflow(),
        }
    }

    /// The instant of the current (possibly out-of-range) fields, as lenient Java computes it.
    fn wall_to_instant(&self) -> Option<i64> {
        let [year, month, day, hour, minute, second, milli] = self.fields;
        let time_of_day =
            ((hour.checked_mul(60)? + minute).checked_mul(60)? + second).checked_mul(1000)? + milli;
        let year = year + month.div_euclid(12);
        let month = month.rem_euclid(12) + 1;
        if !(-9000..=9000).contains(&year) {
            return None;
        }
        let days = days_from_civil(year, month, 1) + (day - 1) + time_of_day.div_euclid(DAY_MS);
        let ms_of_day = time_of_day.rem_euclid(DAY_MS);
        let wall_ms = days.checked_mul(DAY_MS)? + ms_of_day;
        let (y, m, d) = civil_from_days(days);
        let dt = DateTime::new(
            i16::try_from(y).ok()?,
            m as i8,
            d as i8,
            (ms_of_day / 3_600_000) as i8,
            (ms_of_day / 60_000 % 60) as i8,
            (ms_of_day / 1000 % 60) as i8,
            (ms_of_day % 1000 * 1_000_000) as i32,
        )
        .ok()?;
        let offset = match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset,
            AmbiguousOffset::Gap { before, .. } => before,
            AmbiguousOffset::Fold { after, .. } => after,
        };
        Some(wall_ms - i64::from(offset.seconds()) * 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn civil_day_numbers_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 365, 10_957, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(weekday_sunday_one(0), 5, "1970-01-01 was a Thursday");
    }

    #[test]
    fn lenient_fields_overflow_into_the_next_unit() {
        let tz = TimeZone::UTC;
        // 2023-01-31 with month set to February: 31 February = 3 March.
        let mut cal = JavaCalendar::from_fields(&tz, [2023, 1, 31, 0, 0, 0, 0]);
        assert_eq!(cal.time(), Some(ms("2023-03-03T00:00:00Z")));
        // Month 12 is January of the next year; hour 24 is midnight of the next day.
        let mut cal = JavaCalendar::from_fields(&tz, [2023, 12, 1, 24, 0, 0, 0]);
        assert_eq!(cal.time(), Some(ms("2024-01-02T00:00:00Z")));
        // Day 0 is the last day of the previous month.
        let mut cal = JavaCalendar::from_fields(&tz, [2024, 2, 0, 0, 0, 0, 0]);
        assert_eq!(cal.get(CalField::DayOfMonth), 29);
    }

    #[test]
    fn wall_time_in_a_gap_moves_past_the_gap() {
        let tz = berlin();
        let mut cal = JavaCalendar::from_fields(&tz, [2024, 2, 31, 2, 30, 0, 0]);
        assert_eq!(cal.time(), Some(ms("2024-03-31T01:30:00Z")));
        assert_eq!(cal.get(CalField::HourOfDay), 3);
    }

    #[test]
    fn wall_time_in_a_fold_is_its_second_occurrence() {
        let tz = berlin();
        let mut cal = JavaCalendar::from_fields(&tz, [2024, 9, 27, 2, 30, 0, 0]);
        assert_eq!(cal.time(), Some(ms("2024-10-27T01:30:00Z")));
    }

    #[test]
    fn setting_a_field_in_the_first_occurrence_jumps_to_the_second() {
        let tz = berlin();
        let mut cal = JavaCalendar::at(&tz, ms("2024-10-27T00:30:00Z"));
        assert_eq!(cal.get(CalField::HourOfDay), 2);
        cal.set(CalField::Second, 0);
        assert_eq!(cal.time(), Some(ms("2024-10-27T01:30:00Z")));
    }

    #[test]
    fn adding_a_year_pins_the_day_of_month() {
        let tz = TimeZone::UTC;
        let mut cal = JavaCalendar::at(&tz, ms("2024-02-29T10:00:00Z"));
        cal.add_years(1);
        assert_eq!(cal.time(), Some(ms("2025-02-28T10:00:00Z")));
    }
}
