//! Administration commands (admin API, `elves admin`, web UI).

use elves_rpc::supervisor::AdminCommand;
use elves_types::ApiError;
use serde_json::Value;

use crate::service::Inner;

/// Runs one administration command as `actor`.
pub(crate) async fn run(
    _inner: &Inner,
    _actor: &str,
    _cmd: AdminCommand,
    _now_ms: i64,
) -> Result<Value, ApiError> {
    Err(ApiError::internal(
        "administration commands are not available yet",
    ))
}
