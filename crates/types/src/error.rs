use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $text:literal), )*) => {
        /// Every error code of api-v2 §7. The catalogue text lives here and nowhere else.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in catalogue order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The bracketed code, e.g. `"401.1"`.
            pub fn code(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The exact catalogue text after the code.
            pub fn text(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text,)* }
            }
        }
    };
}

error_codes! {
    MissingSignParam = ("401.1", "Unauthorized Missing Sign Param"),
    AuthIdIllegal = ("401.2", "Unauthorized AuthId Is Illegal"),
    SignTypeIllegal = ("401.3", "Unauthorized SignType Is Illegal"),
    SignLengthIllegal = ("401.4", "Unauthorized Sign Length Is Illegal"),
    SignError = ("401.5", "Unauthorized Sign Error"),
    PermissionDenied = ("401.6", "Unauthorized AuthId Permission Denied"),
    SignTimeout = ("401.7", "Unauthorized Sign Timeout"),
    TimestampIllegal = ("401.8", "Unauthorized Timestamp Is Illegal"),
    /// **ext**: a nonce seen before inside the timestamp window.
    NonceReused = ("401.9", "Unauthorized Nonce Reused"),
    SupervisorDisabled = ("402.1", "Require Module (supervisor) Not Enabled"),
    CronDisabled = ("402.2", "Require Module (cron) Not Enabled"),
    QueueDisabled = ("402.3", "Require Module (queue) Not Enabled"),
    IpIllegal = ("403.1", "Request Params (ip) Illegal"),
    ParamIllegal = ("403.2", "Request Params (param) Illegal"),
    AppIllegal = ("403.3", "Request Params (app) Illegal"),
    ModeIllegal = ("403.4", "Request Params (mode) Illegal"),
    CronRuleIllegal = ("403.5", "Request Params (cron-rule) Illegal"),
    QueueIdIllegal = ("403.6", "Request Params (queue_id) Illegal"),
    FuncIllegal = ("403.7", "Request Params (func) Illegal"),
    TimeoutIllegal = ("403.8", "Request Params (timeout) Illegal"),
    CronIdIllegal = ("403.9", "Request Params (cron_id) Illegal"),
    SendJobFail = ("410.1", "Send Job To Agent Fail"),
    CronNotFound = ("411.1", "Not Find Cron Job To Operate"),
    QueueNotFound = ("412.1", "Queue Not Found"),
    QueueStatusIncorrect = ("412.2", "Queue Status Incorrect"),
    StopTaskError = ("412.3", "Stop Task Error"),
    DependTaskNotFound = ("412.4", "Depend Task Not Found"),
    AuthIdNotFound = ("413.1", "AuthId Not Found"),
    AppNotFound = ("413.2", "App Not Found"),
    AgentInfoNotFound = ("414.1", "Agent Info Not Found"),
    Internal = ("500", "Internal ServerError"),
}

impl fmt::Display for ErrorCode {
    /// `[CODE]Text`, the form clients match on.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]{}", self.code(), self.text())
    }
}

/// An error as the API reports it: a catalogue code plus, for 500 only, a short detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ApiError {
    pub code: ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ApiError {
    /// A 500 with a short, single-line detail (never a stack trace).
    pub fn internal(detail: impl fmt::Display) -> ApiError {
        let mut d: String = detail
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        if d.len() > 200 {
            let mut cut = 200;
            while !d.is_char_boundary(cut) {
                cut -= 1;
            }
            d.truncate(cut);
        }
        ApiError {
            code: ErrorCode::Internal,
            detail: Some(d),
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> ApiError {
        ApiError { code, detail: None }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        match &self.detail {
            Some(d) if self.code == ErrorCode::Internal && !d.is_empty() => write!(f, " ,{d}"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue of api-v2 §7, copied from the spec: any drift fails here.
    const SPEC: &str = "\
401.1 Unauthorized Missing Sign Param
401.2 Unauthorized AuthId Is Illegal
401.3 Unauthorized SignType Is Illegal
401.4 Unauthorized Sign Length Is Illegal
401.5 Unauthorized Sign Error
401.6 Unauthorized AuthId Permission Denied
401.7 Unauthorized Sign Timeout
401.8 Unauthorized Timestamp Is Illegal
401.9 Unauthorized Nonce Reused
402.1 Require Module (supervisor) Not Enabled
402.2 Require Module (cron) Not Enabled
402.3 Require Module (queue) Not Enabled
403.1 Request Params (ip) Illegal
403.2 Request Params (param) Illegal
403.3 Request Params (app) Illegal
403.4 Request Params (mode) Illegal
403.5 Request Params (cron-rule) Illegal
403.6 Request Params (queue_id) Illegal
403.7 Request Params (func) Illegal
403.8 Request Params (timeout) Illegal
403.9 Request Params (cron_id) Illegal
410.1 Send Job To Agent Fail
411.1 Not Find Cron Job To Operate
412.1 Queue Not Found
412.2 Queue Status Incorrect
412.3 Stop Task Error
412.4 Depend Task Not Found
413.1 AuthId Not Found
413.2 App Not Found
414.1 Agent Info Not Found
500 Internal ServerError";

    #[test]
    fn catalogue_matches_the_spec_exactly() {
        let ours: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("{} {}", c.code(), c.text()))
            .collect();
        let spec: Vec<&str> = SPEC.lines().collect();
        assert_eq!(ours, spec);
    }

    #[test]
    fn display_is_bracketed_code_then_text() {
        assert_eq!(
            ErrorCode::IpIllegal.to_string(),
            "[403.1]Request Params (ip) Illegal"
        );
        assert_eq!(
            ApiError::from(ErrorCode::SendJobFail).to_string(),
            "[410.1]Send Job To Agent Fail"
        );
    }

    #[test]
    fn internal_detail_is_one_short_line() {
        let e = ApiError::internal(format!("boom\n   at some.Frame\n{}", "x".repeat(500)));
        assert_eq!(e.to_string(), "[500]Internal ServerError ,boom");
        let long = ApiError::internal("é".repeat(300));
        assert!(long.detail.unwrap().len() <= 200);
    }
}
