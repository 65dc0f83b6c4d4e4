//! When to send an agent its `DesiredApps`: only when it may not have the current set.
//!
//! The gateway remembers, per link, the set it last sent. It sends the set
//!
//! * after `Welcome` (always: a new link knows nothing),
//! * on `gateway.appsChanged` (the supervisor changed what some agents should run), when the
//!   freshly computed set differs from the one last sent,
//! * after a heartbeat, when the link never got a set (the push after `Welcome` failed, or a
//!   set could not be queued on a full link), or when the agent reports that a desired app is
//!   not installed at its desired version — then at most once per [`RESEND_EVERY`], since the
//!   agent retries failed installs on its own back-off and only needs the set again if it lost
//!   it.
//!
//! An app the agent reports that is not in the set is not a reason to send: apps pre-installed
//! by the agent's configuration stay by design, and an agent that has the set removes the
//! others on its own.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use elves_rpc::heartbeat::DesiredApp;

/// How often a heartbeat of an agent that has not reached its desired set resends it.
pub const RESEND_EVERY: Duration = Duration::from_secs(30);

/// Why a push is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The link has just started.
    Welcome,
    /// The supervisor announced a change.
    Changed,
    /// A heartbeat showed the agent may lack the set.
    Heartbeat,
}

/// What a link was last sent.
#[derive(Debug, Default)]
pub struct Sent {
    /// The last set queued on the link; `None` before the first one, or after one could not
    /// be queued.
    apps: Option<BTreeMap<String, DesiredApp>>,
    /// When it was queued.
    at: Option<Instant>,
}

impl Sent {
    /// Whether a heartbeat reporting `installed` (app → version) at `now` calls for a push.
    pub fn heartbeat_needs_push(&self, installed: &HashMap<String, String>, now: Instant) -> bool {
        let Some(apps) = &self.apps else {
            return true;
        };
        let converged = apps
            .iter()
            .all(|(app, d)| installed.get(app) == Some(&d.version));
        !converged
            && self
                .at
                .is_none_or(|at| now.saturating_duration_since(at) >= RESEND_EVERY)
    }

    /// Whether the freshly computed `apps` should be sent for `why`.
    pub fn should_send(&self, why: Why, apps: &BTreeMap<String, DesiredApp>) -> bool {
        match why {
            Why::Welcome | Why::Heartbeat => true,
            Why::Changed => self.apps.as_ref() != Some(apps),
        }
    }

    /// Records that `apps` was queued on the link at `now`.
    pub fn sent(&mut self, apps: BTreeMap<String, DesiredApp>, now: Instant) {
        self.apps = Some(apps);
        self.at = Some(now);
    }

    /// Records that a set could not be queued: the next heartbeat sends one.
    pub fn lost(&mut self) {
        self.apps = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, state, installed apps reported, now, whether to push).
    type HeartbeatCase<'a> = (&'a str, Sent, &'a [(&'a str, &'a str)], Instant, bool);
    /// (name, why, freshly computed set, whether to send).
    type SendCase<'a> = (&'a str, Why, &'a [(&'a str, &'a str)], bool);

    fn set(apps: &[(&str, &str)]) -> BTreeMap<String, DesiredApp> {
        apps.iter()
            .map(|(a, v)| {
                let d = DesiredApp {
                    version: (*v).into(),
                    sha256: Some("a".repeat(64)),
                    size: 1,
                };
                ((*a).to_owned(), d)
            })
            .collect()
    }

    fn installed(apps: &[(&str, &str)]) -> HashMap<String, String> {
        apps.iter()
            .map(|(a, v)| ((*a).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_heartbeat_pushes_only_when_the_agent_may_lack_its_set() {
        let t0 = Instant::now();
        let soon = t0 + Duration::from_secs(1);
        let later = t0 + RESEND_EVERY;
        let sent = |apps: &[(&str, &str)]| {
            let mut s = Sent::default();
            s.sent(set(apps), t0);
            s
        };
        let lost = {
            let mut s = sent(&[("demo", "1")]);
            s.lost();
            s
        };
        let cases: &[HeartbeatCase] = &[
            ("never sent", Sent::default(), &[], soon, true),
            (
                "the last set could not be queued",
                lost,
                &[("demo", "1")],
                soon,
                true,
            ),
            (
                "converged",
                sent(&[("demo", "1")]),
                &[("demo", "1")],
                later,
                false,
            ),
            ("converged on an empty set", sent(&[]), &[], later, false),
            (
                "extra (pre-installed) apps are not a reason",
                sent(&[]),
                &[("noop", "1.0.0")],
                later,
                false,
            ),
            (
                "extra apps beside the desired ones",
                sent(&[("demo", "1")]),
                &[("demo", "1"), ("x", "2")],
                later,
                false,
            ),
            (
                "a desired app missing, just sent",
                sent(&[("demo", "1")]),
                &[],
                soon,
                false,
            ),
            (
                "a desired app missing, resend due",
                sent(&[("demo", "1")]),
                &[],
                later,
                true,
            ),
            (
                "another version installed, resend due",
                sent(&[("demo", "2")]),
                &[("demo", "1")],
                later,
                true,
            ),
            (
                "another version installed, just sent",
                sent(&[("demo", "2")]),
                &[("demo", "1")],
                soon,
                false,
            ),
        ];
        for (name, state, reported, now, want) in cases {
            assert_eq!(
                state.heartbeat_needs_push(&installed(reported), *now),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_change_is_sent_only_when_the_set_differs_welcome_and_heartbeat_always() {
        let t0 = Instant::now();
        let mut s = Sent::default();
        let cases: &[SendCase] = &[
            (
                "nothing sent yet: a change is sent",
                Why::Changed,
                &[],
                true,
            ),
            ("welcome always", Why::Welcome, &[("demo", "1")], true),
        ];
        for (name, why, apps, want) in cases {
            assert_eq!(s.should_send(*why, &set(apps)), *want, "{name}");
        }
        s.sent(set(&[("demo", "1")]), t0);
        let cases: &[SendCase] = &[
            (
                "the same set: no change to send",
                Why::Changed,
                &[("demo", "1")],
                false,
            ),
            ("a new version", Why::Changed, &[("demo", "2")], true),
            ("an app removed", Why::Changed, &[], true),
            (
                "an app added",
                Why::Changed,
                &[("demo", "1"), ("b", "1")],
                true,
            ),
            (
                "welcome with the same set",
                Why::Welcome,
                &[("demo", "1")],
                true,
            ),
            (
                "heartbeat resend with the same set",
                Why::Heartbeat,
                &[("demo", "1")],
                true,
            ),
        ];
        for (name, why, apps, want) in cases {
            assert_eq!(s.should_send(*why, &set(apps)), *want, "{name}");
        }
        s.lost();
        assert!(
            s.should_send(Why::Changed, &set(&[("demo", "1")])),
            "after a lost set, a change is sent even when it equals the last one"
        );
    }
}
