//! Layer 2 of Elves: the supervisor module — apps, their versions and bound agents, the API keys
//! of supervisor mode, admin users.
//!
//! The module ([`Service`]) keeps its data in `elves-store` and answers on the bus: keys and
//! access facts for openapi (api-v2 §3 step 6, §4), the info routes, and every administration
//! command ([`elves_rpc::supervisor::Admin`]).
//!
//! * [`bind_sync`]: an app's bindings from its bind URL (the CMDB hook), on a schedule and on
//!   demand.
//! * [`permission`]: whether a key may make a request (api-v2 §3 step 6 and §4).
//! * [`package_name`]: the version in a package file name `{app}_{version}.zip`.
//! * [`secrets`]: key secrets encrypted with the center's secret, argon2 password hashes,
//!   fresh `auth_id`s and secrets.

mod admin;
pub mod bind_sync;
pub mod package_name;
pub mod permission;
pub mod secrets;
mod service;

pub use service::{Options, Service, TimeFormat};
