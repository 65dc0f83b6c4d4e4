//! Whether an API key may make a request, in supervisor mode (api-v2 §3 step 6 and §4).
//!
//! The decision is split where the request pipeline splits it:
//!
//! * [`key_usable`] is step 6, before the signature is checked: an unknown `auth_id` is
//!   `[413.1]AuthId Not Found`; a disabled or expired key is `[401.2]` (**ext**: keys may
//!   expire). A key stops working at the instant `expires_at_ms` itself.
//! * [`check`] is step 11, after the signature and the route's parameters were validated. It
//!   takes the request's [`Access`] and the [`Facts`] the supervisor looked up, and answers in
//!   this order, the first failure winning:
//!   1. `app` present and naming no app → `[413.2]App Not Found`;
//!   2. `app` present and not the key's app → `[401.6]`;
//!   3. the request names a queue or cron owned by another app → `[401.6]` (**fix**: the
//!      original checked nothing here);
//!   4. `ip` present and not bound to the app the job runs → `[401.6]`. That app is the
//!      queue's for `queue/addtask` and the key's otherwise; [`binding_app`] says which.
//!
//! # Decisions
//!
//! * When `app` names an app that does not exist, 413.2 wins over 401.6, as in the
//!   original's `validateAuth` (which looked the app up before comparing it with the key's).
//!   App names are not secret, and v2 clients match on 413.2.
//! * A blank `app` or `ip` counts as absent, as in the original (the route's own validation,
//!   step 10, has already refused a blank value where one is required).
//! * An id that names no queue or cron has no owner, so [`check`] lets it through and the
//!   route answers `[412.1]`/`[411.1]`. Ids are 64 random bits, so this tells a caller
//!   nothing it could use to find another app's ids.
//! * One binding is enough (the original demanded exactly one row and refused duplicates).

use elves_types::ErrorCode;

/// What permission needs to know of an API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key<'a> {
    /// The one app the key may act on.
    pub app: &'a str,
    pub disabled: bool,
    /// The instant (Unix ms) from which the key no longer works; `None` means never.
    pub expires_at_ms: Option<i64>,
}

/// Step 6 of api-v2 §3 in supervisor mode: whether the key the request's `auth_id` names (if
/// any) may be used at `now_ms`.
pub fn key_usable(key: Option<&Key<'_>>, now_ms: i64) -> Result<(), ErrorCode> {
    let Some(key) = key else {
        return Err(ErrorCode::AuthIdNotFound);
    };
    if key.disabled || key.expires_at_ms.is_some_and(|at| now_ms >= at) {
        return Err(ErrorCode::AuthIdIllegal);
    }
    Ok(())
}

/// What a request asks to act on, as far as permission is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access<'a> {
    /// The `app` parameter, trimmed; `None` when absent or blank.
    pub app: Option<&'a str>,
    /// The `ip` parameter, trimmed; `None` when absent or blank.
    pub ip: Option<&'a str>,
}

impl<'a> Access<'a> {
    /// The access of a request with these raw `app` and `ip` parameters: values are trimmed,
    /// and a blank value counts as absent.
    pub fn from_params(app: Option<&'a str>, ip: Option<&'a str>) -> Access<'a> {
        let given = |v: Option<&'a str>| v.map(str::trim).filter(|v| !v.is_empty());
        Access {
            app: given(app),
            ip: given(ip),
        }
    }
}

/// What the supervisor knows that bears on a request, looked up for its [`Access`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts<'a> {
    /// The app of the key that signed the request.
    pub key_app: &'a str,
    /// Whether [`Access::app`] names an existing app (ignored when there is no `app`).
    pub app_exists: bool,
    /// The app that owns the queue or cron the request names by id; `None` when it names none
    /// or an id that does not exist.
    pub owner: Option<&'a str>,
    /// Whether [`Access::ip`] is bound to [`binding_app`]`(key_app, owner)` (ignored when
    /// there is no `ip`).
    pub ip_bound: bool,
}

/// The app whose bindings `ip` must be in: the queue's (or cron's) app when the request names
/// one, as for `queue/addtask`, whose task runs the queue's app; the key's app otherwise.
pub fn binding_app<'a>(key_app: &'a str, owner: Option<&'a str>) -> &'a str {
    owner.unwrap_or(key_app)
}

/// Step 11 of api-v2 §3: whether the request may act on what it names. See the module
/// documentation for the order of the checks.
pub fn check(access: &Access<'_>, facts: &Facts<'_>) -> Result<(), ErrorCode> {
    if let Some(app) = access.app {
        if !facts.app_exists {
            return Err(ErrorCode::AppNotFound);
        }
        if app != facts.key_app {
            return Err(ErrorCode::PermissionDenied);
        }
    }
    if facts.owner.is_some_and(|owner| owner != facts.key_app) {
        return Err(ErrorCode::PermissionDenied);
    }
    if access.ip.is_some() && !facts.ip_bound {
        return Err(ErrorCode::PermissionDenied);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The supervisor's world every case runs against.
    const APPS: &[&str] = &["ops", "web", "my_app"];
    /// (app, ip) bindings.
    const BINDINGS: &[(&str, &str)] = &[
        ("ops", "10.0.0.1"),
        ("ops", "10.0.0.3"),
        ("web", "10.0.0.2"),
        ("web", "10.0.0.3"),
    ];
    /// Queue and cron ids and the app that created each.
    const OWNERS: &[(&str, &str)] = &[
        ("Q_OPS", "ops"),
        ("Q_WEB", "web"),
        ("C_OPS", "ops"),
        ("C_WEB", "web"),
    ];
    /// The instant every case runs at.
    const NOW: i64 = 1_700_000_000_000;

    const OPS: Key<'static> = Key {
        app: "ops",
        disabled: false,
        expires_at_ms: None,
    };

    /// One rule of api-v2 §3 step 6 / §4.
    struct Case {
        name: &'static str,
        /// The key the `auth_id` names; `None` for an unknown `auth_id`.
        key: Option<Key<'static>>,
        app: Option<&'static str>,
        ip: Option<&'static str>,
        /// The queue or cron id the request names.
        id: Option<&'static str>,
        want: Result<(), ErrorCode>,
    }

    const fn case(name: &'static str, want: Result<(), ErrorCode>) -> Case {
        Case {
            name,
            key: Some(OPS),
            app: None,
            ip: None,
            id: None,
            want,
        }
    }

    const OK: Result<(), ErrorCode> = Ok(());
    const E413_1: Result<(), ErrorCode> = Err(ErrorCode::AuthIdNotFound);
    const E413_2: Result<(), ErrorCode> = Err(ErrorCode::AppNotFound);
    const E401_2: Result<(), ErrorCode> = Err(ErrorCode::AuthIdIllegal);
    const E401_6: Result<(), ErrorCode> = Err(ErrorCode::PermissionDenied);

    fn cases() -> Vec<Case> {
        vec![
            // Step 6: the key itself.
            Case {
                key: None,
                ..case("unknown auth_id is 413.1", E413_1)
            },
            Case {
                key: None,
                app: Some("ops"),
                ip: Some("10.0.0.1"),
                ..case("unknown auth_id is 413.1 whatever it asks", E413_1)
            },
            Case {
                key: Some(Key {
                    disabled: true,
                    ..OPS
                }),
                ..case("disabled key is 401.2", E401_2)
            },
            Case {
                key: Some(Key {
                    expires_at_ms: Some(NOW - 1),
                    ..OPS
                }),
                ..case("key past its expiry is 401.2", E401_2)
            },
            Case {
                key: Some(Key {
                    expires_at_ms: Some(NOW),
                    ..OPS
                }),
                ..case("key at its expiry instant is 401.2", E401_2)
            },
            Case {
                key: Some(Key {
                    expires_at_ms: Some(NOW + 1),
                    ..OPS
                }),
                ..case("key before its expiry works", OK)
            },
            Case {
                key: Some(Key {
                    disabled: true,
                    expires_at_ms: Some(NOW + 1),
                    ..OPS
                }),
                ..case("disabled key before its expiry is 401.2", E401_2)
            },
            Case {
                key: Some(Key {
                    disabled: true,
                    ..OPS
                }),
                app: Some("nope"),
                ..case("disabled key is 401.2 before the app is looked at", E401_2)
            },
            // No app, ip or id (info routes, queue/create's siblings): any usable key.
            case("usable key without app, ip or id passes", OK),
            // §4: the app parameter.
            Case {
                app: Some("ops"),
                ..case("app that is the key's app passes", OK)
            },
            Case {
                app: Some("web"),
                ..case("app of another existing app is 401.6", E401_6)
            },
            Case {
                app: Some("nope"),
                ..case("app that does not exist is 413.2", E413_2)
            },
            Case {
                app: Some("Ops"),
                ..case("app names are case-sensitive: 413.2", E413_2)
            },
            Case {
                app: Some("my"),
                ..case("app that is a prefix of an existing one is 413.2", E413_2)
            },
            Case {
                key: Some(Key { app: "gone", ..OPS }),
                app: Some("gone"),
                ..case(
                    "app that is the key's but no longer exists is 413.2",
                    E413_2,
                )
            },
            Case {
                app: Some("nope"),
                ip: Some("10.0.0.9"),
                ..case("unknown app wins over an unbound ip: 413.2", E413_2)
            },
            Case {
                app: Some("web"),
                ip: Some("10.0.0.2"),
                ..case("another app with an ip bound to it is still 401.6", E401_6)
            },
            Case {
                app: Some("  "),
                ..case("blank app counts as absent", OK)
            },
            Case {
                app: Some(" ops "),
                ..case("app is trimmed", OK)
            },
            // §4: the ip parameter, against the key's app.
            Case {
                ip: Some("10.0.0.1"),
                ..case("ip bound to the key's app passes", OK)
            },
            Case {
                ip: Some("10.0.0.2"),
                ..case("ip bound only to another app is 401.6", E401_6)
            },
            Case {
                ip: Some("10.0.0.9"),
                ..case("ip bound to no app is 401.6", E401_6)
            },
            Case {
                ip: Some("10.0.0.3"),
                ..case("ip bound to the key's app and others passes", OK)
            },
            Case {
                app: Some("ops"),
                ip: Some("10.0.0.1"),
                ..case("rt/exec: own app on a bound ip passes", OK)
            },
            Case {
                app: Some("ops"),
                ip: Some("10.0.0.2"),
                ..case("rt/exec: own app on an unbound ip is 401.6", E401_6)
            },
            Case {
                ip: Some(" 10.0.0.1 "),
                ..case("ip is trimmed", OK)
            },
            Case {
                ip: Some(""),
                ..case("empty ip counts as absent", OK)
            },
            // §4: queue and cron ids belong to the app that created them (fix).
            Case {
                id: Some("Q_OPS"),
                ..case("own queue passes", OK)
            },
            Case {
                id: Some("Q_WEB"),
                ..case("another app's queue is 401.6", E401_6)
            },
            Case {
                id: Some("C_OPS"),
                ..case("own cron passes", OK)
            },
            Case {
                id: Some("C_WEB"),
                ..case("another app's cron is 401.6", E401_6)
            },
            Case {
                id: Some("UNKNOWN"),
                ..case("an unknown id passes on to 412.1 / 411.1", OK)
            },
            // §4: queue/addtask runs the queue's app; the ip must be bound to it.
            Case {
                id: Some("Q_OPS"),
                ip: Some("10.0.0.1"),
                ..case("addtask on own queue with a bound ip passes", OK)
            },
            Case {
                id: Some("Q_OPS"),
                ip: Some("10.0.0.2"),
                ..case(
                    "addtask with an ip not bound to the queue's app is 401.6",
                    E401_6,
                )
            },
            Case {
                id: Some("Q_WEB"),
                ip: Some("10.0.0.2"),
                ..case(
                    "addtask on another app's queue is 401.6 even with an ip bound to that app",
                    E401_6,
                )
            },
            Case {
                id: Some("Q_WEB"),
                ip: Some("10.0.0.1"),
                ..case(
                    "addtask on another app's queue with an ip of the key's app is 401.6",
                    E401_6,
                )
            },
            Case {
                id: Some("UNKNOWN"),
                ip: Some("10.0.0.9"),
                ..case("an unknown queue with an unbound ip is 401.6", E401_6)
            },
            // ext cron/list: the optional ip filter is checked like any ip.
            Case {
                ip: Some("10.0.0.2"),
                key: Some(Key { app: "web", ..OPS }),
                ..case("cron/list with an ip of the key's app passes", OK)
            },
        ]
    }

    /// Runs a case the way the pipeline does: step 6, then (after the signature and the
    /// route's validation) step 11 with the facts looked up in the world above.
    fn run(c: &Case) -> Result<(), ErrorCode> {
        key_usable(c.key.as_ref(), NOW)?;
        let key_app = c.key.expect("a usable key").app;
        let access = Access::from_params(c.app, c.ip);
        let owner =
            c.id.and_then(|id| OWNERS.iter().find(|(i, _)| *i == id).map(|(_, app)| *app));
        let bound_to = binding_app(key_app, owner);
        let facts = Facts {
            key_app,
            app_exists: access.app.is_some_and(|app| APPS.contains(&app)),
            owner,
            ip_bound: access
                .ip
                .is_some_and(|ip| BINDINGS.contains(&(bound_to, ip))),
        };
        check(&access, &facts)
    }

    #[test]
    fn every_rule_of_api_v2_section_4() {
        let mut failed = Vec::new();
        for c in cases() {
            let got = run(&c);
            if got != c.want {
                failed.push(format!("{}: want {:?}, got {:?}", c.name, c.want, got));
            }
        }
        assert!(failed.is_empty(), "\n{}", failed.join("\n"));
    }

    #[test]
    fn case_names_are_unique() {
        let mut names: Vec<&str> = cases().iter().map(|c| c.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
    }

    #[test]
    fn every_permission_error_code_is_covered() {
        let wants: Vec<Result<(), ErrorCode>> = cases().iter().map(|c| c.want).collect();
        for code in [OK, E413_1, E413_2, E401_2, E401_6] {
            assert!(wants.contains(&code), "{code:?} has no case");
        }
    }

    #[test]
    fn binding_app_is_the_owner_when_there_is_one() {
        assert_eq!(binding_app("ops", None), "ops");
        assert_eq!(binding_app("ops", Some("web")), "web");
    }
}
