//! `elves admin …`: supervisor administration over the admin API (`/admin/api/`).
//!
//! Human-readable output by default, the API's JSON with `--json`. Exit status 0 only on
//! success; on failure one line on stderr.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the admin API is and the token to use.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The center's URL.
    #[arg(long, env = "ELVES_URL", default_value = "http://127.0.0.1:9091")]
    url: String,
    /// The admin API token (`admin.token`).
    #[arg(long, env = "ELVES_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: AdminCmd,
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Apps, their packages, active versions and bound agents.
    App {
        #[command(subcommand)]
        cmd: AppCmd,
    },
    /// API keys of the v2 API.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Admin users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Agents: registry records and enrollment credentials.
    Agent {
        #[command(subcommand)]
        cmd: AgentCmd,
    },
    /// The audit log, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Rows older than this id (the last id of the previous page).
        #[arg(long)]
        before: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
enum AppCmd {
    /// Creates an app.
    Add {
        app: String,
        /// The app's title.
        #[arg(long)]
        name: String,
        /// A URL polled for the ips bound to the app.
        #[arg(long)]
        bind_url: Option<String>,
    },
    /// Lists the apps.
    List,
    /// Shows an app with its versions, bindings and keys.
    Show { app: String },
    /// Deletes an app that has no versions, bindings or keys left.
    Rm { app: String },
    /// Uploads APP_VERSION.zip as a version of APP.
    Upload {
        app: String,
        file: PathBuf,
        /// Replace the version if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Makes VERSION the one APP's agents run.
    Activate { app: String, version: String },
    /// Binds agents (by ip) to an app.
    Bind {
        app: String,
        #[arg(required = true)]
        ips: Vec<String>,
    },
    /// Unbinds agents (by ip) from an app.
    Unbind {
        app: String,
        #[arg(required = true)]
        ips: Vec<String>,
    },
    /// Fetches the app's bind URL now and makes its ips the app's bindings (all or nothing).
    Sync { app: String },
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Creates a key; prints its auth_id and auth_key (shown only this once).
    Add {
        #[arg(long)]
        app: String,
        #[arg(long, default_value = "")]
        name: String,
        /// When the key stops working (RFC 3339, e.g. 2027-01-31T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Lists an app's keys (never their secrets).
    List {
        #[arg(long)]
        app: String,
    },
    /// Deletes a key.
    Rm { auth_id: String },
    /// Disables a key.
    Disable { auth_id: String },
    /// Enables a disabled key.
    Enable { auth_id: String },
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Creates a user; the password is read from stdin or generated and printed once.
    Add {
        email: String,
        #[arg(long, value_parser = ["admin", "operator"])]
        role: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lists the users.
    List,
    /// Deletes a user.
    Rm { email: String },
}

#[derive(Subcommand, Debug)]
enum AgentCmd {
    /// Lists the agents the center knows (registry records and pinned credentials).
    List,
    /// Releases the credential pinned to IP, so that a reinstalled host can enroll again.
    Release { ip: String },
}

/// Runs one `elves admin` command.
pub fn run(args: AdminArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!(
                "elves admin: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: AdminArgs) -> anyhow::Result<()> {
    let token = args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("no admin token: pass --token or set ELVES_ADMIN_TOKEN"))?
        .to_owned();
    let api = Api {
        base: format!("{}/admin/api", args.url.trim_end_matches('/')),
        token,
    };
    let json_out = args.json;
    let out = |v: &Value, human: &dyn Fn(&Value)| {
        if json_out {
            println!("{v}");
        } else {
            human(v);
        }
    };
    match args.cmd {
        AdminCmd::App { cmd } => match cmd {
            AppCmd::Add {
                app,
                name,
                bind_url,
            } => {
                let v = api.send(
                    "POST",
                    "/apps",
                    Some(json!({"app": app, "title": name, "bind_url": bind_url})),
                )?;
                out(&v, &|v| println!("app {} created", s(&v["name"])));
            }
            AppCmd::List => {
                let v = api.send("GET", "/apps", None)?;
                out(&v, &print_apps);
            }
            AppCmd::Show { app } => {
                let v = api.send("GET", &format!("/apps/{}", seg(&app)), None)?;
                out(&v, &print_app);
            }
            AppCmd::Rm { app } => {
                let v = api.send("DELETE", &format!("/apps/{}", seg(&app)), None)?;
                out(&v, &|_| println!("app {app} deleted"));
            }
            AppCmd::Upload { app, file, force } => {
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| anyhow!("{} has no file name", file.display()))?
                    .to_owned();
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let mut path = format!("/apps/{}/packages/{}", seg(&app), seg(&name));
                if force {
                    path.push_str("?force=true");
                }
                let v = api.request("PUT", &path, bytes, "application/zip")?;
                out(&v, &|v| {
                    println!(
                        "{} {} uploaded ({} bytes, sha256 {}){}",
                        s(&v["app"]),
                        s(&v["version"]),
                        v["size"],
                        s(&v["sha256"]),
                        if v["replaced"] == true {
                            ", replacing the previous upload"
                        } else {
                            ""
                        }
                    )
                });
            }
            AppCmd::Activate { app, version } => {
                let v = api.send(
                    "POST",
                    &format!("/apps/{}/activate", seg(&app)),
                    Some(json!({ "version": version })),
                )?;
                out(&v, &|v| {
                    let note = if v["changed"] == true {
                        ""
                    } else {
                        " (unchanged)"
                    };
                    println!("{app}: active version {version}{note}");
                });
            }
            AppCmd::Bind { app, ips } => {
                let v = api.send(
                    "POST",
                    &format!("/apps/{}/bind", seg(&app)),
                    Some(json!({ "ips": ips })),
                )?;
                out(&v, &|v| print_change(&app, "bound", &v["added"]));
            }
            AppCmd::Unbind { app, ips } => {
                let v = api.send(
                    "POST",
                    &format!("/apps/{}/unbind", seg(&app)),
                    Some(json!({ "ips": ips })),
                )?;
                out(&v, &|v| print_change(&app, "unbound", &v["removed"]));
            }
            AppCmd::Sync { app } => {
                let v = api.send("POST", &format!("/apps/{}/sync", seg(&app)), None)?;
                out(&v, &|v| {
                    println!(
                        "{app}: {} ips from the bind URL, {} bound, {} unbound",
                        v["fetched"],
                        rows(&v["added"]).len(),
                        rows(&v["removed"]).len()
                    );
                });
            }
        },
        AdminCmd::Key { cmd } => match cmd {
            KeyCmd::Add { app, name, expires } => {
                let expires_at_ms = expires
                    .as_deref()
                    .map(|e| {
                        parse_rfc3339_ms(e).ok_or_else(|| {
                            anyhow!("--expires {e:?} is not RFC 3339 (e.g. 2027-01-31T00:00:00Z)")
                        })
                    })
                    .transpose()?;
                let v = api.send(
                    "POST",
                    "/keys",
                    Some(json!({"app": app, "name": name, "expires_at_ms": expires_at_ms})),
                )?;
                out(&v, &|v| {
                    println!("auth_id: {}", s(&v["auth_id"]));
                    println!("auth_key: {}", s(&v["auth_key"]));
                    eprintln!("keep the auth_key now: it is not shown again");
                });
            }
            KeyCmd::List { app } => {
                let v = api.send("GET", &format!("/keys?app={}", seg(&app)), None)?;
                out(&v, &print_keys);
            }
            KeyCmd::Rm { auth_id } => {
                let v = api.send("DELETE", &format!("/keys/{}", seg(&auth_id)), None)?;
                out(&v, &|_| println!("key {auth_id} deleted"));
            }
            KeyCmd::Disable { auth_id } => {
                let v = api.send("POST", &format!("/keys/{}/disable", seg(&auth_id)), None)?;
                out(&v, &|_| println!("key {auth_id} disabled"));
            }
            KeyCmd::Enable { auth_id } => {
                let v = api.send("POST", &format!("/keys/{}/enable", seg(&auth_id)), None)?;
                out(&v, &|_| println!("key {auth_id} enabled"));
            }
        },
        AdminCmd::User { cmd } => match cmd {
            UserCmd::Add {
                email,
                role,
                password_stdin,
            } => {
                let (password, generated) = if password_stdin {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    (line.trim_end_matches(['\r', '\n']).to_owned(), false)
                } else {
                    (generate_password(), true)
                };
                let mut v = api.send(
                    "POST",
                    "/users",
                    Some(json!({"email": email, "password": password, "role": role})),
                )?;
                if generated {
                    v["password"] = json!(password);
                }
                out(&v, &|v| {
                    println!("user {} added ({})", s(&v["email"]), s(&v["role"]));
                    if generated {
                        println!("password: {password}");
                        eprintln!("keep the password now: it is not shown again");
                    }
                });
            }
            UserCmd::List => {
                let v = api.send("GET", "/users", None)?;
                out(&v, &print_users);
            }
            UserCmd::Rm { email } => {
                let v = api.send("DELETE", &format!("/users/{}", seg(&email)), None)?;
                out(&v, &|_| println!("user {email} deleted"));
            }
        },
        AdminCmd::Agent { cmd } => match cmd {
            AgentCmd::List => {
                let v = api.send("GET", "/agents", None)?;
                out(&v, &print_agents);
            }
            AgentCmd::Release { ip } => {
                let v = api.send("POST", &format!("/agents/{}/release", seg(&ip)), None)?;
                out(&v, &|_| {
                    println!("agent {ip} released: the next enrollment under this ip is pinned")
                });
            }
        },
        AdminCmd::Audit { limit, before } => {
            let mut path = format!("/audit?limit={limit}");
            if let Some(b) = before {
                path.push_str(&format!("&before_id={b}"));
            }
            let v = api.send("GET", &path, None)?;
            out(&v, &print_audit);
        }
    }
    Ok(())
}

struct Api {
    base: String,
    token: String,
}

impl Api {
    /// Sends a JSON body (or none) and returns the JSON answer of a success.
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.request(method, path, bytes, "application/json")
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (status, text) = rt.block_on(async {
            let mut req = reqwest::Client::new()
                .request(method, &url)
                .bearer_auth(&self.token);
            if !body.is_empty() {
                req = req.header("content-type", content_type).body(body);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let status = resp.status();
            let text = resp.text().await.context("reading the answer")?;
            anyhow::Ok((status, text))
        })?;
        let v: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return v.ok_or_else(|| anyhow!("the answer is not JSON ({status})"));
        }
        let msg = v
            .as_ref()
            .and_then(|v| v["error"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(200).collect());
        bail!("{msg} ({})", status.as_u16())
    }
}

/// Percent-encodes one path segment or query value.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON string's text, or the value as JSON.
fn s(v: &Value) -> String {
    match v {
        Value::String(t) => t.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == n {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_apps(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|a| {
            let versions: Vec<String> = rows(&a["versions"]).iter().map(s).collect();
            vec![
                s(&a["name"]),
                s(&a["active_version"]),
                s(&a["agents"]),
                versions.join(","),
                s(&a["title"]),
            ]
        })
        .collect();
    print_table(&["APP", "ACTIVE", "AGENTS", "VERSIONS", "TITLE"], rows);
}

fn print_app(v: &Value) {
    println!("app:            {}", s(&v["name"]));
    println!("title:          {}", s(&v["title"]));
    println!("active version: {}", s(&v["active_version"]));
    if !v["bind_url"].is_null() {
        println!("bind url:       {}", s(&v["bind_url"]));
    }
    println!(
        "created:        {} by {}",
        when(&v["created_at_ms"]),
        s(&v["creator"])
    );
    let ips: Vec<String> = rows(&v["bindings"]).iter().map(s).collect();
    println!(
        "agents:         {}",
        if ips.is_empty() {
            "-".into()
        } else {
            ips.join(" ")
        }
    );
    println!("versions:");
    for ver in rows(&v["versions"]) {
        println!(
            "  {}  {} bytes  sha256 {}  {} by {}",
            s(&ver["version"]),
            s(&ver["size"]),
            s(&ver["sha256"]),
            when(&ver["created_at_ms"]),
            s(&ver["uploader"])
        );
    }
    println!("keys:");
    for k in rows(&v["keys"]) {
        println!(
            "  {}  {}  {}",
            s(&k["auth_id"]),
            s(&k["state"]),
            s(&k["name"])
        );
    }
}

fn print_change(app: &str, what: &str, ips: &Value) {
    let ips: Vec<String> = rows(ips).iter().map(s).collect();
    if ips.is_empty() {
        println!("{app}: nothing changed");
    } else {
        println!("{app}: {what} {}", ips.join(" "));
    }
}

fn print_keys(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|k| {
            vec![
                s(&k["auth_id"]),
                s(&k["state"]),
                when(&k["expires_at_ms"]),
                when(&k["created_at_ms"]),
                s(&k["name"]),
            ]
        })
        .collect();
    print_table(&["AUTH_ID", "STATE", "EXPIRES", "CREATED", "NAME"], rows);
}

fn print_users(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|u| {
            vec![
                s(&u["email"]),
                s(&u["role"]),
                when(&u["last_login_ms"]),
                when(&u["created_at_ms"]),
            ]
        })
        .collect();
    print_table(&["EMAIL", "ROLE", "LAST LOGIN", "CREATED"], rows);
}

fn print_agents(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|r| {
            let apps = r["apps"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(a, v)| format!("{a}={}", s(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                s(&r["ip"]),
                s(&r["asset"]),
                s(&r["version"]),
                if r["linked"] == true { "yes" } else { "no" }.into(),
                if r["pinned"] == true { "yes" } else { "no" }.into(),
                when(&r["last_heartbeat_ms"]),
                apps,
            ]
        })
        .collect();
    print_table(
        &[
            "IP",
            "ASSET",
            "VERSION",
            "LINKED",
            "PINNED",
            "LAST HEARTBEAT",
            "APPS",
        ],
        rows,
    );
}

fn print_audit(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|r| {
            vec![
                s(&r["id"]),
                when(&r["at_ms"]),
                s(&r["actor"]),
                s(&r["action"]),
                r["detail"].to_string(),
            ]
        })
        .collect();
    print_table(&["ID", "AT", "ACTOR", "ACTION", "DETAIL"], rows);
}

/// A Unix-ms value as RFC 3339 UTC, or `-`.
fn when(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), format_rfc3339)
}

/// 24 hex characters from the OS CSPRNG.
fn generate_password() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    hex::encode(b)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number from [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to Unix milliseconds.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > mdays[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        frac_ms = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset_s = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if &tz[..1] == "-" { -o } else { o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_and_formats() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2027-01-31T00:00:00Z", Some(1_801_353_600_000)),
            ("2027-01-31t00:00:00z", Some(1_801_353_600_000)),
            ("2027-01-31T01:30:00+01:30", Some(1_801_353_600_000)),
            ("2027-01-30T22:00:00-02:00", Some(1_801_353_600_000)),
            ("2027-01-31T00:00:00.5Z", Some(1_801_353_600_500)),
            ("2027-01-31T00:00:00.123456Z", Some(1_801_353_600_123)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800_000)),
            ("2023-02-29T00:00:00Z", None),
            ("2027-13-01T00:00:00Z", None),
            ("2027-01-31T24:00:00Z", None),
            ("2027-01-31T00:00:00", None),
            ("2027-01-31", None),
            ("2027-01-31T00:00:00.Z", None),
            ("2027-01-31T00:00:00+0100", None),
            ("+027-01-31T00:00:00Z", None),
            ("tomorrow", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339_ms(text), *want, "{text}");
        }
        for ms in [0, 1_801_353_600_000, 1_709_164_800_000, 951_782_400_000] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339(ms)), Some(ms));
        }
        assert_eq!(format_rfc3339(1_801_353_661_000), "2027-01-31T00:01:01Z");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(seg("ann@x.io"), "ann@x.io");
        assert_eq!(seg("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(seg("demo_1.0.zip"), "demo_1.0.zip");
    }

    #[test]
    fn generated_passwords_are_long_enough_and_fresh() {
        let (a, b) = (generate_password(), generate_password());
        assert!(a.len() >= 12);
        assert_ne!(a, b);
    }
}
