//! Layer 0 of Elves: the v2 request signature (`api-v2.md` §2 and §3).
//!
//! Every `/api/v2/` request carries `auth_id`, `timestamp` (Unix seconds), `sign_type` and
//! `sign`. The string to sign is the raw request path (a path that starts with `//` has every
//! `//` folded to `/`), then `?`, then every request parameter except `sign` and `sign_type`
//! as `name=value` with the URL-decoded value, taking the first value of each name, sorted by
//! name in byte order and joined by `&`. Bytes `<= 0x20` are trimmed off both ends of that
//! string. See [`string_to_sign`].
//!
//! Two signature types exist. `MD5` signs the upper-case hex of `MD5(stringToSign + key)`;
//! `HMAC-SHA256` (an extension) signs the lower-case hex of `HMAC_SHA256(key, stringToSign)`.
//! The server compares signatures in constant time and ignores the case of the hex digits.
//! See [`sign`].
//!
//! The server checks a request in the order of §3, and the first failing step wins.
//! [`precheck`] runs the steps that need no key: missing or blank parameters (401.1), a sign
//! type that is unknown or switched off (401.3), a signature of the wrong length or not hex
//! (401.4), a timestamp that is not a plain decimal 64-bit integer (401.8), and a timestamp
//! outside the window (401.7). The caller then looks up the key (step 6, not in this crate)
//! and calls [`verify`], which rejects a repeated parameter or a wrong signature (401.5) and
//! then a nonce seen before (401.9). Nonces live in a bounded, thread-safe [`NonceCache`]
//! that refuses new nonces rather than forget live ones when it is full.
//!
//! Clients build a signed query string with [`signed_query`].
//!
//! This crate does no I/O and depends on no runtime. Error values are the [`ErrorCode`]s of
//! `elves-types`; the catalogue text lives there only.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use elves_types::ErrorCode;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The parameter that carries the signature.
pub const SIGN: &str = "sign";
/// The parameter that names the signature type.
pub const SIGN_TYPE: &str = "sign_type";
/// The parameter that names the key.
pub const AUTH_ID: &str = "auth_id";
/// The parameter that carries the request time in Unix seconds.
pub const TIMESTAMP: &str = "timestamp";
/// The optional parameter that carries a one-time value (**ext**).
pub const NONCE: &str = "nonce";

/// The default timestamp window, in seconds.
pub const DEFAULT_WINDOW_SECS: i64 = 180;

/// A signature type of §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignType {
    /// `MD5(stringToSign + key)`, 32 hex characters.
    Md5,
    /// **ext**: `HMAC_SHA256(key, stringToSign)`, 64 hex characters.
    HmacSha256,
}

impl SignType {
    /// Every type, in the order of the spec.
    pub const ALL: [SignType; 2] = [SignType::Md5, SignType::HmacSha256];

    /// Parses a `sign_type` value, ignoring ASCII case: `MD5` or `HMAC-SHA256`.
    /// Nothing is trimmed: `" MD5"` is not a sign type.
    pub fn parse(s: &str) -> Option<SignType> {
        SignType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// The canonical name: `"MD5"` or `"HMAC-SHA256"`.
    pub fn name(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// The number of hex characters of a signature of this type.
    pub fn sign_len(self) -> usize {
        match self {
            SignType::Md5 => 32,
            SignType::HmacSha256 => 64,
        }
    }
}

/// Decoded request parameters in arrival order, duplicates kept.
///
/// Query and form parameters are merged by extending the same value with both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// No parameters.
    pub fn new() -> Params {
        Params::default()
    }

    /// Parameters from pairs that are already decoded.
    pub fn from_pairs<I, K, V>(it: I) -> Params
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Params {
            pairs: it.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    /// Appends the parameters of a query string or an `application/x-www-form-urlencoded`
    /// body. `+` decodes to a space and `%XX` sequences decode as UTF-8, invalid sequences
    /// becoming U+FFFD. A name without `=` has the empty value; empty segments (`&&`) are
    /// skipped.
    pub fn extend_urlencoded(&mut self, raw: &[u8]) {
        self.pairs
            .extend(form_urlencoded::parse(raw).map(|(k, v)| (k.into_owned(), v.into_owned())));
    }

    /// Appends one decoded parameter.
    pub fn push(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.pairs.push((k.into(), v.into()));
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether any name is present more than once.
    pub fn has_repeats(&self) -> bool {
        let mut seen = HashSet::with_capacity(self.pairs.len());
        !self.pairs.iter().all(|(k, _)| seen.insert(k.as_str()))
    }

    /// Every parameter, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of parameters, repeats included.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(it: I) -> Params {
        Params::from_pairs(it)
    }
}

/// Whether `c` is whitespace in the sense of §2 and §3 (a byte `<= 0x20`).
fn is_space(c: char) -> bool {
    c <= '\u{20}'
}

/// Whether `s` is empty or only whitespace (bytes `<= 0x20`).
pub fn is_blank(s: &str) -> bool {
    s.chars().all(is_space)
}

/// The string to sign of §2, exactly.
///
/// `path` is the raw request path: no query, not decoded. When it starts with `//`, every
/// `//` in it is replaced by `/` (left to right, so `///` becomes `//`). Then comes `?` and
/// every parameter except `sign` and `sign_type`, as `name=value`, with the first value of
/// each name, sorted by name in byte order and joined by `&`. Bytes `<= 0x20` are trimmed
/// off both ends of the result.
pub fn string_to_sign(path: &str, params: &Params) -> String {
    let mut first: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in params.iter() {
        if k != SIGN && k != SIGN_TYPE {
            first.entry(k).or_insert(v);
        }
    }
    let mut out = if path.starts_with("//") {
        path.replace("//", "/")
    } else {
        path.to_owned()
    };
    out.push('?');
    for (i, (k, v)) in first.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out.trim_matches(is_space).to_owned()
}

/// The signature of `string_to_sign` with `key`.
///
/// * [`SignType::Md5`]: upper-case hex of `MD5(utf8(string_to_sign + key))`. The key is
///   appended as it is, after the string to sign was trimmed.
/// * [`SignType::HmacSha256`]: lower-case hex of `HMAC_SHA256(key, utf8(string_to_sign))`.
pub fn sign(sign_type: SignType, key: &str, string_to_sign: &str) -> String {
    match sign_type {
        SignType::Md5 => {
            let mut h = Md5::new();
            h.update(string_to_sign.as_bytes());
            h.update(key.as_bytes());
            hex::encode_upper(h.finalize())
        }
        SignType::HmacSha256 => {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
                .expect("HMAC accepts a key of any length");
            m.update(string_to_sign.as_bytes());
            hex::encode(m.finalize().into_bytes())
        }
    }
}

/// The operator's signing policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A request whose `|now - timestamp|` is at least this many seconds times out (401.7).
    pub window_secs: i64,
    /// The sign types that are switched on; any other gets 401.3.
    pub enabled: Vec<SignType>,
}

impl Default for Policy {
    /// A window of 180 seconds, MD5 and HMAC-SHA256 both on.
    fn default() -> Policy {
        Policy {
            window_secs: DEFAULT_WINDOW_SECS,
            enabled: SignType::ALL.to_vec(),
        }
    }
}

/// The outcome of [`precheck`]: the signing parameters, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prechecked {
    /// The first `auth_id`, as sent (not trimmed).
    pub auth_id: String,
    /// The parsed `sign_type`.
    pub sign_type: SignType,
    /// The first `sign`, as sent: hex of the right length, in either case.
    pub sign: String,
    /// The parsed `timestamp`, inside the window.
    pub timestamp: i64,
    /// The first `nonce`, unless it is absent or blank.
    pub nonce: Option<String>,
}

/// Steps 1–5 of §3, in order; the first failure wins.
///
/// 1. `auth_id`, `timestamp`, `sign_type` or `sign` missing or blank → 401.1.
/// 2. `sign_type` not a type of `policy.enabled` → 401.3.
/// 3. `sign` not exactly [`SignType::sign_len`] hex characters → 401.4.
/// 4. `timestamp` not plain ASCII decimal digits that fit in an `i64` → 401.8.
/// 5. `|now_secs - timestamp| >= policy.window_secs` → 401.7.
///
/// The first value of each parameter is checked; a repeated parameter is rejected later, by
/// [`verify`]. Values are not trimmed.
pub fn precheck(params: &Params, policy: &Policy, now_secs: i64) -> Result<Prechecked, ErrorCode> {
    let required = |name: &str| params.get(name).filter(|v| !is_blank(v));
    let (Some(auth_id), Some(timestamp), Some(sign_type), Some(sign)) = (
        required(AUTH_ID),
        required(TIMESTAMP),
        required(SIGN_TYPE),
        required(SIGN),
    ) else {
        return Err(ErrorCode::MissingSignParam);
    };

    let sign_type = SignType::parse(sign_type)
        .filter(|t| policy.enabled.contains(t))
        .ok_or(ErrorCode::SignTypeIllegal)?;

    if sign.len() != sign_type.sign_len() || !sign.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ErrorCode::SignLengthIllegal);
    }

    // `i64::from_str` alone would accept a leading `+`.
    if !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ErrorCode::TimestampIllegal);
    }
    let ts: i64 = timestamp.parse().map_err(|_| ErrorCode::TimestampIllegal)?;

    if (i128::from(now_secs) - i128::from(ts)).abs() >= i128::from(policy.window_secs) {
        return Err(ErrorCode::SignTimeout);
    }

    Ok(Prechecked {
        auth_id: auth_id.to_owned(),
        sign_type,
        sign: sign.to_owned(),
        timestamp: ts,
        nonce: params
            .get(NONCE)
            .filter(|v| !is_blank(v))
            .map(str::to_owned),
    })
}

/// Steps 7–8 of §3, after the caller found `key` for `pre.auth_id` (step 6).
///
/// 7. A repeated parameter, or a signature that differs from [`sign`] over
///    [`string_to_sign`]`(path, params)` → 401.5. The comparison runs in constant time and
///    ignores the case of the hex digits.
/// 8. A nonce that `nonces` refuses (seen before for this `auth_id`, or the cache is full)
///    → 401.9. The nonce is recorded only when the signature is valid.
pub fn verify(
    path: &str,
    params: &Params,
    pre: &Prechecked,
    key: &str,
    nonces: &NonceCache,
    now_secs: i64,
) -> Result<(), ErrorCode> {
    if params.has_repeats() {
        return Err(ErrorCode::SignError);
    }
    let expected = sign(pre.sign_type, key, &string_to_sign(path, params));
    if !hex_eq_ignore_case(&expected, &pre.sign) {
        return Err(ErrorCode::SignError);
    }
    if let Some(nonce) = &pre.nonce
        && !nonces.check_and_insert(&pre.auth_id, nonce, now_secs)
    {
        return Err(ErrorCode::NonceReused);
    }
    Ok(())
}

/// Constant-time comparison of two hex strings, ignoring ASCII case. Only the lengths leak,
/// and they are public (fixed by the sign type).
fn hex_eq_ignore_case(a: &str, b: &str) -> bool {
    let a: Vec<u8> = a.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<u8> = b.bytes().map(|c| c.to_ascii_lowercase()).collect();
    a.ct_eq(&b).into()
}

/// The nonces seen recently, per `auth_id` (**ext**, §2).
///
/// The cache holds at most `capacity` entries. A request is accepted while
/// `|now - timestamp| < window`, so a request first seen at `t` can be replayed until
/// almost `t + 2·window`; an entry is therefore kept for `2·window` seconds after it was
/// recorded, and then expires. When the cache is full of entries that have not expired it
/// evicts nothing and refuses every new nonce: forgetting a live nonce would allow a
/// replay. The cache is safe to share between threads.
#[derive(Debug)]
pub struct NonceCache {
    capacity: usize,
    retain_secs: i64,
    inner: Mutex<NonceInner>,
}

#[derive(Debug, Default)]
struct NonceInner {
    /// `(auth_id, nonce)` → the time it was recorded.
    seen: HashMap<(String, String), i64>,
    /// The same entries in recording order, for expiry. May hold a stale duplicate of a key
    /// that was recorded again; it never holds more than `capacity` entries.
    order: VecDeque<(i64, (String, String))>,
}

impl NonceCache {
    /// A cache of at most `capacity` nonces for a timestamp window of `window_secs`.
    pub fn new(capacity: usize, window_secs: i64) -> Self {
        NonceCache {
            capacity,
            retain_secs: window_secs.max(0).saturating_mul(2),
            inner: Mutex::new(NonceInner::default()),
        }
    }

    /// Records `nonce` for `auth_id` at `now_secs`. Returns `false`, recording nothing, when
    /// the nonce was recorded before and has not expired, or when the cache is full.
    pub fn check_and_insert(&self, auth_id: &str, nonce: &str, now_secs: i64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let expired = |at: i64| now_secs.saturating_sub(at) >= self.retain_secs;

        while let Some((at, _)) = inner.order.front() {
            if !expired(*at) {
                break;
            }
            let (at, key) = inner.order.pop_front().expect("front exists");
            if inner.seen.get(&key) == Some(&at) {
                inner.seen.remove(&key);
            }
        }

        let key = (auth_id.to_owned(), nonce.to_owned());
        if let Some(&at) = inner.seen.get(&key)
            && !expired(at)
        {
            return false;
        }
        if inner.order.len() >= self.capacity {
            return false;
        }
        inner.seen.insert(key.clone(), now_secs);
        inner.order.push_back((now_secs, key));
        true
    }

    /// The number of nonces recorded (expired ones may still count until the next insert).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .len()
    }

    /// Whether no nonce is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Client side: the signed query string for a request to `path` (the raw path, as it will
/// be sent) with `params`.
///
/// The result has no leading `?`. It holds `params` in the order given, then `auth_id`,
/// `timestamp`, `nonce` (when given), `sign_type` and `sign`, each percent-encoded with
/// `form_urlencoded` (a space becomes `+`). `params` must not hold any of those names:
/// the server rejects a repeated parameter.
pub fn signed_query(
    path: &str,
    params: &[(&str, &str)],
    auth_id: &str,
    key: &str,
    sign_type: SignType,
    timestamp: i64,
    nonce: Option<&str>,
) -> String {
    let ts = timestamp.to_string();
    let mut all = Params::from_pairs(params.iter().copied());
    all.push(AUTH_ID, auth_id);
    all.push(TIMESTAMP, ts);
    if let Some(n) = nonce {
        all.push(NONCE, n);
    }
    let signature = sign(sign_type, key, &string_to_sign(path, &all));
    all.push(SIGN_TYPE, sign_type.name());
    all.push(SIGN, signature);
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(all.iter())
        .finish()
}
