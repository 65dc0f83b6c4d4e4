//! The pure firing core: the next instant of every armed cron in one ordered set, and
//! [`Firer::due`], which says what to fire at a given instant. No I/O, no clock, no runtime.

use std::collections::{BTreeSet, HashMap};

use elves_cron_expr::Schedule;
use elves_cron_expr::jiff::Timestamp;
use elves_cron_expr::jiff::tz::TimeZone;
use elves_types::Id;

/// What happens to fires that were missed (api-v2 "Crons", **ext** `misfire`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misfire {
    /// The latest missed instant fires once if it is within the misfire window.
    FireOnce,
    /// Missed instants never fire.
    Skip,
}

impl Misfire {
    /// `fire_once` or `skip`; blank is `fire_once`.
    pub fn parse(s: &str) -> Option<Misfire> {
        match s.trim() {
            "" | "fire_once" => Some(Misfire::FireOnce),
            "skip" => Some(Misfire::Skip),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::FireOnce => "fire_once",
            Misfire::Skip => "skip",
        }
    }
}

/// One fire to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fire {
    pub cron: Id,
    /// The scheduled instant, Unix ms (whole seconds).
    pub at_ms: i64,
    /// A missed instant fired by the `fire_once` policy.
    pub catch_up: bool,
}

/// How late is late.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A fire at most this late (ms) is on time.
    pub late_grace_ms: i64,
    /// `fire_once` catches up a missed instant at most this old (ms).
    pub misfire_window_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            late_grace_ms: 2_000,
            misfire_window_ms: 60_000,
        }
    }
}

/// What becomes of a run recorded for its instant but never handed to the scheduler, found
/// when a firer takes the lease (the previous firer stopped, or lost its lease, between
/// recording it ahead of its instant and reaching the instant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Dispatched once, under its recorded run id, at its instant (or now, if that passed).
    Cast { catch_up: bool },
    /// Deleted unsent: its cron is stopped or gone, or the misfire policy drops it.
    Withdraw,
}

/// Judges a pending run of instant `at_ms` at `now_ms`, as [`Firer::due`] judges a fire:
/// on time (not later than the grace) it is cast; missed, it is the cron's catch-up fire only
/// under `fire_once`, within the misfire window, and only if it is the cron's latest missed
/// instant (`later_due`: the cron has another instant after `at_ms` that is not in the future,
/// which then is the one caught up). `misfire` is `None` when the cron is not armed (stopped,
/// deleted, or started again at or after `at_ms`).
pub fn judge_pending(
    limits: Limits,
    misfire: Option<Misfire>,
    at_ms: i64,
    now_ms: i64,
    later_due: bool,
) -> Pending {
    let Some(misfire) = misfire else {
        return Pending::Withdraw;
    };
    if now_ms - at_ms <= limits.late_grace_ms {
        Pending::Cast { catch_up: false }
    } else if misfire == Misfire::FireOnce
        && !later_due
        && now_ms - at_ms <= limits.misfire_window_ms
    {
        Pending::Cast { catch_up: true }
    } else {
        Pending::Withdraw
    }
}

struct Entry {
    schedule: Schedule,
    tz: TimeZone,
    misfire: Misfire,
    next: Option<i64>,
    /// The instant after `next`, once computed ([`Firer::prepare`]): firing `next` on time
    /// then needs no rule evaluation, so a thousand crons due at once cost no search before
    /// their fires go out.
    then: Option<Option<i64>>,
}

/// The armed crons and their next instants.
pub struct Firer {
    limits: Limits,
    entries: HashMap<Id, Entry>,
    queue: BTreeSet<(i64, Id)>,
    missed: u64,
    /// Crons whose `then` is not computed yet.
    unprepared: Vec<Id>,
}

fn next_after(schedule: &Schedule, tz: &TimeZone, after_ms: i64) -> Option<i64> {
    let after = Timestamp::from_millisecond(after_ms).ok()?;
    schedule.next_after(after, tz).map(|t| t.as_millisecond())
}

impl Firer {
    pub fn new(limits: Limits) -> Firer {
        Firer {
            limits,
            entries: HashMap::new(),
            queue: BTreeSet::new(),
            missed: 0,
            unprepared: Vec::new(),
        }
    }

    /// Computes the instant after the next one of every cron that lacks it (after a fire, or
    /// an arm), so that the next [`Firer::due`] finds it ready. Call it when idle.
    pub fn prepare(&mut self) {
        for cron in std::mem::take(&mut self.unprepared) {
            if let Some(e) = self.entries.get_mut(&cron)
                && e.then.is_none()
            {
                e.then = Some(match e.next {
                    Some(n) => next_after(&e.schedule, &e.tz, n),
                    None => None,
                });
            }
        }
    }

    /// Arms (or re-arms) a cron: its first fire is its first instant after `after_ms` (its
    /// start, or its newest recorded fire). Instants older than the misfire window at `now_ms`
    /// are not even looked at: no policy would fire them.
    pub fn arm(
        &mut self,
        cron: Id,
        schedule: Schedule,
        tz: TimeZone,
        misfire: Misfire,
        after_ms: i64,
        now_ms: i64,
    ) {
        self.disarm(cron);
        let seek = after_ms.max(now_ms - self.limits.misfire_window_ms - 1);
        let next = next_after(&schedule, &tz, seek);
        if let Some(at) = next {
            self.queue.insert((at, cron));
        }
        self.entries.insert(
            cron,
            Entry {
                schedule,
                tz,
                misfire,
                next,
                then: None,
            },
        );
        self.unprepared.push(cron);
    }

    /// Forgets a cron.
    pub fn disarm(&mut self, cron: Id) {
        if let Some(e) = self.entries.remove(&cron)
            && let Some(at) = e.next
        {
            self.queue.remove(&(at, cron));
        }
    }

    pub fn is_armed(&self, cron: Id) -> bool {
        self.entries.contains_key(&cron)
    }

    pub fn armed(&self) -> impl Iterator<Item = Id> + '_ {
        self.entries.keys().copied()
    }

    /// The earliest next instant of any armed cron.
    pub fn next_wake(&self) -> Option<i64> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// The misfire policy of an armed cron.
    pub fn misfire_of(&self, cron: Id) -> Option<Misfire> {
        self.entries.get(&cron).map(|e| e.misfire)
    }

    /// The next instant of one cron.
    pub fn next_of(&self, cron: Id) -> Option<i64> {
        self.entries.get(&cron).and_then(|e| e.next)
    }

    /// How many instants were passed over without firing (misfires not caught up, and the
    /// older instants of a catch-up).
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The fires due at `now_ms`, in instant order; each cron's next instant moves past
    /// `now_ms`. Per cron at most one fire: its latest instant ≤ `now_ms`, if that is on time
    /// or the misfire policy catches it up.
    pub fn due(&mut self, now_ms: i64) -> Vec<Fire> {
        let mut fires = Vec::new();
        while let Some(&(at, cron)) = self.queue.first() {
            if at > now_ms {
                break;
            }
            self.queue.pop_first();
            let Some(e) = self.entries.get_mut(&cron) else {
                continue;
            };
            let window = self.limits.misfire_window_ms;
            // The common case: on time, and the instant after is known and still ahead.
            if let Some(Some(then)) = e.then
                && then > now_ms
                && now_ms - at <= self.limits.late_grace_ms
            {
                fires.push(Fire {
                    cron,
                    at_ms: at,
                    catch_up: false,
                });
                e.next = Some(then);
                e.then = None;
                self.unprepared.push(cron);
                self.queue.insert((then, cron));
                continue;
            }
            let mut latest = at;
            // Far behind (a stall): jump to the window; nothing older can fire.
            if latest < now_ms - window - 1 {
                self.missed += 1;
                match next_after(&e.schedule, &e.tz, now_ms - window - 1) {
                    Some(n) if n <= now_ms => latest = n,
                    other => {
                        e.next = other;
                        e.then = None;
                        self.unprepared.push(cron);
                        if let Some(n) = other {
                            self.queue.insert((n, cron));
                        }
                        continue;
                    }
                }
            }
            let next = loop {
                match next_after(&e.schedule, &e.tz, latest) {
                    Some(n) if n <= now_ms => {
                        self.missed += 1;
                        latest = n;
                    }
                    other => break other,
                }
            };
            // Judged by the first due instant, as Quartz judges a trigger: on time, or missed.
            if now_ms - at <= self.limits.late_grace_ms {
                fires.push(Fire {
                    cron,
                    at_ms: latest,
                    catch_up: false,
                });
            } else if e.misfire == Misfire::FireOnce && now_ms - latest <= window {
                fires.push(Fire {
                    cron,
                    at_ms: latest,
                    catch_up: true,
                });
            } else {
                self.missed += 1;
            }
            e.next = next;
            e.then = None;
            self.unprepared.push(cron);
            if let Some(n) = next {
                self.queue.insert((n, cron));
            }
        }
        fires.sort_by_key(|f| (f.at_ms, f.cron));
        fires
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn show(at_ms: i64, tz: &TimeZone) -> String {
        Timestamp::from_millisecond(at_ms)
            .unwrap()
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    /// Arms `rule` in `zone` at `from` and wakes at every next instant until `count` fires
    /// were made; returns them as wall-clock times with offsets. The same with and without
    /// the look-ahead of [`Firer::prepare`] between wakes.
    fn fires(rule: &str, zone: &str, from: &str, count: usize) -> Vec<String> {
        let without = fires_with(rule, zone, from, count, false);
        assert_eq!(fires_with(rule, zone, from, count, true), without);
        without
    }

    fn fires_with(rule: &str, zone: &str, from: &str, count: usize, prepare: bool) -> Vec<String> {
        let tz = TimeZone::get(zone).unwrap();
        let mut f = Firer::new(Limits::default());
        let id = Id::random();
        let start = ms(from);
        let s = Schedule::parse_quartz(rule).unwrap();
        f.arm(id, s, tz.clone(), Misfire::FireOnce, start, start);
        let mut out = Vec::new();
        while out.len() < count {
            if prepare {
                f.prepare();
            }
            let wake = f.next_wake().expect("the rule stopped firing");
            for fire in f.due(wake) {
                assert_eq!((fire.cron, fire.at_ms, fire.catch_up), (id, wake, false));
                out.push(show(fire.at_ms, &tz));
            }
        }
        out
    }

    #[test]
    fn fires_at_each_instant_of_the_rule() {
        // (rule, zone, from, expected fires)
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (
                "* * * * * ?",
                "UTC",
                "2024-01-01T00:00:00.500Z",
                &[
                    "2024-01-01T00:00:01+00:00",
                    "2024-01-01T00:00:02+00:00",
                    "2024-01-01T00:00:03+00:00",
                ],
            ),
            (
                "0/20 * * * * ?",
                "UTC",
                "2024-01-01T00:00:00Z",
                &[
                    "2024-01-01T00:00:20+00:00",
                    "2024-01-01T00:00:40+00:00",
                    "2024-01-01T00:01:00+00:00",
                ],
            ),
            // Last day of the month (leap February).
            (
                "0 0 12 L * ?",
                "UTC",
                "2024-01-15T00:00:00Z",
                &[
                    "2024-01-31T12:00:00+00:00",
                    "2024-02-29T12:00:00+00:00",
                    "2024-03-31T12:00:00+00:00",
                ],
            ),
            // Nearest weekday to the 15th (15 June 2024 is a Saturday → Friday 14th).
            (
                "0 0 9 15W * ?",
                "UTC",
                "2024-05-20T00:00:00Z",
                &[
                    "2024-06-14T09:00:00+00:00",
                    "2024-07-15T09:00:00+00:00",
                    "2024-08-15T09:00:00+00:00",
                ],
            ),
            // Third Monday of the month.
            (
                "0 0 8 ? * 2#3",
                "UTC",
                "2024-01-01T00:00:00Z",
                &[
                    "2024-01-15T08:00:00+00:00",
                    "2024-02-19T08:00:00+00:00",
                    "2024-03-18T08:00:00+00:00",
                ],
            ),
            // Spring forward in Berlin: 02:30 does not exist on 31 March 2024.
            (
                "0 30 2 * * ?",
                "Europe/Berlin",
                "2024-03-29T12:00:00Z",
                &["2024-03-30T02:30:00+01:00", "2024-04-01T02:30:00+02:00"],
            ),
            (
                "0 0/30 * * * ?",
                "Europe/Berlin",
                "2024-03-31T00:10:00Z",
                &[
                    "2024-03-31T01:30:00+01:00",
                    "2024-03-31T03:00:00+02:00",
                    "2024-03-31T03:30:00+02:00",
                ],
            ),
            // Fall back in Berlin: the repeated 02:30 fires once, at its second occurrence.
            (
                "0 30 2 * * ?",
                "Europe/Berlin",
                "2024-10-26T12:00:00Z",
                &["2024-10-27T02:30:00+01:00", "2024-10-28T02:30:00+01:00"],
            ),
            (
                "0 0/30 * * * ?",
                "Europe/Berlin",
                "2024-10-26T23:10:00Z",
                &[
                    "2024-10-27T01:30:00+02:00",
                    "2024-10-27T02:00:00+01:00",
                    "2024-10-27T02:30:00+01:00",
                ],
            ),
        ];
        for (rule, zone, from, want) in cases {
            assert_eq!(
                fires(rule, zone, from, want.len()),
                *want,
                "{rule} in {zone} from {from}"
            );
        }
    }

    fn every_second(f: &mut Firer, misfire: Misfire, after: i64, now: i64) -> Id {
        let id = Id::random();
        let s = Schedule::parse_quartz("* * * * * ?").unwrap();
        f.arm(id, s, TimeZone::UTC, misfire, after, now);
        id
    }

    #[test]
    fn missed_instants_follow_the_misfire_policy() {
        // (policy, seconds down, catch-up fire expected)
        let cases = [
            (Misfire::FireOnce, 30, true),
            (Misfire::FireOnce, 59, true),
            (Misfire::Skip, 30, false),
            (Misfire::Skip, 59, false),
        ];
        for (policy, down, want) in cases {
            let mut f = Firer::new(Limits::default());
            let t0 = 1_000_000_000;
            // Woken 500 ms past a whole second, `down` s after the last recorded fire.
            let now = t0 + down * 1000 + 500;
            let id = every_second(&mut f, policy, t0, now);
            let latest = now - 500;
            let catch_up = Fire {
                cron: id,
                at_ms: latest,
                catch_up: true,
            };
            let want: Vec<Fire> = if want { vec![catch_up] } else { vec![] };
            assert_eq!(f.due(now), want, "{policy:?} after {down} s");
            // Either way the next instant is the next second, on time.
            assert_eq!(f.next_wake(), Some(latest + 1000));
            assert_eq!(f.due(latest + 1000).len(), 1);
        }
    }

    #[test]
    fn a_rare_rule_missed_while_down_is_caught_up_once_or_skipped() {
        // (rule, policy, last fire, woken at, catch-up fire expected)
        let cases = [
            (
                "0 * * * * ?",
                Misfire::FireOnce,
                "10:00:00",
                "10:01:40",
                Some("10:01:00"),
            ),
            ("0 * * * * ?", Misfire::Skip, "10:00:00", "10:01:40", None),
            // Several missed: only the latest, once.
            (
                "0 * * * * ?",
                Misfire::FireOnce,
                "10:00:00",
                "10:05:10",
                Some("10:05:00"),
            ),
            // 70 s late: beyond the window, nothing fires under either policy.
            (
                "0 0 * * * ?",
                Misfire::FireOnce,
                "10:00:00",
                "11:01:10",
                None,
            ),
            ("0 0 * * * ?", Misfire::Skip, "10:00:00", "11:01:10", None),
        ];
        let at = |hms: &str| ms(&format!("2024-01-01T{hms}Z"));
        for (rule, policy, last, now, want) in cases {
            let mut f = Firer::new(Limits::default());
            let s = Schedule::parse_quartz(rule).unwrap();
            let id = Id::random();
            f.arm(id, s, TimeZone::UTC, policy, at(last), at(now));
            let want: Vec<Fire> = want
                .iter()
                .map(|w| Fire {
                    cron: id,
                    at_ms: at(w),
                    catch_up: true,
                })
                .collect();
            assert_eq!(f.due(at(now)), want, "{rule} {policy:?} at {now}");
            assert!(f.next_wake().unwrap() > at(now));
        }
    }

    #[test]
    fn a_stall_fires_at_most_once_per_cron() {
        let mut f = Firer::new(Limits::default());
        let t0 = 2_000_000_000;
        let a = every_second(&mut f, Misfire::FireOnce, t0, t0);
        let b = every_second(&mut f, Misfire::Skip, t0, t0);
        // On time (within the grace): both fire.
        let on_time = |cron, at_ms| Fire {
            cron,
            at_ms,
            catch_up: false,
        };
        let mut want = vec![on_time(a, t0 + 1000), on_time(b, t0 + 1000)];
        want.sort_by_key(|f| (f.at_ms, f.cron));
        f.prepare();
        assert_eq!(f.due(t0 + 1000 + 300), want);
        // The look-ahead never fires a stale instant: a late wake takes the slow path.
        f.prepare();
        // Woken 10 s late (a stalled process): one catch-up fire for `a`, none for `b`.
        let got = f.due(t0 + 11_000 + 300);
        assert_eq!(
            got,
            [Fire {
                cron: a,
                at_ms: t0 + 11_000,
                catch_up: true
            }]
        );
        assert_eq!(f.next_wake(), Some(t0 + 12_000));
        // Woken 5 minutes late: still one catch-up fire (the latest instant is recent).
        let got = f.due(t0 + 300_000 + 300);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].cron, got[0].catch_up), (a, true));
        assert_eq!(f.next_wake(), Some(t0 + 301_000));
        assert!(f.missed() > 0);
    }

    #[test]
    fn a_run_recorded_but_never_sent_is_cast_once_or_withdrawn() {
        let l = Limits::default();
        let t = 1_000_000;
        let fo = Some(Misfire::FireOnce);
        let sk = Some(Misfire::Skip);
        let cast = Pending::Cast { catch_up: false };
        let catch_up = Pending::Cast { catch_up: true };
        // (policy, taken over at, a later instant already due, fate)
        let cases = [
            // Before its instant, or within the grace: cast as recorded, under both policies.
            (fo, t - 300, false, cast),
            (sk, t - 300, false, cast),
            (fo, t + 2_000, true, cast),
            (sk, t + 2_000, true, cast),
            // Missed: fire_once catches it up if it is the latest missed instant.
            (fo, t + 2_001, false, catch_up),
            (fo, t + 60_000, false, catch_up),
            (fo, t + 30_000, true, Pending::Withdraw),
            (fo, t + 60_001, false, Pending::Withdraw),
            (sk, t + 2_001, false, Pending::Withdraw),
            (sk, t + 30_000, true, Pending::Withdraw),
            // The cron is stopped, deleted or started again after the recording.
            (None, t - 300, false, Pending::Withdraw),
            (None, t + 30_000, false, Pending::Withdraw),
        ];
        for (policy, now, later, want) in cases {
            assert_eq!(
                judge_pending(l, policy, t, now, later),
                want,
                "{policy:?} at {} later {later}",
                now - t
            );
        }
    }

    #[test]
    fn disarm_and_rearm() {
        let mut f = Firer::new(Limits::default());
        let t0 = 3_000_000_000;
        let a = every_second(&mut f, Misfire::FireOnce, t0, t0);
        f.disarm(a);
        assert_eq!(f.next_wake(), None);
        assert!(f.due(t0 + 5_000).is_empty());
        // Re-armed at a later start: nothing of the stopped period fires.
        let s = Schedule::parse_quartz("* * * * * ?").unwrap();
        f.arm(
            a,
            s,
            TimeZone::UTC,
            Misfire::FireOnce,
            t0 + 5_000,
            t0 + 5_000,
        );
        assert_eq!(f.next_wake(), Some(t0 + 6_000));
    }
}
