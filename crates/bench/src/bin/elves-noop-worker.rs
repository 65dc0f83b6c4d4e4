//! A native no-op app worker (agent-protocol §3–§4): ignores its arguments, prints a `true`
//! flag and the result `ok`, and exits 0. The baseline worker of `elves-bench rt-latency`.

use std::io::Write;

fn main() {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>ok</ElvesWResult>");
    let _ = out.flush();
}
