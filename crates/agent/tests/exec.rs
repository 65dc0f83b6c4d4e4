//! Integration tests of the worker executor with small shell workers in temporary app dirs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use elves_agent::exec::{ExecConfig, Executor, Job, Outcome, resolve_entry};
use tokio_util::sync::CancellationToken;

/// The answer markers around a result, as a worker prints them.
const OK_PREFIX: &str = "printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>'";
const OK_SUFFIX: &str = "printf '</ElvesWResult>'";

/// A file to create in an app directory: relative path, content, executable bit.
type File = (&'static str, String, bool);

/// Creates a fresh apps dir in its own temporary directory.
fn apps_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let apps = tmp.path().join("apps");
    std::fs::create_dir(&apps).expect("mkdir apps");
    (tmp, apps)
}

/// Writes the files of one app under `apps/{app}`.
fn write_app(apps: &Path, app: &str, files: &[File]) -> PathBuf {
    let dir = apps.join(app);
    std::fs::create_dir_all(&dir).expect("mkdir app");
    for (name, content, exec) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir parent");
        }
        std::fs::write(&path, content).expect("write file");
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    dir
}

/// A `#!/bin/sh` script from its body lines.
fn sh(body: &[&str]) -> String {
    let mut s = String::from("#!/bin/sh\n");
    for line in body {
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// An executable `app-worker` shell script.
fn worker(body: &[&str]) -> Vec<File> {
    vec![("app-worker", sh(body), true)]
}

fn config(apps: &Path) -> ExecConfig {
    ExecConfig {
        apps_dir: apps.to_path_buf(),
        ..ExecConfig::default()
    }
}

fn job(app: &str) -> Job {
    Job {
        id: "T0001".into(),
        kind: "rt".into(),
        mode: "NP".into(),
        app: app.into(),
        func: "hello".into(),
        param: "{}".into(),
        timeout_secs: 0,
        proxy: String::new(),
    }
}

/// Runs a job with a generous outer bound so a hang fails the test instead of blocking it.
async fn run(exec: &Executor, job: &Job, installed: bool, cancel: CancellationToken) -> Outcome {
    tokio::time::timeout(Duration::from_secs(20), exec.run(job, installed, cancel))
        .await
        .expect("executor hung")
}

/// What a case expects of the message.
enum Msg {
    Exact(String),
    Prefix(&'static str),
    Check(fn(&str) -> bool),
}

struct Case {
    name: &'static str,
    files: Vec<File>,
    installed: bool,
    app: &'static str,
    proxy: &'static str,
    param: &'static str,
    timeout_secs: u64,
    output_cap: Option<usize>,
    flag: i32,
    msg: Msg,
    /// The most the run may take, in milliseconds.
    max_ms: u64,
}

impl Case {
    fn new(name: &'static str, files: Vec<File>, flag: i32, msg: Msg) -> Case {
        Case {
            name,
            files,
            installed: true,
            app: "app",
            proxy: "",
            param: "{}",
            timeout_secs: 0,
            output_cap: None,
            flag,
            msg,
            max_ms: 5000,
        }
    }
    fn proxy(mut self, proxy: &'static str) -> Case {
        self.proxy = proxy;
        self
    }
    fn param(mut self, param: &'static str) -> Case {
        self.param = param;
        self
    }
}

fn exact(s: &str) -> Msg {
    Msg::Exact(s.to_owned())
}

const ROUND_TRIP_PARAM: &str = "{\"text\": \"你好，世界\\n第二行\",\n \"n\": [1, 2]}";

fn cases() -> Vec<Case> {
    let echo = worker(&[OK_PREFIX, "printf '%s' \"$3\" | base64 -d", OK_SUFFIX]);
    let answer_ok = sh(&[OK_PREFIX, "printf 'proxied %s' \"$1\"", OK_SUFFIX]);
    vec![
        Case::new("echo round trip", echo.clone(), 1, exact(ROUND_TRIP_PARAM))
            .param(ROUND_TRIP_PARAM),
        Case::new(
            "arguments are app func b64",
            worker(&[
                OK_PREFIX,
                "printf '%s|%s|%s|%s' \"$#\" \"$1\" \"$2\" \"$3\"",
                OK_SUFFIX,
            ]),
            1,
            exact("3|app|hello|eyJhIjoxfQ=="),
        )
        .param("{\"a\":1}"),
        Case::new(
            "empty param gives an empty argument",
            worker(&[OK_PREFIX, "printf '%s|[%s]' \"$#\" \"$3\"", OK_SUFFIX]),
            1,
            exact("3|[]"),
        )
        .param(""),
        Case::new(
            "flag false gives 0",
            worker(&["echo '<ElvesWFlag>false</ElvesWFlag><ElvesWResult>nope</ElvesWResult>'"]),
            0,
            exact("nope"),
        ),
        Case::new(
            "flag True gives 0",
            worker(&["echo '<ElvesWFlag>True</ElvesWFlag><ElvesWResult>r</ElvesWResult>'"]),
            0,
            exact("r"),
        ),
        Case::new(
            "answer among log lines and stderr",
            worker(&[
                "echo log1; echo warn >&2",
                "echo '<ElvesWFlag>true</ElvesWFlag>'",
                "echo log2",
                "echo '<ElvesWResult>line1'; echo 'line2</ElvesWResult>'",
            ]),
            1,
            exact("line1\nline2"),
        ),
        Case::new(
            "large stderr and stdout read concurrently",
            worker(&[
                "head -c 1000000 /dev/zero | tr '\\0' e >&2",
                "head -c 1000000 /dev/zero | tr '\\0' o",
                OK_PREFIX,
                "printf big",
                OK_SUFFIX,
            ]),
            1,
            exact("big"),
        ),
        {
            let mut c = Case::new(
                "not installed",
                echo.clone(),
                -1,
                exact("app [app] not install !"),
            );
            c.installed = false;
            c
        },
        {
            let mut c = Case::new(
                "not installed, missing dir",
                vec![],
                -1,
                exact("app [ghost] not install !"),
            );
            c.installed = false;
            c.app = "ghost";
            c
        },
        {
            let mut c = Case::new(
                "unsafe app name",
                vec![],
                -1,
                Msg::Prefix("app [../app] refused"),
            );
            c.app = "../app";
            c
        },
        {
            let mut c = Case::new("empty app name", vec![], -1, Msg::Prefix("app [] refused"));
            c.app = "";
            c
        },
        {
            let mut c = Case::new(
                "app dir missing",
                vec![],
                -1,
                Msg::Prefix("app [ghost] entry missing"),
            );
            c.app = "ghost";
            c
        },
        Case::new(
            "entry missing",
            vec![("readme.txt", "x".into(), false)],
            -1,
            Msg::Prefix("app [app] entry missing"),
        ),
        Case::new(
            "app-worker not executable and no app-worker.py",
            vec![("app-worker", sh(&["echo hi"]), false)],
            -1,
            Msg::Prefix("app [app] entry missing"),
        ),
        Case::new(
            "spawn error (bad interpreter line)",
            vec![("app-worker", "#!/nonexistent/interpreter\n".into(), true)],
            -1,
            Msg::Prefix("app exec error : "),
        ),
        Case::new(
            "proxy interpreter and file",
            vec![("w.sh", answer_ok.clone(), false)],
            1,
            exact("proxied app"),
        )
        .proxy("sh|w.sh"),
        Case::new(
            "proxy file in a sub-directory",
            vec![("bin/w.sh", answer_ok.clone(), false)],
            1,
            exact("proxied app"),
        )
        .proxy("bash|./bin/w.sh"),
        Case::new(
            "proxy executable file",
            vec![("w.sh", answer_ok.clone(), true)],
            1,
            exact("proxied app"),
        )
        .proxy("w.sh"),
        Case::new(
            "proxy file not executable",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : [w.sh] is not executable"),
        )
        .proxy("w.sh"),
        Case::new(
            "proxy interpreter not allowed",
            vec![("w.pl", "print 1".into(), false)],
            -1,
            exact("app proxy refused : interpreter [perl] is not allowed"),
        )
        .proxy("perl|w.pl"),
        Case::new(
            "proxy interpreter absolute path",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : interpreter [/bin/sh]"),
        )
        .proxy("/bin/sh|w.sh"),
        Case::new(
            "proxy empty interpreter",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : interpreter []"),
        )
        .proxy("|w.sh"),
        Case::new(
            "proxy with two bars",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : [sh|w.sh|x] has more than one '|'"),
        )
        .proxy("sh|w.sh|x"),
        Case::new(
            "proxy parent path",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : [../x]"),
        )
        .proxy("sh|../x"),
        Case::new(
            "proxy parent path that comes back inside",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : [../app/w.sh]"),
        )
        .proxy("sh|../app/w.sh"),
        Case::new(
            "proxy absolute path",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : [/bin/true]"),
        )
        .proxy("sh|/bin/true"),
        Case::new(
            "proxy absolute executable",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : [/bin/true]"),
        )
        .proxy("/bin/true"),
        Case::new(
            "proxy parent executable",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : [../x]"),
        )
        .proxy("../x"),
        Case::new(
            "proxy file missing",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : [nope.sh] not found"),
        )
        .proxy("sh|nope.sh"),
        Case::new(
            "proxy is the app directory",
            vec![("w.sh", answer_ok.clone(), false)],
            -1,
            Msg::Prefix("app proxy refused : [.] is not a regular file"),
        )
        .proxy("sh|."),
        Case::new(
            "non-zero exit with stderr tail",
            worker(&["echo partial", "echo boom >&2", "exit 3"]),
            -1,
            exact("app exec error : exit status 3, stderr: boom"),
        ),
        Case::new(
            "non-zero exit without stderr",
            worker(&["exit 2"]),
            -1,
            exact("app exec error : exit status 2"),
        ),
        Case::new(
            "stderr keeps only the last 4 KiB",
            worker(&[
                "head -c 10000 /dev/zero | tr '\\0' e >&2",
                "printf END >&2",
                "exit 1",
            ]),
            -1,
            Msg::Check(|m| {
                let tail = m
                    .strip_prefix("app exec error : exit status 1, stderr: ")
                    .unwrap_or("");
                tail.ends_with("eeeEND") && tail.len() == 4096
            }),
        ),
        Case::new(
            "killed by a signal",
            worker(&["kill -9 $$"]),
            -1,
            exact("app exec error : signal: 9"),
        ),
        Case::new(
            "missing flag marker",
            worker(&["echo hello", "echo '<ElvesWResult>r</ElvesWResult>'"]),
            -1,
            exact("app output flag error : hello\n<ElvesWResult>r</ElvesWResult>\n"),
        ),
        Case::new(
            "missing result marker",
            worker(&["echo '<ElvesWFlag>true</ElvesWFlag>'"]),
            -1,
            exact("app output result error : <ElvesWFlag>true</ElvesWFlag>\n"),
        ),
        Case::new(
            "missing flag quotes only the stdout tail",
            worker(&["head -c 5000 /dev/zero | tr '\\0' x", "printf END"]),
            -1,
            Msg::Check(|m| {
                let tail = m.strip_prefix("app output flag error : ").unwrap_or("");
                tail.len() == elves_worker_output::DEFAULT_TAIL && tail.ends_with("xEND")
            }),
        ),
        {
            let mut c = Case::new(
                "output over cap",
                worker(&["head -c 1000 /dev/zero | tr '\\0' x", "sleep 30"]),
                -1,
                exact("app output over cap (64 bytes)"),
            );
            c.output_cap = Some(64);
            c.max_ms = 3000;
            c
        },
        {
            let mut c = Case::new(
                "output exactly at the cap",
                worker(&[
                    "printf '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>1234</ElvesWResult>'",
                ]),
                1,
                exact("1234"),
            );
            c.output_cap = Some(62);
            c
        },
        {
            let mut c = Case::new(
                "timeout",
                worker(&["sleep 30"]),
                -1,
                exact("app exec timeout"),
            );
            c.timeout_secs = 1;
            c.max_ms = 3000;
            c
        },
        {
            let mut c = Case::new(
                "finishes before its timeout",
                worker(&["echo '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>fast</ElvesWResult>'"]),
                1,
                exact("fast"),
            );
            c.timeout_secs = 1;
            c
        },
    ]
}

/// Runs every case of the table concurrently, each in its own apps dir, and reports all failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn table() {
    let mut handles = Vec::new();
    for case in cases() {
        handles.push(tokio::spawn(async move {
            let (_tmp, apps) = apps_dir();
            if !case.files.is_empty() {
                write_app(&apps, case.app, &case.files);
            }
            let mut cfg = config(&apps);
            if let Some(cap) = case.output_cap {
                cfg.output_cap = cap;
            }
            let exec = Executor::new(cfg);
            let mut j = job(case.app);
            j.proxy = case.proxy.into();
            j.param = case.param.into();
            j.timeout_secs = case.timeout_secs;
            let started = Instant::now();
            let out = run(&exec, &j, case.installed, CancellationToken::new()).await;
            let took = started.elapsed();
            let mut problems = Vec::new();
            if out.flag != case.flag {
                problems.push(format!("flag {} want {}", out.flag, case.flag));
            }
            let msg_ok = match &case.msg {
                Msg::Exact(want) => &out.message == want,
                Msg::Prefix(p) => out.message.starts_with(p),
                Msg::Check(f) => f(&out.message),
            };
            if !msg_ok {
                problems.push("unexpected message".to_owned());
            }
            if took > Duration::from_millis(case.max_ms) {
                problems.push(format!("took {took:?}"));
            }
            if out.costtime_ms < 0 || out.costtime_ms as u128 > took.as_millis() + 1 {
                problems.push(format!("costtime {} out of range", out.costtime_ms));
            }
            if case.timeout_secs > 0 && case.flag == -1 && out.costtime_ms < 1000 {
                problems.push(format!("costtime {} below the timeout", out.costtime_ms));
            }
            if problems.is_empty() {
                None
            } else {
                let shown: String = out.message.chars().take(300).collect();
                Some(format!(
                    "{}: {} (message {:?})",
                    case.name,
                    problems.join(", "),
                    shown
                ))
            }
        }));
    }
    let mut failures = Vec::new();
    for h in handles {
        if let Some(f) = h.await.expect("case panicked") {
            failures.push(f);
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn resolve_entry_forms() {
    let (_tmp, apps) = apps_dir();
    let dir = write_app(
        &apps,
        "app",
        &[
            ("app-worker", sh(&["true"]), true),
            ("w.sh", sh(&["true"]), false),
            ("x.sh", sh(&["true"]), true),
        ],
    );
    let dir = std::fs::canonicalize(dir).unwrap();
    let cfg = config(&apps);

    let (prog, args) = resolve_entry(&cfg, "app", "").unwrap();
    assert_eq!(prog, dir.join("app-worker"));
    assert!(args.is_empty());

    let (prog, args) = resolve_entry(&cfg, "app", "sh|w.sh").unwrap();
    assert!(prog.is_absolute() && prog.ends_with("sh"), "{prog:?}");
    assert_eq!(args, vec![dir.join("w.sh").into_os_string()]);

    let (prog, args) = resolve_entry(&cfg, "app", "x.sh").unwrap();
    assert_eq!(prog, dir.join("x.sh"));
    assert!(args.is_empty());

    // Without an executable app-worker, app-worker.py is run by the configured python.
    write_app(
        &apps,
        "py",
        &[("app-worker.py", "print(1)\n".into(), false)],
    );
    let cfg = ExecConfig {
        python: "/usr/bin/python3-custom".into(),
        ..config(&apps)
    };
    let (prog, args) = resolve_entry(&cfg, "py", "").unwrap();
    assert_eq!(prog, PathBuf::from("/usr/bin/python3-custom"));
    assert_eq!(
        args,
        vec![
            std::fs::canonicalize(apps.join("py/app-worker.py"))
                .unwrap()
                .into_os_string()
        ]
    );

    // An allowed list naming an absolute path still refuses it.
    let cfg = ExecConfig {
        allowed_interpreters: vec!["/bin/sh".into()],
        ..config(&apps)
    };
    assert!(resolve_entry(&cfg, "app", "/bin/sh|w.sh").is_err());
    // An interpreter that is allowed but does not exist is refused.
    let cfg = ExecConfig {
        allowed_interpreters: vec!["no-such-interpreter-xyz".into()],
        ..config(&apps)
    };
    let err = resolve_entry(&cfg, "app", "no-such-interpreter-xyz|w.sh").unwrap_err();
    assert!(err.contains("not found in PATH"), "{err}");
}

#[tokio::test]
async fn proxy_symlink_escape_is_refused() {
    let (tmp, apps) = apps_dir();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let evil = outside.join("evil.sh");
    std::fs::write(&evil, sh(&[OK_PREFIX, "printf escaped", OK_SUFFIX])).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = write_app(&apps, "app", &[]);
    std::os::unix::fs::symlink(&evil, dir.join("link.sh")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("linkdir")).unwrap();
    // A symlink that stays inside the app dir is fine.
    std::fs::write(
        dir.join("real.sh"),
        sh(&[OK_PREFIX, "printf inside", OK_SUFFIX]),
    )
    .unwrap();
    std::os::unix::fs::symlink("real.sh", dir.join("inner.sh")).unwrap();

    let exec = Executor::new(config(&apps));
    for proxy in [
        "sh|link.sh",
        "link.sh",
        "sh|linkdir/evil.sh",
        "linkdir/evil.sh",
    ] {
        let mut j = job("app");
        j.proxy = proxy.into();
        let out = run(&exec, &j, true, CancellationToken::new()).await;
        assert_eq!(out.flag, -1, "{proxy}: {out:?}");
        assert!(
            out.message.contains("resolves outside the app directory"),
            "{proxy}: {out:?}"
        );
    }
    let mut j = job("app");
    j.proxy = "sh|inner.sh".into();
    let out = run(&exec, &j, true, CancellationToken::new()).await;
    assert_eq!((out.flag, out.message.as_str()), (1, "inside"));
}

#[tokio::test]
async fn app_dir_symlinked_elsewhere_still_works() {
    let (tmp, apps) = apps_dir();
    let real = write_app(
        &tmp.path().join("store"),
        "app-1.0",
        &[("w.sh", sh(&[OK_PREFIX, "printf linked", OK_SUFFIX]), false)],
    );
    std::os::unix::fs::symlink(&real, apps.join("app")).unwrap();
    let exec = Executor::new(config(&apps));
    let mut j = job("app");
    j.proxy = "sh|w.sh".into();
    let out = run(&exec, &j, true, CancellationToken::new()).await;
    assert_eq!((out.flag, out.message.as_str()), (1, "linked"));
}

#[tokio::test]
async fn cwd_is_the_app_dir_and_elves_variables_are_set() {
    let (_tmp, apps) = apps_dir();
    let dir = write_app(
        &apps,
        "app",
        &worker(&[
            OK_PREFIX,
            "pwd -P",
            "printf '%s\\n' \"$ELVES_APP\" \"$ELVES_FUNC\" \"$ELVES_TASK_ID\" \"$ELVES_TASK_TYPE\" \"$ELVES_MODE\"",
            OK_SUFFIX,
        ]),
    );
    let exec = Executor::new(config(&apps));
    let mut j = job("app");
    j.id = "ABCDEF0123456789".into();
    j.kind = "queue".into();
    j.mode = "P".into();
    j.func = "deploy".into();
    let out = run(&exec, &j, true, CancellationToken::new()).await;
    let want = format!(
        "{}\napp\ndeploy\nABCDEF0123456789\nqueue\nP\n",
        std::fs::canonicalize(dir).unwrap().display()
    );
    assert_eq!(out.flag, 1, "{out:?}");
    assert_eq!(out.message, want);
}

#[tokio::test]
async fn stdin_is_empty() {
    let (_tmp, apps) = apps_dir();
    write_app(
        &apps,
        "app",
        &worker(&[OK_PREFIX, "printf '[%s]' \"$(cat)\"", OK_SUFFIX]),
    );
    let exec = Executor::new(config(&apps));
    let out = run(&exec, &job("app"), true, CancellationToken::new()).await;
    assert_eq!((out.flag, out.message.as_str()), (1, "[]"));
}

/// Returns true when `pid` is gone or a zombie.
fn is_dead(pid: i32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    match kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => true,
        _ => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                // The state follows the parenthesised command name.
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
                    .unwrap_or(false)
            })
            .unwrap_or(true),
    }
}

/// Polls until `pid` is dead, for at most two seconds.
async fn wait_dead(pid: i32) -> bool {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if is_dead(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    is_dead(pid)
}

/// Reads the pid a worker wrote, waiting briefly for the file.
async fn read_pid(path: &Path) -> i32 {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no pid in {}", path.display());
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let (_tmp, apps) = apps_dir();
    let dir = write_app(
        &apps,
        "app",
        &worker(&[
            "sleep 30 &",
            "echo $! > grandchild.pid.tmp",
            "mv grandchild.pid.tmp grandchild.pid",
            "sleep 30",
        ]),
    );
    let exec = Executor::new(config(&apps));
    let mut j = job("app");
    j.timeout_secs = 1;
    let started = Instant::now();
    let out = run(&exec, &j, true, CancellationToken::new()).await;
    assert_eq!(
        out,
        Outcome {
            flag: -1,
            message: "app exec timeout".into(),
            costtime_ms: out.costtime_ms
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(out.costtime_ms >= 1000, "{out:?}");
    let pid = read_pid(&dir.join("grandchild.pid")).await;
    assert!(
        wait_dead(pid).await,
        "grandchild {pid} survived the timeout"
    );
}

#[tokio::test]
async fn cancellation_kills_the_worker() {
    let (_tmp, apps) = apps_dir();
    let dir = write_app(
        &apps,
        "app",
        &worker(&[
            "sleep 30 &",
            "echo $! > grandchild.pid.tmp",
            "mv grandchild.pid.tmp grandchild.pid",
            "sleep 30",
        ]),
    );
    let exec = Executor::new(config(&apps));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let pid_file = dir.join("grandchild.pid");
    let canceller = tokio::spawn(async move {
        let pid = read_pid(&pid_file).await;
        trigger.cancel();
        pid
    });
    let started = Instant::now();
    let out = run(&exec, &job("app"), true, cancel).await;
    assert_eq!((out.flag, out.message.as_str()), (-1, "app exec cancelled"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let pid = canceller.await.unwrap();
    assert!(
        wait_dead(pid).await,
        "grandchild {pid} survived the cancellation"
    );
}

#[tokio::test]
async fn already_cancelled_token_reports_cancelled() {
    let (_tmp, apps) = apps_dir();
    write_app(&apps, "app", &worker(&["sleep 30"]));
    let exec = Executor::new(config(&apps));
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = run(&exec, &job("app"), true, cancel).await;
    assert_eq!((out.flag, out.message.as_str()), (-1, "app exec cancelled"));
}

#[tokio::test]
async fn grandchild_holding_stdout_does_not_hang() {
    let (_tmp, apps) = apps_dir();
    let dir = write_app(
        &apps,
        "app",
        &worker(&[
            "sleep 5 &",
            "echo $! > grandchild.pid",
            "echo '<ElvesWFlag>true</ElvesWFlag><ElvesWResult>done</ElvesWResult>'",
            "exit 0",
        ]),
    );
    let exec = Executor::new(config(&apps));
    let started = Instant::now();
    let out = run(&exec, &job("app"), true, CancellationToken::new()).await;
    let took = started.elapsed();
    assert_eq!((out.flag, out.message.as_str()), (1, "done"));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Clean up the lingering grandchild.
    let pid = read_pid(&dir.join("grandchild.pid")).await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Finds a program in PATH, to skip tests whose interpreter is not installed.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn python_worker_round_trip() {
    if which("python3").is_none() {
        eprintln!("python3 not found; skipping");
        return;
    }
    let (_tmp, apps) = apps_dir();
    let script = [
        "import base64, sys",
        "param = base64.b64decode(sys.argv[3]).decode('utf-8')",
        "sys.stdout.buffer.write(('<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s:%s</ElvesWResult>' % (sys.argv[2], param)).encode('utf-8'))",
    ]
    .join("\n");
    write_app(&apps, "app", &[("app-worker.py", script, false)]);
    let exec = Executor::new(config(&apps));
    let mut j = job("app");
    j.param = ROUND_TRIP_PARAM.into();
    let out = run(&exec, &j, true, CancellationToken::new()).await;
    assert_eq!(out.flag, 1, "{out:?}");
    assert_eq!(out.message, format!("hello:{ROUND_TRIP_PARAM}"));
}

#[test]
fn outcome_serde_round_trip() {
    let o = Outcome {
        flag: -1,
        message: "app exec timeout".into(),
        costtime_ms: 1001,
    };
    let text = serde_json::to_string(&o).unwrap();
    assert_eq!(
        text,
        r#"{"flag":-1,"message":"app exec timeout","costtime_ms":1001}"#
    );
    assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), o);
}
