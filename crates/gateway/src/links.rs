//! The table of live agent links and of synchronous jobs waiting for their results.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use elves_proto::CenterMessage;
use elves_rpc::gateway::WorkerOutcome;
use elves_types::Id;

use crate::desired::Sent;
use tokio::sync::{mpsc, oneshot};

/// How long a job or a cancel waits for room on a full link before it is refused: a burst
/// larger than the link's buffer (a flat queue of thousands of tasks on one agent) is held back
/// while the agent drains it, instead of failing with 410.1.
pub const LINK_FULL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Queues `msg` on a link, waiting up to `wait` for room; false when the link is closed or
/// stays full that long.
pub async fn deliver(
    tx: &mpsc::Sender<CenterMessage>,
    msg: CenterMessage,
    wait: std::time::Duration,
) -> bool {
    tx.send_timeout(msg, wait).await.is_ok()
}

/// One live link.
#[derive(Clone)]
pub struct Link {
    pub conn: u64,
    pub tx: mpsc::Sender<CenterMessage>,
    /// Held while the link's desired apps are computed and sent, so pushes stay in order.
    pub push: Arc<tokio::sync::Mutex<()>>,
    /// What the link was last sent (`crate::desired`).
    pub sent: Arc<Mutex<Sent>>,
}

struct Waiter {
    ip: String,
    conn: u64,
    tx: oneshot::Sender<WorkerOutcome>,
}

struct CancelWaiter {
    ip: String,
    conn: u64,
    tx: oneshot::Sender<bool>,
}

#[derive(Default)]
pub struct Links {
    next_conn: AtomicU64,
    links: Mutex<HashMap<String, Link>>,
    waiters: Mutex<HashMap<Id, Waiter>>,
    cancels: Mutex<HashMap<Id, CancelWaiter>>,
}

impl Links {
    /// Registers a new link for `ip`, replacing (and so closing) an older one. Returns the
    /// link and whether it replaced one.
    pub fn attach(&self, ip: &str, tx: mpsc::Sender<CenterMessage>) -> (Link, bool) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let link = Link {
            conn,
            tx,
            push: Arc::default(),
            sent: Arc::default(),
        };
        let old = self
            .links
            .lock()
            .expect("links poisoned")
            .insert(ip.to_owned(), link.clone());
        (link, old.is_some())
    }

    /// Removes the link if it is still `conn`, and fails the jobs waiting on it.
    pub fn detach(&self, ip: &str, conn: u64) -> bool {
        let mut links = self.links.lock().expect("links poisoned");
        let current = links.get(ip).is_some_and(|l| l.conn == conn);
        if current {
            links.remove(ip);
        }
        drop(links);
        // Dropping the senders wakes the waiters with an error.
        self.waiters
            .lock()
            .expect("waiters poisoned")
            .retain(|_, w| w.conn != conn);
        self.cancels
            .lock()
            .expect("cancels poisoned")
            .retain(|_, w| w.conn != conn);
        current
    }

    /// The ips of every linked agent.
    pub fn ips(&self) -> Vec<String> {
        self.links
            .lock()
            .expect("links poisoned")
            .keys()
            .cloned()
            .collect()
    }

    pub fn get(&self, ip: &str) -> Option<Link> {
        self.links.lock().expect("links poisoned").get(ip).cloned()
    }

    /// Registers a synchronous job; the receiver yields its outcome.
    pub fn wait_for(&self, run_id: Id, ip: &str, conn: u64) -> oneshot::Receiver<WorkerOutcome> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters poisoned").insert(
            run_id,
            Waiter {
                ip: ip.to_owned(),
                conn,
                tx,
            },
        );
        rx
    }

    pub fn forget(&self, run_id: &Id) {
        self.waiters
            .lock()
            .expect("waiters poisoned")
            .remove(run_id);
    }

    /// Registers a cancel request; the receiver yields whether the agent had the run.
    pub fn wait_for_cancel(&self, run_id: Id, ip: &str, conn: u64) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        self.cancels.lock().expect("cancels poisoned").insert(
            run_id,
            CancelWaiter {
                ip: ip.to_owned(),
                conn,
                tx,
            },
        );
        rx
    }

    pub fn forget_cancel(&self, run_id: &Id) {
        self.cancels
            .lock()
            .expect("cancels poisoned")
            .remove(run_id);
    }

    /// Hands an agent's answer to a cancel to its waiter (only from the agent asked).
    pub fn cancelled(&self, run_id: &Id, from_ip: &str, found: bool) -> bool {
        let mut cancels = self.cancels.lock().expect("cancels poisoned");
        match cancels.get(run_id) {
            Some(w) if w.ip == from_ip => cancels
                .remove(run_id)
                .expect("present")
                .tx
                .send(found)
                .is_ok(),
            _ => false,
        }
    }

    /// Hands a result to its waiter. A result from another agent than the one the job was
    /// sent to is ignored. Returns whether a waiter took it.
    pub fn complete(&self, run_id: &Id, from_ip: &str, outcome: WorkerOutcome) -> bool {
        let mut waiters = self.waiters.lock().expect("waiters poisoned");
        match waiters.get(run_id) {
            Some(w) if w.ip == from_ip => {
                let w = waiters.remove(run_id).expect("present");
                w.tx.send(outcome).is_ok()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(flag: i32) -> WorkerOutcome {
        WorkerOutcome {
            flag,
            message: String::new(),
            costtime_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_result_reaches_its_waiter_only_from_the_agent_it_was_sent_to() {
        let links = Links::default();
        let (tx, _rx) = mpsc::channel(1);
        let (link, replaced) = links.attach("10.0.0.1", tx);
        let conn = link.conn;
        assert!(!replaced);
        let run = Id::random();
        let waiter = links.wait_for(run, "10.0.0.1", conn);
        assert!(
            !links.complete(&run, "10.0.0.2", outcome(1)),
            "another agent's result is ignored"
        );
        assert!(links.complete(&run, "10.0.0.1", outcome(1)));
        assert_eq!(waiter.await.unwrap().flag, 1);
        assert!(
            !links.complete(&run, "10.0.0.1", outcome(1)),
            "a duplicate result finds no waiter"
        );
    }

    #[tokio::test]
    async fn dropping_a_link_fails_its_waiters_and_a_newer_link_survives_the_old_detach() {
        let links = Links::default();
        let (tx1, _rx1) = mpsc::channel(1);
        let old = links.attach("10.0.0.1", tx1).0.conn;
        let waiter = links.wait_for(Id::random(), "10.0.0.1", old);
        let (tx2, _rx2) = mpsc::channel(1);
        let (new, replaced) = links.attach("10.0.0.1", tx2);
        let new = new.conn;
        assert!(replaced);
        assert!(
            !links.detach("10.0.0.1", old),
            "the old link's end does not remove the new one"
        );
        assert!(waiter.await.is_err(), "jobs waiting on the old link fail");
        assert_eq!(links.get("10.0.0.1").map(|l| l.conn), Some(new));
        assert!(links.detach("10.0.0.1", new));
        assert!(links.get("10.0.0.1").is_none());
    }

    fn cancel_msg() -> CenterMessage {
        CenterMessage {
            body: Some(elves_proto::center_message::Body::Cancel(
                elves_proto::Cancel { run_id: "r".into() },
            )),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_link_holds_a_message_back_until_room_or_the_wait_ends() {
        let wait = LINK_FULL_WAIT;
        // Room frees up before the wait ends: delivered.
        let (tx, mut rx) = mpsc::channel(1);
        assert!(deliver(&tx, cancel_msg(), wait).await);
        tokio::spawn(async move {
            tokio::time::sleep(wait / 2).await;
            while rx.recv().await.is_some() {}
        });
        assert!(
            deliver(&tx, cancel_msg(), wait).await,
            "held back, then sent"
        );
        // Nobody reads: refused after the wait, not before.
        let (tx, _rx) = mpsc::channel(1);
        assert!(deliver(&tx, cancel_msg(), wait).await);
        let started = tokio::time::Instant::now();
        assert!(!deliver(&tx, cancel_msg(), wait).await);
        assert_eq!(started.elapsed(), wait);
        // A closed link: refused at once.
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let started = tokio::time::Instant::now();
        assert!(!deliver(&tx, cancel_msg(), wait).await);
        assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    }
}
