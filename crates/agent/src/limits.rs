//! Limits on workers: how many run at once on the agent and per app (more wait, in a
//! bounded line), and which unprivileged user they run as when the agent runs as root.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Caps on running workers.
#[derive(Debug)]
pub struct Limiter {
    all: Arc<Semaphore>,
    max_workers: usize,
    max_waiting: usize,
    per_app_caps: BTreeMap<String, usize>,
    per_app: Mutex<HashMap<String, Arc<Semaphore>>>,
    waiting: AtomicUsize,
}

/// The slots of one running worker; released on drop.
#[derive(Debug)]
pub struct Permit {
    _app: Option<OwnedSemaphorePermit>,
    _all: OwnedSemaphorePermit,
}

/// Decrements the waiting count on drop (also when the waiting future is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    /// At most `max_workers` (at least 1) workers at once, `per_app` caps for some apps, and
    /// at most `max_waiting` runs waiting for a slot.
    pub fn new(max_workers: usize, max_waiting: usize, per_app: BTreeMap<String, usize>) -> Self {
        let max_workers = max_workers.max(1);
        Limiter {
            all: Arc::new(Semaphore::new(max_workers)),
            max_workers,
            max_waiting,
            per_app_caps: per_app,
            per_app: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// How many workers run now.
    pub fn running(&self) -> usize {
        self.max_workers - self.all.available_permits()
    }

    /// How many runs wait for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn app_semaphore(&self, app: &str) -> Option<Arc<Semaphore>> {
        let cap = *self.per_app_caps.get(app)?;
        let mut map = self.per_app.lock().expect("limiter poisoned");
        Some(
            map.entry(app.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(cap.max(1))))
                .clone(),
        )
    }

    /// Waits for a slot for a worker of `app`. Refuses at once, with the message to report,
    /// when `max_waiting` runs already wait; `Err` too when `cancel` fires while waiting.
    pub async fn acquire(&self, app: &str, cancel: &CancellationToken) -> Result<Permit, String> {
        let app_sem = self.app_semaphore(app);
        // The fast path: free slots, nothing to wait for.
        if let Ok(all) = self.all.clone().try_acquire_owned() {
            match &app_sem {
                None => {
                    return Ok(Permit {
                        _app: None,
                        _all: all,
                    });
                }
                Some(s) => {
                    if let Ok(a) = s.clone().try_acquire_owned() {
                        return Ok(Permit {
                            _app: Some(a),
                            _all: all,
                        });
                    }
                }
            }
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(format!(
                "app exec refused : too many workers waiting ({} running at most, {} waiting at most)",
                self.max_workers, self.max_waiting
            ));
        }
        let _waiting = Waiting(&self.waiting);
        let wait = async {
            // The app's slot first, so a run waiting for its app holds no agent-wide slot.
            let app = match app_sem {
                Some(s) => Some(s.acquire_owned().await.map_err(|e| e.to_string())?),
                None => None,
            };
            let all = self
                .all
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Permit {
                _app: app,
                _all: all,
            })
        };
        tokio::select! {
            p = wait => p,
            _ = cancel.cancelled() => Err("app exec cancelled".to_owned()),
        }
    }
}

/// The user workers run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
}

/// Resolves `limits.worker_user`: `Ok(None)` when it is empty or the agent is not root (it
/// cannot switch users then; a warning says so), an error when the user does not exist or
/// is root itself.
pub fn worker_user(name: &str) -> Result<Option<WorkerUser>, String> {
    let name = name.trim();
    let root = nix::unistd::geteuid().is_root();
    if name.is_empty() {
        if root {
            tracing::warn!(
                "the agent runs as root and limits.worker_user is empty: workers run as root"
            );
        }
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("limits.worker_user {name:?}: {e}"))?
        .ok_or_else(|| format!("limits.worker_user {name:?}: no such user"))?;
    if user.uid.is_root() {
        return Err(format!(
            "limits.worker_user {name:?} is root: name an unprivileged user"
        ));
    }
    if !root {
        tracing::warn!(user = %name, "the agent does not run as root: workers run as the agent's user, not limits.worker_user");
        return Ok(None);
    }
    Ok(Some(WorkerUser {
        name: name.to_owned(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_agent_cap_queues_and_the_line_is_bounded() {
        let l = Arc::new(Limiter::new(2, 1, BTreeMap::new()));
        let c = CancellationToken::new();
        let a = l.acquire("x", &c).await.unwrap();
        let _b = l.acquire("y", &c).await.unwrap();
        assert_eq!(l.running(), 2);
        // The third waits...
        let l2 = l.clone();
        let c2 = c.clone();
        let third = tokio::spawn(async move { l2.acquire("z", &c2).await.map(|_| ()) });
        tokio::time::timeout(Duration::from_secs(5), async {
            while l.waiting() != 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        // ...the fourth finds the line full...
        let e = l.acquire("z", &c).await.unwrap_err();
        assert!(e.contains("too many workers waiting"), "{e}");
        // ...and the third runs once a slot frees up.
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(l.waiting(), 0);
    }

    #[tokio::test]
    async fn the_app_cap_holds_one_app_back_but_not_the_others() {
        let l = Limiter::new(10, 10, BTreeMap::from([("slow".to_owned(), 1)]));
        let c = CancellationToken::new();
        let _s = l.acquire("slow", &c).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), l.acquire("slow", &c))
                .await
                .is_err(),
            "a second worker of a capped app must wait"
        );
        assert_eq!(l.waiting(), 0, "a dropped wait leaves the line");
        let _o = l.acquire("other", &c).await.unwrap();
        // Cancelling a wait ends it.
        let c2 = CancellationToken::new();
        c2.cancel();
        assert_eq!(
            l.acquire("slow", &c2).await.unwrap_err(),
            "app exec cancelled"
        );
    }

    #[test]
    fn worker_user_rules() {
        assert_eq!(worker_user(""), Ok(None));
        assert!(
            worker_user("no-such-user-elves")
                .unwrap_err()
                .contains("no such user")
        );
        assert!(worker_user("root").unwrap_err().contains("is root"));
    }
}
