//! Layer 0 of Elves: the vocabulary every other crate shares.
//!
//! * [`Id`] — 16 upper-case hex characters from the operating system's CSPRNG.
//! * [`ErrorCode`] — the error catalogue of `api-v2.md` §7. The `[401.1]…` strings exist
//!   only here.
//! * [`Envelope`] — the `{"flag","error","result"}` body every v2 route answers with.
//! * [`Clock`] — the one source of time, so scheduling code can run on paused time.
//!
//! This crate does no I/O and depends on no runtime.

mod clock;
mod envelope;
mod error;
mod id;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use envelope::{Envelope, raw};
pub use error::{ApiError, ErrorCode};
pub use id::Id;
