//! The v2 parameter rules of api-v2 §6, as pure functions.

/// Blank = absent, empty, or only bytes ≤ 0x20.
pub fn is_blank(v: Option<&str>) -> bool {
    v.is_none_or(|s| s.bytes().all(|b| b <= 0x20))
}

/// Dotted IPv4: four 0–255 octets of 1–3 ASCII digits (leading zeros allowed).
pub fn is_ipv4(s: &str) -> bool {
    let mut n = 0;
    for part in s.split('.') {
        n += 1;
        if n > 4 || part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if part.parse::<u16>().map_or(true, |v| v > 255) {
            return false;
        }
    }
    n == 4
}

/// `param`: when present and not blank, any JSON value.
pub fn is_valid_param(v: Option<&str>) -> bool {
    is_blank(v) || v.is_some_and(|s| serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok())
}

/// The largest `timeout` accepted, in seconds (one day).
pub const MAX_TIMEOUT_SECS: u32 = 86_400;
/// The `timeout` used when none is given.
pub const DEFAULT_TIMEOUT_SECS: u32 = 90;

/// `timeout`: blank → the default 90; otherwise ASCII digits only, 0 ≤ t ≤ 86400.
pub fn parse_timeout(v: Option<&str>) -> Option<u32> {
    if is_blank(v) {
        return Some(DEFAULT_TIMEOUT_SECS);
    }
    let s = v?;
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|t| *t <= MAX_TIMEOUT_SECS)
}

/// `mode`: blank → `NP`; otherwise `NP` or `P`, case-insensitive; returned upper-case.
pub fn parse_mode(v: Option<&str>) -> Option<&'static str> {
    if is_blank(v) {
        return Some("NP");
    }
    match v?.to_ascii_uppercase().as_str() {
        "NP" => Some("NP"),
        "P" => Some("P"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_rule() {
        let cases = [
            ("10.0.0.5", true),
            ("0.0.0.0", true),
            ("255.255.255.255", true),
            ("01.002.3.4", true),
            ("256.0.0.1", false),
            ("1.2.3", false),
            ("1.2.3.4.5", false),
            ("1.2.3.", false),
            (".1.2.3", false),
            ("1..2.3", false),
            ("0001.2.3.4", false),
            ("1.2.3.a", false),
            ("+1.2.3.4", false),
            (" 1.2.3.4", false),
            ("::1", false),
            ("", false),
            ("１.2.3.4", false),
        ];
        for (ip, want) in cases {
            assert_eq!(is_ipv4(ip), want, "{ip:?}");
        }
    }

    #[test]
    fn param_rule() {
        let cases = [
            (None, true),
            (Some(""), true),
            (Some("  "), true),
            (Some(r#"{"my":"中文\n"}"#), true),
            (Some("[1,2]"), true),
            (Some("3"), true),
            (Some("\"s\""), true),
            (Some("{"), false),
            (Some("{'a':1}"), false),
            (Some("abc"), false),
        ];
        for (p, want) in cases {
            assert_eq!(is_valid_param(p), want, "{p:?}");
        }
    }

    #[test]
    fn timeout_rule() {
        let cases = [
            (None, Some(90)),
            (Some(""), Some(90)),
            (Some(" "), Some(90)),
            (Some("0"), Some(0)),
            (Some("5"), Some(5)),
            (Some("86400"), Some(86400)),
            (Some("86401"), None),
            (Some("-1"), None),
            (Some("1.5"), None),
            (Some(" 5"), None),
            (Some("99999999999999999999"), None),
        ];
        for (t, want) in cases {
            assert_eq!(parse_timeout(t), want, "{t:?}");
        }
    }

    #[test]
    fn mode_rule() {
        let cases = [
            (None, Some("NP")),
            (Some(""), Some("NP")),
            (Some("np"), Some("NP")),
            (Some("P"), Some("P")),
            (Some("p"), Some("P")),
            (Some("x"), None),
            (Some("NPP"), None),
        ];
        for (m, want) in cases {
            assert_eq!(parse_mode(m), want, "{m:?}");
        }
    }
}
