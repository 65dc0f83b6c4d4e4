//! Arbitrary worker stdout through the `<ElvesWFlag>`/`<ElvesWResult>` parser.
#![no_main]

use elves_worker_output::{Parsed, parse, tail};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse(data) {
        Parsed::Answer { result, .. } => {
            // An answer needs both pairs of markers, and the result is found inside the text.
            assert!(text.contains("<ElvesWFlag>") && text.contains("</ElvesWFlag>"));
            assert!(text.contains("<ElvesWResult>") && text.contains("</ElvesWResult>"));
            assert!(text.contains(result.as_str()));
        }
        Parsed::MissingFlag | Parsed::MissingResult => {}
    }
    let max = data.first().copied().unwrap_or(0) as usize;
    let t = tail(&text, max);
    assert!(t.len() <= max);
    assert!(text.ends_with(t));
});
