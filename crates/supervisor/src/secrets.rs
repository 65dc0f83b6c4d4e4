//! The supervisor's secrets: API key secrets encrypted at rest, user password hashes, and
//! fresh `auth_id`s and secrets.
//!
//! # Key secrets
//!
//! A v2 key's secret must be readable by the center (it signs with it), so it is encrypted,
//! not hashed: XChaCha20-Poly1305 under a [`CenterKey`] derived from the center's secret, with
//! a fresh random 24-byte nonce per encryption (random nonces of that size never collide in
//! practice). The stored text is `v1:` followed by standard base64 of `nonce ‖ ciphertext ‖
//! tag`; the `v1` leaves room for another algorithm later. The key's `auth_id` is the
//! associated data, so a ciphertext copied onto another key's row does not decrypt there. A
//! copy of the database alone therefore cannot sign requests.
//!
//! # Passwords
//!
//! [`hash_password`] returns an argon2id PHC string with the crate's default parameters and a
//! random 16-byte salt; [`verify_password`] compares in constant time and is false for a
//! string that is not a PHC hash.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use elves_types::Id;
use sha2::{Digest, Sha256};

/// The prefix of the only encrypted-secret format there is.
const V1: &str = "v1:";
/// XChaCha20-Poly1305's nonce length in bytes.
const NONCE_LEN: usize = 24;
/// Poly1305's tag length in bytes.
const TAG_LEN: usize = 16;
/// The shortest center secret accepted, in bytes.
pub const MIN_CENTER_SECRET_LEN: usize = 16;
/// Domain separation for the derivation of a [`CenterKey`].
const KEY_CONTEXT: &[u8] = b"elves supervisor key-secret encryption v1\0";

/// Why a secret could not be made or read. Messages are one line and never hold secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The center secret is too short to derive a key from.
    #[error("the center secret must be at least 16 bytes of random text")]
    WeakCenterSecret,
    /// The stored text does not start with a known format prefix.
    #[error("an encrypted secret must start with v1:")]
    UnknownFormat,
    /// The stored text is not base64, or too short to hold a nonce and a tag.
    #[error("an encrypted secret is malformed")]
    Malformed,
    /// Authentication failed: another center secret, another `auth_id`, or altered bytes.
    #[error(
        "an encrypted secret does not decrypt: another center secret, another auth_id, or altered data"
    )]
    Undecryptable,
    /// The decrypted secret is not UTF-8.
    #[error("a decrypted secret is not UTF-8")]
    NotUtf8,
    /// Hashing a password failed.
    #[error("cannot hash a password: {0}")]
    Hash(String),
}

/// The key that encrypts API key secrets, derived from the center's secret.
#[derive(Clone)]
pub struct CenterKey([u8; 32]);

impl std::fmt::Debug for CenterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CenterKey(<redacted>)")
    }
}

impl CenterKey {
    /// Derives the key from the center's secret (at least [`MIN_CENTER_SECRET_LEN`] bytes;
    /// generated, like every Elves secret, so one SHA-256 with a fixed context suffices).
    pub fn derive(center_secret: &str) -> Result<CenterKey, Error> {
        if center_secret.len() < MIN_CENTER_SECRET_LEN {
            return Err(Error::WeakCenterSecret);
        }
        let mut h = Sha256::new();
        h.update(KEY_CONTEXT);
        h.update(center_secret.as_bytes());
        Ok(CenterKey(h.finalize().into()))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

/// Encrypts the secret of the key `auth_id` for storage: `v1:` + base64.
pub fn encrypt_secret(key: &CenterKey, auth_id: &Id, secret: &str) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the operating system's random source failed");
    let payload = Payload {
        msg: secret.as_bytes(),
        aad: auth_id.as_str().as_bytes(),
    };
    let sealed = key
        .cipher()
        .encrypt(XNonce::from_slice(&nonce), payload)
        .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    format!("{V1}{}", STANDARD.encode(out))
}

/// Decrypts what [`encrypt_secret`] made for the key `auth_id`.
pub fn decrypt_secret(key: &CenterKey, auth_id: &Id, stored: &str) -> Result<String, Error> {
    let encoded = stored.strip_prefix(V1).ok_or(Error::UnknownFormat)?;
    let bytes = STANDARD.decode(encoded).map_err(|_| Error::Malformed)?;
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::Malformed);
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let payload = Payload {
        msg: sealed,
        aad: auth_id.as_str().as_bytes(),
    };
    let plain = key
        .cipher()
        .decrypt(XNonce::from_slice(nonce), payload)
        .map_err(|_| Error::Undecryptable)?;
    String::from_utf8(plain).map_err(|_| Error::NotUtf8)
}

/// Hashes a password for storage: an argon2id PHC string (default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system's random source failed");
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (constant-time). False when `hash` is
/// not a PHC string this build can verify.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A fresh `auth_id`: 16 upper-case hex characters from the OS CSPRNG.
pub fn generate_auth_id() -> Id {
    Id::random()
}

/// A fresh key secret: 32 upper-case hex characters (128 bits) from the OS CSPRNG, in the
/// form `elves up` generates.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    hex::encode_upper(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const CENTER: &str = "0123456789ABCDEF0123456789ABCDEF";
    const OTHER_CENTER: &str = "FEDCBA9876543210FEDCBA9876543210";

    fn auth_id(n: u8) -> Id {
        Id::from_bytes([0, 0, 0, 0, 0, 0, 0, n])
    }

    fn key() -> CenterKey {
        CenterKey::derive(CENTER).unwrap()
    }

    /// A decryption case: name, key, `auth_id`, stored text, expected outcome.
    type DecryptCase = (&'static str, CenterKey, Id, String, Result<String, Error>);

    /// Flips one bit of the decoded bytes at `index` and re-encodes.
    fn flip(stored: &str, index: usize) -> String {
        let mut bytes = STANDARD.decode(&stored[V1.len()..]).unwrap();
        bytes[index] ^= 0x01;
        format!("{V1}{}", STANDARD.encode(bytes))
    }

    #[test]
    fn secrets_round_trip_and_every_tampering_fails() {
        let secret = "5F2C0D9A1B3E4F60718293A4B5C6D7E8";
        let stored = encrypt_secret(&key(), &auth_id(1), secret);
        assert!(stored.starts_with("v1:"), "{stored}");
        assert!(!stored.contains(secret));
        let body_len = STANDARD.decode(&stored[3..]).unwrap().len();
        assert_eq!(body_len, NONCE_LEN + secret.len() + TAG_LEN);

        let other_key = CenterKey::derive(OTHER_CENTER).unwrap();
        let truncated = format!("{V1}{}", STANDARD.encode([0u8; NONCE_LEN + TAG_LEN - 1]));
        let cases: Vec<DecryptCase> = vec![
            (
                "round trip",
                key(),
                auth_id(1),
                stored.clone(),
                Ok(secret.to_owned()),
            ),
            (
                "wrong center secret",
                other_key,
                auth_id(1),
                stored.clone(),
                Err(Error::Undecryptable),
            ),
            (
                "another key's row",
                key(),
                auth_id(2),
                stored.clone(),
                Err(Error::Undecryptable),
            ),
            (
                "tampered nonce",
                key(),
                auth_id(1),
                flip(&stored, 0),
                Err(Error::Undecryptable),
            ),
            (
                "tampered ciphertext",
                key(),
                auth_id(1),
                flip(&stored, NONCE_LEN),
                Err(Error::Undecryptable),
            ),
            (
                "tampered tag",
                key(),
                auth_id(1),
                flip(&stored, body_len - 1),
                Err(Error::Undecryptable),
            ),
            (
                "no prefix",
                key(),
                auth_id(1),
                stored[3..].to_owned(),
                Err(Error::UnknownFormat),
            ),
            (
                "future format",
                key(),
                auth_id(1),
                format!("v2:{}", &stored[3..]),
                Err(Error::UnknownFormat),
            ),
            (
                "plain text",
                key(),
                auth_id(1),
                secret.to_owned(),
                Err(Error::UnknownFormat),
            ),
            (
                "not base64",
                key(),
                auth_id(1),
                "v1:***".to_owned(),
                Err(Error::Malformed),
            ),
            (
                "too short",
                key(),
                auth_id(1),
                truncated,
                Err(Error::Malformed),
            ),
            (
                "empty",
                key(),
                auth_id(1),
                "v1:".to_owned(),
                Err(Error::Malformed),
            ),
        ];
        let mut failed = Vec::new();
        for (name, k, id, text, want) in cases {
            let got = decrypt_secret(&k, &id, &text);
            if got != want {
                failed.push(format!("{name}: want {want:?}, got {got:?}"));
            }
        }
        assert!(failed.is_empty(), "\n{}", failed.join("\n"));
    }

    #[test]
    fn every_encryption_uses_a_fresh_nonce() {
        let a = encrypt_secret(&key(), &auth_id(1), "same");
        let b = encrypt_secret(&key(), &auth_id(1), "same");
        assert_ne!(a, b);
        assert_eq!(decrypt_secret(&key(), &auth_id(1), &a).unwrap(), "same");
        assert_eq!(decrypt_secret(&key(), &auth_id(1), &b).unwrap(), "same");
    }

    #[test]
    fn empty_and_non_ascii_secrets_round_trip() {
        for secret in ["", "ключ 🔑", &"x".repeat(10_000)] {
            let stored = encrypt_secret(&key(), &auth_id(3), secret);
            assert_eq!(
                decrypt_secret(&key(), &auth_id(3), &stored).unwrap(),
                secret
            );
        }
    }

    #[test]
    fn a_short_center_secret_is_refused_and_keys_never_print() {
        assert_eq!(
            CenterKey::derive("short").unwrap_err(),
            Error::WeakCenterSecret
        );
        assert!(CenterKey::derive(&"x".repeat(MIN_CENTER_SECRET_LEN)).is_ok());
        assert_eq!(format!("{:?}", key()), "CenterKey(<redacted>)");
    }

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        let other = hash_password("correct horse").unwrap();
        assert_ne!(hash, other, "every hash has its own salt");

        let cases: &[(&str, &str, &str, bool)] = &[
            ("right password", "correct horse", &hash, true),
            ("right password, other salt", "correct horse", &other, true),
            ("wrong password", "correct horsE", &hash, false),
            ("empty password", "", &hash, false),
            ("password with a suffix", "correct horse ", &hash, false),
            (
                "not a PHC string",
                "correct horse",
                "5f4dcc3b5aa765d61d8327deb882cf99",
                false,
            ),
            ("empty hash", "correct horse", "", false),
            (
                "truncated hash",
                "correct horse",
                &hash[..hash.len() - 4],
                false,
            ),
        ];
        for (name, password, hash, want) in cases {
            assert_eq!(verify_password(password, hash), *want, "{name}");
        }
    }

    #[test]
    fn generated_ids_and_secrets_are_fresh_upper_hex() {
        let ids: HashSet<Id> = (0..1000).map(|_| generate_auth_id()).collect();
        assert_eq!(ids.len(), 1000);
        let secrets: HashSet<String> = (0..1000).map(|_| generate_secret()).collect();
        assert_eq!(secrets.len(), 1000);
        for s in secrets.iter().take(50) {
            assert_eq!(s.len(), 32);
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)),
                "{s}"
            );
        }
    }
}
