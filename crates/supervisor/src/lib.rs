//! Layer 2 of Elves: the supervisor module — apps, their versions and bound agents, the API keys
//! of supervisor mode, admin users.
//!
//! For now this crate holds only the module's pure rules; its service (bus handlers, admin
//! API) comes later and keeps its data in `elves-store`.
//!
//! * [`permission`]: whether a key may make a request (api-v2 §3 step 6 and §4).
//! * [`package_name`]: the version in a package file name `{app}_{version}.zip`.
//! * [`secrets`]: key secrets encrypted with the center's secret, argon2 password hashes,
//!   fresh `auth_id`s and secrets.

pub mod package_name;
pub mod permission;
pub mod secrets;
