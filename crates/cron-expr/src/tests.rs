//! Table-driven tests, one named row per rule of the contract. The Quartz rows are also
//! covered by the differential test against the real Quartz (`tests/quartz_oracle.rs`);
//! here the expected instants are written out.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::{ErrorKind, Schedule};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

/// `(name, rule)`: accepted.
const QUARTZ_ACCEPTS: &[(&str, &str)] = &[
    ("every 15 minutes", "0 0/15 * * * ?"),
    ("seven fields with a year", "0 15 10 * * ? 2030"),
    ("names in any case", "0 0 9 ? jan-mar mon-fri"),
    ("wrapping day-of-week range", "0 0 0 ? * FRI-MON"),
    ("range ending at 0 wraps, as Quartz", "0 0 0 ? * 6-0"),
    ("star inside a list", "1,*,3 * * * * ?"),
    (
        "step after a range may exceed the field",
        "0-59/100 * * * * ?",
    ),
    ("L-n up to 30", "0 0 0 L-30 * ?"),
    ("L-nW up to 27", "0 0 0 L-27W * ?"),
    ("nearest weekday", "0 0 0 15W * ?"),
    ("last weekday", "0 0 0 LW * ?"),
    ("L alone in day-of-week is Saturday", "0 0 0 ? * L"),
    ("last Friday by name", "0 0 0 ? * FRIL"),
    ("third Friday", "0 0 0 ? * 6#3"),
    ("tabs and extra spaces", "  0\t0  12 * * ?  "),
    ("a rule whose fires are all in the past", "0 0 0 1 1 ? 2020"),
];

/// `(name, rule, reason)`: rejected as invalid with exactly that reason.
const QUARTZ_REJECTS: &[(&str, &str, &str)] = &[
    (
        "both day fields given",
        "*/5 * * * * *",
        "exactly one of day-of-month and day-of-week must be '?'",
    ),
    (
        "both day fields '?'",
        "0 0 0 ? * ?",
        "exactly one of day-of-month and day-of-week must be '?'",
    ),
    (
        "five fields",
        "0 0 0 * *",
        "expected 6 or 7 fields (sec min hour day-of-month month day-of-week [year]), found 5",
    ),
    (
        "eight fields",
        "0 0 0 * * ? 2030 2031",
        "expected 6 or 7 fields (sec min hour day-of-month month day-of-week [year]), found 8",
    ),
    (
        "second 60",
        "60 * * * * ?",
        "second field: 60 is out of range 0-59",
    ),
    (
        "hour 24",
        "0 0 24 * * ?",
        "hour field: 24 is out of range 0-23",
    ),
    (
        "day 32",
        "0 0 0 32 * ?",
        "day-of-month field: 32 is out of range 1-31",
    ),
    (
        "month 13",
        "0 0 0 1 13 ?",
        "month field: 13 is out of range 1-12",
    ),
    (
        "day-of-week 0",
        "0 0 0 ? * 0",
        "day-of-week field: 0 is out of range 1-7",
    ),
    (
        "step larger than the field",
        "*/60 * * * * ?",
        "second field: step 60 is larger than 59",
    ),
    (
        "step of 0",
        "*/0 * * * * ?",
        "second field: a step must be at least 1",
    ),
    (
        "unknown month name",
        "0 0 0 1 FOO ?",
        "month field: unknown name 'FOO'",
    ),
    (
        "day name in the month field",
        "0 0 0 1 MON ?",
        "month field: unknown name 'MON'",
    ),
    (
        "characters after a value",
        "0 0 12X * * ?",
        "hour field: '12X' is not a number",
    ),
    (
        "step after names",
        "0 0 0 ? * MON-FRI/2",
        "day-of-week field: a step after a range of names ('MON-FRI/2') is not supported",
    ),
    (
        "W in a list",
        "0 0 0 1,15W * ?",
        "day-of-month field: W must follow a single day of the month, as in 15W, not '1,15W'",
    ),
    (
        "L in a list",
        "0 0 0 L,5 * ?",
        "day-of-month field: 'L,5' is not L, LW, L-n or L-nW (and L cannot be in a list)",
    ),
    (
        "# in a list",
        "0 0 0 ? * 6#3,2",
        "day-of-week field: L and # cannot be combined with other values",
    ),
    (
        "sixth Friday",
        "0 0 0 ? * 6#6",
        "day-of-week field: the number after '#' must be 1 to 5",
    ),
    (
        "L-31",
        "0 0 0 L-31 * ?",
        "day-of-month field: the offset of L-n must be at most 30",
    ),
    (
        "L-28W, on which Quartz loops forever",
        "0 0 0 L-28W * ?",
        "day-of-month field: the offset of L-nW must be at most 27",
    ),
    (
        "0W",
        "0 0 0 0W * ?",
        "day-of-month field: 0 is out of range 1-31",
    ),
    (
        "year beyond 2199",
        "0 0 0 * * ? 2300",
        "year field: 2300 is out of range 1970-2199",
    ),
    (
        "years backwards",
        "0 0 0 * * ? 2030-2020",
        "year field: range 2030-2020 ends before it starts",
    ),
    (
        "L in the second field",
        "L * * * * ?",
        "second field: 'L' is not a number",
    ),
    (
        "'?' in the hour field",
        "0 0 ? * * ?",
        "hour field: '?' is only allowed alone, in day-of-month or day-of-week",
    ),
    (
        "empty rule",
        "",
        "expected 6 or 7 fields (sec min hour day-of-month month day-of-week [year]), found 0",
    ),
];

/// `(name, rule)`: well formed, but no date matches.
const QUARTZ_NEVER_FIRES: &[(&str, &str)] = &[
    ("30 February", "0 0 0 30 2 ?"),
    ("31 April", "0 0 0 31 4 ?"),
    ("29 February 2100 (not a leap year)", "0 0 0 29 2 ? 2100"),
    ("fifth Monday of February 2026", "0 0 0 ? 2 2#5 2026"),
];

/// `(name, rule, zone, after, expected next fires)`.
const QUARTZ_NEXT: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "noon every day",
        "0 0 12 * * ?",
        "UTC",
        "2024-01-15T10:20:30Z",
        &["2024-01-15T12:00:00Z", "2024-01-16T12:00:00Z"],
    ),
    (
        "strictly after the start",
        "0 0 12 * * ?",
        "UTC",
        "2024-01-15T12:00:00Z",
        &["2024-01-16T12:00:00Z"],
    ),
    (
        "the sub-second part of the start is ignored",
        "* * * * * ?",
        "UTC",
        "2024-01-15T12:00:00.999Z",
        &["2024-01-15T12:00:01Z"],
    ),
    (
        "every 15 minutes",
        "0 0/15 * * * ?",
        "UTC",
        "2024-01-15T10:20:30Z",
        &["2024-01-15T10:30:00Z", "2024-01-15T10:45:00Z"],
    ),
    (
        "5/15 seconds",
        "5/15 * * * * ?",
        "UTC",
        "2024-01-15T10:20:50Z",
        &["2024-01-15T10:21:05Z", "2024-01-15T10:21:20Z"],
    ),
    (
        "last day of the month in a leap year",
        "0 0 0 L 2 ?",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-02-29T00:00:00Z", "2025-02-28T00:00:00Z"],
    ),
    (
        "third-to-last day",
        "0 0 0 L-3 * ?",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-01-28T00:00:00Z", "2024-02-26T00:00:00Z"],
    ),
    (
        "last weekday: 31 August 2024 is a Saturday",
        "0 0 0 LW * ?",
        "UTC",
        "2024-08-01T00:00:00Z",
        &["2024-08-30T00:00:00Z", "2024-09-30T00:00:00Z"],
    ),
    (
        "1W does not leave the month: 1 June 2024 is a Saturday",
        "0 0 0 1W * ?",
        "UTC",
        "2024-05-15T00:00:00Z",
        &["2024-06-03T00:00:00Z", "2024-07-01T00:00:00Z"],
    ),
    (
        "31W does not leave the month: 31 March 2024 is a Sunday",
        "0 0 0 31W * ?",
        "UTC",
        "2024-03-01T00:00:00Z",
        &["2024-03-29T00:00:00Z"],
    ),
    (
        "15W on a Saturday is the Friday before",
        "0 0 0 15W * ?",
        "UTC",
        "2024-06-01T00:00:00Z",
        &["2024-06-14T00:00:00Z", "2024-07-15T00:00:00Z"],
    ),
    (
        "third Friday",
        "0 15 10 ? * 6#3",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-01-19T10:15:00Z", "2024-02-16T10:15:00Z"],
    ),
    (
        "fifth Monday skips months without one",
        "0 0 0 ? * 2#5",
        "UTC",
        "2024-01-30T00:00:00Z",
        &["2024-04-29T00:00:00Z", "2024-07-29T00:00:00Z"],
    ),
    (
        "last Friday",
        "0 0 0 ? * 6L",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-01-26T00:00:00Z", "2024-02-23T00:00:00Z"],
    ),
    (
        "29 February waits for a leap year",
        "0 0 0 29 2 ?",
        "UTC",
        "2024-03-01T00:00:00Z",
        &["2028-02-29T00:00:00Z"],
    ),
    (
        "the year field ends the rule",
        "0 0 0 1 1 ? 2030",
        "UTC",
        "2024-03-01T00:00:00Z",
        &["2030-01-01T00:00:00Z"],
    ),
    (
        "Friday to Monday wraps over the weekend",
        "0 0 0 ? * FRI-MON",
        "UTC",
        "2024-01-02T00:00:00Z",
        &[
            "2024-01-05T00:00:00Z",
            "2024-01-06T00:00:00Z",
            "2024-01-07T00:00:00Z",
            "2024-01-08T00:00:00Z",
            "2024-01-12T00:00:00Z",
        ],
    ),
    (
        "Berlin spring forward: a 02:30 that does not exist is skipped",
        "0 30 2 * * ?",
        "Europe/Berlin",
        "2024-03-30T12:00:00Z",
        &["2024-04-01T00:30:00Z"],
    ),
    (
        "Berlin fall back: a repeated 02:30 fires once, at +01:00",
        "0 30 2 * * ?",
        "Europe/Berlin",
        "2024-10-26T12:00:00Z",
        &["2024-10-27T01:30:00Z", "2024-10-28T01:30:00Z"],
    ),
    (
        "Berlin fall back: every 15 minutes skips the first pass of 02:xx",
        "0 0/15 * * * ?",
        "Europe/Berlin",
        "2024-10-26T23:40:00Z",
        &[
            "2024-10-26T23:45:00Z",
            "2024-10-27T01:00:00Z",
            "2024-10-27T01:15:00Z",
        ],
    ),
    (
        "Berlin spring forward: every 15 minutes goes on after the gap",
        "0 0/15 * * * ?",
        "Europe/Berlin",
        "2024-03-31T00:40:00Z",
        &["2024-03-31T00:45:00Z", "2024-03-31T01:00:00Z"],
    ),
    (
        "a search inside the first pass of a fold moves to the second",
        "* * * * * ?",
        "Europe/Berlin",
        "2024-10-27T00:30:00Z",
        &["2024-10-27T01:30:01Z"],
    ),
    (
        "New York spring forward skips 02:30",
        "0 30 2 * * ?",
        "America/New_York",
        "2024-03-09T12:00:00Z",
        &["2024-03-11T06:30:00Z"],
    ),
    (
        "New York fall back fires 01:30 at -05:00",
        "0 30 1 * * ?",
        "America/New_York",
        "2024-11-02T12:00:00Z",
        &["2024-11-03T06:30:00Z", "2024-11-04T06:30:00Z"],
    ),
    (
        "Kolkata's half-hour offset",
        "0 0 9 * * ?",
        "Asia/Kolkata",
        "2024-01-01T00:00:00Z",
        &["2024-01-01T03:30:00Z"],
    ),
];

#[test]
fn quartz_rules_accepted() {
    for (name, rule) in QUARTZ_ACCEPTS {
        if let Err(e) = Schedule::parse_quartz(rule) {
            panic!("{name}: {rule:?} rejected: {e}");
        }
    }
}

#[test]
fn quartz_rules_rejected_with_a_reason() {
    for (name, rule, reason) in QUARTZ_REJECTS {
        match Schedule::parse_quartz(rule) {
            Ok(_) => panic!("{name}: {rule:?} accepted"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Invalid, "{name}");
                assert_eq!(e.to_string(), *reason, "{name}: {rule:?}");
            }
        }
    }
}

#[test]
fn quartz_rules_that_never_fire_are_rejected() {
    for (name, rule) in QUARTZ_NEVER_FIRES {
        let e = Schedule::parse_quartz(rule).expect_err(name);
        assert_eq!(e.kind(), ErrorKind::NeverFires, "{name}");
        assert_eq!(
            e.to_string(),
            "the rule never fires: no date of the calendar matches it"
        );
    }
}

#[test]
fn quartz_next_fires() {
    for (name, rule, tz, after, expected) in QUARTZ_NEXT {
        let s = Schedule::parse_quartz(rule).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tz = zone(tz);
        let got: Vec<String> = s
            .fires_after(ts(after), &tz)
            .take(expected.len())
            .map(|t| t.to_string())
            .collect();
        assert_eq!(got, *expected, "{name}: {rule:?}");
    }
}

#[test]
fn quartz_rule_runs_out_after_its_last_year() {
    let s = Schedule::parse_quartz("0 0 0 1 1 ? 2030").unwrap();
    assert_eq!(
        s.next_after(ts("2030-01-01T00:00:00Z"), &TimeZone::UTC),
        None
    );
    let s = Schedule::parse_quartz("0 0 0 31 12 ?").unwrap();
    assert_eq!(
        s.next_after(ts("2199-12-30T00:00:00Z"), &TimeZone::UTC),
        Some(ts("2199-12-31T00:00:00Z"))
    );
    assert_eq!(
        s.next_after(ts("2199-12-31T00:00:00Z"), &TimeZone::UTC),
        None
    );
}

/// `(name, rule)`: accepted in the agent dialect.
const AGENT_ACCEPTS: &[(&str, &str)] = &[
    ("the example of agent-protocol.md", "*/15 * * * * *"),
    ("five fields", "0 0 12 * *"),
    ("'?' is '*'", "0 0 12 ? * ?"),
    ("names in any case", "0 0 9 * jan-Mar mon-fri"),
    ("@every", "@every 10s"),
    ("@every with a Go duration", "@every 1m30s"),
    ("@hourly", "@hourly"),
    ("@daily", "@daily"),
    ("@midnight", "@midnight"),
    ("@weekly", "@weekly"),
    ("@monthly", "@monthly"),
    ("@yearly", "@yearly"),
    ("@annually", "@annually"),
];

/// `(name, rule, reason)`.
const AGENT_REJECTS: &[(&str, &str, &str)] = &[
    (
        "four fields",
        "* * * *",
        "expected 5 or 6 fields (sec min hour day-of-month month [day-of-week]), found 4",
    ),
    (
        "seven fields",
        "0 0 0 * * * 2030",
        "expected 5 or 6 fields (sec min hour day-of-month month [day-of-week]), found 7",
    ),
    (
        "day-of-week 7",
        "0 0 0 * * 7",
        "day-of-week field: '7' is out of range 0-6",
    ),
    (
        "Quartz's L",
        "0 0 0 L * *",
        "day-of-month field: 'L' is not a number or a name",
    ),
    (
        "a range backwards",
        "0 0 22-2 * * *",
        "hour field: range '22-2' ends before it starts",
    ),
    (
        "step of 0",
        "*/0 * * * * *",
        "second field: step '0' is not a number of at least 1",
    ),
    (
        "@every without a duration",
        "@every",
        "unknown descriptor '@every' (use @every, @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)",
    ),
    (
        "@every a negative duration",
        "@every -5s",
        "@every: '-5s' is negative",
    ),
    (
        "@every without a unit",
        "@every 10",
        "@every: '10' lacks a unit (ns, us, ms, s, m, h)",
    ),
    (
        "unknown descriptor",
        "@fortnightly",
        "unknown descriptor '@fortnightly' (use @every, @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)",
    ),
];

/// `(name, rule, zone, after, expected next fires)`.
const AGENT_NEXT: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "every 15 seconds",
        "*/15 * * * * *",
        "UTC",
        "2024-01-01T00:00:07Z",
        &["2024-01-01T00:00:15Z", "2024-01-01T00:00:30Z"],
    ),
    (
        "five fields: day-of-week is '*'",
        "0 0 12 * *",
        "UTC",
        "2024-01-01T12:00:00Z",
        &["2024-01-02T12:00:00Z"],
    ),
    (
        "@every counts from the start, truncated to the second",
        "@every 1m30s",
        "UTC",
        "2024-01-01T00:00:00.700Z",
        &["2024-01-01T00:01:30Z", "2024-01-01T00:03:00Z"],
    ),
    (
        "@every under a second is one second",
        "@every 300ms",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-01-01T00:00:01Z"],
    ),
    (
        "@hourly",
        "@hourly",
        "UTC",
        "2024-01-01T00:20:00Z",
        &["2024-01-01T01:00:00Z"],
    ),
    (
        "@daily in a zone",
        "@daily",
        "Europe/Berlin",
        "2024-01-01T12:00:00Z",
        &["2024-01-01T23:00:00Z"],
    ),
    (
        "@weekly is Sunday midnight",
        "@weekly",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-01-07T00:00:00Z"],
    ),
    (
        "@monthly",
        "@monthly",
        "UTC",
        "2024-01-15T00:00:00Z",
        &["2024-02-01T00:00:00Z"],
    ),
    (
        "@yearly",
        "@yearly",
        "UTC",
        "2024-01-15T00:00:00Z",
        &["2025-01-01T00:00:00Z"],
    ),
    (
        "both day fields restricted: either matches (13th or Friday)",
        "0 0 0 13 * 5",
        "UTC",
        "2024-09-01T00:00:00Z",
        &[
            "2024-09-06T00:00:00Z",
            "2024-09-13T00:00:00Z",
            "2024-09-20T00:00:00Z",
        ],
    ),
    (
        "day-of-week '?': only the day of the month",
        "0 0 0 13 * ?",
        "UTC",
        "2024-09-01T00:00:00Z",
        &["2024-09-13T00:00:00Z", "2024-10-13T00:00:00Z"],
    ),
    (
        "spring forward: a time in the gap does not fire",
        "0 30 2 * * *",
        "Europe/Berlin",
        "2024-03-30T12:00:00Z",
        &["2024-04-01T00:30:00Z"],
    ),
    (
        "fall back: a repeated time fires twice",
        "0 30 2 * * *",
        "Europe/Berlin",
        "2024-10-26T12:00:00Z",
        &[
            "2024-10-27T00:30:00Z",
            "2024-10-27T01:30:00Z",
            "2024-10-28T01:30:00Z",
        ],
    ),
    (
        "fall back: every 30 minutes covers both passes",
        "0 */30 * * * *",
        "Europe/Berlin",
        "2024-10-26T23:50:00Z",
        &[
            "2024-10-27T00:00:00Z",
            "2024-10-27T00:30:00Z",
            "2024-10-27T01:00:00Z",
            "2024-10-27T01:30:00Z",
            "2024-10-27T02:00:00Z",
        ],
    ),
    (
        "29 February",
        "0 0 0 29 2 *",
        "UTC",
        "2097-01-01T00:00:00Z",
        &["2104-02-29T00:00:00Z"],
    ),
];

#[test]
fn agent_rules_accepted() {
    for (name, rule) in AGENT_ACCEPTS {
        if let Err(e) = Schedule::parse_agent(rule) {
            panic!("{name}: {rule:?} rejected: {e}");
        }
    }
}

#[test]
fn agent_rules_rejected_with_a_reason() {
    for (name, rule, reason) in AGENT_REJECTS {
        match Schedule::parse_agent(rule) {
            Ok(_) => panic!("{name}: {rule:?} accepted"),
            Err(e) => assert_eq!(e.to_string(), *reason, "{name}: {rule:?}"),
        }
    }
    let e = Schedule::parse_agent("0 0 0 30 2 *").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NeverFires);
}

#[test]
fn agent_next_fires() {
    for (name, rule, tz, after, expected) in AGENT_NEXT {
        let s = Schedule::parse_agent(rule).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tz = zone(tz);
        let got: Vec<String> = s
            .fires_after(ts(after), &tz)
            .take(expected.len())
            .map(|t| t.to_string())
            .collect();
        assert_eq!(got, *expected, "{name}: {rule:?}");
    }
}

/// The agent dialect agrees with a brute-force scan of the wall-clock time of every instant
/// (every 30 s: these rules fire at second 0 or 30, and every zone's offset is whole minutes).
#[test]
fn agent_search_matches_a_brute_force_scan() {
    let rules = [
        "0 */7 1-3 * * *",
        "30 0 0 * * 1",
        "0 0 */5 * * 0-2",
        "0 30 2 * * *",
    ];
    for zone_name in ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"] {
        let tz = zone(zone_name);
        for start in [
            "2024-03-29T00:00:00Z",
            "2024-10-25T00:00:00Z",
            "2024-04-05T00:00:00Z",
        ] {
            for rule in rules {
                let s = Schedule::parse_agent(rule).unwrap();
                let crate::Kind::Agent(crate::agent::Rule::Fields(f)) = &s.kind else {
                    unreachable!()
                };
                let start = ts(start);
                let ours: Vec<Timestamp> = s.fires_after(start, &tz).take(8).collect();
                let mut brute = Vec::new();
                let mut t = start.as_second() + 30;
                while brute.len() < 8 {
                    let dt = tz.to_datetime(Timestamp::from_second(t).unwrap());
                    let wall = crate::calendar::days_from_civil(
                        i64::from(dt.year()),
                        i64::from(dt.month()),
                        i64::from(dt.day()),
                    ) * 86_400
                        + i64::from(dt.hour()) * 3600
                        + i64::from(dt.minute()) * 60
                        + i64::from(dt.second());
                    if f.next_civil(wall, wall + 1) == Some(wall) {
                        brute.push(Timestamp::from_second(t).unwrap());
                    }
                    t += 30;
                }
                assert_eq!(ours, brute, "{rule:?} in {zone_name} after {start}");
            }
        }
    }
}
