//! A closed-loop HTTP/1.1 load generator on keep-alive connections, for the throughput
//! scenarios (`rt-throughput`, `api`): each connection sends one request, reads the whole
//! answer, checks it and sends the next, until the run's end. Lean on purpose (no client
//! library): the generator shares the machine's two cores with the center it measures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::STEP_LIMIT;

/// The largest answer read.
const MAX_ANSWER: usize = 1 << 20;
/// Latency samples kept per run (beyond it, rates are still counted).
const MAX_SAMPLES: usize = 2_000_000;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: &str) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(STEP_LIMIT, TcpStream::connect(addr))
            .await
            .context("connecting: over the step limit")?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    /// Sends `req` (a whole request) and returns the status and the body of the answer.
    pub async fn request(&mut self, req: &[u8]) -> anyhow::Result<(u16, &[u8])> {
        tokio::time::timeout(STEP_LIMIT, self.exchange(req))
            .await
            .context("request over the step limit")?
    }

    async fn exchange(&mut self, req: &[u8]) -> anyhow::Result<(u16, &[u8])> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        let (head_end, status, len) = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                let (status, len) = parse_head(&self.buf[..p])?;
                break (p + 4, status, len);
            }
            self.fill().await?;
        };
        ensure!(len <= MAX_ANSWER, "answer of {len} bytes");
        while self.buf.len() < head_end + len {
            self.fill().await?;
        }
        Ok((status, &self.buf[head_end..head_end + len]))
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        ensure!(
            self.buf.len() < MAX_ANSWER,
            "answer over {MAX_ANSWER} bytes"
        );
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Status and `Content-Length` of an answer's head (chunked answers are refused: the center
/// answers with a length).
fn parse_head(head: &[u8]) -> anyhow::Result<(u16, usize)> {
    let head = std::str::from_utf8(head).context("answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            return Ok((status, v.trim().parse().context("content-length")?));
        }
    }
    bail!("answer without content-length: {head}")
}

/// `GET target` on `host`.
pub fn get(host: &str, target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// `POST path` with a form body.
pub fn post_form(host: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a closed-loop run measured.
pub struct LoadResult {
    pub ok: u64,
    pub failed: u64,
    /// From the first request to the last answer.
    pub wall: Duration,
    /// Microseconds, per answered request (capped at [`MAX_SAMPLES`]).
    pub latencies_us: Vec<f64>,
    pub first_failure: Option<String>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Builds request number `i` of connection `conn`.
pub type MakeRequest = Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>;
/// Whether an answer (status, body) is a success.
pub type Check = fn(u16, &[u8]) -> bool;

/// `conns` connections to `addr`, each sending requests one after the other for `duration`.
pub async fn closed_loop(
    addr: &str,
    conns: usize,
    duration: Duration,
    make: MakeRequest,
    check: Check,
) -> anyhow::Result<LoadResult> {
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(Conn::connect(addr).await?);
    }
    let t0 = Instant::now();
    let end = t0 + duration;
    let per_conn = MAX_SAMPLES / conns.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for (k, mut conn) in opened.into_iter().enumerate() {
        let make = make.clone();
        tasks.spawn(async move {
            let (mut ok, mut failed, mut first) = (0u64, 0u64, None::<String>);
            let mut lat = Vec::with_capacity(per_conn.min(100_000));
            let mut i = 0u64;
            while Instant::now() < end {
                let req = make(k, i);
                i += 1;
                let s = Instant::now();
                match conn.request(&req).await {
                    Ok((status, body)) if check(status, body) => {
                        ok += 1;
                        if lat.len() < per_conn {
                            lat.push(s.elapsed().as_secs_f64() * 1e6);
                        }
                    }
                    Ok((status, body)) => {
                        failed += 1;
                        first.get_or_insert_with(|| {
                            format!("HTTP {status}: {}", String::from_utf8_lossy(body))
                        });
                    }
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert_with(|| format!("{e:#}"));
                        // The connection is in an unknown state: open another one.
                        match Conn::connect(&conn_addr(&conn)).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (ok, failed, first, lat, Instant::now())
        });
    }
    let mut r = LoadResult {
        ok: 0,
        failed: 0,
        wall: Duration::ZERO,
        latencies_us: Vec::new(),
        first_failure: None,
    };
    let mut last = t0;
    while let Some(done) = tasks.join_next().await {
        let (ok, failed, first, lat, at) = done.context("a load task panicked")?;
        r.ok += ok;
        r.failed += failed;
        if r.first_failure.is_none() {
            r.first_failure = first;
        }
        r.latencies_us.extend(lat);
        last = last.max(at);
    }
    r.wall = last - t0;
    Ok(r)
}

fn conn_addr(c: &Conn) -> String {
    c.stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// A v2 envelope answer with `flag` `"true"`.
pub fn envelope_ok(status: u16, body: &[u8]) -> bool {
    status == 200 && find(body, br#""flag":"true""#).is_some()
}

/// Any 200 answer.
pub fn status_ok(status: u16, _body: &[u8]) -> bool {
    status == 200
}

/// CPU time (user + system) of a process so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = elves_bench::proc_stat_cpu_ticks(&stat)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_or_refused() {
        let cases: &[(&str, Option<(u16, usize)>)] = &[
            ("HTTP/1.1 200 OK\r\ncontent-length: 12", Some((200, 12))),
            (
                "HTTP/1.1 404 Not Found\r\nX: y\r\nContent-Length: 0",
                Some((404, 0)),
            ),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked", None),
            ("garbage", None),
        ];
        for (head, want) in cases {
            assert_eq!(parse_head(head.as_bytes()).ok(), *want, "{head}");
        }
    }

    #[test]
    fn envelope_check() {
        assert!(envelope_ok(200, br#"{"flag":"true","error":""}"#));
        assert!(!envelope_ok(200, br#"{"flag":"false","error":"[401.5]"}"#));
        assert!(!envelope_ok(500, br#"{"flag":"true"}"#));
    }
}
