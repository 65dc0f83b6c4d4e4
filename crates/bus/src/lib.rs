//! The bus: how center modules talk to each other.
//!
//! Two verbs, as in the original design: [`Bus::call`] (request → response, with a deadline)
//! and [`Bus::cast`] (one-way). A module offers a message with [`Bus::serve`]. Every message
//! crosses the bus as the bytes of the JSON envelope a broker would carry,
//! `{"mqkey":"{from}.{to}.{action}","mqtype":"call"|"cast","mqbody":…}`, so the in-process
//! bus and a broker-backed one are interchangeable without touching any module.
//!
//! Handler concurrency is bounded per served message ([`MAX_IN_FLIGHT`]); beyond it a call
//! waits for a slot within its own deadline.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use elves_rpc::Message;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, oneshot};

/// How many handler invocations of one message may run at once.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("no module serves {0}")]
    NoHandler(String),
    #[error("{0} did not answer within {1:?}")]
    Deadline(String, Duration),
    #[error("{0} dropped the call")]
    Dropped(String),
    #[error("malformed message for {0}: {1}")]
    Codec(String, String),
}

#[derive(Serialize, Deserialize)]
struct Envelope<'a, B> {
    mqkey: &'a str,
    mqtype: &'a str,
    mqbody: B,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, Error>> + Send>>;
type Handler = Arc<dyn Fn(Vec<u8>) -> BoxFuture + Send + Sync>;

#[derive(Clone)]
struct Route {
    handler: Handler,
    slots: Arc<Semaphore>,
}

#[derive(Default)]
struct Inner {
    routes: RwLock<HashMap<String, Route>>,
}

/// A handle on the bus for one module (`from` is that module's name). Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    from: &'static str,
    inner: Arc<Inner>,
}

impl Bus {
    /// A new in-process bus. Modules get their own handle with [`Bus::for_module`].
    pub fn memory() -> Bus {
        Bus {
            from: "bus",
            inner: Arc::new(Inner::default()),
        }
    }

    /// The same bus, speaking as `module`.
    pub fn for_module(&self, module: &'static str) -> Bus {
        Bus {
            from: module,
            inner: self.inner.clone(),
        }
    }

    fn key<M: Message>() -> String {
        format!("{}.{}", M::MODULE, M::ACTION)
    }

    /// Offers message `M`: `handler` answers every call and cast of it.
    pub fn serve<M, F, Fut>(&self, handler: F)
    where
        M: Message,
        F: Fn(M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = M::Response> + Send + 'static,
    {
        let key = Self::key::<M>();
        let handler = Arc::new(handler);
        let k = key.clone();
        let h: Handler = Arc::new(move |bytes: Vec<u8>| {
            let handler = handler.clone();
            let key = k.clone();
            async move {
                let env: Envelope<'_, M> = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Codec(key.clone(), e.to_string()))?;
                let response = handler(env.mqbody).await;
                let reply = Envelope {
                    mqkey: &key,
                    mqtype: "cast",
                    mqbody: response,
                };
                serde_json::to_vec(&reply).map_err(|e| Error::Codec(key, e.to_string()))
            }
            .boxed()
        });
        let route = Route {
            handler: h,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        };
        self.inner
            .routes
            .write()
            .expect("bus routes poisoned")
            .insert(key, route);
    }

    fn route<M: Message>(&self) -> Result<(String, Route), Error> {
        let key = Self::key::<M>();
        let route = self
            .inner
            .routes
            .read()
            .expect("bus routes poisoned")
            .get(&key)
            .cloned();
        match route {
            Some(r) => Ok((key, r)),
            None => Err(Error::NoHandler(key)),
        }
    }

    fn encode<M: Message>(&self, key: &str, mqtype: &str, msg: &M) -> Result<Vec<u8>, Error> {
        let mqkey = format!("{}.{}", self.from, key);
        serde_json::to_vec(&Envelope {
            mqkey: &mqkey,
            mqtype,
            mqbody: msg,
        })
        .map_err(|e| Error::Codec(key.to_owned(), e.to_string()))
    }

    /// Sends `msg` and waits for its response, at most `deadline`.
    ///
    /// The handler keeps running if the caller gives up, as it would behind a broker.
    pub async fn call<M: Message>(&self, msg: M, deadline: Duration) -> Result<M::Response, Error> {
        let (key, route) = self.route::<M>()?;
        let bytes = self.encode(&key, "call", &msg)?;
        let (tx, rx) = oneshot::channel();
        let work = async move {
            let Ok(_permit) = route.slots.acquire_owned().await else {
                return;
            };
            let _ = tx.send((route.handler)(bytes).await);
        };
        tokio::spawn(work);
        let reply = match tokio::time::timeout(deadline, rx).await {
            Err(_) => return Err(Error::Deadline(key, deadline)),
            Ok(Err(_)) => return Err(Error::Dropped(key)),
            Ok(Ok(reply)) => reply?,
        };
        let env: Envelope<'_, Box<RawValue>> =
            serde_json::from_slice(&reply).map_err(|e| Error::Codec(key.clone(), e.to_string()))?;
        serde_json::from_str(env.mqbody.get()).map_err(|e| Error::Codec(key, e.to_string()))
    }

    /// Sends `msg` without waiting for an answer. Fails only when nobody serves `M`.
    pub fn cast<M: Message>(&self, msg: M) -> Result<(), Error> {
        let (key, route) = self.route::<M>()?;
        let bytes = self.encode(&key, "cast", &msg)?;
        tokio::spawn(async move {
            let Ok(_permit) = route.slots.acquire_owned().await else {
                return;
            };
            if let Err(e) = (route.handler)(bytes).await {
                tracing::warn!(error = %e, "cast handler failed");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Serialize, Deserialize)]
    struct Ping {
        n: u32,
        text: String,
    }
    impl Message for Ping {
        const MODULE: &'static str = "pong";
        const ACTION: &'static str = "ping";
        type Response = Result<String, elves_types::ApiError>;
    }

    #[derive(Serialize, Deserialize)]
    struct Slow;
    impl Message for Slow {
        const MODULE: &'static str = "pong";
        const ACTION: &'static str = "slow";
        type Response = ();
    }

    #[tokio::test]
    async fn call_round_trips_through_serialized_bytes() {
        let bus = Bus::memory();
        bus.for_module("pong")
            .serve(|p: Ping| async move { Ok(format!("{}:{}", p.n, p.text)) });
        let got = bus
            .for_module("openapi")
            .call(
                Ping {
                    n: 7,
                    text: "中文\n".into(),
                },
                Duration::from_secs(1),
            )
            .await;
        assert_eq!(got, Ok(Ok("7:中文\n".to_owned())));
    }

    #[tokio::test]
    async fn call_without_a_server_fails_at_once() {
        let bus = Bus::memory();
        let got = bus
            .call(
                Ping {
                    n: 1,
                    text: String::new(),
                },
                Duration::from_secs(5),
            )
            .await;
        assert_eq!(got, Err(Error::NoHandler("pong.ping".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn call_respects_its_deadline() {
        let bus = Bus::memory();
        bus.serve(|_: Slow| async { tokio::time::sleep(Duration::from_secs(60)).await });
        let got = bus.call(Slow, Duration::from_millis(100)).await;
        assert!(matches!(got, Err(Error::Deadline(..))), "{got:?}");
    }

    #[tokio::test]
    async fn cast_reaches_the_handler() {
        let bus = Bus::memory();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        bus.serve(move |p: Ping| {
            let s = s.clone();
            let tx = tx.clone();
            async move {
                s.fetch_add(p.n as usize, Ordering::SeqCst);
                let _ = tx.send(()).await;
                Ok(String::new())
            }
        });
        bus.cast(Ping {
            n: 3,
            text: String::new(),
        })
        .unwrap();
        rx.recv().await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }
}
