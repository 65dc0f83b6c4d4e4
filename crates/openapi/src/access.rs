//! Who is calling and what they may touch: key lookup (api-v2 §3 step 6) and the permission
//! check (step 11, §4).
//!
//! In simple mode the one configured key may do everything. In supervisor mode keys, apps and
//! bindings live in the supervisor module; answers are cached for [`TTL`] (bounded to
//! [`CAPACITY`] entries) so a signed request does not cost a bus round trip each time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elves_bus::Bus;
use elves_rpc::Message;
use elves_rpc::cron::CronOwner;
use elves_rpc::queue::QueueOwner;
use elves_rpc::supervisor::{AccessFacts, Facts, GetKey, KeyInfo};
use elves_supervisor::permission::{self, Access, Key};
use elves_types::{ApiError, ErrorCode};
use subtle::ConstantTimeEq;

/// How long a key or a permission fact is trusted.
pub const TTL: Duration = Duration::from_secs(5);
/// How many entries each cache holds at most.
pub const CAPACITY: usize = 10_000;
/// How long a supervisor call may take.
const CALL_WAIT: Duration = Duration::from_secs(5);

/// How requests are authenticated.
#[derive(Clone)]
pub enum AuthMode {
    /// One configured `auth_id` and key that may run every app on every agent.
    Simple { auth_id: String, key: String },
    /// Keys of the supervisor module, each for one app and its bound agents.
    Supervisor,
}

/// Calls a module within [`CALL_WAIT`]; a bus failure is a short 500 naming the module.
async fn call_module<M: Message>(bus: &Bus, msg: M) -> Result<M::Response, ApiError> {
    bus.call(msg, CALL_WAIT).await.map_err(|e| {
        tracing::warn!(error = %e, module = M::MODULE, "module unreachable for an access check");
        ApiError::internal(format!("the {} module did not answer", M::MODULE))
    })
}

/// A small TTL cache with a hard size bound.
pub struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    pub fn new() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, k: &K) -> Option<V> {
        let entries = self.entries.lock().expect("cache poisoned");
        entries
            .get(k)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, k: K, v: V) {
        let mut entries = self.entries.lock().expect("cache poisoned");
        if entries.len() >= CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(k, (Instant::now(), v));
    }
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub enum Caller {
    Simple { auth_id: String },
    Supervisor { auth_id: String, app: String },
}

impl Caller {
    pub fn auth_id(&self) -> &str {
        match self {
            Caller::Simple { auth_id } | Caller::Supervisor { auth_id, .. } => auth_id,
        }
    }

    /// The app whose data a supervisor-mode caller may see.
    pub fn app(&self) -> Option<&str> {
        match self {
            Caller::Simple { .. } => None,
            Caller::Supervisor { app, .. } => Some(app),
        }
    }
}

/// What a request names by id, whose owner must be the caller's app.
#[derive(Clone, Copy, Debug)]
pub enum Owned<'a> {
    Nothing,
    Queue(&'a str),
    Cron(&'a str),
}

/// Key lookup and permission checks.
pub struct Gate {
    mode: AuthMode,
    keys: Cache<String, Result<KeyInfo, ApiError>>,
    facts: Cache<(Option<String>, Option<String>, String), Facts>,
}

impl Gate {
    pub fn new(mode: AuthMode) -> Gate {
        Gate {
            mode,
            keys: Cache::new(),
            facts: Cache::new(),
        }
    }

    /// Step 6: the key of `auth_id` (401.2 / 413.1), and who the caller is.
    pub async fn key(
        &self,
        bus: &Bus,
        auth_id: &str,
        now_ms: i64,
    ) -> Result<(String, Caller), ApiError> {
        match &self.mode {
            AuthMode::Simple { auth_id: id, key } => {
                if !bool::from(auth_id.as_bytes().ct_eq(id.as_bytes())) {
                    return Err(ErrorCode::AuthIdIllegal.into());
                }
                Ok((
                    key.clone(),
                    Caller::Simple {
                        auth_id: auth_id.to_owned(),
                    },
                ))
            }
            AuthMode::Supervisor => {
                let info = match self.keys.get(&auth_id.to_owned()) {
                    Some(cached) => cached,
                    None => {
                        let answer = call_module(
                            bus,
                            GetKey {
                                auth_id: auth_id.to_owned(),
                            },
                        )
                        .await?;
                        self.keys.put(auth_id.to_owned(), answer.clone());
                        answer
                    }
                }?;
                let key = Key {
                    app: &info.app,
                    disabled: info.disabled,
                    expires_at_ms: info.expires_at_ms,
                };
                permission::key_usable(Some(&key), now_ms)?;
                Ok((
                    info.secret.clone(),
                    Caller::Supervisor {
                        auth_id: auth_id.to_owned(),
                        app: info.app.clone(),
                    },
                ))
            }
        }
    }

    /// Step 11: may `caller` act on the `app`/`ip` parameters and on what it names by id?
    pub async fn permit(
        &self,
        bus: &Bus,
        caller: &Caller,
        app: Option<&str>,
        ip: Option<&str>,
        owned: Owned<'_>,
    ) -> Result<(), ApiError> {
        let Caller::Supervisor { app: key_app, .. } = caller else {
            return Ok(());
        };
        let access = Access::from_params(app, ip);
        let owner = match owned {
            Owned::Nothing => None,
            Owned::Queue(id) => {
                call_module(
                    bus,
                    QueueOwner {
                        queue_id: id.to_owned(),
                    },
                )
                .await??
            }
            Owned::Cron(id) => call_module(
                bus,
                CronOwner {
                    cron_id: id.to_owned(),
                },
            )
            .await??
            .map(|(_auth_id, app)| app),
        };
        let binding_app = permission::binding_app(key_app, owner.as_deref()).to_owned();
        let ask = (
            access.app.map(str::to_owned),
            access.ip.map(str::to_owned),
            binding_app.clone(),
        );
        let facts = match self.facts.get(&ask) {
            Some(f) => f,
            None => {
                let msg = AccessFacts {
                    app: ask.0.clone(),
                    ip: ask.1.clone(),
                    binding_app,
                };
                let f = call_module(bus, msg).await??;
                self.facts.put(ask, f);
                f
            }
        };
        let facts = permission::Facts {
            key_app,
            app_exists: facts.app_exists,
            owner: owner.as_deref(),
            ip_bound: facts.ip_bound,
        };
        permission::check(&access, &facts).map_err(ApiError::from)
    }
}
