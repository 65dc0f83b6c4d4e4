//! Arbitrary bytes through the whole server-side signing path: parse a query string and a
//! body, build the string to sign, precheck, verify. None of it may panic, and a few
//! properties of the contract must hold for any input.
//!
//! Input layout: `path \n query \n body`; each part may be missing. Byte 0 of the input, if
//! any, also shifts the clock and picks the policy, so the window and disabled types are
//! reached as well.
#![no_main]

use elves_sign::{
    NonceCache, Params, Policy, SignType, precheck, signed_query, string_to_sign, verify,
};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_500_000_000;
const KEY: &str = "123456";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let knob = data.first().copied().unwrap_or(0);

    let mut params = Params::new();
    params.extend_urlencoded(query);
    params.extend_urlencoded(body);

    let sts = string_to_sign(&path, &params);
    assert_eq!(
        sts,
        sts.trim_matches(|c: char| c <= ' '),
        "string to sign not trimmed"
    );

    let policy = Policy {
        window_secs: 1 + i64::from(knob % 200),
        enabled: match knob % 3 {
            0 => SignType::ALL.to_vec(),
            1 => vec![SignType::Md5],
            _ => vec![SignType::HmacSha256],
        },
    };
    let now = NOW + i64::from(knob) - 128;
    let nonces = NonceCache::new(4, policy.window_secs);

    if let Ok(pre) = precheck(&params, &policy, now) {
        assert!(policy.enabled.contains(&pre.sign_type));
        assert_eq!(pre.sign.len(), pre.sign_type.sign_len());
        assert!((now - pre.timestamp).abs() < policy.window_secs);
        if verify(&path, &params, &pre, KEY, &nonces, now).is_ok() {
            assert!(!params.has_repeats());
            if pre.nonce.is_some() {
                assert!(verify(&path, &params, &pre, KEY, &nonces, now).is_err());
            }
        }
    }
    assert!(nonces.len() <= 4);

    // Round trip: whatever the fuzzer sent, re-signing its (distinct, non-reserved)
    // parameters on the client side yields a request the server accepts.
    let reserved = ["auth_id", "timestamp", "nonce", "sign", "sign_type"];
    let mut seen = std::collections::HashSet::new();
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| !reserved.contains(k) && seen.insert(*k))
        .collect();
    let sign_type = policy.enabled[usize::from(knob) % policy.enabled.len()];
    let nonce = params.get("nonce");
    let signed = signed_query(
        &path,
        &pairs,
        "ABCDEF0123456789",
        KEY,
        sign_type,
        now,
        nonce,
    );
    let mut back = Params::new();
    back.extend_urlencoded(signed.as_bytes());
    let fresh = NonceCache::new(4, policy.window_secs);
    let pre = precheck(&back, &policy, now).expect("client-signed request passes precheck");
    verify(&path, &back, &pre, KEY, &fresh, now).expect("client-signed request verifies");
});
