//! Configuration of the center and the agent (`operations.md`).
//!
//! Loading happens in one place: defaults, then the TOML file, then `ELVES_` environment
//! variables (`__` separates sections: `ELVES_AUTH__KEY`), then [`CenterConfig::validate`] /
//! [`AgentConfig::validate`]. A configuration that cannot work stops start-up with one
//! clear line (the [`Error`]'s `Display`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A configuration that cannot be used, in one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Load(String),
    #[error("config: {0}")]
    Invalid(String),
}

/// `[server]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// v2 API, admin API, web UI, /metrics, /healthz.
    pub listen: String,
    /// The IANA zone (or `local`) used for `yyyy-MM-dd HH:mm:ss` times in API results.
    pub time_zone: String,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:9091".into(),
            time_zone: "local".into(),
        }
    }
}

/// `[auth]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// `simple` or `supervisor`.
    pub mode: String,
    /// Simple mode: the one `auth_id` (required, no default).
    pub id: String,
    /// Simple mode: its key (required, no default).
    pub key: String,
    pub window_secs: i64,
    pub sign_types: Vec<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            mode: "simple".into(),
            id: String::new(),
            key: String::new(),
            window_secs: 180,
            sign_types: vec!["MD5".into(), "HMAC-SHA256".into()],
        }
    }
}

/// `[admin]`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    pub token: String,
}

/// `[modules]`: which modules this process runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Modules {
    pub openapi: bool,
    pub scheduler: bool,
    pub queue: bool,
    pub cron: bool,
    pub heartbeat: bool,
    pub supervisor: bool,
}

impl Default for Modules {
    fn default() -> Self {
        Modules {
            openapi: true,
            scheduler: true,
            queue: true,
            cron: true,
            heartbeat: true,
            supervisor: true,
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    pub url: String,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            url: "sqlite://elves-data/elves.db".into(),
        }
    }
}

/// `[bus]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bus {
    pub url: String,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            url: "memory".into(),
        }
    }
}

/// `[agents]`: where agents connect and how they enrol.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Agents {
    pub listen: String,
    /// The enrollment token agents present (required, no default).
    pub token: String,
    pub online_secs: u64,
    /// How often connected agents heartbeat.
    pub heartbeat_secs: u64,
}

impl Default for Agents {
    fn default() -> Self {
        Agents {
            listen: "127.0.0.1:9092".into(),
            token: String::new(),
            online_secs: 600,
            heartbeat_secs: 60,
        }
    }
}

/// `[cron]`: the center's cron module.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cron {
    /// Runs kept per cron (default 50).
    pub history: u32,
    /// The IANA zone of crons created without `tz`, or `local` (the host's zone, the default).
    pub default_tz: String,
    /// A missed fire at most this old (seconds) fires once under the `fire_once` policy.
    pub misfire_window_secs: u64,
}

impl Default for Cron {
    fn default() -> Self {
        Cron {
            history: 50,
            default_tz: "local".into(),
            misfire_window_secs: 60,
        }
    }
}

/// `[queue]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Queue {
    /// How long finished and stopped queues are kept, in seconds (default 7 days).
    pub retention_secs: u64,
    /// A running task whose agent has not been heard of (no link, no heartbeat) for this many
    /// seconds is given up: `[410.1]`, `worker_flag` -1, dependants stopped (default 3600;
    /// must be more than `agents.heartbeat_secs`).
    pub give_up_secs: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            retention_secs: 7 * 86_400,
            give_up_secs: 3600,
        }
    }
}

/// `[supervisor]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Supervisor {
    /// Encrypts API-key secrets at rest, so a database dump alone cannot sign requests
    /// (supervisor mode; at least 16 characters; keep it out of the database's backups).
    pub secret: String,
    /// Where uploaded app packages are kept (content-addressed).
    pub packages_dir: PathBuf,
    /// How often apps with a bind URL get their bindings from it, in seconds (0 = only on
    /// demand).
    pub bind_sync_secs: u64,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            secret: String::new(),
            packages_dir: "elves-data/packages".into(),
            bind_sync_secs: 7200,
        }
    }
}

/// The center's whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CenterConfig {
    pub server: Server,
    pub auth: Auth,
    pub admin: Admin,
    pub modules: Modules,
    pub store: Store,
    pub bus: Bus,
    pub agents: Agents,
    pub queue: Queue,
    pub cron: Cron,
    pub supervisor: Supervisor,
    /// Simple mode: the app versions every agent should run.
    pub apps: BTreeMap<String, String>,
}

/// `Debug` for configuration sections that hold secrets: the secrets print as `"***"`, so a
/// configuration can be logged without leaking them.
macro_rules! redacted_debug {
    ($ty:ident { $($field:ident),* } secret { $($secret:ident),* }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut d = f.debug_struct(stringify!($ty));
                $( d.field(stringify!($field), &self.$field); )*
                $( d.field(stringify!($secret), &if self.$secret.is_empty() { "" } else { "***" }); )*
                d.finish()
            }
        }
    };
}

redacted_debug!(Supervisor { packages_dir, bind_sync_secs } secret { secret });
redacted_debug!(Auth { mode, id, window_secs, sign_types } secret { key });
redacted_debug!(Admin {} secret { token });
redacted_debug!(Agents { listen, online_secs, heartbeat_secs } secret { token });
redacted_debug!(DevMode { enabled, authid } secret { authkey });
redacted_debug!(AgentConfig {
    ip, asset, center, data_dir, apps_dir, allowed_interpreters, python, heartbeat, apps, cron, http, devmode, limits
} secret { token });

/// Loads `T`; only `ELVES_` variables whose first segment is one of `sections` are read, so
/// client variables (`ELVES_URL`, `ELVES_AUTH_KEY`, …) and worker variables never collide.
fn load<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    sections: &'static [&'static str],
) -> Result<T, Error> {
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(Error::Load(format!(
                "{} does not exist or is not a file",
                path.display()
            )));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    let env = Env::prefixed("ELVES_")
        .filter(move |k| {
            let k = k.as_str().to_ascii_lowercase();
            let first = k.split("__").next().unwrap_or_default();
            (k.contains("__")
                || !matches!(k.as_str(), "auth_id" | "auth_key" | "admin_token" | "url"))
                && sections.contains(&first)
        })
        .split("__");
    fig = fig.merge(env);
    fig.extract()
        .map_err(|e| Error::Load(one_line(&e.to_string())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn require(value: &str, what: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::Invalid(format!(
            "{what} is required and has no default"
        )));
    }
    Ok(())
}

impl CenterConfig {
    /// Defaults, then `file`, then `ELVES_…` variables, then [`CenterConfig::validate`].
    pub fn load(file: Option<&Path>) -> Result<CenterConfig, Error> {
        const SECTIONS: &[&str] = &[
            "server",
            "auth",
            "admin",
            "modules",
            "store",
            "bus",
            "agents",
            "queue",
            "cron",
            "supervisor",
            "apps",
        ];
        let cfg: CenterConfig = load(file, SECTIONS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses a configuration that cannot work, with the first reason found.
    pub fn validate(&self) -> Result<(), Error> {
        match self.auth.mode.as_str() {
            "simple" => {
                require(&self.auth.id, "auth.id (simple mode)")?;
                require(&self.auth.key, "auth.key (simple mode)")?;
            }
            "supervisor" => {
                require(&self.admin.token, "admin.token (supervisor mode)")?;
                if self.supervisor.secret.trim().len() < 16 {
                    return Err(Error::Invalid(
                        "supervisor.secret (supervisor mode) is required: at least 16 characters"
                            .into(),
                    ));
                }
            }
            other => {
                return Err(Error::Invalid(format!(
                    "auth.mode must be \"simple\" or \"supervisor\", not {other:?}"
                )));
            }
        }
        if self.auth.window_secs <= 0 {
            return Err(Error::Invalid("auth.window_secs must be positive".into()));
        }
        if self.auth.sign_types.is_empty() {
            return Err(Error::Invalid(
                "auth.sign_types must name at least one of MD5, HMAC-SHA256".into(),
            ));
        }
        for t in &self.auth.sign_types {
            if !t.eq_ignore_ascii_case("MD5") && !t.eq_ignore_ascii_case("HMAC-SHA256") {
                return Err(Error::Invalid(format!(
                    "auth.sign_types: unknown sign type {t:?}"
                )));
            }
        }
        require(&self.agents.token, "agents.token")?;
        if self.bus.url != "memory" {
            return Err(Error::Invalid(format!(
                "bus.url {:?}: only \"memory\" is available in this build",
                self.bus.url
            )));
        }
        if !self.store.url.starts_with("sqlite:") {
            return Err(Error::Invalid(format!(
                "store.url {:?}: only sqlite:// is available in this build",
                self.store.url
            )));
        }
        if self.agents.heartbeat_secs == 0 {
            return Err(Error::Invalid(
                "agents.heartbeat_secs must be positive".into(),
            ));
        }
        if self.queue.give_up_secs <= self.agents.heartbeat_secs {
            return Err(Error::Invalid(format!(
                "queue.give_up_secs must be more than agents.heartbeat_secs ({})",
                self.agents.heartbeat_secs
            )));
        }
        if self.cron.history == 0 {
            return Err(Error::Invalid("cron.history must be at least 1".into()));
        }
        if self.cron.misfire_window_secs > 86_400 {
            return Err(Error::Invalid(
                "cron.misfire_window_secs must be at most 86400".into(),
            ));
        }
        Ok(())
    }
}

/// `[heartbeat]` of the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentHeartbeat {
    pub interval_secs: u64,
}

impl Default for AgentHeartbeat {
    fn default() -> Self {
        AgentHeartbeat { interval_secs: 60 }
    }
}

/// `[cron]` of the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentCron {
    pub file: String,
}

impl Default for AgentCron {
    fn default() -> Self {
        AgentCron {
            file: "cron.json".into(),
        }
    }
}

/// `[http]` of the agent (dashboard; empty = off).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentHttp {
    pub listen: String,
}

/// `[devmode]` of the agent.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevMode {
    pub enabled: bool,
    pub authid: String,
    pub authkey: String,
}

/// `[limits]` of the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentLimits {
    /// Largest worker stdout kept, in bytes; more is an error.
    pub output_cap: usize,
    // --- worker caps and user (issue 7) ---
    /// Workers running at once on this agent (at least 1); more wait for a slot.
    pub max_workers: usize,
    /// Runs waiting for a slot at most; more are refused (flag -1).
    pub max_waiting: usize,
    /// Per-app caps on workers running at once: `app = n`.
    pub app_workers: BTreeMap<String, usize>,
    /// When the agent runs as root, the unprivileged user workers run as.
    pub worker_user: String,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            output_cap: 4 << 20,
            max_workers: 64,
            max_waiting: 10_000,
            app_workers: BTreeMap::new(),
            worker_user: String::new(),
        }
    }
}

/// The agent's whole configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub ip: String,
    pub asset: String,
    pub center: String,
    pub token: String,
    pub data_dir: PathBuf,
    pub apps_dir: PathBuf,
    pub allowed_interpreters: Vec<String>,
    pub python: String,
    pub heartbeat: AgentHeartbeat,
    pub apps: BTreeMap<String, String>,
    pub cron: AgentCron,
    pub http: AgentHttp,
    pub devmode: DevMode,
    pub limits: AgentLimits,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            ip: String::new(),
            asset: String::new(),
            center: "http://127.0.0.1:9092".into(),
            token: String::new(),
            data_dir: "./agent-data".into(),
            apps_dir: "./apps".into(),
            allowed_interpreters: ["python3", "python", "bash", "sh"]
                .map(String::from)
                .to_vec(),
            python: "python3".into(),
            heartbeat: AgentHeartbeat::default(),
            apps: BTreeMap::new(),
            cron: AgentCron::default(),
            http: AgentHttp::default(),
            devmode: DevMode::default(),
            limits: AgentLimits::default(),
        }
    }
}

/// Dotted IPv4 as api-v2 §6 defines it: four 0–255 octets of 1–3 digits.
fn is_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            (1..=3).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

impl AgentConfig {
    /// Defaults, then `file`, then `ELVES_…` variables, then [`AgentConfig::validate`].
    pub fn load(file: Option<&Path>) -> Result<AgentConfig, Error> {
        const SECTIONS: &[&str] = &[
            "ip",
            "asset",
            "center",
            "token",
            "data_dir",
            "apps_dir",
            "allowed_interpreters",
            "python",
            "heartbeat",
            "apps",
            "cron",
            "http",
            "devmode",
            "limits",
        ];
        let mut cfg: AgentConfig = load(file, SECTIONS)?;
        if cfg.asset.is_empty() {
            cfg.asset = cfg.ip.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), Error> {
        if !is_ipv4(&self.ip) {
            return Err(Error::Invalid(format!(
                "ip must be a dotted IPv4 address (the agent's identity), not {:?}",
                self.ip
            )));
        }
        require(&self.token, "token (the center's enrollment token)")?;
        if !(self.center.starts_with("http://") || self.center.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "center must be an http:// or https:// URL, not {:?}",
                self.center
            )));
        }
        if self.heartbeat.interval_secs == 0 {
            return Err(Error::Invalid(
                "heartbeat.interval_secs must be positive".into(),
            ));
        }
        if self.limits.max_workers == 0 {
            return Err(Error::Invalid(
                "limits.max_workers must be at least 1".into(),
            ));
        }
        if let Some((app, _)) = self.limits.app_workers.iter().find(|(_, n)| **n == 0) {
            return Err(Error::Invalid(format!(
                "limits.app_workers.{app} must be at least 1"
            )));
        }
        if self.devmode.enabled
            && (self.devmode.authid.trim().is_empty() || self.devmode.authkey.trim().is_empty())
        {
            return Err(Error::Invalid(
                "devmode.authid and devmode.authkey are required when devmode is enabled".into(),
            ));
        }
        Ok(())
    }
}

/// Structured logs to stderr: `ELVES_LOG` sets the filter (default `info`); `json` selects
/// one JSON object per line instead of text.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ELVES_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn center(toml: &str) -> Result<CenterConfig, String> {
        let mut out = Err(String::new());
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", toml)?;
            out = CenterConfig::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string());
            Ok(())
        });
        out
    }

    const OK: &str = "[auth]\nid='A'\nkey='K'\n[agents]\ntoken='T'\n";

    #[test]
    fn center_rules() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("complete simple config", OK, None),
            (
                "complete supervisor config",
                "[auth]\nmode='supervisor'\n[admin]\ntoken='A'\n[supervisor]\nsecret='0123456789abcdef'\n[agents]\ntoken='T'\n",
                None,
            ),
            (
                "supervisor mode without admin.token",
                "[auth]\nmode='supervisor'\n[supervisor]\nsecret='0123456789abcdef'\n[agents]\ntoken='T'\n",
                Some("admin.token (supervisor mode) is required"),
            ),
            (
                "supervisor mode with a short secret",
                "[auth]\nmode='supervisor'\n[admin]\ntoken='A'\n[supervisor]\nsecret='short'\n[agents]\ntoken='T'\n",
                Some("supervisor.secret (supervisor mode) is required"),
            ),
            (
                "missing auth.key",
                "[auth]\nid='A'\n[agents]\ntoken='T'\n",
                Some("auth.key (simple mode) is required"),
            ),
            (
                "missing auth.id",
                "[auth]\nkey='K'\n[agents]\ntoken='T'\n",
                Some("auth.id (simple mode) is required"),
            ),
            (
                "missing agents.token",
                "[auth]\nid='A'\nkey='K'\n",
                Some("agents.token is required"),
            ),
            (
                "unknown mode",
                "[auth]\nmode='x'\nid='A'\nkey='K'\n[agents]\ntoken='T'\n",
                Some("auth.mode must be"),
            ),
            (
                "unknown key",
                "bogus=1\n[auth]\nid='A'\nkey='K'\n[agents]\ntoken='T'\n",
                Some("bogus"),
            ),
            (
                "unknown sign type",
                "[auth]\nid='A'\nkey='K'\nsign_types=['SHA1']\n[agents]\ntoken='T'\n",
                Some("unknown sign type"),
            ),
        ];
        for (name, toml, want) in cases {
            let got = center(toml);
            match want {
                None => assert!(got.is_ok(), "{name}: {got:?}"),
                Some(w) => {
                    let e = got.expect_err(name);
                    assert!(e.contains(w), "{name}: {e}");
                    assert!(!e.contains('\n'), "{name}: error must be one line: {e}");
                }
            }
        }
    }

    #[test]
    fn env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", OK)?;
            jail.set_env("ELVES_AUTH__KEY", "from-env");
            jail.set_env("ELVES_SERVER__LISTEN", "127.0.0.1:1");
            let cfg = CenterConfig::load(Some(Path::new("c.toml"))).unwrap();
            assert_eq!(cfg.auth.key, "from-env");
            assert_eq!(cfg.server.listen, "127.0.0.1:1");
            Ok(())
        });
    }

    #[test]
    fn client_variables_are_not_config() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", OK)?;
            jail.set_env("ELVES_URL", "http://x");
            jail.set_env("ELVES_AUTH_KEY", "k");
            jail.set_env("ELVES_APP", "apptest");
            assert!(CenterConfig::load(Some(Path::new("c.toml"))).is_ok());
            Ok(())
        });
    }

    #[test]
    fn agent_rules() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("complete", "ip='10.0.0.5'\ntoken='T'\n", None),
            (
                "bad ip",
                "ip='10.0.0'\ntoken='T'\n",
                Some("ip must be a dotted IPv4"),
            ),
            ("no token", "ip='10.0.0.5'\n", Some("token")),
            (
                "bad center",
                "ip='10.0.0.5'\ntoken='T'\ncenter='ftp://x'\n",
                Some("center must be"),
            ),
            (
                "devmode without key",
                "ip='10.0.0.5'\ntoken='T'\n[devmode]\nenabled=true\n",
                Some("devmode.authid"),
            ),
            (
                "no worker allowed",
                "ip='10.0.0.5'\ntoken='T'\n[limits]\nmax_workers=0\n",
                Some("limits.max_workers must be at least 1"),
            ),
            (
                "an app capped at zero",
                "ip='10.0.0.5'\ntoken='T'\n[limits]\napp_workers={a=0}\n",
                Some("limits.app_workers.a must be at least 1"),
            ),
            (
                "limits",
                "ip='10.0.0.5'\ntoken='T'\n[limits]\nmax_workers=2\nmax_waiting=0\napp_workers={a=1}\nworker_user='nobody'\n",
                None,
            ),
        ];
        for (name, toml, want) in cases {
            let mut got = Err(String::new());
            figment::Jail::expect_with(|jail| {
                jail.create_file("a.toml", toml)?;
                got = AgentConfig::load(Some(Path::new("a.toml"))).map_err(|e| e.to_string());
                Ok(())
            });
            match want {
                None => assert_eq!(
                    got.as_ref().map(|c| c.asset.as_str()),
                    Ok("10.0.0.5"),
                    "{name}"
                ),
                Some(w) => assert!(got.as_ref().expect_err(name).contains(w), "{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut cfg = CenterConfig::default();
        cfg.auth.key = "the-key-value".into();
        cfg.agents.token = "the-token-value".into();
        cfg.admin.token = "the-admin-value".into();
        let text = format!("{cfg:?}");
        for secret in ["the-key-value", "the-token-value", "the-admin-value"] {
            assert!(!text.contains(secret), "{text}");
        }
        let agent = AgentConfig {
            token: "agent-secret".into(),
            ..AgentConfig::default()
        };
        assert!(!format!("{agent:?}").contains("agent-secret"));
    }

    #[test]
    fn missing_file_is_one_clear_line() {
        let e = CenterConfig::load(Some(Path::new("/nonexistent/elves.toml")))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config: /nonexistent/elves.toml does not exist or is not a file"
        );
    }
}
