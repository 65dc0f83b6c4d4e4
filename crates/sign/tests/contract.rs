//! The signing contract of `api-v2.md` §2 and §3, as tables of cases.
//!
//! Each case is named after the rule it checks. Every reference signature was computed
//! outside this crate, with the shell:
//!
//! ```sh
//! printf '%s' "$STRING_TO_SIGN$KEY" | md5sum                      # MD5, then upper-cased
//! printf '%s' "$STRING_TO_SIGN" | openssl dgst -sha256 -hmac "$KEY" # HMAC-SHA256
//! ```

use elves_sign::{
    NonceCache, Params, Policy, SignType, precheck, sign, signed_query, string_to_sign, verify,
};
use elves_types::ErrorCode;
use elves_types::ErrorCode::*;

const KEY: &str = "123456";
const TS: i64 = 1_500_000_000;
const PATH: &str = "/api/v2/rt/exec";

#[derive(Clone, Copy, Debug)]
enum Pol {
    Default,
    HmacOnly,
    Md5Only,
    Window60,
}

impl Pol {
    fn policy(self) -> Policy {
        match self {
            Pol::Default => Policy::default(),
            Pol::HmacOnly => Policy {
                enabled: vec![SignType::HmacSha256],
                ..Policy::default()
            },
            Pol::Md5Only => Policy {
                enabled: vec![SignType::Md5],
                ..Policy::default()
            },
            Pol::Window60 => Policy {
                window_secs: 60,
                ..Policy::default()
            },
        }
    }
}

/// One request, checked end to end (precheck, then verify with a fresh nonce cache).
struct Req {
    rule: &'static str,
    path: &'static str,
    query: &'static str,
    body: &'static str,
    key: &'static str,
    now: i64,
    pol: Pol,
    /// The exact string to sign, when the rule is about it.
    sts: Option<&'static str>,
    expect: Result<(), ErrorCode>,
}

const BASE: Req = Req {
    rule: "",
    path: PATH,
    query: "",
    body: "",
    key: KEY,
    now: TS,
    pol: Pol::Default,
    sts: None,
    expect: Ok(()),
};

const REQUESTS: &[Req] = &[
    // §2: the string to sign.
    Req {
        rule: "§2 worked example: sorted, sign and sign_type left out, MD5 upper-case",
        query: r#"ip=10.0.0.5&app=apptest&func=helloword&param={"my":"x"}&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=38ADEF5A0A176503996F905716A740D5"#,
        sts: Some(
            r#"/api/v2/rt/exec?app=apptest&auth_id=ABCDEF0123456789&func=helloword&ip=10.0.0.5&param={"my":"x"}&timestamp=1500000000"#,
        ),
        ..BASE
    },
    Req {
        rule: "§2 values are URL-decoded (%7B, %22, + is a space)",
        query: "app=apptest&param=%7B%22cmd%22%3A%22ls+-l%22%7D&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=97C644B49416E41E6A336EE1B075EF13",
        sts: Some(
            r#"/api/v2/rt/exec?app=apptest&auth_id=ABCDEF0123456789&param={"cmd":"ls -l"}&timestamp=1500000000"#,
        ),
        ..BASE
    },
    Req {
        rule: "§2 UTF-8 values are signed as UTF-8 bytes",
        query: "app=%E4%BD%A0%E5%A5%BD&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=B16AD5F6FBEBDD107D6E04AC69BD985D",
        sts: Some("/api/v2/rt/exec?app=你好&auth_id=ABCDEF0123456789&timestamp=1500000000"),
        ..BASE
    },
    Req {
        rule: "§2 query and form body are merged",
        query: "app=apptest&auth_id=ABCDEF0123456789",
        body: "param=%7B%22cmd%22%3A%22ls+-l%22%7D&timestamp=1500000000&sign_type=MD5&sign=97C644B49416E41E6A336EE1B075EF13",
        ..BASE
    },
    Req {
        rule: "§2 a path that starts with // has every // folded",
        path: "//api//v2/rt/exec",
        query: "app=a&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=ECC1ECE2EEB71B69B1A8346F222D234A",
        sts: Some("/api/v2/rt/exec?app=a&auth_id=ABCDEF0123456789&timestamp=1500000000"),
        ..BASE
    },
    Req {
        rule: "§2 a path with // not at the start is left alone",
        path: "/api//v2/rt/exec",
        query: "app=a&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=8FA2C4EF4EB8C11DB315E162F44BF6B2",
        sts: Some("/api//v2/rt/exec?app=a&auth_id=ABCDEF0123456789&timestamp=1500000000"),
        ..BASE
    },
    Req {
        rule: "§2 whitespace (bytes <= 0x20) at the end of the string is trimmed",
        query: "zz=x%20%09%0A&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=C0251C58541CF51692ED90630EACF58D",
        sts: Some("/api/v2/rt/exec?auth_id=ABCDEF0123456789&timestamp=1500000000&zz=x"),
        ..BASE
    },
    Req {
        rule: "§2 unknown extra and empty-valued params are signed, sorted bytewise",
        query: "foo=&auth_id=ABCDEF0123456789&bar&Zeta=1&timestamp=1500000000&sign_type=MD5&sign=6ECFB8722430BDD3293F46836CC5A8FF",
        sts: Some("/api/v2/rt/exec?Zeta=1&auth_id=ABCDEF0123456789&bar=&foo=&timestamp=1500000000"),
        ..BASE
    },
    Req {
        rule: "§2 exactly sign and sign_type are left out (signature is signed)",
        query: "sign_type=MD5&signature=x&auth_id=ABCDEF0123456789&sign=F3E6AC0E8458257CA6D93200BDE377FE&timestamp=1500000000",
        sts: Some("/api/v2/rt/exec?auth_id=ABCDEF0123456789&signature=x&timestamp=1500000000"),
        ..BASE
    },
    Req {
        rule: "§2 MD5 is compared case-insensitively: lower case accepted",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27eff4389c07db5ca4945b585e5bbc79",
        sts: Some("/api/v2/rt/exec?auth_id=ABCDEF0123456789&timestamp=1500000000"),
        ..BASE
    },
    Req {
        rule: "§2 sign_type is case-insensitive: md5",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=md5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        ..BASE
    },
    Req {
        rule: "§2 MD5 with the wrong key -> 401.5",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        key: "654321",
        expect: Err(SignError),
        ..BASE
    },
    Req {
        rule: "§2 MD5 over a different string (a param added after signing) -> 401.5",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&x=1&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(SignError),
        ..BASE
    },
    Req {
        rule: "§2 ext HMAC-SHA256 accepted",
        query: "app=apptest&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=HMAC-SHA256&sign=94b36523f14091ff8bdfcf69219f030f3e7e01d787e6cf8114779a1c5e3503f0",
        sts: Some("/api/v2/rt/exec?app=apptest&auth_id=ABCDEF0123456789&timestamp=1500000000"),
        ..BASE
    },
    Req {
        rule: "§2 ext HMAC-SHA256: type and hex case-insensitive",
        query: "app=apptest&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=hmac-sha256&sign=94B36523F14091FF8BDFCF69219F030F3E7E01D787E6CF8114779A1C5E3503F0",
        ..BASE
    },
    Req {
        rule: "§2 ext HMAC-SHA256 with the wrong key -> 401.5",
        query: "app=apptest&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=HMAC-SHA256&sign=94b36523f14091ff8bdfcf69219f030f3e7e01d787e6cf8114779a1c5e3503f0",
        key: "1234567",
        expect: Err(SignError),
        ..BASE
    },
    Req {
        rule: "§2 fix: a repeated parameter -> 401.5 even with a right signature",
        query: "ip=10.0.0.5&ip=10.0.0.6&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=65C7434B37AC22592E997B9F64D8EFD9",
        sts: Some("/api/v2/rt/exec?auth_id=ABCDEF0123456789&ip=10.0.0.5&timestamp=1500000000"),
        expect: Err(SignError),
        ..BASE
    },
    Req {
        rule: "§2 fix: a parameter repeated across query and body -> 401.5",
        query: "ip=10.0.0.5&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=65C7434B37AC22592E997B9F64D8EFD9",
        body: "ip=10.0.0.5",
        expect: Err(SignError),
        ..BASE
    },
    // §3 step 1: 401.1.
    Req {
        rule: "§3.1 auth_id missing -> 401.1",
        query: "timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(MissingSignParam),
        ..BASE
    },
    Req {
        rule: "§3.1 timestamp blank (whitespace only) -> 401.1",
        query: "auth_id=ABCDEF0123456789&timestamp=%20%09&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(MissingSignParam),
        ..BASE
    },
    Req {
        rule: "§3.1 sign_type missing -> 401.1",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(MissingSignParam),
        ..BASE
    },
    Req {
        rule: "§3.1 sign empty -> 401.1",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=",
        expect: Err(MissingSignParam),
        ..BASE
    },
    Req {
        rule: "§3.1 auth_id of spaces (+) -> 401.1",
        query: "auth_id=++&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(MissingSignParam),
        ..BASE
    },
    // §3 step 2: 401.3.
    Req {
        rule: "§3.2 unknown sign_type -> 401.3",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=SHA1&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(SignTypeIllegal),
        ..BASE
    },
    Req {
        rule: "§3.2 sign_type is not trimmed -> 401.3",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=+MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(SignTypeIllegal),
        ..BASE
    },
    Req {
        rule: "§3.2 MD5 switched off -> 401.3 even with a right signature",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        pol: Pol::HmacOnly,
        expect: Err(SignTypeIllegal),
        ..BASE
    },
    Req {
        rule: "§3.2 HMAC-SHA256 switched off -> 401.3",
        query: "app=apptest&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=HMAC-SHA256&sign=94b36523f14091ff8bdfcf69219f030f3e7e01d787e6cf8114779a1c5e3503f0",
        pol: Pol::Md5Only,
        expect: Err(SignTypeIllegal),
        ..BASE
    },
    Req {
        rule: "§3.2 HMAC-SHA256 alone switched on still accepts HMAC",
        query: "app=apptest&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=HMAC-SHA256&sign=94b36523f14091ff8bdfcf69219f030f3e7e01d787e6cf8114779a1c5e3503f0",
        pol: Pol::HmacOnly,
        ..BASE
    },
    // §3 step 3: 401.4.
    Req {
        rule: "§3.3 MD5 sign of 31 characters -> 401.4",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC7",
        expect: Err(SignLengthIllegal),
        ..BASE
    },
    Req {
        rule: "§3.3 MD5 sign of 33 characters -> 401.4",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC790",
        expect: Err(SignLengthIllegal),
        ..BASE
    },
    Req {
        rule: "§3.3 HMAC-SHA256 with a 32-character sign -> 401.4",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=HMAC-SHA256&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(SignLengthIllegal),
        ..BASE
    },
    Req {
        rule: "§3.3 MD5 sign of 32 characters that are not hex -> 401.4",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC7G",
        expect: Err(SignLengthIllegal),
        ..BASE
    },
    Req {
        rule: "§3.3 MD5 sign of 32 bytes of non-ASCII text -> 401.4",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=%E4%BD%A0%E5%A5%BD27EFF4389C07DB5CA4945B585E5B",
        expect: Err(SignLengthIllegal),
        ..BASE
    },
    // §3 step 4: 401.8.
    Req {
        rule: "§3.4 timestamp -5 -> 401.8",
        query: "auth_id=ABCDEF0123456789&timestamp=-5&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(TimestampIllegal),
        ..BASE
    },
    Req {
        rule: "§3.4 timestamp +5 (sent as %2B5) -> 401.8",
        query: "auth_id=ABCDEF0123456789&timestamp=%2B5&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(TimestampIllegal),
        ..BASE
    },
    Req {
        rule: "§3.4 timestamp 1.5 -> 401.8",
        query: "auth_id=ABCDEF0123456789&timestamp=1.5&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(TimestampIllegal),
        ..BASE
    },
    Req {
        rule: "§3.4 timestamp 99999999999999999999 (over 64 bits) -> 401.8",
        query: "auth_id=ABCDEF0123456789&timestamp=99999999999999999999&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(TimestampIllegal),
        ..BASE
    },
    Req {
        rule: "§3.4 timestamp 9223372036854775808 (i64::MAX + 1) -> 401.8",
        query: "auth_id=ABCDEF0123456789&timestamp=9223372036854775808&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(TimestampIllegal),
        ..BASE
    },
    Req {
        rule: "§3.4 timestamp of non-ASCII digits (Arabic-Indic) -> 401.8",
        query: "auth_id=ABCDEF0123456789&timestamp=%D9%A1%D9%A5&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(TimestampIllegal),
        ..BASE
    },
    Req {
        rule: "§3.4 timestamp with a leading space -> 401.8",
        query: "auth_id=ABCDEF0123456789&timestamp=+1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(TimestampIllegal),
        ..BASE
    },
    Req {
        rule: "§3.4 timestamp i64::MAX is an integer: it fails the window, not the syntax",
        query: "auth_id=ABCDEF0123456789&timestamp=9223372036854775807&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(SignTimeout),
        ..BASE
    },
    Req {
        rule: "§3.4 timestamp with leading zeros is a plain decimal integer",
        query: "auth_id=ABCDEF0123456789&timestamp=0001500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        // Signed over the string as sent, so the signature differs: the syntax passed.
        expect: Err(SignError),
        ..BASE
    },
    // §3 step 5: 401.7.
    Req {
        rule: "§3.5 window: now = ts + 179 passes",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        now: TS + 179,
        ..BASE
    },
    Req {
        rule: "§3.5 window: now = ts - 179 passes",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        now: TS - 179,
        ..BASE
    },
    Req {
        rule: "§3.5 window: now = ts + 180 -> 401.7",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        now: TS + 180,
        expect: Err(SignTimeout),
        ..BASE
    },
    Req {
        rule: "§3.5 window: now = ts - 180 -> 401.7",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        now: TS - 180,
        expect: Err(SignTimeout),
        ..BASE
    },
    Req {
        rule: "§3.5 configurable window of 60: now = ts + 59 passes",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        now: TS + 59,
        pol: Pol::Window60,
        ..BASE
    },
    Req {
        rule: "§3.5 configurable window of 60: now = ts - 60 -> 401.7",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        now: TS - 60,
        pol: Pol::Window60,
        expect: Err(SignTimeout),
        ..BASE
    },
    // §3: when two things are wrong, the earlier step wins.
    Req {
        rule: "§3 order: missing auth_id (1) before unknown sign_type (2)",
        query: "timestamp=1500000000&sign_type=SHA1&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(MissingSignParam),
        ..BASE
    },
    Req {
        rule: "§3 order: unknown sign_type (2) before bad sign length (3)",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=SHA1&sign=abc",
        expect: Err(SignTypeIllegal),
        ..BASE
    },
    Req {
        rule: "§3 order: bad sign length (3) before bad timestamp (4)",
        query: "auth_id=ABCDEF0123456789&timestamp=-5&sign_type=MD5&sign=abc",
        expect: Err(SignLengthIllegal),
        ..BASE
    },
    Req {
        rule: "§3 order: timeout (5) before wrong signature (7)",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=0123456789ABCDEF0123456789ABCDEF",
        now: TS + 180,
        expect: Err(SignTimeout),
        ..BASE
    },
    Req {
        rule: "§3 order: timeout (5) before repeated parameter (7)",
        query: "ip=10.0.0.5&ip=10.0.0.6&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=65C7434B37AC22592E997B9F64D8EFD9",
        now: TS - 200,
        expect: Err(SignTimeout),
        ..BASE
    },
    Req {
        rule: "§3 order: the first value of a repeated sign_type is checked (2)",
        query: "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=SHA1&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79",
        expect: Err(SignTypeIllegal),
        ..BASE
    },
];

fn parse(query: &str, body: &str) -> Params {
    let mut p = Params::new();
    p.extend_urlencoded(query.as_bytes());
    p.extend_urlencoded(body.as_bytes());
    p
}

fn check(
    path: &str,
    params: &Params,
    key: &str,
    policy: &Policy,
    nonces: &NonceCache,
    now: i64,
) -> Result<(), ErrorCode> {
    let pre = precheck(params, policy, now)?;
    verify(path, params, &pre, key, nonces, now)
}

/// Runs every case and reports all the failing rules at once.
fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn requests() {
    let mut failures = Vec::new();
    for c in REQUESTS {
        let params = parse(c.query, c.body);
        if let Some(want) = c.sts {
            let got = string_to_sign(c.path, &params);
            if got != want {
                failures.push(format!("{}: string to sign {got:?}, want {want:?}", c.rule));
            }
        }
        let policy = c.pol.policy();
        let nonces = NonceCache::new(16, policy.window_secs);
        let got = check(c.path, &params, c.key, &policy, &nonces, c.now);
        if got != c.expect {
            failures.push(format!("{}: got {got:?}, want {:?}", c.rule, c.expect));
        }
    }
    report(failures);
}

/// Strings to sign that need no request around them.
const STRINGS: &[(&str, &str, &str, &str)] = &[
    (
        "§2 // folding has str::replace semantics: /// becomes //",
        "///api",
        "a=1",
        "//api?a=1",
    ),
    (
        "§2 whitespace at the start of the string is trimmed",
        "\t /api",
        "a=1",
        "/api?a=1",
    ),
    (
        "§2 the first value of a repeated name is signed",
        "/api",
        "b=2&a=x&a=y",
        "/api?a=x&b=2",
    ),
    (
        "§2 names are URL-decoded and sorted by bytes, not by characters' case",
        "/api",
        "%C3%A9=3&b=2&B=1",
        "/api?B=1&b=2&é=3",
    ),
    (
        "§2 the path is neither decoded nor changed",
        "/api/v2/a%20b",
        "a=1",
        "/api/v2/a%20b?a=1",
    ),
    ("§2 no parameters leaves the ?", "/api", "", "/api?"),
];

#[test]
fn strings_to_sign() {
    let mut failures = Vec::new();
    for &(rule, path, query, want) in STRINGS {
        let got = string_to_sign(path, &parse(query, ""));
        if got != want {
            failures.push(format!("{rule}: got {got:?}, want {want:?}"));
        }
    }
    report(failures);
}

/// `sign` against reference digests computed independently.
const SIGNATURES: &[(&str, SignType, &str, &str, &str)] = &[
    (
        "§2 MD5 = upper-case hex of MD5(string + key): the worked example",
        SignType::Md5,
        KEY,
        r#"/api/v2/rt/exec?app=apptest&auth_id=ABCDEF0123456789&func=helloword&ip=10.0.0.5&param={"my":"x"}&timestamp=1500000000"#,
        "38ADEF5A0A176503996F905716A740D5",
    ),
    (
        "§2 MD5 of the empty string and key",
        SignType::Md5,
        "",
        "",
        "D41D8CD98F00B204E9800998ECF8427E",
    ),
    (
        "§2 MD5: the key is appended without a separator",
        SignType::Md5,
        "c",
        "ab",
        "900150983CD24FB0D6963F7D28E17F72",
    ),
    (
        "§2 HMAC-SHA256 = lower-case hex (RFC 4231 test case 2)",
        SignType::HmacSha256,
        "Jefe",
        "what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
];

#[test]
fn signatures() {
    let mut failures = Vec::new();
    for &(rule, t, key, sts, want) in SIGNATURES {
        let got = sign(t, key, sts);
        if got != want {
            failures.push(format!("{rule}: got {got}, want {want}"));
        }
        if got.len() != t.sign_len() {
            failures.push(format!("{rule}: length {} for {}", got.len(), t.name()));
        }
    }
    report(failures);
}

#[test]
fn sign_types() {
    let cases: &[(&str, &str, Option<SignType>)] = &[
        ("§2 MD5", "MD5", Some(SignType::Md5)),
        ("§2 md5, case-insensitive", "md5", Some(SignType::Md5)),
        ("§2 mixed case Md5", "Md5", Some(SignType::Md5)),
        (
            "§2 ext HMAC-SHA256",
            "HMAC-SHA256",
            Some(SignType::HmacSha256),
        ),
        (
            "§2 ext hmac-sha256",
            "hmac-sha256",
            Some(SignType::HmacSha256),
        ),
        ("§3.2 not trimmed", "MD5 ", None),
        ("§3.2 HMAC without the dash", "HMACSHA256", None),
        ("§3.2 SHA256 alone", "SHA256", None),
        ("§3.2 empty", "", None),
    ];
    let mut failures = Vec::new();
    for &(rule, s, want) in cases {
        let got = SignType::parse(s);
        if got != want {
            failures.push(format!("{rule}: parse({s:?}) = {got:?}, want {want:?}"));
        }
        if let Some(t) = got
            && SignType::parse(t.name()) != Some(t)
        {
            failures.push(format!("{rule}: name does not parse back"));
        }
    }
    report(failures);
}

/// A sequence of requests against one nonce cache (default policy, window 180).
struct Seq {
    rule: &'static str,
    capacity: usize,
    steps: &'static [(&'static str, i64, Result<(), ErrorCode>)],
}

const NONCE_N1: &str = "auth_id=ABCDEF0123456789&nonce=n1&timestamp=1500000000&sign_type=MD5&sign=98E3EAED4008C0EBB3D0031F664EE421";
const NONCE_N1_OTHER_ID: &str = "auth_id=0123456789ABCDEF&nonce=n1&timestamp=1500000000&sign_type=MD5&sign=6FCAACE4D2C4F58E1447F7DAD5815C05";
const NONCE_N1_BAD_SIGN: &str = "auth_id=ABCDEF0123456789&nonce=n1&timestamp=1500000000&sign_type=MD5&sign=0123456789ABCDEF0123456789ABCDEF";
const NONCE_N1_REPEATED: &str = "auth_id=ABCDEF0123456789&nonce=n1&nonce=n1&timestamp=1500000000&sign_type=MD5&sign=98E3EAED4008C0EBB3D0031F664EE421";
const NONCE_BLANK: &str = "auth_id=ABCDEF0123456789&nonce=&timestamp=1500000000&sign_type=MD5&sign=1BCF8B8F8744E75FD46654C2588B798B";
const NO_NONCE: &str = "auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=27EFF4389C07DB5CA4945B585E5BBC79";

const SEQUENCES: &[Seq] = &[
    Seq {
        rule: "§3.8 ext nonce reused -> 401.9",
        capacity: 16,
        steps: &[(NONCE_N1, TS, Ok(())), (NONCE_N1, TS + 1, Err(NonceReused))],
    },
    Seq {
        rule: "§3.8 a nonce with a bad signature is not recorded",
        capacity: 16,
        steps: &[
            (NONCE_N1_BAD_SIGN, TS, Err(SignError)),
            (NONCE_N1, TS, Ok(())),
            (NONCE_N1, TS, Err(NonceReused)),
        ],
    },
    Seq {
        rule: "§3 order: wrong signature (7) before nonce reuse (8)",
        capacity: 16,
        steps: &[
            (NONCE_N1, TS, Ok(())),
            (NONCE_N1_BAD_SIGN, TS, Err(SignError)),
            (NONCE_N1_REPEATED, TS, Err(SignError)),
        ],
    },
    Seq {
        rule: "§3.8 nonces are per auth_id",
        capacity: 16,
        steps: &[(NONCE_N1, TS, Ok(())), (NONCE_N1_OTHER_ID, TS, Ok(()))],
    },
    Seq {
        rule: "§3.8 a nonce is remembered while its request can be replayed (ts+179 after ts-179)",
        capacity: 16,
        steps: &[
            (NONCE_N1, TS - 179, Ok(())),
            (NONCE_N1, TS + 179, Err(NonceReused)),
        ],
    },
    Seq {
        rule: "§3 order: timeout (5) before nonce reuse (8)",
        capacity: 16,
        steps: &[
            (NONCE_N1, TS, Ok(())),
            (NONCE_N1, TS + 180, Err(SignTimeout)),
        ],
    },
    Seq {
        rule: "§2 nonce is optional: without it a request may repeat",
        capacity: 16,
        steps: &[(NO_NONCE, TS, Ok(())), (NO_NONCE, TS, Ok(()))],
    },
    Seq {
        rule: "§2 a blank nonce counts as no nonce (but is still signed)",
        capacity: 16,
        steps: &[(NONCE_BLANK, TS, Ok(())), (NONCE_BLANK, TS, Ok(()))],
    },
    Seq {
        rule: "§3.8 a full nonce cache refuses new nonces -> 401.9",
        capacity: 1,
        steps: &[
            (NONCE_N1, TS, Ok(())),
            (NONCE_N1_OTHER_ID, TS, Err(NonceReused)),
        ],
    },
];

#[test]
fn nonce_sequences() {
    let mut failures = Vec::new();
    for s in SEQUENCES {
        let policy = Policy::default();
        let nonces = NonceCache::new(s.capacity, policy.window_secs);
        for (i, &(query, now, want)) in s.steps.iter().enumerate() {
            let got = check(PATH, &parse(query, ""), KEY, &policy, &nonces, now);
            if got != want {
                failures.push(format!("{} (step {i}): got {got:?}, want {want:?}", s.rule));
            }
        }
    }
    report(failures);
}

/// The nonce cache by itself: `(auth_id, nonce, now, accepted, len after)`.
struct CacheCase {
    rule: &'static str,
    capacity: usize,
    window: i64,
    steps: &'static [(&'static str, &'static str, i64, bool, usize)],
}

const CACHE: &[CacheCase] = &[
    CacheCase {
        rule: "cache: bounded, refuses when full, nothing evicted",
        capacity: 2,
        window: 10,
        steps: &[
            ("id", "a", 0, true, 1),
            ("id", "a", 5, false, 1),
            ("id", "b", 1, true, 2),
            ("id", "c", 2, false, 2),
            ("id", "c", 19, false, 2),
        ],
    },
    CacheCase {
        rule: "cache: entries expire 2 x window after they were recorded",
        capacity: 2,
        window: 10,
        steps: &[
            ("id", "a", 0, true, 1),
            ("id", "b", 1, true, 2),
            ("id", "a", 19, false, 2),
            ("id", "a", 20, true, 2),
            ("id", "c", 20, false, 2),
            ("id", "c", 21, true, 2),
            ("id", "b", 21, false, 2),
        ],
    },
    CacheCase {
        rule: "cache: expired entries free their room",
        capacity: 3,
        window: 5,
        steps: &[
            ("x", "1", 100, true, 1),
            ("x", "2", 100, true, 2),
            ("x", "3", 100, true, 3),
            ("x", "4", 109, false, 3),
            ("x", "4", 110, true, 1),
        ],
    },
    CacheCase {
        rule: "cache: same nonce, different auth_id, are different entries",
        capacity: 4,
        window: 10,
        steps: &[
            ("A", "n", 0, true, 1),
            ("B", "n", 0, true, 2),
            ("A", "n", 0, false, 2),
        ],
    },
    CacheCase {
        rule: "cache: a clock that goes back does not expire anything",
        capacity: 4,
        window: 10,
        steps: &[
            ("id", "a", 50, true, 1),
            ("id", "a", 10, false, 1),
            ("id", "b", 10, true, 2),
            ("id", "a", 69, false, 2),
            ("id", "c", 70, true, 1),
        ],
    },
    CacheCase {
        rule: "cache: capacity 0 refuses everything",
        capacity: 0,
        window: 10,
        steps: &[("id", "a", 0, false, 0)],
    },
];

#[test]
fn nonce_cache() {
    let mut failures = Vec::new();
    for c in CACHE {
        let cache = NonceCache::new(c.capacity, c.window);
        for (i, &(id, nonce, now, want, len)) in c.steps.iter().enumerate() {
            let got = cache.check_and_insert(id, nonce, now);
            if got != want {
                failures.push(format!("{} (step {i}): got {got}, want {want}", c.rule));
            }
            if cache.len() != len {
                failures.push(format!(
                    "{} (step {i}): len {}, want {len}",
                    c.rule,
                    cache.len()
                ));
            }
            if cache.len() > c.capacity {
                failures.push(format!("{} (step {i}): over capacity", c.rule));
            }
        }
    }
    report(failures);
}

#[test]
fn nonce_cache_is_thread_safe() {
    // Rule: §3.8 — of many concurrent requests with one nonce, exactly one is accepted.
    let cache = NonceCache::new(1000, 180);
    let accepted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| cache.check_and_insert("id", "same", TS) as usize))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(accepted, 1);
    assert_eq!(cache.len(), 1);
}

#[test]
fn nonce_cache_memory_stays_bounded() {
    // Rule: a flood of distinct nonces never grows the cache past its capacity.
    // One new nonce a second; entries live 2 x 180 s.
    let cache = NonceCache::new(100, 180);
    let mut accepted = 0;
    for i in 0..1_000 {
        if cache.check_and_insert("id", &i.to_string(), TS + i) {
            accepted += 1;
        }
        assert!(cache.len() <= 100, "len {} at {i}", cache.len());
    }
    // Seconds 0..100 fill it; nothing expires before 360, so seconds 360..460 refill it,
    // and then 720..820: three batches of 100.
    assert_eq!(accepted, 300);
}

/// Parsing of query strings and bodies.
#[test]
fn params() {
    type Pairs = &'static [(&'static str, &'static str)];
    let cases: &[(&str, &[u8], Pairs, bool)] = &[
        ("decoding: + is a space", b"a=b+c", &[("a", "b c")], false),
        (
            "decoding: %XX as UTF-8",
            b"a=%E4%BD%A0",
            &[("a", "你")],
            false,
        ),
        ("decoding: %2B is a plus", b"a=%2B5", &[("a", "+5")], false),
        (
            "decoding: invalid UTF-8 becomes U+FFFD",
            b"a=%FF",
            &[("a", "\u{FFFD}")],
            false,
        ),
        (
            "decoding: names are decoded",
            b"a%5Fb=1",
            &[("a_b", "1")],
            false,
        ),
        (
            "a name without = has the empty value; empty segments skipped",
            b"a&&b=",
            &[("a", ""), ("b", "")],
            false,
        ),
        (
            "duplicates kept in arrival order",
            b"a=1&b=2&a=3",
            &[("a", "1"), ("b", "2"), ("a", "3")],
            true,
        ),
    ];
    let mut failures = Vec::new();
    for &(rule, raw, want, repeats) in cases {
        let mut p = Params::new();
        p.extend_urlencoded(raw);
        let got: Vec<(&str, &str)> = p.iter().collect();
        if got != want {
            failures.push(format!("{rule}: got {got:?}, want {want:?}"));
        }
        if p.has_repeats() != repeats {
            failures.push(format!("{rule}: has_repeats {}", p.has_repeats()));
        }
        if p.get(want[0].0) != Some(want[0].1) {
            failures.push(format!("{rule}: get returns not the first value"));
        }
    }
    report(failures);
}

/// `signed_query` produces what the server accepts.
#[test]
fn signed_queries() {
    type Pairs = &'static [(&'static str, &'static str)];
    // (rule, params, sign type, nonce, the query expected for PATH)
    let cases: &[(&str, Pairs, SignType, Option<&str>, &str)] = &[
        (
            "client: the worked example signs as the reference digest",
            &[
                ("ip", "10.0.0.5"),
                ("app", "apptest"),
                ("func", "helloword"),
                ("param", r#"{"my":"x"}"#),
            ],
            SignType::Md5,
            None,
            "ip=10.0.0.5&app=apptest&func=helloword&param=%7B%22my%22%3A%22x%22%7D&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=MD5&sign=38ADEF5A0A176503996F905716A740D5",
        ),
        (
            "client: HMAC-SHA256 signs as the reference digest",
            &[("app", "apptest")],
            SignType::HmacSha256,
            None,
            "app=apptest&auth_id=ABCDEF0123456789&timestamp=1500000000&sign_type=HMAC-SHA256&sign=94b36523f14091ff8bdfcf69219f030f3e7e01d787e6cf8114779a1c5e3503f0",
        ),
        (
            "client: the nonce is signed and sent",
            &[],
            SignType::Md5,
            Some("n1"),
            "auth_id=ABCDEF0123456789&timestamp=1500000000&nonce=n1&sign_type=MD5&sign=98E3EAED4008C0EBB3D0031F664EE421",
        ),
    ];
    let mut failures = Vec::new();
    for &(rule, params, t, nonce, want) in cases {
        let got = signed_query(PATH, params, "ABCDEF0123456789", KEY, t, TS, nonce);
        if got != want {
            failures.push(format!("{rule}: got {got}, want {want}"));
        }
        let nonces = NonceCache::new(4, 180);
        let outcome = check(PATH, &parse(&got, ""), KEY, &Policy::default(), &nonces, TS);
        if outcome.is_err() {
            failures.push(format!("{rule}: server says {outcome:?}"));
        }
    }
    // Awkward values round-trip through encoding and decoding.
    let awkward: &[(&str, &str)] = &[
        ("param", r#"{"cmd":"echo a+b & c=d %20"}"#),
        ("app", "你好 world"),
        ("empty", ""),
        ("trailing", "x  "),
    ];
    for t in SignType::ALL {
        let q = signed_query("//api//v2/x", awkward, "ID", "k e y ", t, TS, Some("n n"));
        let nonces = NonceCache::new(4, 180);
        let outcome = check(
            "//api//v2/x",
            &parse(&q, ""),
            "k e y ",
            &Policy::default(),
            &nonces,
            TS,
        );
        if outcome.is_err() {
            failures.push(format!(
                "client: awkward values with {t:?}: {outcome:?} for {q}"
            ));
        }
    }
    report(failures);
}

#[test]
fn precheck_returns_the_parsed_fields() {
    // Rule: §3 steps 1-5 hand back the first values, parsed, for steps 6-8.
    let p = parse(
        "auth_id=ABCDEF0123456789&timestamp=1500000000&nonce=n1&sign_type=md5&sign=27eff4389c07db5ca4945b585e5bbc79",
        "",
    );
    let pre = precheck(&p, &Policy::default(), TS).unwrap();
    assert_eq!(pre.auth_id, "ABCDEF0123456789");
    assert_eq!(pre.sign_type, SignType::Md5);
    assert_eq!(pre.sign, "27eff4389c07db5ca4945b585e5bbc79");
    assert_eq!(pre.timestamp, TS);
    assert_eq!(pre.nonce.as_deref(), Some("n1"));
}
