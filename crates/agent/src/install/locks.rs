//! Per-app serialization: two installs (or an install and a removal) of one app never run at
//! the same time, while different apps proceed in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One asynchronous lock per app name.
///
/// The map only keeps the locks that are held or awaited: a lock nobody holds is dropped the
/// next time another app is locked, so the map stays as small as the set of busy apps.
#[derive(Debug, Default)]
pub struct AppLocks {
    slots: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Proof that the holder is the only one changing an app; the lock is released on drop.
#[derive(Debug)]
pub struct AppGuard {
    app: String,
    _guard: OwnedMutexGuard<()>,
}

impl AppGuard {
    /// Returns the app this guard locks.
    pub fn app(&self) -> &str {
        &self.app
    }
}

impl AppLocks {
    /// Returns an empty set of locks.
    pub fn new() -> AppLocks {
        AppLocks::default()
    }

    /// Returns the lock of `app`, creating it when needed and dropping unused ones.
    fn slot(&self, app: &str) -> Arc<AsyncMutex<()>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // A slot whose only reference is the map is neither held nor awaited.
        slots.retain(|name, slot| name == app || Arc::strong_count(slot) > 1);
        slots.entry(app.to_owned()).or_default().clone()
    }

    /// Waits until no one else holds `app`, then returns the guard that holds it.
    pub async fn lock(&self, app: &str) -> AppGuard {
        let guard = self.slot(app).lock_owned().await;
        AppGuard {
            app: app.to_owned(),
            _guard: guard,
        }
    }

    /// Returns the guard of `app` at once, or `None` when someone else holds it.
    pub fn try_lock(&self, app: &str) -> Option<AppGuard> {
        let guard = self.slot(app).try_lock_owned().ok()?;
        Some(AppGuard {
            app: app.to_owned(),
            _guard: guard,
        })
    }

    /// Returns how many apps currently have a lock entry (held, awaited, or not yet pruned).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Returns true when no app has a lock entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn one_app_is_held_by_one_holder_at_a_time() {
        let locks = AppLocks::new();
        let a = locks.lock("a").await;
        assert_eq!(a.app(), "a");
        assert!(locks.try_lock("a").is_none(), "a second holder of [a]");
        let b = locks.try_lock("b");
        assert!(b.is_some(), "another app must not be blocked");
        drop(a);
        assert!(locks.try_lock("a").is_some(), "[a] is free again");
    }

    #[tokio::test]
    async fn a_waiter_proceeds_only_after_release() {
        let locks = Arc::new(AppLocks::new());
        let held = locks.lock("app").await;
        let l = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l.lock("app").await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "the waiter ran while the lock was held"
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter never got the lock")
            .expect("waiter panicked");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_updates_of_one_app_never_overlap() {
        let locks = Arc::new(AppLocks::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside, most) = (locks.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("same").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.expect("task panicked");
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unused_locks_are_pruned() {
        let locks = AppLocks::new();
        for i in 0..100 {
            let _g = locks.lock(&format!("app{i}")).await;
        }
        assert!(locks.len() <= 1, "{} lock entries kept", locks.len());
        let held = locks.lock("x").await;
        let _other = locks.lock("y").await;
        assert_eq!(locks.len(), 2);
        drop(held);
    }
}
