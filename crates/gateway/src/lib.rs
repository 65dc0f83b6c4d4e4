//! The gateway: where agents dial in.
//!
//! Every agent keeps one gRPC bidirectional stream (`AgentLink.Link`) to the gateway.
//! Before its first link an agent enrolls: it trades the center's enrollment token for a
//! per-agent credential, and the credential's SHA-256 is pinned to the agent's `ip` in the
//! store. A later agent claiming that ip with another credential (or enrolling again) is
//! refused, and the reason is logged, until an operator releases the ip.
//!
//! On the bus the gateway serves [`elves_rpc::gateway::Dispatch`]: it sends a job down the
//! agent's stream and, for a synchronous job, waits for the matching result. An agent that
//! is not connected fails the dispatch at once with `[410.1]`; a link that drops fails every
//! job waiting on it.
//!
//! The registry is written in batches (`registry`): a heartbeat is kept in memory and written
//! with every other agent's in one transaction every 250 ms; a link and an unlink are written
//! at once. `DesiredApps` goes down a link only when the agent may not have the current set
//! (`desired`), not after every heartbeat.

mod desired;
mod links;
mod registry;
mod service;

pub use service::{Options, Service};
