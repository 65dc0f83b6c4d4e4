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

mod links;
mod service;

pub use service::{Options, Service};
