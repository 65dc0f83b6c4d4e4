//! Agent-side cron (agent-protocol §7): runs the entries of `cron.json` on their rules, in the
//! machine's time zone, without the center.
//!
//! The file is an object keyed by entry id:
//! `{"ID": {"Flag": "true", "Comment": "…", "App": "a", "Func": "f", "Param": {…},
//! "Timeout": 0, "Proxy": "", "Mode": "NP", "Rule": "*/15 * * * * *"}}`. Keys match without
//! regard to case (as the original's Go decoder did). `Flag` `"true"` (any case, or JSON
//! `true`) enables an entry; the worker's parameter is the JSON text of `Param` (compact,
//! keys sorted; absent or `null` = empty). An entry that cannot run (bad rule, no app, bad
//! mode…) is skipped with a logged error and the others still run.
//!
//! The file is looked at every [`POLL`] (size, mtime, inode — so an editor that saves by
//! writing a new file and renaming it over the old one is seen too) and re-read when that
//! changes; only entries whose content changed are rescheduled, a deleted entry stops, and a
//! deleted file stops them all. A file that is not valid JSON (half-written) leaves the
//! current schedule alone until it is fixed. A run still going when its entry fires again is
//! not started twice. Runs do not report to the center; mode `P` runs go to the processor
//! (through [`Hooks`]).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elves_cron_expr::Schedule;
use elves_cron_expr::jiff::Timestamp;
use elves_cron_expr::jiff::tz::TimeZone;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::apps::Distributor;
use crate::exec::{Executor, Job};
use crate::hooks::Hooks;

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_millis(250);
/// The largest `cron.json` read.
pub const MAX_FILE: u64 = 1 << 20;
/// The most entries scheduled.
pub const MAX_ENTRIES: usize = 1000;

/// One valid entry of `cron.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub enabled: bool,
    pub comment: String,
    pub app: String,
    pub func: String,
    /// The worker's parameter: the JSON text of `Param`.
    pub param: String,
    pub timeout: u64,
    pub proxy: String,
    /// `P` or `NP`.
    pub mode: String,
    pub rule: String,
}

/// Looks a key up in a JSON object without regard to case.
fn get_ci<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn string_field(v: &serde_json::Value, key: &str) -> Result<String, String> {
    match get_ci(v, key) {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{key} must be a string, not {other}")),
    }
}

/// Reads one entry; the error says why it is skipped.
fn parse_entry(id: &str, v: &serde_json::Value) -> Result<(Entry, Schedule), String> {
    if !v.is_object() {
        return Err("an entry must be an object".into());
    }
    if id.trim().is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err("the id must be 1-128 printable characters".into());
    }
    let enabled = match get_ci(v, "Flag") {
        Some(serde_json::Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        Some(serde_json::Value::Bool(b)) => *b,
        _ => false,
    };
    let app = string_field(v, "App")?;
    let func = string_field(v, "Func")?;
    if app.trim().is_empty() {
        return Err("App is required".into());
    }
    if func.trim().is_empty() {
        return Err("Func is required".into());
    }
    let param = match get_ci(v, "Param") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(p) => p.to_string(),
    };
    let timeout = match get_ci(v, "Timeout") {
        None | Some(serde_json::Value::Null) => 0,
        Some(t) => t
            .as_u64()
            .ok_or_else(|| format!("Timeout must be whole seconds (0 or more), not {t}"))?,
    };
    let mode = string_field(v, "Mode")?.trim().to_ascii_uppercase();
    let mode = match mode.as_str() {
        "" | "NP" => "NP".to_owned(),
        "P" => "P".to_owned(),
        other => return Err(format!("Mode must be P or NP, not {other:?}")),
    };
    let rule = string_field(v, "Rule")?;
    let schedule = Schedule::parse_agent(rule.trim()).map_err(|e| format!("Rule {rule:?}: {e}"))?;
    Ok((
        Entry {
            id: id.to_owned(),
            enabled,
            comment: string_field(v, "Comment")?,
            app,
            func,
            param,
            timeout,
            proxy: string_field(v, "Proxy")?,
            mode,
            rule,
        },
        schedule,
    ))
}

/// The valid entries of a `cron.json`, with their parsed rules.
pub type Entries = Vec<(Entry, Schedule)>;

/// Parses `cron.json`: the valid entries and one message per skipped entry, or an error for
/// a file that is not a JSON object.
pub fn parse(text: &str) -> Result<(Entries, Vec<String>), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("cron.json is not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("cron.json must be an object keyed by entry id")?;
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (id, e) in obj {
        if ok.len() >= MAX_ENTRIES {
            errors.push(format!(
                "cron.json: more than {MAX_ENTRIES} entries; the rest are skipped"
            ));
            break;
        }
        match parse_entry(id, e) {
            Ok(pair) => ok.push(pair),
            Err(msg) => errors.push(format!("cron.json entry [{id}] skipped: {msg}")),
        }
    }
    Ok((ok, errors))
}

/// An entry as `/stat/crons` shows it (the original's field names, plus `Next`, `Enabled`
/// and `Running`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CronView {
    pub id: String,
    pub app: String,
    pub func: String,
    pub mode: String,
    pub rule: String,
    pub comment: String,
    /// `yyyy/MM/dd HH:mm:ss`, or `0000/00/00 00:00:00` before the first run.
    pub lastexec: String,
    /// The next fire time (RFC 3339), empty when disabled or never.
    pub next: String,
    pub enabled: bool,
    pub running: bool,
}

struct Slot {
    entry: Entry,
    schedule: Schedule,
    next: Option<Timestamp>,
    last_exec: Option<String>,
    running: Arc<AtomicBool>,
}

/// The file's identity and version, to notice a change cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ino: m.ino(),
    })
}

/// The agent-side cron service.
pub struct AgentCron {
    path: PathBuf,
    ip: String,
    exec: Executor,
    apps: Arc<Distributor>,
    hooks: Arc<Hooks>,
    tz: TimeZone,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// The last parsed text, so that a touch without a change reschedules nothing.
    last_text: Mutex<Option<String>>,
    /// Set when the last read of the file failed, so the error is logged once.
    broken: AtomicBool,
}

impl AgentCron {
    pub fn new(
        path: PathBuf,
        ip: String,
        exec: Executor,
        apps: Arc<Distributor>,
        hooks: Arc<Hooks>,
    ) -> AgentCron {
        AgentCron {
            path,
            ip,
            exec,
            apps,
            hooks,
            tz: TimeZone::system(),
            slots: Mutex::new(BTreeMap::new()),
            last_text: Mutex::new(None),
            broken: AtomicBool::new(false),
        }
    }

    fn error(&self, msg: &str) {
        tracing::error!(file = %self.path.display(), error = %msg, "agent cron");
        self.hooks.stats.error(msg);
    }

    /// The entries, for the dashboard.
    pub fn view(&self) -> Vec<CronView> {
        self.slots
            .lock()
            .expect("cron poisoned")
            .values()
            .map(|s| CronView {
                id: s.entry.id.clone(),
                app: s.entry.app.clone(),
                func: s.entry.func.clone(),
                mode: s.entry.mode.clone(),
                rule: s.entry.rule.clone(),
                comment: s.entry.comment.clone(),
                lastexec: s
                    .last_exec
                    .clone()
                    .unwrap_or_else(|| "0000/00/00 00:00:00".to_owned()),
                next: s.next.map(|t| t.to_string()).unwrap_or_default(),
                enabled: s.entry.enabled,
                running: s.running.load(Ordering::Acquire),
            })
            .collect()
    }

    /// Re-reads the file and applies it (see the module docs).
    fn reload(&self) {
        let text = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                self.error(&format!("cannot read {}: {e}", self.path.display()));
                return;
            }
            Ok(m) if m.len() > MAX_FILE => {
                self.error(&format!(
                    "{} is larger than {MAX_FILE} bytes; ignored",
                    self.path.display()
                ));
                return;
            }
            Ok(_) => match std::fs::read_to_string(&self.path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => {
                    self.error(&format!("cannot read {}: {e}", self.path.display()));
                    return;
                }
            },
        };
        {
            let mut last = self.last_text.lock().expect("cron poisoned");
            if last.as_deref() == Some(text.as_str()) {
                return;
            }
            *last = Some(text.clone());
        }
        let entries = if text.trim().is_empty() {
            Vec::new()
        } else {
            match parse(&text) {
                Ok((entries, errors)) => {
                    self.broken.store(false, Ordering::Release);
                    for e in errors {
                        self.error(&e);
                    }
                    entries
                }
                Err(e) => {
                    if !self.broken.swap(true, Ordering::AcqRel) {
                        self.error(&format!("{e}; the current schedule is kept"));
                    }
                    return;
                }
            }
        };
        let now = Timestamp::now();
        let mut slots = self.slots.lock().expect("cron poisoned");
        let mut old = std::mem::take(&mut *slots);
        for (entry, schedule) in entries {
            let slot = match old.remove(&entry.id) {
                Some(s) if s.entry == entry => s,
                prev => Slot {
                    next: if entry.enabled {
                        schedule.next_after(now, &self.tz)
                    } else {
                        None
                    },
                    entry,
                    schedule,
                    last_exec: prev.as_ref().and_then(|p| p.last_exec.clone()),
                    running: prev.map_or_else(|| Arc::new(AtomicBool::new(false)), |p| p.running),
                },
            };
            slots.insert(slot.entry.id.clone(), slot);
        }
        tracing::info!(
            file = %self.path.display(), entries = slots.len(), removed = old.len(),
            "agent cron reloaded"
        );
    }

    /// Starts the runs that are due and returns when the next one is.
    fn fire_due(self: &Arc<Self>, cancel: &CancellationToken) -> Option<Timestamp> {
        let now = Timestamp::now();
        let mut next: Option<Timestamp> = None;
        let mut slots = self.slots.lock().expect("cron poisoned");
        for slot in slots.values_mut() {
            let Some(at) = slot.next else { continue };
            if at <= now {
                slot.next = slot.schedule.next_after(now, &self.tz);
                if slot.running.swap(true, Ordering::AcqRel) {
                    tracing::warn!(id = %slot.entry.id, "agent cron: the previous run is still going; this one is skipped");
                } else {
                    slot.last_exec = Some(crate::stats::now_text());
                    self.clone().spawn_run(
                        slot.entry.clone(),
                        slot.running.clone(),
                        cancel.clone(),
                    );
                }
            }
            if let Some(n) = slot.next {
                next = Some(next.map_or(n, |m: Timestamp| m.min(n)));
            }
        }
        next
    }

    fn spawn_run(self: Arc<Self>, e: Entry, running: Arc<AtomicBool>, cancel: CancellationToken) {
        tokio::spawn(async move {
            let job = Job {
                id: e.id.clone(),
                kind: "cron".into(),
                mode: e.mode.clone(),
                app: e.app.clone(),
                func: e.func.clone(),
                param: e.param.clone(),
                timeout_secs: e.timeout,
                proxy: e.proxy.clone(),
            };
            let installed = self.apps.is_installed(&job.app);
            let outcome = self.exec.run(&job, installed, cancel.child_token()).await;
            tracing::info!(id = %job.id, app = %job.app, func = %job.func, flag = outcome.flag,
                costtime_ms = outcome.costtime_ms, "agent cron run finished");
            self.hooks.finished(&job, &self.ip, &outcome);
            running.store(false, Ordering::Release);
        });
    }

    /// Watches the file and runs the entries until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut seen: Option<Option<Stamp>> = None;
        let mut check = tokio::time::interval(POLL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now_stamp = stamp(&self.path);
            if seen != Some(now_stamp) {
                seen = Some(now_stamp);
                self.reload();
            }
            let next = self.fire_due(&cancel);
            let wake = next.map(|n| {
                let ms = n
                    .as_millisecond()
                    .saturating_sub(Timestamp::now().as_millisecond());
                tokio::time::Instant::now() + Duration::from_millis(ms.clamp(0, 3_600_000) as u64)
            });
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = check.tick() => {}
                _ = async {
                    match wake {
                        Some(w) => tokio::time::sleep_until(w).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

/// The path of `cron.file`, relative to the agent's working directory when not absolute.
pub fn cron_path(file: &str) -> Option<PathBuf> {
    let f = file.trim();
    (!f.is_empty()).then(|| PathBuf::from(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_rules() {
        let ok = r#"{"Flag":"true","App":"a","Func":"f","Rule":"*/15 * * * * *"}"#;
        let cases: &[(&str, &str, Result<&str, &str>)] = &[
            (
                "the sample entry",
                r#"{"Flag": "true", "Comment": "c", "App": "apptest", "Func": "helloword",
              "Param": {"my": "hello"}, "Timeout": 0, "Proxy": "", "Mode": "NP", "Rule": "*/15 * * * * *"}"#,
                Ok(r#"{"my":"hello"}"#),
            ),
            ("minimal", ok, Ok("")),
            (
                "keys in any case",
                r#"{"flag":"TRUE","app":"a","func":"f","rule":"@every 10s","mode":"p"}"#,
                Ok(""),
            ),
            (
                "five fields",
                r#"{"App":"a","Func":"f","Rule":"0 * * * *"}"#,
                Ok(""),
            ),
            (
                "descriptor",
                r#"{"App":"a","Func":"f","Rule":"@hourly"}"#,
                Ok(""),
            ),
            (
                "param keys sorted",
                r#"{"App":"a","Func":"f","Rule":"@daily","Param":{"b":"1","a":"中"}}"#,
                Ok(r#"{"a":"中","b":"1"}"#),
            ),
            ("not an object", "[1]", Err("must be an object")),
            (
                "no app",
                r#"{"Func":"f","Rule":"@daily"}"#,
                Err("App is required"),
            ),
            (
                "no func",
                r#"{"App":"a","Rule":"@daily"}"#,
                Err("Func is required"),
            ),
            (
                "bad rule",
                r#"{"App":"a","Func":"f","Rule":"nope"}"#,
                Err("Rule \"nope\""),
            ),
            ("no rule", r#"{"App":"a","Func":"f"}"#, Err("Rule")),
            (
                "bad mode",
                r#"{"App":"a","Func":"f","Rule":"@daily","Mode":"X"}"#,
                Err("Mode must be"),
            ),
            (
                "bad timeout",
                r#"{"App":"a","Func":"f","Rule":"@daily","Timeout":-1}"#,
                Err("Timeout"),
            ),
            (
                "app not a string",
                r#"{"App":1,"Func":"f","Rule":"@daily"}"#,
                Err("App must be a string"),
            ),
        ];
        for (what, entry, want) in cases {
            let v: serde_json::Value = serde_json::from_str(entry).unwrap();
            match (parse_entry("ID1", &v), want) {
                (Ok((e, _)), Ok(param)) => assert_eq!(e.param, *param, "{what}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{what}: {e}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn flags_and_modes() {
        let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        let base = |flag: &str| {
            v(&format!(
                r#"{{"App":"a","Func":"f","Rule":"@daily","Flag":{flag},"Mode":"p"}}"#
            ))
        };
        for (flag, enabled) in [
            ("\"true\"", true),
            ("\"True\"", true),
            ("true", true),
            ("\"false\"", false),
            ("false", false),
            ("1", false),
            ("null", false),
        ] {
            let (e, _) = parse_entry("X", &base(flag)).unwrap();
            assert_eq!(e.enabled, enabled, "{flag}");
            assert_eq!(e.mode, "P");
        }
    }

    #[test]
    fn a_bad_entry_does_not_stop_the_others() {
        let text = r#"{"A":{"App":"a","Func":"f","Rule":"@daily"},"B":{"App":"a","Func":"f","Rule":"bad"},"C":{"App":"a","Func":"f","Rule":"@hourly"}}"#;
        let (ok, errors) = parse(text).unwrap();
        let ids: Vec<&str> = ok.iter().map(|(e, _)| e.id.as_str()).collect();
        assert_eq!(ids, ["A", "C"]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("entry [B] skipped"), "{}", errors[0]);
        assert!(parse("{").is_err());
        assert!(parse("[]").is_err());
    }
}
