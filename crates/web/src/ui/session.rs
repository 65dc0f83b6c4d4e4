//! Server-side sessions of the web UI and the login rate limit.
//!
//! * A session id is 256 random bits (hex in the cookie). The table is keyed by the SHA-256 of
//!   the id, so a lookup's timing says nothing about a valid id, and a memory dump holds no
//!   usable cookie.
//! * A session ends after [`IDLE`] without a request, [`ABSOLUTE`] after login, at logout, and
//!   for every session of a user whose password changes or who is deleted.
//! * The table holds at most [`MAX_SESSIONS`]; when full, expired sessions are dropped, then the
//!   least recently used one.
//! * Each session has its own CSRF token (256 bits), compared in constant time.
//! * Logins are limited per email ([`PER_EMAIL`] failures per [`WINDOW`]) and overall
//!   ([`GLOBAL`] attempts per minute), in a table of at most [`MAX_TRACKED`] emails.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A session ends this long after its last request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after its login, however active.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept.
pub const MAX_SESSIONS: usize = 10_000;
/// Failed logins allowed per email per window.
pub const PER_EMAIL: u32 = 5;
/// The window of the per-email limit.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Login attempts allowed per minute, all emails together.
pub const GLOBAL: u32 = 30;
/// The most emails whose failures are tracked.
pub const MAX_TRACKED: usize = 10_000;

/// Which pages a user may use (api of `elves_store::Role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Apps (create, upload, activate, bind, sync), agents, the audit log, their own
    /// password; not keys or users.
    Operator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

/// A message shown once on the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// What a request learns about its session.
#[derive(Clone, Debug)]
pub struct Current {
    pub email: String,
    pub role: Role,
    pub csrf: String,
}

struct Session {
    email: String,
    role: Role,
    csrf: String,
    created: Instant,
    last: Instant,
    flash: Option<Flash>,
    /// A new key's answer (with its secret), shown by the next page and then forgotten.
    reveal: Option<Value>,
}

/// The session table.
pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
    max: usize,
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source works");
    hex::encode(b)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Constant-time equality of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_capacity(MAX_SESSIONS)
    }
}

impl Sessions {
    pub fn with_capacity(max: usize) -> Sessions {
        Sessions {
            table: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session (at login): returns its id, never one used before.
    pub fn create(&self, email: &str, role: Role, now: Instant) -> String {
        let id = random_token();
        let mut t = self.lock();
        if t.len() >= self.max {
            t.retain(|_, s| alive(s, now));
        }
        if t.len() >= self.max
            && let Some(oldest) = t.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k)
        {
            t.remove(&oldest);
        }
        t.insert(
            key(&id),
            Session {
                email: email.to_owned(),
                role,
                csrf: random_token(),
                created: now,
                last: now,
                flash: None,
                reveal: None,
            },
        );
        id
    }

    /// The live session `id` names, touched; an expired one is removed.
    pub fn get(&self, id: &str, now: Instant) -> Option<Current> {
        let k = key(id);
        let mut t = self.lock();
        let s = t.get_mut(&k)?;
        if !alive(s, now) {
            t.remove(&k);
            return None;
        }
        s.last = now;
        Some(Current {
            email: s.email.clone(),
            role: s.role,
            csrf: s.csrf.clone(),
        })
    }

    /// Ends one session.
    pub fn destroy(&self, id: &str) {
        self.lock().remove(&key(id));
    }

    /// Ends every session of `email` (password changed, user deleted).
    pub fn destroy_user(&self, email: &str) {
        self.lock()
            .retain(|_, s| !s.email.eq_ignore_ascii_case(email));
    }

    pub fn set_flash(&self, id: &str, ok: bool, text: String) {
        if let Some(s) = self.lock().get_mut(&key(id)) {
            s.flash = Some(Flash { ok, text });
        }
    }

    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(&key(id))?.flash.take()
    }

    pub fn set_reveal(&self, id: &str, v: Value) {
        if let Some(s) = self.lock().get_mut(&key(id)) {
            s.reveal = Some(v);
        }
    }

    pub fn take_reveal(&self, id: &str) -> Option<Value> {
        self.lock().get_mut(&key(id))?.reveal.take()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.last) < IDLE
        && now.saturating_duration_since(s.created) < ABSOLUTE
}

/// The login rate limit.
pub struct LoginLimiter {
    state: Mutex<LimiterState>,
}

struct LimiterState {
    /// email (lower case) → (failures, start of the window).
    failures: HashMap<String, (u32, Instant)>,
    /// Attempts in the current minute, and its start.
    global: (u32, Instant),
}

impl LoginLimiter {
    pub fn new(now: Instant) -> LoginLimiter {
        LoginLimiter {
            state: Mutex::new(LimiterState {
                failures: HashMap::new(),
                global: (0, now),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a login attempt for `email` may go ahead now; counts it against the global
    /// limit when it may.
    pub fn allow(&self, email: &str, now: Instant) -> bool {
        let mut st = self.lock();
        if now.saturating_duration_since(st.global.1) >= Duration::from_secs(60) {
            st.global = (0, now);
        }
        if st.global.0 >= GLOBAL {
            return false;
        }
        let blocked = st
            .failures
            .get(&email.to_ascii_lowercase())
            .is_some_and(|(n, since)| {
                *n >= PER_EMAIL && now.saturating_duration_since(*since) < WINDOW
            });
        if !blocked {
            st.global.0 += 1;
        }
        !blocked
    }

    /// Records a failed login for `email`.
    pub fn failed(&self, email: &str, now: Instant) {
        let mut st = self.lock();
        let f = &mut st.failures;
        if f.len() >= MAX_TRACKED {
            f.retain(|_, (_, since)| now.saturating_duration_since(*since) < WINDOW);
        }
        if f.len() >= MAX_TRACKED
            && let Some(oldest) = f
                .iter()
                .min_by_key(|(_, (_, s))| *s)
                .map(|(k, _)| k.clone())
        {
            f.remove(&oldest);
        }
        let e = f.entry(email.to_ascii_lowercase()).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }

    /// Forgets the failures of `email` (after a successful login).
    pub fn succeeded(&self, email: &str) {
        self.lock().failures.remove(&email.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_256_bit_hex() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_token());
    }

    #[test]
    fn sessions_expire_when_idle_and_absolutely() {
        let t0 = Instant::now();
        let s = Sessions::default();
        let id = s.create("ann@x.io", Role::Admin, t0);
        assert_eq!(s.get(&id, t0).unwrap().email, "ann@x.io");
        // Active every 20 minutes: alive until the absolute limit.
        let mut now = t0;
        while now + Duration::from_secs(20 * 60) < t0 + ABSOLUTE {
            now += Duration::from_secs(20 * 60);
            assert!(s.get(&id, now).is_some(), "at {:?}", now - t0);
        }
        assert!(s.get(&id, t0 + ABSOLUTE).is_none());
        assert!(s.is_empty(), "an expired session is removed");

        let id = s.create("ann@x.io", Role::Admin, t0);
        assert!(s.get(&id, t0 + IDLE - Duration::from_secs(1)).is_some());
        assert!(s.get(&id, t0 + 2 * IDLE).is_none(), "idle");
        assert!(s.get("not-a-session", t0).is_none());
    }

    #[test]
    fn logout_and_password_change_end_sessions() {
        let t0 = Instant::now();
        let s = Sessions::default();
        let a1 = s.create("ann@x.io", Role::Admin, t0);
        let a2 = s.create("ann@x.io", Role::Admin, t0);
        let b = s.create("bob@x.io", Role::Operator, t0);
        assert_ne!(a1, a2, "a login always gets a new id");
        assert_ne!(s.get(&a1, t0).unwrap().csrf, s.get(&a2, t0).unwrap().csrf);
        s.destroy(&a1);
        assert!(s.get(&a1, t0).is_none());
        assert!(s.get(&a2, t0).is_some());
        s.destroy_user("ANN@x.io");
        assert!(s.get(&a2, t0).is_none());
        assert_eq!(s.get(&b, t0).unwrap().role, Role::Operator);
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let s = Sessions::with_capacity(3);
        let ids: Vec<String> = (0..3u64)
            .map(|i| s.create("u@x.io", Role::Admin, t0 + Duration::from_secs(i)))
            .collect();
        // The least recently used goes.
        s.get(&ids[0], t0 + Duration::from_secs(5));
        let d = s.create("u@x.io", Role::Admin, t0 + Duration::from_secs(6));
        assert_eq!(s.len(), 3);
        assert!(s.get(&ids[1], t0 + Duration::from_secs(7)).is_none());
        for id in [&ids[0], &ids[2], &d] {
            assert!(s.get(id, t0 + Duration::from_secs(7)).is_some());
        }
    }

    #[test]
    fn flash_and_reveal_are_shown_once() {
        let t0 = Instant::now();
        let s = Sessions::default();
        let id = s.create("u@x.io", Role::Admin, t0);
        s.set_reveal(&id, serde_json::json!({"auth_key": "k"}));
        assert!(s.take_reveal(&id).is_some());
        assert!(s.take_reveal(&id).is_none());
        s.set_flash(&id, true, "done".into());
        assert_eq!(s.take_flash(&id).unwrap().text, "done");
        assert!(s.take_flash(&id).is_none());
    }

    #[test]
    fn logins_are_rate_limited_per_email_and_overall() {
        let t0 = Instant::now();
        let l = LoginLimiter::new(t0);
        for _ in 0..PER_EMAIL {
            assert!(l.allow("ann@x.io", t0));
            l.failed("ann@x.io", t0);
        }
        assert!(
            !l.allow("Ann@X.io", t0),
            "locked after {PER_EMAIL} failures"
        );
        assert!(l.allow("bob@x.io", t0), "others are not");
        assert!(l.allow("ann@x.io", t0 + WINDOW), "the window passes");
        l.succeeded("ann@x.io");

        let l = LoginLimiter::new(t0);
        for i in 0..GLOBAL {
            assert!(l.allow(&format!("u{i}@x.io"), t0));
        }
        assert!(!l.allow("new@x.io", t0), "global limit");
        assert!(l.allow("new@x.io", t0 + Duration::from_secs(60)));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }
}
