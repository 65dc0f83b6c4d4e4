//! What the web tests share: a real supervisor module on an in-process bus over a temp store.

use std::path::Path;
use std::sync::Arc;

use elves_bus::Bus;
use elves_store::Store;
use elves_supervisor::{Options, Service};

/// Starts the supervisor module over a new store in `dir`; returns its bus and the store.
pub async fn supervisor(dir: &Path) -> (Bus, Store) {
    let url = format!("sqlite://{}", dir.join("elves.db").display());
    let store = Store::open(&url).await.unwrap();
    let bus = Bus::memory();
    let opts = Options {
        center_secret: "0123456789ABCDEF0123456789ABCDEF".into(),
        time_format: Arc::new(|ms| ms.to_string()),
        bind_sync_every: None,
        bind_sync_limits: Default::default(),
    };
    Service::start(opts, &bus, store.clone(), Default::default()).unwrap();
    (bus, store)
}
