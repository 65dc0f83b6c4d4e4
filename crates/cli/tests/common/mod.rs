//! The harness shared by the end-to-end tests: the real `elves center` and `elves agent`
//! processes on loopback with generated configs, a guard that stops them on drop (printing
//! their stderr when the test fails), port discovery from the center's JSON log, a
//! hand-written HTTP/1.1 client, request signing and bounded polls.
//!
//! Each test crate uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use elves_sign::{SignType, signed_query};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_elves");
pub const RT: &str = "/api/v2/rt/exec";
pub const AUTH_ID: &str = "E2E0A1B2C3D4E5F6";
pub const AUTH_KEY: &str = "e2e-simple-key-9Zq";
pub const TOKEN: &str = "e2e-enrollment-token-7c1f";
pub const APP: &str = "e2eapp";
pub const IP_A: &str = "127.0.0.2";
pub const IP_B: &str = "127.0.0.3";
pub const IP_UNKNOWN: &str = "127.0.0.99";
pub const SEND_FAIL: &str = "[410.1]Send Job To Agent Fail";

/// How long processes get to come up, and waits in general.
pub const READY_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Processes.

/// One child process of the test, with its stderr in a file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `elves --log-format json ROLE --config CONFIG` in `cwd`, without any `ELVES_`
    /// variable of the test's environment.
    pub fn start(name: &str, role: &str, config: &Path, cwd: &Path) -> Proc {
        let log = cwd.join(format!("{name}.stderr"));
        let err = fs::File::create(&log).expect("creating the stderr file");
        let child = elves_command(&["--log-format", "json", role, "--config"], config, cwd)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal_term(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Waits for the process to exit until `deadline`, then kills it.
    pub fn reap(&mut self, deadline: Instant) {
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGKILL, and waits for the exit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (so an agent kills its workers' process groups), then SIGKILL after 3 s.
    pub fn stop(&mut self) {
        self.signal_term();
        self.reap(Instant::now() + Duration::from_secs(3));
    }
}

pub fn elves_command(args: &[&str], config: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg(config)
        .current_dir(cwd)
        .stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ELVES_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// Every process of the test; stops them all when dropped, and prints their stderr when
/// the test is failing.
#[derive(Default)]
pub struct Procs(pub Vec<Proc>);

impl Procs {
    pub fn get(&self, name: &str) -> &Proc {
        self.0
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    pub fn get_mut(&mut self, name: &str) -> &mut Proc {
        self.0
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    pub fn stop(&mut self, name: &str) {
        if let Some(p) = self.0.iter_mut().find(|p| p.name == name) {
            p.stop();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            p.signal_term();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for p in &mut self.0 {
            p.reap(deadline);
        }
        if std::thread::panicking() {
            for p in &self.0 {
                let text = p.stderr();
                let tail = &text[text.len().saturating_sub(8000)..];
                eprintln!("----- stderr of {} (tail) -----\n{tail}", p.name);
            }
        }
    }
}

/// Polls `f` every 25 ms until it gives a value, for at most `limit`.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "gave up after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The JSON log lines of a process whose `fields.message` is `message`.
pub fn log_events(p: &Proc, message: &str) -> Vec<Value> {
    p.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

pub fn write_file(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes an agent's config in `home` (data_dir and apps_dir under it; `apps` is the body of
/// its `[apps]` table) and returns its path.
pub fn write_agent_config(
    home: &Path,
    name: &str,
    ip: &str,
    agents: SocketAddr,
    apps: &str,
) -> PathBuf {
    let config = home.join("agent.toml");
    let text = format!(
        "ip = '{ip}'\nasset = '{name}'\ncenter = 'http://{agents}'\ntoken = '{TOKEN}'\n\
         data_dir = '{data}'\napps_dir = '{apps_dir}'\n\n[apps]\n{apps}",
        data = home.join("data").display(),
        apps_dir = home.join("apps").display(),
    );
    fs::write(&config, text).unwrap();
    config
}

/// Writes an agent's apps into `home/apps` and returns the body of its `[apps]` table.
pub type PrepareAgent = fn(home: &Path, ip: &str) -> String;

/// A free loopback port (bound and released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Cluster {
    pub procs: Procs,
    pub api: Api,
    pub agents: SocketAddr,
    /// The center's config and directory, to start it again.
    pub center_config: PathBuf,
    prepare: PrepareAgent,
    // Declared last: removed after the processes are stopped.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// A center listening on ports chosen by the system, and the agents `IP_A` and `IP_B`.
    pub fn start(prepare: PrepareAgent) -> Cluster {
        Cluster::start_on(prepare, 0, 0)
    }

    /// A center whose API and agent listeners are on these ports (0: chosen by the
    /// system), and the agents `IP_A` and `IP_B`, each prepared by `prepare`.
    pub fn start_on(prepare: PrepareAgent, api_port: u16, agents_port: u16) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let center_dir = dir.path().join("center");
        fs::create_dir_all(&center_dir).unwrap();
        let center_config = center_dir.join("center.toml");
        fs::write(
            &center_config,
            format!(
                "[server]\nlisten = '127.0.0.1:{api_port}'\n[auth]\nid = '{AUTH_ID}'\nkey = '{AUTH_KEY}'\n\
                 [agents]\nlisten = '127.0.0.1:{agents_port}'\ntoken = '{TOKEN}'\n[store]\nurl = 'sqlite://{db}'\n",
                db = center_dir.join("elves.db").display()
            ),
        )
        .unwrap();
        let unset: SocketAddr = ([0, 0, 0, 0], 0).into();
        let mut c = Cluster {
            procs: Procs::default(),
            api: Api { addr: unset },
            agents: unset,
            center_config,
            prepare,
            dir,
        };
        c.start_center("center");
        for (name, ip) in [("agent-a", IP_A), ("agent-b", IP_B)] {
            c.start_agent(name, ip);
        }
        for ip in [IP_A, IP_B] {
            c.wait_agent(ip);
        }
        c
    }

    /// Starts the center as process `name` and waits for its "center started" line, which
    /// gives the addresses it listens on.
    pub fn start_center(&mut self, name: &str) {
        let center_dir = self.center_config.parent().unwrap().to_owned();
        self.procs.0.push(Proc::start(
            name,
            "center",
            &self.center_config,
            &center_dir,
        ));
        let procs = &mut self.procs;
        let (api, agents) = poll("the center to start", READY_LIMIT, || {
            let started = log_events(procs.get(name), "center started").pop();
            if started.is_none() {
                let exited = procs.get_mut(name).child.try_wait().unwrap();
                assert!(exited.is_none(), "the center exited: {exited:?}");
            }
            let f = &started?["fields"];
            let addr = |k: &str| f[k].as_str()?.parse::<SocketAddr>().ok();
            Some((addr("api")?, addr("agents")?))
        });
        self.api = Api { addr: api };
        self.agents = agents;
    }

    /// Starts an agent in `dir/name` and returns that directory.
    pub fn start_agent(&mut self, name: &str, ip: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        let apps = (self.prepare)(&home, ip);
        let config = write_agent_config(&home, name, ip, self.agents, &apps);
        self.procs
            .0
            .push(Proc::start(name, "agent", &config, &home));
        home
    }

    /// Polls rt/exec on the agent until it stops answering 410.1.
    pub fn wait_agent(&self, ip: &str) {
        poll(&format!("agent {ip} to link"), READY_LIMIT, || {
            let env = self.api.get(
                &self
                    .api
                    .signed(&[("ip", ip), ("app", APP), ("func", "who")]),
            );
            (env.json["error"] != SEND_FAIL).then_some(())
        });
    }
}

// ---------------------------------------------------------------------------------------
// HTTP and signing.

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub json: Value,
}

pub struct Api {
    pub addr: SocketAddr,
}

impl Api {
    /// A signed query string for rt/exec (MD5, now, the configured id and key).
    pub fn query(&self, params: &[(&str, &str)]) -> String {
        self.query_at(RT, params)
    }

    /// A signed query string for the route at `path`.
    pub fn query_at(&self, path: &str, params: &[(&str, &str)]) -> String {
        signed_query(
            path,
            params,
            AUTH_ID,
            AUTH_KEY,
            SignType::Md5,
            now_secs(),
            None,
        )
    }

    /// `RT?` + a signed query.
    pub fn signed(&self, params: &[(&str, &str)]) -> String {
        format!("{RT}?{}", self.query(params))
    }

    /// A signed GET of `/api/v2/{route}`.
    pub fn call(&self, route: &str, params: &[(&str, &str)]) -> Resp {
        let path = format!("/api/v2/{route}");
        self.get(&format!("{path}?{}", self.query_at(&path, params)))
    }

    pub fn get(&self, target: &str) -> Resp {
        self.send("GET", target, None)
    }

    /// A POST with a form body.
    pub fn post(&self, target: &str, body: &str) -> Resp {
        self.send(
            "POST",
            target,
            Some(("application/x-www-form-urlencoded", body)),
        )
    }

    /// One HTTP/1.1 request on a fresh connection, with an optional `(content type, body)`;
    /// the answer must be JSON.
    pub fn send(&self, method: &str, target: &str, body: Option<(&str, &str)>) -> Resp {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .expect("connecting to the API");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some((ty, b)) = body {
            req.push_str(&format!(
                "Content-Type: {ty}\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body.map(|(_, b)| b).unwrap_or_default());
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("reading the answer");
        let raw = String::from_utf8(raw).expect("the answer is UTF-8");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut content_type = String::new();
        let mut chunked = false;
        for l in lines {
            let (k, v) = l.split_once(':').unwrap();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = v.trim().to_owned(),
                "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {target}: the answer is not JSON ({e}): {body}"));
        Resp {
            status,
            content_type,
            json,
        }
    }
}

/// A raw HTTP/1.1 GET: status and body text.
pub fn get_text(addr: SocketAddr, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Checks the v2 transport (HTTP 200, JSON content type) and returns the envelope.
pub fn envelope(what: &str, r: Resp) -> Value {
    assert_eq!(r.status, 200, "{what}: HTTP status; body {}", r.json);
    assert_eq!(
        r.content_type, "application/json; charset=utf-8",
        "{what}: content type"
    );
    assert!(r.json["flag"].is_string(), "{what}: flag is a string");
    r.json
}

/// The catalogue text of a code (api-v2 §7).
pub fn err(code: &str) -> String {
    let text = match code {
        "401.1" => "Unauthorized Missing Sign Param",
        "401.2" => "Unauthorized AuthId Is Illegal",
        "401.3" => "Unauthorized SignType Is Illegal",
        "401.4" => "Unauthorized Sign Length Is Illegal",
        "401.5" => "Unauthorized Sign Error",
        "401.7" => "Unauthorized Sign Timeout",
        "401.8" => "Unauthorized Timestamp Is Illegal",
        "401.9" => "Unauthorized Nonce Reused",
        "403.1" => "Request Params (ip) Illegal",
        "403.2" => "Request Params (param) Illegal",
        "403.3" => "Request Params (app) Illegal",
        "403.4" => "Request Params (mode) Illegal",
        "403.6" => "Request Params (queue_id) Illegal",
        "403.7" => "Request Params (func) Illegal",
        "403.8" => "Request Params (timeout) Illegal",
        "410.1" => "Send Job To Agent Fail",
        "412.1" => "Queue Not Found",
        "412.2" => "Queue Status Incorrect",
        "412.3" => "Stop Task Error",
        "412.4" => "Depend Task Not Found",
        _ => panic!("no catalogue entry for {code}"),
    };
    format!("[{code}]{text}")
}

pub fn check_refused(what: &str, r: Resp, code: &str) {
    let env = envelope(what, r);
    assert_eq!(env["flag"], "false", "{what}: {env}");
    assert_eq!(env["error"], err(code), "{what}: {env}");
}

/// Is `pid` gone, or a zombie nobody reaped yet?
pub fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// `base` with the parameters of `extra` replacing those of the same name; a value of
/// `<absent>` removes the parameter.
pub fn overridden<'a>(
    base: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut p: Vec<(&str, &str)> = base
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .copied()
        .collect();
    p.extend(extra.iter().filter(|(_, v)| *v != "<absent>"));
    p
}

/// Is `s` an id: 16 upper-case hex characters?
pub fn is_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}
