use std::fmt;

use serde::{Deserialize, Serialize};

/// An Elves id: 16 upper-case hexadecimal characters (64 random bits).
///
/// Used for rt jobs, queues, tasks, crons, run ids and `auth_id`s (api-v2 §1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Id([u8; 16]);

impl Id {
    /// A fresh id from the operating system's cryptographically secure random source.
    pub fn random() -> Id {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        Id::from_bytes(bytes)
    }

    /// The id whose hex form encodes `bytes` (used by tests and by injected RNGs).
    pub fn from_bytes(bytes: [u8; 8]) -> Id {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [0u8; 16];
        for (i, b) in bytes.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        Id(out)
    }

    /// Parses an id: exactly 16 hex characters; lower case is folded to upper case.
    pub fn parse(s: &str) -> Option<Id> {
        let b = s.as_bytes();
        if b.len() != 16 || !b.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut out = [0u8; 16];
        for (o, c) in out.iter_mut().zip(b) {
            *o = c.to_ascii_uppercase();
        }
        Some(Id(out))
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII hex by construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.as_str())
    }
}

impl From<Id> for String {
    fn from(id: Id) -> String {
        id.as_str().to_owned()
    }
}

impl TryFrom<String> for Id {
    type Error = String;
    fn try_from(s: String) -> Result<Id, String> {
        Id::parse(&s).ok_or_else(|| format!("not a 16-hex-character id: {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn random_ids_are_16_upper_hex_and_distinct() {
        let ids: HashSet<Id> = (0..10_000).map(|_| Id::random()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let s = id.as_str();
            assert_eq!(s.len(), 16);
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)),
                "{s}"
            );
        }
    }

    #[test]
    fn parse_accepts_only_16_hex() {
        let cases = [
            ("BF0EE718FCC41307", Some("BF0EE718FCC41307")),
            ("bf0ee718fcc41307", Some("BF0EE718FCC41307")),
            ("BF0EE718FCC4130", None),
            ("BF0EE718FCC413071", None),
            ("BF0EE718FCC4130G", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                Id::parse(input).map(|i| i.to_string()).as_deref(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn from_bytes_is_hex_of_the_bytes() {
        assert_eq!(
            Id::from_bytes([0xBF, 0x0E, 0xE7, 0x18, 0xFC, 0xC4, 0x13, 0x07]).as_str(),
            "BF0EE718FCC41307"
        );
    }

    #[test]
    fn serde_round_trip_is_a_plain_string() {
        let id = Id::parse("00000000000000AB").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"00000000000000AB\"");
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        assert!(serde_json::from_str::<Id>("\"xyz\"").is_err());
    }
}
