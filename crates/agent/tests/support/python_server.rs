//! A Python test server (a processor built on `sdk/python`) whose stdout lines arrive on a
//! channel. Shared by the agent's processor interop test and the CLI's end-to-end agent test
//! (`#[path]`-included).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Spawns `cmd` (a `python3 …` that prints `PORT n` first) with its stdout read line by line
/// on a thread; returns the child, the channel of its later lines and the port, or panics with
/// `hint` when it did not start within 20 s.
pub fn spawn(mut cmd: Command, hint: &str) -> (Child, mpsc::Receiver<String>, u16) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed");
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{hint}"));
    let port = first
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    (child, lines, port)
}
