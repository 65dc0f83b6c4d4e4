//! End to end: the real `elves center` and real `elves agent` processes on loopback, driven
//! over the v2 HTTP API with a hand-written HTTP/1.1 client.
//!
//! Covers api-v2 §1–§3, §6 (`rt/exec`) and §7, agent-protocol §1, §3 and §4, and the
//! start-up refusals of operations.md. One cluster (a center and the agents `127.0.0.2` and
//! `127.0.0.3`) is started once and shared by every case of [`rt_exec_end_to_end`];
//! processes live in a guard that stops them on drop, and their stderr goes to files in the
//! test's temporary directory, printed when a case fails. Every wait is a bounded poll.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use elves_sign::{SignType, signed_query};
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// The agents' apps.

/// The worker of the test app. `$1` app, `$2` func, `$3` base64 of the param.
const WORKER: &str = r#"#!/bin/sh
ok() { printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s</ElvesWResult>' "$1"; }
case "$2" in
  echo)
    printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>'
    printf '%s' "$3" | base64 -d
    printf '</ElvesWResult>' ;;
  who) ok "@IP@" ;;
  fail) printf 'noise\n<ElvesWFlag>false</ElvesWFlag>\n<ElvesWResult>worker says no</ElvesWResult>\n' ;;
  upper) printf '<ElvesWFlag>TRUE</ElvesWFlag><ElvesWResult>x</ElvesWResult>' ;;
  multi) printf '<ElvesWFlag>true</ElvesWFlag>\n<ElvesWResult>a</ElvesWResult>b\n</ElvesWResult>' ;;
  args) ok "$#|$1|$2|[$3]" ;;
  env)
    printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>cwd=%s\n' "$(pwd -P)"
    env
    printf '</ElvesWResult>' ;;
  exit3) echo 'stderr line one' >&2; echo 'boom: disk on fire' >&2; exit 3 ;;
  noflag) printf 'hello <ElvesWResult>r</ElvesWResult> no flag here' ;;
  noresult) printf '<ElvesWFlag>true</ElvesWFlag> but no result' ;;
  slow) sleep 30 ;;
  grandchild) sleep 60 & echo $! > grandchild.pid; sleep 30 ;;
  *) printf '<ElvesWFlag>false</ElvesWFlag><ElvesWResult>unknown func %s</ElvesWResult>' "$2" ;;
esac
"#;

/// Run by `proxy = "sh|other.sh"`.
const OTHER_SH: &str = "printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>via-sh|%s|%s</ElvesWResult>' \"$1\" \"$2\"\n";
/// Run by `proxy = "other-exec"`.
const OTHER_EXEC: &str = "#!/bin/sh\nprintf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>via-exec|%s|%s</ElvesWResult>' \"$1\" \"$2\"\n";

/// Writes an agent's apps (see [`PrepareAgent`]).
fn prepare_agent(home: &Path, ip: &str) -> String {
    let apps = home.join("apps");
    let app = apps.join(APP);
    write_file(&app.join("app-worker"), &WORKER.replace("@IP@", ip), 0o755);
    write_file(&app.join("other.sh"), OTHER_SH, 0o644);
    write_file(&app.join("other-exec"), OTHER_EXEC, 0o755);
    // A file outside the app directory, and a symlink in it that points there.
    write_file(&home.join("outside.sh"), OTHER_SH, 0o755);
    std::os::unix::fs::symlink(home.join("outside.sh"), app.join("escape.sh")).unwrap();
    // An installed app whose directory has no entry, one without a directory, and a
    // directory with a worker that is not installed.
    fs::create_dir_all(apps.join("noentry")).unwrap();
    write_file(&apps.join("ghost/app-worker"), WORKER, 0o755);
    format!("{APP} = '1.0.0'\nnoentry = '1.0.0'\nnodir = '1.0.0'\n")
}

// ---------------------------------------------------------------------------------------
// Checks.

/// Checks a successful rt/exec envelope and returns its result.
fn rt_result(what: &str, r: Resp) -> Value {
    let env = envelope(what, r);
    assert_eq!(env["flag"], "true", "{what}: {env}");
    assert_eq!(env["error"], "", "{what}: {env}");
    let res = env["result"].clone();
    let id = res["id"].as_str().unwrap_or_default();
    assert!(
        is_id(id),
        "{what}: id {id:?} is not 16 upper-case hex characters"
    );
    assert!(res["worker_flag"].is_i64(), "{what}: worker_flag: {res}");
    assert!(
        res["worker_costtime"].as_i64().is_some_and(|c| c >= 0),
        "{what}: worker_costtime: {res}"
    );
    assert!(res["worker_message"].is_string(), "{what}: {res}");
    res
}

/// Replaces (or with `None` drops) the raw query parameter `name`.
fn with(target: &str, name: &str, value: Option<&str>) -> String {
    let (path, q) = target.split_once('?').unwrap();
    let prefix = format!("{name}=");
    let mut parts: Vec<String> = q
        .split('&')
        .filter(|p| !p.starts_with(&prefix))
        .map(String::from)
        .collect();
    if let Some(v) = value {
        parts.push(format!("{name}={v}"));
    }
    format!("{path}?{}", parts.join("&"))
}

// ---------------------------------------------------------------------------------------
// The cases.

#[test]
fn rt_exec_end_to_end() {
    let started = Instant::now();
    let mut c = Cluster::start(prepare_agent);
    eprintln!("cluster up in {:?}", started.elapsed());
    std::thread::scope(|s| {
        // The slow cases (each waits for a 1 s timeout) run next to the others.
        let slow = s.spawn(|| timeout_kills_the_grandchild(&c));
        worker_outcomes_through_the_api(&c);
        slow.join().expect("timeout_kills_the_grandchild");
    });
    echo_round_trip_get_and_post(&c);
    auth_and_validation_in_check_order(&c);
    nonce_reuse_is_401_9(&c);
    unknown_api_path_is_404(&c);
    unknown_agent_is_410_1_at_once(&c);
    second_agent_claiming_a_taken_ip_is_refused(&mut c);
    eprintln!("whole scenario in {:?}", started.elapsed());
}

/// Case 1: the param reaches the worker byte for byte (base64 on its command line) and the
/// result comes back unchanged, by GET, by POST form and by query + form merged.
fn echo_round_trip_get_and_post(c: &Cluster) {
    let params = [
        ("Chinese and an escaped newline", r#"{"my":"中文\n第二行"}"#),
        (
            "a raw newline between JSON tokens",
            "{\"my\":\"中文\\n第二行\",\n\"n\": [1, 2.5, null]}",
        ),
        ("URL-special characters", r#"{"q":"a+b&c=d%20e ?#/"}"#),
        ("a JSON string value", r#""just a string""#),
    ];
    let mut ids = std::collections::HashSet::new();
    for (name, param) in params {
        let p = [
            ("ip", IP_A),
            ("app", APP),
            ("func", "echo"),
            ("param", param),
        ];
        let q = c.api.query(&p);
        // The job's parameters in the form body, the signing parameters in the query.
        let (in_body, in_query): (Vec<&str>, Vec<&str>) = q.split('&').partition(|kv| {
            ["ip=", "app=", "func=", "param="]
                .iter()
                .any(|k| kv.starts_with(k))
        });
        let sends = [
            ("GET", c.api.get(&format!("{RT}?{q}"))),
            ("POST form", c.api.post(RT, &q)),
            (
                "POST query + form",
                c.api
                    .post(&format!("{RT}?{}", in_query.join("&")), &in_body.join("&")),
            ),
        ];
        for (how, resp) in sends {
            let what = format!("echo {name} ({how})");
            let r = rt_result(&what, resp);
            assert_eq!(r["worker_flag"], 1, "{what}: {r}");
            assert_eq!(r["worker_message"], param, "{what}");
            assert!(ids.insert(r["id"].to_string()), "{what}: id reused: {r}");
        }
    }

    // A JSON body is not a v2 input (api-v2 §1): its parameters are not seen.
    let p = [("ip", IP_A), ("app", APP), ("func", "who")];
    let fields: serde_json::Map<String, Value> = c
        .api
        .query(&p)
        .split('&')
        .map(|kv| kv.split_once('=').unwrap())
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    let json = Value::Object(fields).to_string();
    let r = c.api.send("POST", RT, Some(("application/json", &json)));
    check_refused("a JSON body", r, "401.1");
}

/// What an rt/exec outcome's `worker_message` must be.
enum Msg {
    Exact(&'static str),
    /// Starts with the first text and contains the second.
    Prefix(&'static str, &'static str),
}

/// Case 2: worker_flag 1, 0 and every -1 cause of agent-protocol §4, as the agent words them.
fn worker_outcomes_through_the_api(c: &Cluster) {
    use Msg::*;
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str, &str, i64, Msg)] = &[
        // (case, ip, app, func, proxy, worker_flag, message)
        ("flag true is 1", IP_A, APP, "who", "", 1, Exact(IP_A)),
        ("the job runs on the agent named by ip", IP_B, APP, "who", "", 1, Exact(IP_B)),
        ("flag false is 0", IP_A, APP, "fail", "", 0, Exact("worker says no")),
        ("a flag other than exactly true is 0", IP_A, APP, "upper", "", 0, Exact("x")),
        ("markers: first open to last close, across lines", IP_A, APP, "multi", "", 1,
            Exact("a</ElvesWResult>b\n")),
        ("no param gives an empty argument", IP_B, APP, "args", "", 1, Exact("3|e2eapp|args|[]")),
        ("proxy X|Y runs Y with an allowed interpreter", IP_A, APP, "p", "sh|other.sh", 1,
            Exact("via-sh|e2eapp|p")),
        ("proxy Y runs an executable of the app", IP_A, APP, "p", "other-exec", 1,
            Exact("via-exec|e2eapp|p")),
        ("-1 app not installed (files present, not in [apps])", IP_A, "ghost", "who", "", -1,
            Exact("app [ghost] not install !")),
        ("-1 app not installed (nothing)", IP_B, "nosuchapp", "who", "", -1,
            Exact("app [nosuchapp] not install !")),
        ("-1 entry missing (empty app directory)", IP_A, "noentry", "who", "", -1,
            Prefix("app [noentry] entry missing : neither an executable app-worker nor app-worker.py in ", "noentry")),
        ("-1 entry missing (no app directory)", IP_A, "nodir", "who", "", -1,
            Prefix("app [nodir] entry missing : ", "nodir")),
        ("-1 proxy interpreter not allowed", IP_A, APP, "who", "perl|app-worker", -1,
            Exact("app proxy refused : interpreter [perl] is not allowed")),
        ("-1 proxy interpreter given as a path", IP_A, APP, "who", "/bin/sh|app-worker", -1,
            Exact("app proxy refused : interpreter [/bin/sh] must be a bare name from allowed_interpreters")),
        ("-1 proxy path with ..", IP_A, APP, "who", "sh|../ghost/app-worker", -1,
            Exact("app proxy refused : [../ghost/app-worker] must not leave the app directory")),
        ("-1 proxy absolute path", IP_A, APP, "who", "/bin/sh", -1,
            Exact("app proxy refused : [/bin/sh] must be a path relative to the app directory")),
        ("-1 proxy symlink escaping the app directory", IP_A, APP, "who", "sh|escape.sh", -1,
            Exact("app proxy refused : [escape.sh] resolves outside the app directory")),
        ("-1 proxy executable symlink escaping the app directory", IP_A, APP, "who", "escape.sh", -1,
            Exact("app proxy refused : [escape.sh] resolves outside the app directory")),
        ("-1 non-zero exit, with the stderr tail", IP_A, APP, "exit3", "", -1,
            Prefix("app exec error : exit status 3", "stderr line one\nboom: disk on fire")),
        ("-1 flag markers missing", IP_A, APP, "noflag", "", -1,
            Exact("app output flag error : hello <ElvesWResult>r</ElvesWResult> no flag here")),
        ("-1 result markers missing", IP_A, APP, "noresult", "", -1,
            Exact("app output result error : <ElvesWFlag>true</ElvesWFlag> but no result")),
    ];
    for (name, ip, app, func, proxy, flag, msg) in cases {
        let mut p = vec![("ip", *ip), ("app", *app), ("func", *func)];
        if !proxy.is_empty() {
            p.push(("proxy", *proxy));
        }
        let r = rt_result(name, c.api.get(&c.api.signed(&p)));
        assert_eq!(r["worker_flag"], *flag, "{name}: {r}");
        let got = r["worker_message"].as_str().unwrap();
        match msg {
            Exact(want) => assert_eq!(got, *want, "{name}"),
            Prefix(start, part) => {
                assert!(got.starts_with(start), "{name}: {got:?}");
                assert!(got.contains(part), "{name}: {got:?}");
            }
        }
    }

    // The worker's command line, environment and working directory (agent-protocol §3).
    let r = rt_result(
        "worker environment",
        c.api.get(
            &c.api
                .signed(&[("ip", IP_A), ("app", APP), ("func", "env"), ("param", "{}")]),
        ),
    );
    let out = r["worker_message"].as_str().unwrap();
    let app_dir = c.dir.path().join("agent-a/apps").join(APP);
    let cwd = format!("cwd={}", app_dir.canonicalize().unwrap().display());
    let task_id = format!("ELVES_TASK_ID={}", r["id"].as_str().unwrap());
    for line in [
        cwd.as_str(),
        "ELVES_APP=e2eapp",
        "ELVES_FUNC=env",
        "ELVES_TASK_TYPE=rt",
        "ELVES_MODE=NP",
        task_id.as_str(),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "worker environment: no line {line:?} in\n{out}"
        );
    }
    assert!(
        !out.contains(TOKEN) && !out.contains(AUTH_KEY),
        "the worker must not see the agent's secrets:\n{out}"
    );
}

/// Cases 2 (timeout) and 3: a timed-out worker is reported as such, and its whole process
/// group dies, including a grandchild it started in the background.
fn timeout_kills_the_grandchild(c: &Cluster) {
    for (name, func) in [
        ("-1 timeout", "slow"),
        ("-1 timeout kills the grandchild", "grandchild"),
    ] {
        let t = Instant::now();
        let r = rt_result(
            name,
            c.api.get(&c.api.signed(&[
                ("ip", IP_B),
                ("app", APP),
                ("func", func),
                ("timeout", "1"),
            ])),
        );
        let took = t.elapsed();
        assert_eq!(r["worker_flag"], -1, "{name}: {r}");
        assert_eq!(r["worker_message"], "app exec timeout", "{name}");
        let cost = r["worker_costtime"].as_i64().unwrap();
        assert!(
            (900..5000).contains(&cost),
            "{name}: worker_costtime {cost}"
        );
        assert!(
            took < Duration::from_secs(10),
            "{name}: answered after {took:?}"
        );
    }
    let pid_file = c
        .dir
        .path()
        .join("agent-b/apps")
        .join(APP)
        .join("grandchild.pid");
    let pid: u32 = fs::read_to_string(&pid_file)
        .expect("the worker wrote its grandchild's pid")
        .trim()
        .parse()
        .unwrap();
    poll(
        &format!("grandchild {pid} to die"),
        Duration::from_secs(2),
        || is_dead(pid).then_some(()),
    );
}

/// Case 4: every 401.x and 403.x of rt/exec, and the earlier check winning when two things
/// are wrong (api-v2 §3).
fn auth_and_validation_in_check_order(c: &Cluster) {
    let good: &[(&str, &str)] = &[("ip", IP_A), ("app", APP), ("func", "who")];
    let now = now_secs();
    let signed_as = |params: &[(&str, &str)], id: &str, key: &str, ty: SignType, ts: i64| {
        format!("{RT}?{}", signed_query(RT, params, id, key, ty, ts, None))
    };
    let ok = signed_as(good, AUTH_ID, AUTH_KEY, SignType::Md5, now);
    let md5_sign = ok.split("sign=").last().unwrap().to_owned();
    let other_id = signed_as(good, "FFFFFFFFFFFFFFFF", AUTH_KEY, SignType::Md5, now);
    let wrong_key = signed_as(good, AUTH_ID, "not-the-key", SignType::Md5, now);
    let old = signed_as(good, AUTH_ID, AUTH_KEY, SignType::Md5, now - 3600);
    let future = signed_as(good, AUTH_ID, AUTH_KEY, SignType::Md5, now + 3600);
    let old_other_id = signed_as(
        good,
        "FFFFFFFFFFFFFFFF",
        AUTH_KEY,
        SignType::Md5,
        now - 3600,
    );
    let other_id_wrong_key = signed_as(good, "FFFFFFFFFFFFFFFF", "nope", SignType::Md5, now);
    let signed_with = |extra: &[(&str, &str)]| c.api.signed(&overridden(good, extra));
    let wrong_key_with = |extra: &[(&str, &str)]| {
        signed_as(
            &overridden(good, extra),
            AUTH_ID,
            "nope",
            SignType::Md5,
            now,
        )
    };
    let x32 = "Z".repeat(32);

    let cases: Vec<(&str, String, &str)> = vec![
        // The positive controls.
        ("a good MD5 request passes", ok.clone(), ""),
        (
            "HMAC-SHA256 passes",
            signed_as(good, AUTH_ID, AUTH_KEY, SignType::HmacSha256, now),
            "",
        ),
        (
            "a lower-case MD5 signature passes",
            with(&ok, "sign", Some(&md5_sign.to_ascii_lowercase())),
            "",
        ),
        (
            "sign_type is case-insensitive",
            with(&ok, "sign_type", Some("md5")),
            "",
        ),
        (
            "timeout= (empty) is the default",
            signed_with(&[("timeout", "")]),
            "",
        ),
        // 401.1
        ("401.1 auth_id missing", with(&ok, "auth_id", None), "401.1"),
        (
            "401.1 timestamp missing",
            with(&ok, "timestamp", None),
            "401.1",
        ),
        (
            "401.1 sign_type missing",
            with(&ok, "sign_type", None),
            "401.1",
        ),
        ("401.1 sign missing", with(&ok, "sign", None), "401.1"),
        (
            "401.1 sign blank",
            with(&ok, "sign", Some("%20%20")),
            "401.1",
        ),
        (
            "401.1 auth_id empty",
            with(&ok, "auth_id", Some("")),
            "401.1",
        ),
        // 401.3
        (
            "401.3 unknown sign_type",
            with(&ok, "sign_type", Some("SHA1")),
            "401.3",
        ),
        // 401.4
        (
            "401.4 sign too short",
            with(&ok, "sign", Some("ABC123")),
            "401.4",
        ),
        ("401.4 sign not hex", with(&ok, "sign", Some(&x32)), "401.4"),
        (
            "401.4 MD5-length sign with HMAC-SHA256",
            with(&ok, "sign_type", Some("HMAC-SHA256")),
            "401.4",
        ),
        // 401.8
        (
            "401.8 timestamp not decimal",
            with(&ok, "timestamp", Some("17e8")),
            "401.8",
        ),
        (
            "401.8 timestamp with a plus sign",
            with(&ok, "timestamp", Some("%2B1700000000")),
            "401.8",
        ),
        (
            "401.8 timestamp over 64 bits",
            with(&ok, "timestamp", Some("99999999999999999999")),
            "401.8",
        ),
        (
            "401.8 timestamp negative",
            with(&ok, "timestamp", Some("-5")),
            "401.8",
        ),
        // 401.7
        ("401.7 timestamp an hour old", old.clone(), "401.7"),
        ("401.7 timestamp an hour ahead", future, "401.7"),
        // 401.2
        ("401.2 another auth_id", other_id.clone(), "401.2"),
        // 401.5
        ("401.5 wrong key", wrong_key.clone(), "401.5"),
        (
            "401.5 parameter changed after signing",
            with(&ok, "func", Some("echo")),
            "401.5",
        ),
        (
            "401.5 unsigned extra parameter",
            format!("{ok}&extra=1"),
            "401.5",
        ),
        (
            "401.5 repeated parameter (same value)",
            format!("{ok}&func=who"),
            "401.5",
        ),
        (
            "401.5 repeated signing parameter",
            format!("{ok}&sign={md5_sign}"),
            "401.5",
        ),
        (
            "401.5 repeated parameter, signed over the first value",
            signed_as(
                &[
                    ("ip", IP_A),
                    ("app", APP),
                    ("func", "who"),
                    ("func", "echo"),
                ],
                AUTH_ID,
                AUTH_KEY,
                SignType::Md5,
                now,
            ),
            "401.5",
        ),
        // 403.x, each with a good signature.
        ("403.3 app blank", signed_with(&[("app", " ")]), "403.3"),
        (
            "403.3 app missing",
            signed_with(&[("app", "<absent>")]),
            "403.3",
        ),
        ("403.7 func blank", signed_with(&[("func", "")]), "403.7"),
        (
            "403.7 func missing",
            signed_with(&[("func", "<absent>")]),
            "403.7",
        ),
        (
            "403.1 ip with three octets",
            signed_with(&[("ip", "127.0.0")]),
            "403.1",
        ),
        (
            "403.1 ip octet over 255",
            signed_with(&[("ip", "127.0.0.256")]),
            "403.1",
        ),
        (
            "403.1 ip a name",
            signed_with(&[("ip", "localhost")]),
            "403.1",
        ),
        (
            "403.1 ip missing",
            signed_with(&[("ip", "<absent>")]),
            "403.1",
        ),
        (
            "403.2 param not JSON",
            signed_with(&[("param", "{bad")]),
            "403.2",
        ),
        (
            "403.2 param trailing garbage",
            signed_with(&[("param", "{} x")]),
            "403.2",
        ),
        (
            "403.8 timeout not digits",
            signed_with(&[("timeout", "abc")]),
            "403.8",
        ),
        (
            "403.8 timeout negative",
            signed_with(&[("timeout", "-1")]),
            "403.8",
        ),
        (
            "403.8 timeout over a day",
            signed_with(&[("timeout", "86401")]),
            "403.8",
        ),
        // Two things wrong: the earlier check wins.
        (
            "401.1 before 401.3",
            with(&with(&ok, "sign_type", Some("SHA1")), "auth_id", None),
            "401.1",
        ),
        (
            "401.3 before 401.4",
            with(&with(&ok, "sign_type", Some("SHA1")), "sign", Some("ABC")),
            "401.3",
        ),
        (
            "401.4 before 401.8",
            with(&with(&ok, "sign", Some("ABC")), "timestamp", Some("x")),
            "401.4",
        ),
        (
            "401.8 before 401.2",
            with(&other_id, "timestamp", Some("x")),
            "401.8",
        ),
        ("401.7 before 401.2", old_other_id, "401.7"),
        ("401.2 before 401.5", other_id_wrong_key, "401.2"),
        (
            "401.5 before 403.3",
            wrong_key_with(&[("app", "")]),
            "401.5",
        ),
        (
            "401.5 before 410.1",
            wrong_key_with(&[("ip", IP_UNKNOWN)]),
            "401.5",
        ),
        (
            "403.3 before 403.7",
            signed_with(&[("app", ""), ("func", "")]),
            "403.3",
        ),
        (
            "403.7 before 403.1",
            signed_with(&[("func", ""), ("ip", "x")]),
            "403.7",
        ),
        (
            "403.1 before 403.2",
            signed_with(&[("ip", "x"), ("param", "{")]),
            "403.1",
        ),
        (
            "403.2 before 403.8",
            signed_with(&[("param", "{"), ("timeout", "x")]),
            "403.2",
        ),
        (
            "403.8 before 410.1",
            signed_with(&[("ip", IP_UNKNOWN), ("timeout", "x")]),
            "403.8",
        ),
    ];
    for (name, target, code) in cases {
        let r = c.api.get(&target);
        if code.is_empty() {
            let res = rt_result(name, r);
            assert_eq!(res["worker_message"], IP_A, "{name}");
        } else {
            check_refused(&format!("{name} ({target})"), r, code);
        }
    }
}

/// Case 4, 401.9: a nonce is accepted once per window; a refused signature does not spend it.
fn nonce_reuse_is_401_9(c: &Cluster) {
    let nonce = format!("e2e-{}-{}", std::process::id(), now_secs());
    let other = format!("{nonce}-b");
    let good: &[(&str, &str)] = &[("ip", IP_A), ("app", APP), ("func", "who")];
    let with_nonce = |n: &str, key: &str| {
        format!(
            "{RT}?{}",
            signed_query(RT, good, AUTH_ID, key, SignType::Md5, now_secs(), Some(n))
        )
    };
    // (step, method, request, expected code; "" = accepted)
    let steps: &[(&str, &str, String, &str)] = &[
        (
            "first use of a nonce",
            "GET",
            with_nonce(&nonce, AUTH_KEY),
            "",
        ),
        (
            "the same nonce again",
            "GET",
            with_nonce(&nonce, AUTH_KEY),
            "401.9",
        ),
        (
            "the same nonce by POST",
            "POST",
            with_nonce(&nonce, AUTH_KEY),
            "401.9",
        ),
        (
            "a bad signature with a new nonce",
            "GET",
            with_nonce(&other, "nope"),
            "401.5",
        ),
        (
            "that nonce, now well signed",
            "GET",
            with_nonce(&other, AUTH_KEY),
            "",
        ),
        ("and again", "GET", with_nonce(&other, AUTH_KEY), "401.9"),
    ];
    for (name, method, target, code) in steps {
        let r = if *method == "POST" {
            let (path, q) = target.split_once('?').unwrap();
            c.api.post(path, q)
        } else {
            c.api.get(target)
        };
        if code.is_empty() {
            let res = rt_result(name, r);
            assert_eq!(res["worker_flag"], 1, "{name}: {res}");
        } else {
            check_refused(name, r, code);
        }
    }
}

/// Case 4: an unknown path under /api/ is HTTP 404 with the envelope.
fn unknown_api_path_is_404(c: &Cluster) {
    for path in [
        "/api/nope",
        "/api/v2/rt/nope",
        "/api/v3/rt/exec",
        "/api/v2/",
        "/api",
        &c.api
            .signed(&[("ip", IP_A), ("app", APP), ("func", "who")])
            .replace("rt/exec", "rt/exe"),
    ] {
        let r = c.api.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.json);
        assert_eq!(r.content_type, "application/json; charset=utf-8", "{path}");
        assert_eq!(r.json["flag"], "false", "{path}: {}", r.json);
        assert!(r.json["error"].is_string(), "{path}: {}", r.json);
    }
}

/// Case 5: a job for an agent that is not connected fails with 410.1 at once.
fn unknown_agent_is_410_1_at_once(c: &Cluster) {
    let t = Instant::now();
    let r = c.api.get(&c.api.signed(&[
        ("ip", IP_UNKNOWN),
        ("app", APP),
        ("func", "who"),
        ("timeout", "60"),
    ]));
    let took = t.elapsed();
    check_refused("unknown agent", r, "410.1");
    assert!(took < Duration::from_secs(1), "410.1 took {took:?}");
}

/// Case 6: a second agent claiming an ip held by another credential is refused, and the
/// original agent keeps its link.
fn second_agent_claiming_a_taken_ip_is_refused(c: &mut Cluster) {
    const REFUSED: &str = "refused enrollment: this ip is already held by another credential";
    let home = c.start_agent("agent-a-impostor", IP_A);
    let event = poll("the center to refuse the impostor", READY_LIMIT, || {
        log_events(c.procs.get("center"), REFUSED).pop()
    });
    assert_eq!(event["fields"]["ip"], IP_A, "{event}");
    assert_eq!(event["level"], "WARN", "{event}");
    poll("the impostor to log the refusal", READY_LIMIT, || {
        let p = c.procs.get("agent-a-impostor");
        log_events(p, "enrollment refused").pop()
    });
    c.procs.stop("agent-a-impostor");
    assert!(
        !home.join("data/credential").exists(),
        "the impostor must not get a credential"
    );
    let r = rt_result(
        "the original agent after the impostor",
        c.api
            .get(&c.api.signed(&[("ip", IP_A), ("app", APP), ("func", "who")])),
    );
    assert_eq!(r["worker_message"], IP_A);
    assert_eq!(r["worker_flag"], 1);
    assert!(
        log_events(c.procs.get("center"), "agent linked")
            .iter()
            .filter(|e| e["fields"]["ip"] == IP_A)
            .count()
            == 1,
        "the original agent must have linked once and kept its link"
    );
}

// ---------------------------------------------------------------------------------------
// Case 7: configurations that cannot work stop start-up with one clear line.

#[test]
fn a_role_with_a_bad_config_exits_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let agent = |ip: &str| {
        format!(
            "ip = '{ip}'\ntoken = 'T'\ncenter = 'http://127.0.0.1:9'\ndata_dir = 'data'\napps_dir = 'apps'\n"
        )
    };
    let center = |auth: &str| {
        format!(
            "[server]\nlisten = '127.0.0.1:0'\n[auth]\nid = 'A'\n{auth}\n[agents]\nlisten = '127.0.0.1:0'\ntoken = 'T'\n[store]\nurl = 'sqlite://db/elves.db'\n"
        )
    };
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("center without auth.key", "center", center(""), "auth.key"),
        (
            "center with a blank auth.key",
            "center",
            center("key = '  '"),
            "auth.key",
        ),
        (
            "agent with three octets",
            "agent",
            agent("127.0.0"),
            "ip must be a dotted IPv4",
        ),
        (
            "agent with an octet over 255",
            "agent",
            agent("127.0.0.256"),
            "ip must be a dotted IPv4",
        ),
        (
            "agent with a host name",
            "agent",
            agent("localhost"),
            "ip must be a dotted IPv4",
        ),
        (
            "agent without ip",
            "agent",
            agent(""),
            "ip must be a dotted IPv4",
        ),
    ];
    for (i, (name, role, toml, want)) in cases.into_iter().enumerate() {
        let cwd = dir.path().join(i.to_string());
        fs::create_dir_all(&cwd).unwrap();
        let config = cwd.join("config.toml");
        fs::write(&config, toml).unwrap();
        let mut child = elves_command(&[role, "--config"], &config, &cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + READY_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name}: still running after {READY_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!status.success(), "{name}: exited with success");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: one line on stderr, got:\n{stderr}");
        assert!(lines[0].contains(want), "{name}: {stderr}");
        assert!(
            !cwd.join("db").exists() && !cwd.join("data").exists(),
            "{name}: nothing is created by a refused start"
        );
    }
}
