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
//!
//! **Request ids.** A message sent while a request id is in scope ([`with_request_id`]) carries
//! it in the envelope as `"mqrid"`; its handler runs with the same id in scope and inside a
//! tracing span `bus{rid=…}`, so every log line of every module a request touches carries the
//! id, and the messages those modules send on carry it further. A message without `mqrid` (an
//! older sender) is handled as before.

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
use tracing::Instrument;

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mqrid: Option<String>,
}

/// The longest request id carried.
pub const MAX_REQUEST_ID: usize = 64;

/// Whether `rid` may be carried and logged: 1 to [`MAX_REQUEST_ID`] characters of
/// `A-Z a-z 0-9 . _ -` (nothing that could forge a log line or a label).
pub fn is_valid_request_id(rid: &str) -> bool {
    !rid.is_empty()
        && rid.len() <= MAX_REQUEST_ID
        && rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

tokio::task_local! {
    static REQUEST_ID: Option<Arc<str>>;
}

/// The request id in scope, if any.
pub fn request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(|r| r.clone()).ok().flatten()
}

/// The request id in scope, or `""` (for a protocol field where empty means none).
pub fn request_id_or_empty() -> String {
    request_id().map(|r| r.to_string()).unwrap_or_default()
}

/// [`with_request_id`] owning its id, for a spawned task.
pub async fn with_request_id_owned<F: Future>(rid: String, fut: F) -> F::Output {
    with_request_id(&rid, fut).await
}

/// Runs `fut` with `rid` as the request id in scope, inside a tracing span `req{rid=…}`; with
/// none in scope when `rid` is empty or not [valid](is_valid_request_id).
pub async fn with_request_id<F: Future>(rid: &str, fut: F) -> F::Output {
    if !is_valid_request_id(rid) {
        return REQUEST_ID.scope(None, fut).await;
    }
    let span = tracing::info_span!("req", rid = %rid);
    REQUEST_ID
        .scope(Some(Arc::from(rid)), fut.instrument(span))
        .await
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

    /// Offers message `M`: `handler` answers every call and cast of it. For a module whose
    /// handlers are async methods of one shared state, see [`serve_methods!`].
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
                let rid = env.mqrid.unwrap_or_default();
                let response = with_request_id(&rid, handler(env.mqbody)).await;
                let reply = Envelope {
                    mqkey: &key,
                    mqtype: "cast",
                    mqbody: response,
                    mqrid: None,
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
            mqrid: request_id().map(|r| r.to_string()),
        })
        .map_err(|e| Error::Codec(key.to_owned(), e.to_string()))
    }

    /// Sends `msg` and waits for its response, at most `deadline`.
    ///
    /// The handler keeps running if the caller gives up, as it would behind a broker.
    pub async fn call<M: Message>(&self, msg: M, deadline: Duration) -> Result<M::Response, Error> {
        let (key, route) = self.route::<M>()?;
        let _timer = elves_telemetry::bus_call(&key);
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
        self.cast_prepared(self.prepare_cast(&msg)?)
    }

    /// Encodes `msg` for a later [`Bus::cast_prepared`]: the envelope's bytes, exactly as
    /// [`Bus::cast`] would send them (with the request id in scope now). For a sender whose
    /// message is known ahead of the moment it must go out (a cron instant's fires), so that
    /// at that moment only the hand-over remains.
    pub fn prepare_cast<M: Message>(&self, msg: &M) -> Result<Prepared<M>, Error> {
        let key = Self::key::<M>();
        let bytes = self.encode(&key, "cast", msg)?;
        Ok(Prepared {
            bytes,
            message: std::marker::PhantomData,
        })
    }

    /// Sends a message encoded by [`Bus::prepare_cast`], as [`Bus::cast`] sends (its handler
    /// runs in a task of the current runtime, within the route's slots). Fails only when
    /// nobody serves `M`.
    pub fn cast_prepared<M: Message>(&self, prepared: Prepared<M>) -> Result<(), Error> {
        let (_, route) = self.route::<M>()?;
        let bytes = prepared.bytes;
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

/// A message encoded ahead of its cast ([`Bus::prepare_cast`]).
pub struct Prepared<M> {
    bytes: Vec<u8>,
    message: std::marker::PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for Prepared<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Serves each message type with an async method of a module's shared state:
/// `serve_methods!(bus, state; AddCron => add, CronList => list)` offers every `$msg` on
/// `bus`, answered by `state.$method(msg).await` on a clone of `state` (an `Arc`).
#[macro_export]
macro_rules! serve_methods {
    ($bus:expr, $state:expr; $($msg:ty => $method:ident),+ $(,)?) => {{
        $(
            let me = ::std::sync::Arc::clone(&$state);
            $bus.serve(move |m: $msg| {
                let me = ::std::sync::Arc::clone(&me);
                async move { me.$method(m).await }
            });
        )+
    }};
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

    #[derive(Serialize, Deserialize)]
    struct WhoAsks;
    impl Message for WhoAsks {
        const MODULE: &'static str = "inner";
        const ACTION: &'static str = "whoAsks";
        type Response = Option<String>;
    }

    #[derive(Serialize, Deserialize)]
    struct Relay;
    impl Message for Relay {
        const MODULE: &'static str = "outer";
        const ACTION: &'static str = "relay";
        /// (the id the relay saw, the id the module it called saw)
        type Response = (Option<String>, Option<String>);
    }

    #[tokio::test]
    async fn a_request_id_follows_a_message_through_handlers_and_their_own_calls() {
        let bus = Bus::memory();
        bus.for_module("inner")
            .serve(|_: WhoAsks| async { request_id().map(|r| r.to_string()) });
        let inner = bus.for_module("outer");
        bus.for_module("outer").serve(move |_: Relay| {
            let inner = inner.clone();
            async move {
                let mine = request_id().map(|r| r.to_string());
                let theirs = inner.call(WhoAsks, Duration::from_secs(1)).await.unwrap();
                (mine, theirs)
            }
        });
        let api = bus.for_module("openapi");
        let cases: &[(&str, Option<&str>)] = &[
            ("0123456789ABCDEF", Some("0123456789ABCDEF")),
            ("client-id_1.2", Some("client-id_1.2")),
            ("", None),
            ("has space", None),
            ("new\nline", None),
            (&"x".repeat(MAX_REQUEST_ID + 1), None),
        ];
        for (rid, want) in cases {
            let got = with_request_id(rid, api.call(Relay, Duration::from_secs(1)))
                .await
                .unwrap();
            let want = want.map(str::to_owned);
            assert_eq!(got.0, want, "seen by the handler for {rid:?}");
            assert_eq!(got.1, want, "seen one hop further for {rid:?}");
        }
        // Without a scope there is none.
        let got = api.call(Relay, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got, (None, None));
    }

    #[tokio::test]
    async fn a_prepared_cast_is_the_cast_it_was_prepared_as() {
        let bus = Bus::memory();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        bus.for_module("pong").serve(move |p: Ping| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((p.n, p.text, request_id().map(|r| r.to_string())));
                Ok(String::new())
            }
        });
        let cron = bus.for_module("cron");
        // (request id in scope when prepared, text, request id the handler sees)
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("", "plain", None),
            ("rid-1", "中文\n\"quoted\"", Some("rid-1")),
            ("bad id", "x", None),
        ];
        for (n, (rid, text, want)) in cases.iter().enumerate() {
            let msg = Ping {
                n: n as u32,
                text: (*text).to_owned(),
            };
            let prepared = with_request_id(rid, async { cron.prepare_cast(&msg) })
                .await
                .unwrap();
            // The same bytes as a cast of the same message under the same id.
            let direct = with_request_id(rid, async { cron.encode("pong.ping", "cast", &msg) })
                .await
                .unwrap();
            assert_eq!(prepared.bytes, direct, "{rid:?}");
            // Sent outside any request scope: the id is the one it was prepared under.
            cron.cast_prepared(prepared).unwrap();
            let got = rx.recv().await.unwrap();
            assert_eq!(
                got,
                (n as u32, (*text).to_owned(), want.map(str::to_owned)),
                "{rid:?}"
            );
        }
        // Prepared while nobody serves it: fails at the cast, as a cast would.
        let p = cron.prepare_cast(&Slow).unwrap();
        assert_eq!(
            cron.cast_prepared(p).unwrap_err(),
            Error::NoHandler("pong.slow".into())
        );
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
