//! The check order of api-v2 §3 and the rt/exec rules of §6, one case per rule.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use elves_bus::Bus;
use elves_rpc::scheduler::{RtResult, SyncJob};
use elves_sign::{Policy, SignType, signed_query};
use elves_types::{ErrorCode, Id, ManualClock};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;

const NOW: i64 = 1_700_000_000;
const ID: &str = "ABCDEF0123456789";
const KEY: &str = "s3cret-key";

fn app(modules: Modules) -> Router {
    let bus = Bus::memory();
    bus.for_module("scheduler").serve(|m: SyncJob| async move {
        if m.job.ip == "10.9.9.9" {
            return Err(ErrorCode::SendJobFail.into());
        }
        Ok(RtResult {
            id: Id::parse("00000000000000AA").unwrap(),
            worker_flag: 1,
            worker_message: format!(
                "{}|{}|{}|{}|{}",
                m.job.app, m.job.func, m.job.param, m.job.timeout, m.job.proxy
            ),
            worker_costtime: 3,
        })
    });
    let opts = Options {
        auth: AuthMode::Simple {
            auth_id: ID.into(),
            key: KEY.into(),
        },
        policy: Policy::default(),
        modules,
    };
    router(opts, &bus, Arc::new(ManualClock::new(NOW * 1000)))
}

async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let req = req
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn signed(path: &str, params: &[(&str, &str)]) -> String {
    format!(
        "{path}?{}",
        signed_query(path, params, ID, KEY, SignType::Md5, NOW, None)
    )
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap()
}

const RT: &str = "/api/v2/rt/exec";
const GOOD: &[(&str, &str)] = &[
    ("ip", "10.0.0.5"),
    ("app", "apptest"),
    ("func", "echo"),
    ("param", "{\"my\":\"中文\\n\"}"),
];

/// Replaces one raw query parameter `name=...` by `name=value` (or drops it).
fn with(uri: &str, name: &str, value: Option<&str>) -> String {
    let (path, q) = uri.split_once('?').unwrap();
    let mut parts: Vec<String> = q
        .split('&')
        .filter(|p| !p.starts_with(&format!("{name}=")))
        .map(String::from)
        .collect();
    if let Some(v) = value {
        parts.push(format!("{name}={v}"));
    }
    format!("{path}?{}", parts.join("&"))
}

#[tokio::test]
async fn check_order_rules() {
    let r = app(Modules::default());
    let ok = signed(RT, GOOD);
    let stale = format!(
        "{RT}?{}",
        signed_query(RT, GOOD, ID, KEY, SignType::Md5, NOW - 180, None)
    );
    let future = format!(
        "{RT}?{}",
        signed_query(RT, GOOD, ID, KEY, SignType::Md5, NOW + 180, None)
    );
    let edge = format!(
        "{RT}?{}",
        signed_query(RT, GOOD, ID, KEY, SignType::Md5, NOW - 179, None)
    );
    let other_id = format!(
        "{RT}?{}",
        signed_query(RT, GOOD, "FFFFFFFFFFFFFFFF", KEY, SignType::Md5, NOW, None)
    );
    let wrong_key = format!(
        "{RT}?{}",
        signed_query(RT, GOOD, ID, "other", SignType::Md5, NOW, None)
    );
    let hmac = format!(
        "{RT}?{}",
        signed_query(RT, GOOD, ID, KEY, SignType::HmacSha256, NOW, None)
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("a good MD5 request passes", ok.clone(), ""),
        ("HMAC-SHA256 passes", hmac, ""),
        (
            "step 1: auth_id missing",
            with(&ok, "auth_id", None),
            "[401.1]",
        ),
        (
            "step 1: sign blank",
            with(&ok, "sign", Some("+")),
            "[401.1]",
        ),
        (
            "step 1: timestamp missing",
            with(&ok, "timestamp", None),
            "[401.1]",
        ),
        (
            "step 1: sign_type missing",
            with(&ok, "sign_type", None),
            "[401.1]",
        ),
        (
            "step 2: unknown sign_type",
            with(&ok, "sign_type", Some("SHA1")),
            "[401.3]",
        ),
        (
            "step 3: short sign",
            with(&ok, "sign", Some("ABC")),
            "[401.4]",
        ),
        (
            "step 3: non-hex sign",
            with(&ok, "sign", Some(&"Z".repeat(32))),
            "[401.4]",
        ),
        (
            "step 4: timestamp not digits",
            with(&ok, "timestamp", Some("17e8")),
            "[401.8]",
        ),
        (
            "step 4: timestamp over 64 bits",
            with(&ok, "timestamp", Some("99999999999999999999")),
            "[401.8]",
        ),
        ("step 5: 180 s old", stale, "[401.7]"),
        ("step 5: 180 s ahead", future, "[401.7]"),
        ("step 5: 179 s old passes", edge, ""),
        ("step 6: another auth_id", other_id, "[401.2]"),
        ("step 7: wrong key", wrong_key, "[401.5]"),
        (
            "step 7: tampered parameter",
            with(&ok, "func", Some("helloword")),
            "[401.5]",
        ),
        (
            "step 7: repeated parameter",
            format!("{ok}&app=apptest"),
            "[401.5]",
        ),
        (
            "earlier step wins: bad sign_type and bad timestamp",
            with(&with(&ok, "sign_type", Some("x")), "timestamp", Some("x")),
            "[401.3]",
        ),
        (
            "earlier step wins: missing sign and bad sign_type",
            with(&with(&ok, "sign", None), "sign_type", Some("x")),
            "[401.1]",
        ),
    ];
    for (name, uri, want) in cases {
        let (status, v) = send(&r, "GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        let err = error_of(&v);
        if want.is_empty() {
            assert_eq!((v["flag"].as_str(), err), (Some("true"), ""), "{name}: {v}");
        } else {
            assert!(err.starts_with(want), "{name}: want {want}, got {v}");
            assert_eq!(v["flag"], "false", "{name}");
        }
    }
}

#[tokio::test]
async fn rt_exec_validation_order() {
    let r = app(Modules::default());
    let base = [
        ("ip", "10.0.0.5"),
        ("app", "apptest"),
        ("func", "echo"),
        ("param", "{}"),
        ("timeout", "5"),
    ];
    let set = |name: &str, value: Option<&str>| -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = base
            .iter()
            .filter(|(k, _)| *k != name)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(v) = value {
            p.push((name.into(), v.into()));
        }
        p
    };
    type Case<'a> = (&'a str, Vec<(String, String)>, &'a str);
    let cases: Vec<Case> = vec![
        ("app blank → 403.3", set("app", Some(" ")), "[403.3]"),
        ("app missing → 403.3", set("app", None), "[403.3]"),
        ("func blank → 403.7", set("func", Some("")), "[403.7]"),
        ("ip missing → 403.1", set("ip", None), "[403.1]"),
        (
            "ip not IPv4 → 403.1",
            set("ip", Some("10.0.0.256")),
            "[403.1]",
        ),
        (
            "param not JSON → 403.2",
            set("param", Some("{x")),
            "[403.2]",
        ),
        (
            "timeout not digits → 403.8",
            set("timeout", Some("-1")),
            "[403.8]",
        ),
        (
            "timeout over a day → 403.8",
            set("timeout", Some("86401")),
            "[403.8]",
        ),
        ("blank timeout means 90", set("timeout", Some(" ")), ""),
        ("blank param is allowed", set("param", Some("")), ""),
        (
            "app checked before func",
            {
                let mut p = set("app", None);
                p.retain(|(k, _)| k != "func");
                p
            },
            "[403.3]",
        ),
        (
            "func checked before ip",
            {
                let mut p = set("func", None);
                p.retain(|(k, _)| k != "ip");
                p
            },
            "[403.7]",
        ),
        (
            "ip checked before param",
            {
                let mut p = set("ip", Some("x"));
                p.retain(|(k, _)| k != "param");
                p.push(("param".into(), "{".into()));
                p
            },
            "[403.1]",
        ),
        (
            "param checked before timeout",
            {
                let mut p = set("param", Some("{"));
                p.retain(|(k, _)| k != "timeout");
                p.push(("timeout".into(), "x".into()));
                p
            },
            "[403.2]",
        ),
        (
            "unreachable agent → 410.1",
            set("ip", Some("10.9.9.9")),
            "[410.1]",
        ),
    ];
    for (name, params, want) in cases {
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (_, v) = send(&r, "GET", &signed(RT, &pairs), None).await;
        if want.is_empty() {
            assert_eq!(v["flag"], "true", "{name}: {v}");
        } else {
            assert!(
                error_of(&v).starts_with(want),
                "{name}: want {want}, got {v}"
            );
        }
    }
}

#[tokio::test]
async fn signature_failures_come_before_parameter_checks() {
    let r = app(Modules::default());
    let uri = with(
        &signed(RT, &[("ip", "bad"), ("app", ""), ("func", "")]),
        "sign",
        Some(&"0".repeat(32)),
    );
    let (_, v) = send(&r, "GET", &uri, None).await;
    assert_eq!(error_of(&v), "[401.5]Unauthorized Sign Error");
}

#[tokio::test]
async fn post_form_and_query_merge_and_answer_the_same() {
    let r = app(Modules::default());
    let q = signed_query(RT, GOOD, ID, KEY, SignType::Md5, NOW, None);
    let (_, via_post) = send(&r, "POST", RT, Some(q.clone())).await;
    let (_, via_get) = send(&r, "GET", &format!("{RT}?{q}"), None).await;
    assert_eq!(via_post, via_get);
    assert_eq!(via_post["flag"], "true");
    assert_eq!(
        via_post["result"]["worker_message"],
        "apptest|echo|{\"my\":\"中文\\n\"}|90|"
    );
    assert_eq!(via_post["result"]["worker_flag"], 1);
    assert_eq!(via_post["result"]["worker_costtime"], 3);
    // Split between the query and the body.
    let (first, rest) = q.split_once('&').unwrap();
    let (_, split) = send(&r, "POST", &format!("{RT}?{first}"), Some(rest.to_owned())).await;
    assert_eq!(split["flag"], "true", "{split}");
}

#[tokio::test]
async fn module_switches_answer_after_the_signature() {
    let r = app(Modules::default());
    let cases = [
        (
            "/api/v2/queue/create",
            "[402.3]Require Module (queue) Not Enabled",
        ),
        (
            "/api/v2/queue/qksqueue",
            "[402.3]Require Module (queue) Not Enabled",
        ),
        (
            "/api/v2/cron/add",
            "[402.2]Require Module (cron) Not Enabled",
        ),
        (
            "/api/v2/cron/detail",
            "[402.2]Require Module (cron) Not Enabled",
        ),
        (
            "/api/v2/info/app",
            "[402.1]Require Module (supervisor) Not Enabled",
        ),
        (
            "/api/v2/info/agents/detail",
            "[402.1]Require Module (supervisor) Not Enabled",
        ),
        (
            "/api/v2/info/apps",
            "[402.1]Require Module (supervisor) Not Enabled",
        ),
        (
            "/api/v2/info/agents",
            "[402.1]Require Module (supervisor) Not Enabled",
        ),
    ];
    for (path, want) in cases {
        let (_, v) = send(&r, "GET", &signed(path, &[("app", "apptest")]), None).await;
        assert_eq!(error_of(&v), want, "{path}");
        let unsigned = format!("{path}?app=apptest");
        let (_, v) = send(&r, "GET", &unsigned, None).await;
        assert!(error_of(&v).starts_with("[401.1]"), "{path} unsigned: {v}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_envelopes() {
    let r = app(Modules::default());
    for path in [
        "/api/v2/rt/nope",
        "/api/v2/",
        "/api/v9/rt/exec",
        "/api/x",
        "/api/v2/rt/exec.json",
    ] {
        let (status, v) = send(&r, "GET", path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(v["flag"], "false", "{path}");
    }
}

#[tokio::test]
async fn nonce_is_single_use() {
    let r = app(Modules::default());
    let uri = format!(
        "{RT}?{}",
        signed_query(RT, GOOD, ID, KEY, SignType::Md5, NOW, Some("n-1"))
    );
    let (_, first) = send(&r, "GET", &uri, None).await;
    assert_eq!(first["flag"], "true");
    let (_, again) = send(&r, "GET", &uri, None).await;
    assert_eq!(error_of(&again), "[401.9]Unauthorized Nonce Reused");
}

#[tokio::test]
async fn scheduler_missing_is_a_short_500() {
    let bus = Bus::memory();
    let opts = Options {
        auth: AuthMode::Simple {
            auth_id: ID.into(),
            key: KEY.into(),
        },
        policy: Policy::default(),
        modules: Modules::default(),
    };
    let r = router(opts, &bus, Arc::new(ManualClock::new(NOW * 1000)));
    let (_, v) = tokio::time::timeout(
        Duration::from_secs(5),
        send(&r, "GET", &signed(RT, GOOD), None),
    )
    .await
    .unwrap();
    assert_eq!(
        error_of(&v),
        "[500]Internal ServerError ,the scheduler did not answer"
    );
}

mod supervisor_mode {
    //! api-v2 §3 step 6 and §4 through the API, against a stand-in supervisor on the bus:
    //! key `ID` belongs to app `apptest`, bound to 10.0.0.5 only; app `other` exists too.
    use super::*;
    use elves_rpc::queue::{CreateQueue, QueueOwner};
    use elves_rpc::supervisor::{AccessFacts, AgentList, AppInfo, Facts, GetKey, KeyInfo};
    use serde_json::json;

    const DISABLED: &str = "DDDDDDDDDDDDDDDD";
    const EXPIRED: &str = "EEEEEEEEEEEEEEEE";
    const UNKNOWN: &str = "0000000000000000";
    /// A second key of `apptest` (a rotation) and a key of `other`.
    const ROTATED: &str = "1111111111111111";
    const OTHER_KEY: &str = "2222222222222222";

    fn app() -> Router {
        app_with(false)
    }

    fn app_with(cron: bool) -> Router {
        let bus = Bus::memory();
        bus.serve(|m: GetKey| async move {
            let key_of = |app: &str, disabled, expires_at_ms| {
                Ok(KeyInfo {
                    app: app.into(),
                    secret: KEY.into(),
                    disabled,
                    expires_at_ms,
                })
            };
            let key = |disabled, expires_at_ms| key_of("apptest", disabled, expires_at_ms);
            match m.auth_id.as_str() {
                ID | ROTATED => key(false, None),
                OTHER_KEY => key_of("other", false, None),
                DISABLED => key(true, None),
                EXPIRED => key(false, Some(NOW * 1000 - 1)),
                _ => Err(ErrorCode::AuthIdNotFound.into()),
            }
        });
        bus.serve(|m: AccessFacts| async move {
            let app_exists = m
                .app
                .as_deref()
                .is_none_or(|a| a == "apptest" || a == "other");
            let bound = [("apptest", "10.0.0.5"), ("other", "10.0.0.6")];
            let ip_bound =
                m.ip.as_deref()
                    .is_none_or(|ip| bound.contains(&(m.binding_app.as_str(), ip)));
            Ok(Facts {
                app_exists,
                ip_bound,
            })
        });
        bus.serve(|m: QueueOwner| async move {
            Ok(match m.queue_id.as_str() {
                "AAAAAAAAAAAAAAAA" => Some("apptest".to_owned()),
                "BBBBBBBBBBBBBBBB" => Some("other".to_owned()),
                _ => None,
            })
        });
        bus.serve(|m: elves_rpc::cron::CronOwner| async move {
            Ok(match m.cron_id.as_str() {
                "AAAAAAAAAAAAAAAA" => Some((ID.to_owned(), "apptest".to_owned())),
                "BBBBBBBBBBBBBBBB" => Some(("FFFFFFFFFFFFFFFF".to_owned(), "other".to_owned())),
                _ => None,
            })
        });
        bus.serve(|_: elves_rpc::cron::OperateCron| async move { Ok(()) });
        bus.serve(|m: elves_rpc::cron::CronDetail| async move { Ok(json!({"id": m.cron_id})) });
        // The crons of each app, as the cron module lists them (all of them for `None`).
        bus.serve(|m: elves_rpc::cron::CronList| async move {
            let all = [
                ("AAAAAAAAAAAAAAAA", "apptest"),
                ("BBBBBBBBBBBBBBBB", "other"),
            ];
            Ok(all
                .iter()
                .filter(|(_, app)| m.app.as_deref().is_none_or(|a| a == *app))
                .filter_map(|(id, _)| Id::parse(id))
                .collect())
        });
        bus.serve(|_: CreateQueue| async move { Ok(Id::parse("CCCCCCCCCCCCCCCC").unwrap()) });
        bus.serve(|m: AppInfo| async move { Ok(json!({"app": m.app})) });
        bus.serve(|m: AgentList| async move { Ok(vec![format!("bound-to-{}", m.app)]) });
        bus.serve(
            |_: elves_rpc::queue::QueueResult| async move { Ok(elves_types::raw(&json!({}))) },
        );
        bus.serve(|m: SyncJob| async move {
            Ok(RtResult {
                id: Id::parse("00000000000000AA").unwrap(),
                worker_flag: 1,
                worker_message: m.job.app,
                worker_costtime: 1,
            })
        });
        let modules = Modules {
            queue: true,
            cron,
            supervisor: true,
        };
        let opts = Options {
            auth: AuthMode::Supervisor,
            policy: Policy::default(),
            modules,
        };
        router(opts, &bus, Arc::new(ManualClock::new(NOW * 1000)))
    }

    fn signed_as(auth_id: &str, path: &str, params: &[(&str, &str)]) -> String {
        format!(
            "{path}?{}",
            signed_query(path, params, auth_id, KEY, SignType::Md5, NOW, None)
        )
    }

    #[tokio::test]
    async fn permission_rules() {
        let r = app();
        let rt =
            |ip: &'static str, app: &'static str| vec![("ip", ip), ("app", app), ("func", "f")];
        type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "own app on a bound agent",
                ID,
                RT,
                rt("10.0.0.5", "apptest"),
                "",
            ),
            (
                "unknown auth_id → 413.1",
                UNKNOWN,
                RT,
                rt("10.0.0.5", "apptest"),
                "[413.1]AuthId Not Found",
            ),
            (
                "disabled key → 401.2",
                DISABLED,
                RT,
                rt("10.0.0.5", "apptest"),
                "[401.2]",
            ),
            (
                "expired key → 401.2",
                EXPIRED,
                RT,
                rt("10.0.0.5", "apptest"),
                "[401.2]",
            ),
            (
                "another app → 401.6",
                ID,
                RT,
                rt("10.0.0.6", "other"),
                "[401.6]",
            ),
            (
                "an app that does not exist → 413.2",
                ID,
                RT,
                rt("10.0.0.5", "nope"),
                "[413.2]App Not Found",
            ),
            (
                "an agent not bound to the app → 401.6",
                ID,
                RT,
                rt("10.0.0.6", "apptest"),
                "[401.6]",
            ),
            (
                "parameter errors come before permission",
                ID,
                RT,
                rt("x", "other"),
                "[403.1]",
            ),
            (
                "queue/create for the own app",
                ID,
                "/api/v2/queue/create",
                vec![("app", "apptest")],
                "",
            ),
            (
                "queue/create for another app → 401.6",
                ID,
                "/api/v2/queue/create",
                vec![("app", "other")],
                "[401.6]",
            ),
            (
                "the own queue",
                ID,
                "/api/v2/queue/result",
                vec![("queue_id", "AAAAAAAAAAAAAAAA")],
                "",
            ),
            (
                "another app's queue → 401.6",
                ID,
                "/api/v2/queue/result",
                vec![("queue_id", "BBBBBBBBBBBBBBBB")],
                "[401.6]",
            ),
            (
                "queue/commit of another app's queue → 401.6",
                ID,
                "/api/v2/queue/commit",
                vec![("queue_id", "BBBBBBBBBBBBBBBB")],
                "[401.6]",
            ),
            (
                "queue/stop of another app's queue → 401.6",
                ID,
                "/api/v2/queue/stop",
                vec![("queue_id", "BBBBBBBBBBBBBBBB")],
                "[401.6]",
            ),
            (
                "qksqueue for another app → 401.6",
                ID,
                "/api/v2/queue/qksqueue",
                vec![("ip", "10.0.0.5"), ("app", "other"), ("func", "f")],
                "[401.6]",
            ),
            (
                "qksqueue on an agent not bound to the app → 401.6",
                ID,
                "/api/v2/queue/qksqueue",
                vec![("ip", "10.0.0.6"), ("app", "apptest"), ("func", "f")],
                "[401.6]",
            ),
            (
                "addtask to another app's queue → 401.6",
                ID,
                "/api/v2/queue/addtask",
                vec![
                    ("queue_id", "BBBBBBBBBBBBBBBB"),
                    ("ip", "10.0.0.6"),
                    ("func", "f"),
                ],
                "[401.6]",
            ),
            (
                "addtask: the ip must be bound to the queue's app",
                ID,
                "/api/v2/queue/addtask",
                vec![
                    ("queue_id", "AAAAAAAAAAAAAAAA"),
                    ("ip", "10.0.0.6"),
                    ("func", "f"),
                ],
                "[401.6]",
            ),
            (
                "info/app answers the key's app",
                ID,
                "/api/v2/info/app",
                vec![],
                "",
            ),
            (
                "info/agents/detail of an unbound agent → 401.6",
                ID,
                "/api/v2/info/agents/detail",
                vec![("ip", "10.0.0.6")],
                "[401.6]",
            ),
            (
                "info/agents/detail: ip checked first",
                ID,
                "/api/v2/info/agents/detail",
                vec![("ip", "")],
                "[403.1]",
            ),
            (
                "info/agents/detail with showcron and cron off → 402.2",
                ID,
                "/api/v2/info/agents/detail",
                vec![("ip", "10.0.0.5"), ("showcron", "true")],
                "[402.2]",
            ),
        ];
        for (name, auth_id, path, params, want) in cases {
            let (_, v) = send(&r, "GET", &signed_as(auth_id, path, &params), None).await;
            if want.is_empty() {
                assert_eq!(v["flag"], "true", "{name}: {v}");
            } else {
                assert!(
                    error_of(&v).starts_with(want),
                    "{name}: want {want}, got {v}"
                );
            }
        }
    }

    /// api-v2 §4: a cron belongs to the app that created it, whichever of the app's keys
    /// created it; `cron/list` answers the key's app.
    #[tokio::test]
    async fn crons_belong_to_the_app_that_created_them() {
        let r = app_with(true);
        const OWN: &str = "AAAAAAAAAAAAAAAA"; // created by a key of apptest
        const OTHERS: &str = "BBBBBBBBBBBBBBBB"; // created by a key of other
        // (what, key, route, params, want: the result, or the start of the error)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Vec<(&'a str, &'a str)>,
            Result<Value, &'a str>,
        );
        let cases: Vec<Case> = vec![
            ("list: the key's app", ID, "list", vec![], Ok(json!([OWN]))),
            (
                "list: a rotated key of the same app",
                ROTATED,
                "list",
                vec![],
                Ok(json!([OWN])),
            ),
            (
                "list: a key of another app",
                OTHER_KEY,
                "list",
                vec![],
                Ok(json!([OTHERS])),
            ),
            (
                "list on a bound ip",
                ID,
                "list",
                vec![("ip", "10.0.0.5")],
                Ok(json!([OWN])),
            ),
            (
                "list on an ip bound to another app → 401.6",
                ID,
                "list",
                vec![("ip", "10.0.0.6")],
                Err("[401.6]"),
            ),
            (
                "stop the own cron",
                ID,
                "stop",
                vec![("cron_id", OWN)],
                Ok(Value::Null),
            ),
            (
                "a rotated key stops the app's cron",
                ROTATED,
                "stop",
                vec![("cron_id", OWN)],
                Ok(Value::Null),
            ),
            (
                "a rotated key starts it",
                ROTATED,
                "start",
                vec![("cron_id", OWN)],
                Ok(Value::Null),
            ),
            (
                "a rotated key reads it",
                ROTATED,
                "detail",
                vec![("cron_id", OWN)],
                Ok(json!({"id": OWN})),
            ),
            (
                "a rotated key deletes it",
                ROTATED,
                "delete",
                vec![("cron_id", OWN)],
                Ok(Value::Null),
            ),
            (
                "another app's cron → 401.6",
                ID,
                "stop",
                vec![("cron_id", OTHERS)],
                Err("[401.6]"),
            ),
            (
                "a key of another app: stop → 401.6",
                OTHER_KEY,
                "stop",
                vec![("cron_id", OWN)],
                Err("[401.6]"),
            ),
            (
                "a key of another app: start → 401.6",
                OTHER_KEY,
                "start",
                vec![("cron_id", OWN)],
                Err("[401.6]"),
            ),
            (
                "a key of another app: delete → 401.6",
                OTHER_KEY,
                "delete",
                vec![("cron_id", OWN)],
                Err("[401.6]"),
            ),
            (
                "a key of another app: detail → 401.6",
                OTHER_KEY,
                "detail",
                vec![("cron_id", OWN)],
                Err("[401.6]"),
            ),
            (
                "a key of another app: info → 401.6",
                OTHER_KEY,
                "info",
                vec![("cron_id", OWN)],
                Err("[401.6]"),
            ),
            (
                "its own app's cron",
                OTHER_KEY,
                "stop",
                vec![("cron_id", OTHERS)],
                Ok(Value::Null),
            ),
            (
                "cron_id checked before permission",
                OTHER_KEY,
                "stop",
                vec![("cron_id", "AAA")],
                Err("[403.9]"),
            ),
        ];
        for (name, key, route, params, want) in cases {
            let path = format!("/api/v2/cron/{route}");
            let (_, v) = send(&r, "GET", &signed_as(key, &path, &params), None).await;
            match want {
                Ok(result) => {
                    assert_eq!(v["flag"], "true", "{name}: {v}");
                    assert_eq!(v["result"], result, "{name}: {v}");
                }
                Err(code) => assert!(
                    error_of(&v).starts_with(code),
                    "{name}: want {code}, got {v}"
                ),
            }
        }
    }

    #[tokio::test]
    async fn info_routes_answer_for_the_keys_app() {
        let r = app();
        let (_, v) = send(&r, "GET", &signed_as(ID, "/api/v2/info/apps", &[]), None).await;
        assert_eq!(v["result"], json!({"app": "apptest"}));
        let (_, v) = send(&r, "GET", &signed_as(ID, "/api/v2/info/agents", &[]), None).await;
        assert_eq!(v["result"], json!(["bound-to-apptest"]));
    }
}

/// The request id: the caller's when valid, else a fresh one; echoed in `X-Request-Id` and in
/// scope for the modules the request reaches over the bus.
#[tokio::test]
async fn request_ids_are_echoed_and_reach_the_scheduler() {
    let bus = Bus::memory();
    bus.for_module("scheduler").serve(|_: SyncJob| async move {
        Ok(RtResult {
            id: Id::parse("00000000000000AA").unwrap(),
            worker_flag: 1,
            worker_message: elves_bus::request_id()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            worker_costtime: 0,
        })
    });
    let opts = Options {
        auth: AuthMode::Simple {
            auth_id: ID.into(),
            key: KEY.into(),
        },
        policy: Policy::default(),
        modules: Modules::default(),
    };
    let router = router(opts, &bus, Arc::new(ManualClock::new(NOW * 1000)));
    // (X-Request-Id sent, the id expected back; None = a fresh 16-hex id)
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (None, None),
        (Some("trace-42.a_b"), Some("trace-42.a_b")),
        (Some("bad id with spaces"), None),
        (Some(""), None),
    ];
    for (i, (sent, want)) in cases.iter().enumerate() {
        let nonce = format!("n{i}");
        let uri = format!(
            "/api/v2/rt/exec?{}",
            signed_query(
                "/api/v2/rt/exec",
                &[("ip", "10.0.0.1"), ("app", "a"), ("func", "f")],
                ID,
                KEY,
                SignType::Md5,
                NOW,
                Some(&nonce)
            )
        );
        let mut req = Request::builder().method("GET").uri(uri);
        if let Some(s) = sent {
            req = req.header(REQUEST_ID_HEADER, *s);
        }
        let resp = router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let echoed = resp.headers()[REQUEST_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        match want {
            Some(w) => assert_eq!(echoed, *w, "case {sent:?}"),
            None => assert!(Id::parse(&echoed).is_some(), "case {sent:?}: {echoed:?}"),
        }
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["flag"], "true", "case {sent:?}: {v}");
        assert_eq!(
            v["result"]["worker_message"], echoed,
            "case {sent:?}: the scheduler saw the same id"
        );
    }
}
