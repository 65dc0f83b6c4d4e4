use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ApiError;

/// The v2 response body: `{"flag":"true"|"false","error":"","result":…}` (api-v2 §1).
///
/// `flag` is a string on the wire; `result` is omitted when there is none. The result is
/// kept as JSON text, so a large one built as text (`queue/result`) is written out as it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub flag: String,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
}

/// The JSON text of a value.
pub fn raw(v: &Value) -> Box<RawValue> {
    // A Value always serializes; the fallback is never used.
    serde_json::value::to_raw_value(v)
        .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("valid JSON"))
}

impl Envelope {
    pub fn ok(result: Option<Value>) -> Envelope {
        Envelope::ok_raw(result.as_ref().map(raw))
    }

    /// A success whose result is already JSON text.
    pub fn ok_raw(result: Option<Box<RawValue>>) -> Envelope {
        Envelope {
            flag: "true".into(),
            error: String::new(),
            result,
        }
    }

    pub fn err(error: &ApiError) -> Envelope {
        Envelope {
            flag: "false".into(),
            error: error.to_string(),
            result: None,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.flag == "true"
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"flag":"false","error":"[500]Internal ServerError"}"#.to_owned()
        })
    }
}

impl From<Result<Option<Box<RawValue>>, ApiError>> for Envelope {
    fn from(r: Result<Option<Box<RawValue>>, ApiError>) -> Envelope {
        match r {
            Ok(v) => Envelope::ok_raw(v),
            Err(e) => Envelope::err(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn wire_form() {
        let cases = [
            (Envelope::ok(None), r#"{"flag":"true","error":""}"#),
            (
                Envelope::ok(Some(serde_json::json!({"id":"X"}))),
                r#"{"flag":"true","error":"","result":{"id":"X"}}"#,
            ),
            (
                Envelope::err(&ErrorCode::IpIllegal.into()),
                r#"{"flag":"false","error":"[403.1]Request Params (ip) Illegal"}"#,
            ),
        ];
        for (env, want) in cases {
            assert_eq!(env.to_json(), want);
        }
    }
}
