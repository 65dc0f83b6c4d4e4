//! Parser for the answer an app worker prints on its standard output (agent-protocol §4).
//!
//! A worker prints, anywhere in its stdout, `<ElvesWFlag>{flag}</ElvesWFlag>` and
//! `<ElvesWResult>{result}</ElvesWResult>`. The flag text is everything between the **first**
//! opening marker and the **last** closing marker (the match is greedy and may span lines);
//! the result is extracted the same way. A flag of exactly `true` means success, any other
//! flag text means failure reported by the worker itself.
//!
//! This crate is pure: it has no dependencies and performs no I/O.

/// The default number of bytes of stdout quoted in error messages.
pub const DEFAULT_TAIL: usize = 2048;

const FLAG_OPEN: &str = "<ElvesWFlag>";
const FLAG_CLOSE: &str = "</ElvesWFlag>";
const RESULT_OPEN: &str = "<ElvesWResult>";
const RESULT_CLOSE: &str = "</ElvesWResult>";

/// The outcome of parsing a worker's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Both markers were found.
    Answer {
        /// True when the flag text is exactly `true` (no trimming, case-sensitive).
        flag_true: bool,
        /// The text between the first `<ElvesWResult>` and the last `</ElvesWResult>`.
        result: String,
    },
    /// The flag markers are missing (or the last closing marker precedes the first opening one).
    MissingFlag,
    /// The flag markers are present but the result markers are missing.
    MissingResult,
}

/// Returns the text between the first `open` and the last `close` that follows it.
///
/// It returns `None` when either marker is absent or when the last closing marker starts
/// before the end of the first opening marker.
fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text.rfind(close)?;
    if end < start {
        return None;
    }
    Some(&text[start..end])
}

/// Parses a worker's stdout.
///
/// The flag text is the text between the first `<ElvesWFlag>` and the last `</ElvesWFlag>`
/// (it may span lines); if the last closing marker comes before the first opening marker the
/// markers count as missing. A flag of exactly `true` gives `flag_true`. The result is
/// extracted likewise from `<ElvesWResult>` markers. The input bytes are converted to UTF-8
/// lossily, so invalid sequences become U+FFFD and never cause an error.
pub fn parse(stdout: &[u8]) -> Parsed {
    let text = String::from_utf8_lossy(stdout);
    let Some(flag) = between(&text, FLAG_OPEN, FLAG_CLOSE) else {
        return Parsed::MissingFlag;
    };
    let Some(result) = between(&text, RESULT_OPEN, RESULT_CLOSE) else {
        return Parsed::MissingResult;
    };
    Parsed::Answer {
        flag_true: flag == "true",
        result: result.to_owned(),
    }
}

/// Returns the last `max` bytes of `text`, cut on a character boundary.
///
/// When the cut would fall inside a multi-byte character, the whole character is dropped, so
/// the returned slice is never longer than `max` bytes and is always valid UTF-8.
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(flag_true: bool, result: &str) -> Parsed {
        Parsed::Answer {
            flag_true,
            result: result.to_owned(),
        }
    }

    #[test]
    fn parse_table() {
        let cases: Vec<(&str, &[u8], Parsed)> = vec![
            (
                "simple true",
                b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>ok</ElvesWResult>",
                answer(true, "ok"),
            ),
            (
                "simple false",
                b"<ElvesWFlag>false</ElvesWFlag><ElvesWResult>bad</ElvesWResult>",
                answer(false, "bad"),
            ),
            (
                "result before flag",
                b"<ElvesWResult>r</ElvesWResult><ElvesWFlag>true</ElvesWFlag>",
                answer(true, "r"),
            ),
            (
                "surrounding noise and lines",
                b"log line 1\n<ElvesWFlag>true</ElvesWFlag>\nmore log\n<ElvesWResult>x</ElvesWResult>\ntrailer\n",
                answer(true, "x"),
            ),
            (
                "markers spanning lines",
                b"<ElvesWFlag>\ntrue\n</ElvesWFlag><ElvesWResult>line1\nline2\n</ElvesWResult>",
                answer(false, "line1\nline2\n"),
            ),
            (
                "flag with leading space",
                b"<ElvesWFlag> true</ElvesWFlag><ElvesWResult>r</ElvesWResult>",
                answer(false, "r"),
            ),
            (
                "flag with trailing newline",
                b"<ElvesWFlag>true\n</ElvesWFlag><ElvesWResult>r</ElvesWResult>",
                answer(false, "r"),
            ),
            (
                "flag capitalised",
                b"<ElvesWFlag>True</ElvesWFlag><ElvesWResult>r</ElvesWResult>",
                answer(false, "r"),
            ),
            (
                "flag upper case",
                b"<ElvesWFlag>TRUE</ElvesWFlag><ElvesWResult>r</ElvesWResult>",
                answer(false, "r"),
            ),
            (
                "empty flag",
                b"<ElvesWFlag></ElvesWFlag><ElvesWResult>r</ElvesWResult>",
                answer(false, "r"),
            ),
            (
                "empty result",
                b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult></ElvesWResult>",
                answer(true, ""),
            ),
            (
                "repeated flag markers are greedy",
                b"<ElvesWFlag>true</ElvesWFlag><ElvesWFlag>true</ElvesWFlag><ElvesWResult>r</ElvesWResult>",
                answer(false, "r"),
            ),
            (
                "repeated result markers are greedy",
                b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>a</ElvesWResult>mid<ElvesWResult>b</ElvesWResult>",
                answer(true, "a</ElvesWResult>mid<ElvesWResult>b"),
            ),
            (
                "nested result markers",
                b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>x<ElvesWResult>y</ElvesWResult>z</ElvesWResult>",
                answer(true, "x<ElvesWResult>y</ElvesWResult>z"),
            ),
            (
                "flag markers inside the result text",
                b"<ElvesWResult>see <ElvesWFlag>true</ElvesWFlag> here</ElvesWResult>",
                answer(true, "see <ElvesWFlag>true</ElvesWFlag> here"),
            ),
            (
                "result contains json",
                b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>{\"a\":[1,2],\"b\":\"<x>\"}</ElvesWResult>",
                answer(true, "{\"a\":[1,2],\"b\":\"<x>\"}"),
            ),
            (
                "chinese text",
                "<ElvesWFlag>true</ElvesWFlag><ElvesWResult>你好，世界\n第二行</ElvesWResult>"
                    .as_bytes(),
                answer(true, "你好，世界\n第二行"),
            ),
            (
                "invalid utf-8 is replaced",
                b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>a\xff\xfeb</ElvesWResult>",
                answer(true, "a\u{fffd}\u{fffd}b"),
            ),
            (
                "invalid utf-8 in the flag",
                b"<ElvesWFlag>tr\xffue</ElvesWFlag><ElvesWResult>r</ElvesWResult>",
                answer(false, "r"),
            ),
            ("empty output", b"", Parsed::MissingFlag),
            ("no markers at all", b"hello world\n", Parsed::MissingFlag),
            (
                "flag close missing",
                b"<ElvesWFlag>true<ElvesWResult>r</ElvesWResult>",
                Parsed::MissingFlag,
            ),
            (
                "flag open missing",
                b"true</ElvesWFlag><ElvesWResult>r</ElvesWResult>",
                Parsed::MissingFlag,
            ),
            (
                "flag close before open",
                b"</ElvesWFlag>true<ElvesWFlag><ElvesWResult>r</ElvesWResult>",
                Parsed::MissingFlag,
            ),
            (
                "flag close before open, other close earlier",
                b"</ElvesWFlag><ElvesWFlag>true",
                Parsed::MissingFlag,
            ),
            (
                "only the flag",
                b"<ElvesWFlag>true</ElvesWFlag>",
                Parsed::MissingResult,
            ),
            (
                "result close missing",
                b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>r",
                Parsed::MissingResult,
            ),
            (
                "result open missing",
                b"<ElvesWFlag>false</ElvesWFlag>r</ElvesWResult>",
                Parsed::MissingResult,
            ),
            (
                "result close before open",
                b"<ElvesWFlag>true</ElvesWFlag></ElvesWResult>r<ElvesWResult>",
                Parsed::MissingResult,
            ),
            (
                "lower-case markers are not markers",
                b"<elveswflag>true</elveswflag><elveswresult>r</elveswresult>",
                Parsed::MissingFlag,
            ),
            (
                "both missing reports the flag first",
                b"nothing",
                Parsed::MissingFlag,
            ),
        ];
        let mut failures = Vec::new();
        for (name, input, want) in &cases {
            let got = parse(input);
            if &got != want {
                failures.push(format!("{name}: got {got:?}, want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    }

    #[test]
    fn tail_table() {
        let cases: Vec<(&str, &str, usize, &str)> = vec![
            ("short text kept whole", "hello", 10, "hello"),
            ("exact length kept whole", "hello", 5, "hello"),
            ("ascii cut", "hello world", 5, "world"),
            ("zero max", "hello", 0, ""),
            ("empty text", "", 4, ""),
            ("cut inside a char drops it", "a你好", 4, "好"),
            ("cut on a boundary", "a你好", 6, "你好"),
            ("whole when it fits", "a你好", 7, "a你好"),
            ("too small for any char", "你", 2, ""),
        ];
        for (name, text, max, want) in cases {
            let got = tail(text, max);
            assert_eq!(got, want, "{name}");
            assert!(got.len() <= max, "{name}: longer than max");
        }
    }

    #[test]
    fn default_tail_is_used_on_large_text() {
        let text = "x".repeat(DEFAULT_TAIL * 3);
        assert_eq!(tail(&text, DEFAULT_TAIL).len(), DEFAULT_TAIL);
    }
}
