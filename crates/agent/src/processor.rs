//! Processors (mode P, agent-protocol §5): after an asynchronous run (queue, cron, agent cron)
//! in mode `P`, the agent hands `(instruct, flag, costtime, result)` to the app's processor.
//!
//! `apps/{app}/appcfg.json` names the processor:
//! * `{"Processor": {"Addr": "127.0.0.1", "Port": 10010, "Timeout": 0}}` → the original
//!   Thrift call `AppService.runProcessor(Reinstruct)`, binary protocol (strict), unframed
//!   (what Thrift calls the buffered transport). The encoder is the few lines below: one
//!   message of fixed shape does not justify a Thrift runtime and code generator.
//! * `{"Processor": {"Url": "http://127.0.0.1:10010/result", "Timeout": 5}}` (**ext**) → an
//!   HTTP POST of [`Delivery`] as JSON; any 2xx answer means delivered.
//!
//! Keys are matched without regard to case, as the original's Go decoder did. A delivery is
//! written to a spool directory (one file each, at most [`MAX_PENDING`]) before it is tried,
//! and removed once the processor has answered; a failed attempt is retried with exponential
//! back-off (each delivery on its own schedule, so one app's dead processor does not hold up
//! another's). A missing or broken `appcfg.json` is an error in the log and the delivery is
//! dropped: there is nowhere to deliver it. Nothing here panics on bad input.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most deliveries waiting in the spool; more are refused with a logged error.
pub const MAX_PENDING: usize = 10_000;
/// The time limit of one attempt when `appcfg.json` gives `Timeout` 0 (no limit) or none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from a processor.
const MAX_ANSWER: usize = 1 << 20;
/// How many spooled deliveries are looked at per pass.
const BATCH: usize = 256;

/// The instruction part of a delivery: the original `Instruct` struct.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ins {
    pub id: String,
    pub ip: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: String,
    pub app: String,
    pub func: String,
    pub param: String,
    pub timeout: i32,
    pub proxy: String,
}

/// What a processor receives: the original `Reinstruct` struct, and the HTTP body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub ins: Ins,
    pub flag: i32,
    pub costtime: i32,
    pub result: String,
}

/// Whether a run in `mode` of type `kind` goes to the processor: mode `P` (any case) of an
/// asynchronous run. An `rt` run never does (the original forced its mode to `np`).
pub fn wants_processor(kind: &str, mode: &str) -> bool {
    kind != "rt" && mode.trim().eq_ignore_ascii_case("p")
}

/// Where an app's processor listens, from its `appcfg.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Thrift {
        addr: String,
        port: u16,
        timeout: Duration,
    },
    Http {
        url: String,
        timeout: Duration,
    },
}

/// Looks a key up in a JSON object without regard to case.
fn get_ci<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Parses `appcfg.json` text into a [`Target`]; the error says what is wrong, in one line.
pub fn parse_appcfg(text: &str) -> Result<Target, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("appcfg.json is not JSON: {e}"))?;
    let p = get_ci(&v, "Processor")
        .filter(|p| p.is_object())
        .ok_or("appcfg.json has no \"Processor\" object")?;
    let timeout = match get_ci(p, "Timeout") {
        None | Some(serde_json::Value::Null) => DEFAULT_TIMEOUT,
        Some(t) => match t.as_u64() {
            Some(0) => DEFAULT_TIMEOUT,
            Some(s) => Duration::from_secs(s.min(3600)),
            None => return Err(format!("Processor.Timeout must be whole seconds, not {t}")),
        },
    };
    if let Some(url) = get_ci(p, "Url")
        .and_then(|u| u.as_str())
        .filter(|u| !u.is_empty())
    {
        if !url.starts_with("http://") {
            return Err(format!("Processor.Url must be an http:// URL, not {url:?}"));
        }
        return Ok(Target::Http {
            url: url.to_owned(),
            timeout,
        });
    }
    let addr = get_ci(p, "Addr")
        .and_then(|a| a.as_str())
        .filter(|a| !a.trim().is_empty())
        .ok_or("appcfg.json: Processor needs Url, or Addr and Port")?;
    let port = get_ci(p, "Port")
        .and_then(|p| {
            p.as_u64()
                .or_else(|| p.as_str().and_then(|s| s.trim().parse().ok()))
        })
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or("appcfg.json: Processor.Port must be a port number (1-65535)")?;
    Ok(Target::Thrift {
        addr: addr.trim().to_owned(),
        port,
        timeout,
    })
}

/// Reads `{apps_dir}/{app}/appcfg.json`.
pub fn read_target(apps_dir: &Path, app: &str) -> Result<Target, String> {
    if app.is_empty() || app.contains(['/', '\\', '\0']) || app == "." || app == ".." {
        return Err(format!("app [{app}] refused : not a single path component"));
    }
    let path = apps_dir.join(app).join("appcfg.json");
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_ANSWER as u64 {
        return Err(format!("{}: too large", path.display()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_appcfg(&text).map_err(|e| format!("app [{app}] {e}"))
}

// ---------------------------------------------------------------------------------------
// Thrift binary protocol: just what `runProcessor` needs.

const T_STOP: u8 = 0;
const T_I32: u8 = 8;
const T_STRING: u8 = 11;
const T_STRUCT: u8 = 12;
const VERSION_1: u32 = 0x8001_0000;
const CALL: u8 = 1;
const REPLY: u8 = 2;
const EXCEPTION: u8 = 3;

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_field(out: &mut Vec<u8>, ty: u8, id: i16) {
    out.push(ty);
    out.extend_from_slice(&id.to_be_bytes());
}

fn put_string_field(out: &mut Vec<u8>, id: i16, s: &str) {
    put_field(out, T_STRING, id);
    put_string(out, s);
}

fn put_i32_field(out: &mut Vec<u8>, id: i16, v: i32) {
    put_field(out, T_I32, id);
    out.extend_from_slice(&v.to_be_bytes());
}

/// The bytes of the call `runProcessor(reins)` with sequence id `seqid` (strict binary
/// protocol, unframed).
pub fn encode_run_processor(seqid: i32, d: &Delivery) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + d.result.len() + d.ins.param.len());
    out.extend_from_slice(&(VERSION_1 | u32::from(CALL)).to_be_bytes());
    put_string(&mut out, "runProcessor");
    out.extend_from_slice(&seqid.to_be_bytes());
    // runProcessor_args { 1: Reinstruct reins }
    put_field(&mut out, T_STRUCT, 1);
    // Reinstruct { 1: Instruct ins  3: i32 flag  4: i32 costtime  5: string result }
    put_field(&mut out, T_STRUCT, 1);
    let i = &d.ins;
    put_string_field(&mut out, 1, &i.id);
    put_string_field(&mut out, 2, &i.ip);
    put_string_field(&mut out, 3, &i.kind);
    put_string_field(&mut out, 4, &i.mode);
    put_string_field(&mut out, 5, &i.app);
    put_string_field(&mut out, 6, &i.func);
    put_string_field(&mut out, 7, &i.param);
    put_i32_field(&mut out, 8, i.timeout);
    put_string_field(&mut out, 9, &i.proxy);
    out.push(T_STOP);
    put_i32_field(&mut out, 3, d.flag);
    put_i32_field(&mut out, 4, d.costtime);
    put_string_field(&mut out, 5, &d.result);
    out.push(T_STOP); // end of Reinstruct
    out.push(T_STOP); // end of the arguments
    out
}

/// Reads a Thrift reply from a byte stream, with a cap on what it reads.
struct Reader<'a, R> {
    r: &'a mut R,
    read: usize,
}

impl<R: tokio::io::AsyncRead + Unpin> Reader<'_, R> {
    async fn bytes(&mut self, n: usize) -> Result<Vec<u8>, String> {
        self.read = self.read.saturating_add(n);
        if self.read > MAX_ANSWER {
            return Err("the processor's answer is too large".into());
        }
        let mut buf = vec![0u8; n];
        self.r
            .read_exact(&mut buf)
            .await
            .map_err(|e| format!("reading the processor's answer: {e}"))?;
        Ok(buf)
    }
    async fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1).await?[0])
    }
    async fn i16(&mut self) -> Result<i16, String> {
        let b = self.bytes(2).await?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    async fn i32(&mut self) -> Result<i32, String> {
        let b = self.bytes(4).await?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    async fn string_of(&mut self, len: i32) -> Result<String, String> {
        let len = usize::try_from(len).map_err(|_| "negative string length".to_owned())?;
        Ok(String::from_utf8_lossy(&self.bytes(len).await?).into_owned())
    }
    async fn string(&mut self) -> Result<String, String> {
        let len = self.i32().await?;
        self.string_of(len).await
    }

    /// Skips a value of type `ty`; nesting is bounded.
    async fn skip(&mut self, ty: u8, depth: u32) -> Result<(), String> {
        if depth > 16 {
            return Err("the processor's answer is nested too deeply".into());
        }
        match ty {
            2 | 3 => drop(self.bytes(1).await?),
            6 => drop(self.bytes(2).await?),
            T_I32 => drop(self.bytes(4).await?),
            4 | 10 => drop(self.bytes(8).await?),
            T_STRING => drop(self.string().await?),
            T_STRUCT => loop {
                let t = self.u8().await?;
                if t == T_STOP {
                    break;
                }
                self.i16().await?;
                Box::pin(self.skip(t, depth + 1)).await?;
            },
            13 => {
                let (k, v) = (self.u8().await?, self.u8().await?);
                let n = self.i32().await?;
                for _ in 0..n.max(0) {
                    Box::pin(self.skip(k, depth + 1)).await?;
                    Box::pin(self.skip(v, depth + 1)).await?;
                }
            }
            14 | 15 => {
                let e = self.u8().await?;
                let n = self.i32().await?;
                for _ in 0..n.max(0) {
                    Box::pin(self.skip(e, depth + 1)).await?;
                }
            }
            other => return Err(format!("unknown Thrift type {other} in the answer")),
        }
        Ok(())
    }

    /// Reads the reply to call `seqid`: the returned string, or the processor's exception.
    async fn reply(&mut self, seqid: i32) -> Result<String, String> {
        let first = self.i32().await?;
        let (ty, name, got_seq) = if first < 0 {
            let word = first as u32;
            if word & 0xffff_0000 != VERSION_1 {
                return Err(format!("bad Thrift version word {word:#x}"));
            }
            let name = self.string().await?;
            (word as u8, name, self.i32().await?)
        } else {
            let name = self.string_of(first).await?;
            let ty = self.u8().await?;
            (ty, name, self.i32().await?)
        };
        if name != "runProcessor" || got_seq != seqid {
            return Err(format!(
                "unexpected answer {name:?} (sequence {got_seq}, expected {seqid})"
            ));
        }
        let mut success = None;
        let mut message = String::new();
        loop {
            let t = self.u8().await?;
            if t == T_STOP {
                break;
            }
            let id = self.i16().await?;
            match (ty, id, t) {
                (REPLY, 0, T_STRING) => success = Some(self.string().await?),
                (EXCEPTION, 1, T_STRING) => message = self.string().await?,
                _ => self.skip(t, 0).await?,
            }
        }
        match ty {
            REPLY => success.ok_or_else(|| "runProcessor returned no value".to_owned()),
            EXCEPTION => Err(format!("the processor raised: {message}")),
            other => Err(format!("unexpected Thrift message type {other}")),
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// Calls `runProcessor` once; returns the processor's answer.
pub async fn call_thrift(addr: &str, port: u16, d: &Delivery) -> Result<String, String> {
    let seqid = (SEQ.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff) as i32;
    let mut stream = tokio::net::TcpStream::connect((addr, port))
        .await
        .map_err(|e| format!("cannot connect to the processor {addr}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(&encode_run_processor(seqid, d))
        .await
        .map_err(|e| format!("sending to the processor {addr}:{port}: {e}"))?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buffered = tokio::io::BufReader::new(stream);
    Reader {
        r: &mut buffered,
        read: 0,
    }
    .reply(seqid)
    .await
}

/// POSTs the delivery as JSON; any 2xx answer is success.
pub async fn call_http(
    client: &reqwest::Client,
    url: &str,
    d: &Delivery,
) -> Result<String, String> {
    let body = serde_json::to_vec(d).map_err(|e| e.to_string())?;
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("cannot POST to the processor {url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("the processor {url} answered {status}: {text}"))
    }
}

/// Delivers once to `target`, within its time limit.
pub async fn deliver(
    client: &reqwest::Client,
    target: &Target,
    d: &Delivery,
) -> Result<String, String> {
    let (fut, limit): (std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>>, _) = match target {
        Target::Thrift {
            addr,
            port,
            timeout,
        } => (Box::pin(call_thrift(addr, *port, d)), *timeout),
        Target::Http { url, timeout } => (Box::pin(call_http(client, url, d)), *timeout),
    };
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(format!("the processor did not answer within {limit:?}")))
}

// ---------------------------------------------------------------------------------------
// The spool and the delivery loop.

/// How deliveries are retried.
#[derive(Clone, Debug)]
pub struct Options {
    /// The spool directory.
    pub dir: PathBuf,
    /// Where the apps (and their `appcfg.json`) are.
    pub apps_dir: PathBuf,
    /// The first retry delay; it doubles up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

/// The processor deliverer: [`Processors::submit`] spools, [`Processors::run`] delivers.
pub struct Processors {
    opts: Options,
    client: reqwest::Client,
    wake: Notify,
    /// Per spooled file: failed attempts so far and when to try again.
    retry: Mutex<HashMap<PathBuf, (u32, Instant)>>,
    counter: AtomicU64,
    /// Called with each error (for the dashboard's error list).
    on_error: Box<dyn Fn(&str) + Send + Sync>,
}

impl Processors {
    /// Opens (creating, mode 0700) the spool directory.
    pub fn open(
        opts: Options,
        on_error: Box<dyn Fn(&str) + Send + Sync>,
    ) -> std::io::Result<Processors> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.dir)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Processors {
            opts,
            client,
            wake: Notify::new(),
            retry: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            on_error,
        })
    }

    fn error(&self, msg: &str) {
        tracing::error!(error = %msg, "processor");
        (self.on_error)(msg);
    }

    /// The spooled files, oldest first (at most `limit`), and how many there are.
    fn pending(&self, limit: usize) -> (Vec<PathBuf>, usize) {
        let Ok(entries) = std::fs::read_dir(&self.opts.dir) else {
            return (Vec::new(), 0);
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        let n = files.len();
        files.sort();
        files.truncate(limit);
        (files, n)
    }

    /// How many deliveries wait in the spool.
    pub fn pending_count(&self) -> usize {
        self.pending(0).1
    }

    /// Spools a delivery and wakes the delivery loop. A full spool or a write error is logged
    /// and the delivery is dropped: the result itself has already gone to the center.
    pub fn submit(&self, d: &Delivery) {
        if self.pending(0).1 >= MAX_PENDING {
            self.error(&format!(
                "app [{}] processor spool full ({MAX_PENDING} deliveries): result of {} dropped",
                d.ins.app, d.ins.id
            ));
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.opts.dir.join(format!("{now:024}-{n:08}.json"));
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(d)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            self.error(&format!(
                "app [{}] cannot spool a processor delivery: {e}",
                d.ins.app
            ));
            return;
        }
        self.wake.notify_one();
    }

    /// The delay before the next attempt after `failures` failed ones.
    fn backoff(&self, failures: u32) -> Duration {
        self.opts
            .retry_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.opts.retry_cap)
    }

    /// One pass over the spool: tries every delivery that is due. Returns when the next one
    /// is due (None when the spool is empty).
    pub async fn pass(&self) -> Option<Instant> {
        let (files, _) = self.pending(BATCH);
        let mut next: Option<Instant> = None;
        let mut seen = Vec::with_capacity(files.len());
        for path in files {
            seen.push(path.clone());
            let now = Instant::now();
            let due = self
                .retry
                .lock()
                .expect("retry poisoned")
                .get(&path)
                .copied();
            if let Some((_, at)) = due
                && at > now
            {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let d = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Delivery>(&b).map_err(|e| e.to_string()))
            {
                Ok(d) => d,
                Err(e) => {
                    self.error(&format!(
                        "unreadable processor delivery {} dropped: {e}",
                        path.display()
                    ));
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            };
            let target = match read_target(&self.opts.apps_dir, &d.ins.app) {
                Ok(t) => t,
                Err(e) => {
                    self.error(&format!("no processor for the result of {}: {e}", d.ins.id));
                    let _ = std::fs::remove_file(&path);
                    self.retry.lock().expect("retry poisoned").remove(&path);
                    continue;
                }
            };
            match deliver(&self.client, &target, &d).await {
                Ok(answer) => {
                    tracing::info!(app = %d.ins.app, id = %d.ins.id, answer = %answer, "processor called");
                    let _ = std::fs::remove_file(&path);
                    self.retry.lock().expect("retry poisoned").remove(&path);
                }
                Err(e) => {
                    let mut retry = self.retry.lock().expect("retry poisoned");
                    let failures = retry.get(&path).map_or(0, |r| r.0).saturating_add(1);
                    let at = Instant::now() + self.backoff(failures);
                    retry.insert(path.clone(), (failures, at));
                    drop(retry);
                    next = Some(next.map_or(at, |n| n.min(at)));
                    if failures == 1 || failures.is_power_of_two() {
                        self.error(&format!(
                            "app [{}] processor delivery of {} failed (attempt {failures}, will retry): {e}",
                            d.ins.app, d.ins.id
                        ));
                    }
                }
            }
        }
        // Forget retry state of files that are gone.
        self.retry
            .lock()
            .expect("retry poisoned")
            .retain(|p, _| seen.contains(p) || p.exists());
        next
    }

    /// Delivers spooled results until `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        loop {
            let next = self.pass().await;
            // An idle spool is still looked at now and then (files left by a previous run).
            let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_runs_go_to_the_processor() {
        let cases = [
            ("queue", "P", true),
            ("cron", "p", true),
            ("agentcron", " P ", true),
            ("queue", "NP", false),
            ("cron", "", false),
            ("rt", "P", false),
        ];
        for (kind, mode, want) in cases {
            assert_eq!(wants_processor(kind, mode), want, "{kind} {mode}");
        }
    }

    #[test]
    fn appcfg_rules() {
        let t = |s: u64| Duration::from_secs(s);
        let cases: &[(&str, Result<Target, &str>)] = &[
            (
                r#"{"Processor":{"Commnet":"x","Addr":"127.0.0.1","Port":10010,"Timeout":0}}"#,
                Ok(Target::Thrift {
                    addr: "127.0.0.1".into(),
                    port: 10010,
                    timeout: DEFAULT_TIMEOUT,
                }),
            ),
            (
                r#"{"processor":{"addr":"h","port":"9","timeout":3}}"#,
                Ok(Target::Thrift {
                    addr: "h".into(),
                    port: 9,
                    timeout: t(3),
                }),
            ),
            (
                r#"{"Processor":{"Url":"http://127.0.0.1:1/r","Timeout":5}}"#,
                Ok(Target::Http {
                    url: "http://127.0.0.1:1/r".into(),
                    timeout: t(5),
                }),
            ),
            ("{", Err("not JSON")),
            ("{}", Err("no \"Processor\" object")),
            (r#"{"Processor":1}"#, Err("no \"Processor\" object")),
            (r#"{"Processor":{}}"#, Err("needs Url, or Addr and Port")),
            (r#"{"Processor":{"Addr":"h"}}"#, Err("Port must be")),
            (
                r#"{"Processor":{"Addr":"h","Port":70000}}"#,
                Err("Port must be"),
            ),
            (
                r#"{"Processor":{"Addr":"h","Port":0}}"#,
                Err("Port must be"),
            ),
            (r#"{"Processor":{"Url":"ftp://x"}}"#, Err("http:// URL")),
            (
                r#"{"Processor":{"Addr":"h","Port":1,"Timeout":"x"}}"#,
                Err("whole seconds"),
            ),
        ];
        for (text, want) in cases {
            match (parse_appcfg(text), want) {
                (Ok(got), Ok(w)) => assert_eq!(&got, w, "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_missing_appcfg_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_target(dir.path(), "nope")
                .unwrap_err()
                .contains("appcfg.json")
        );
        assert!(
            read_target(dir.path(), "../x")
                .unwrap_err()
                .contains("refused")
        );
    }

    #[test]
    fn the_call_bytes_follow_the_idl() {
        let d = Delivery {
            ins: Ins {
                id: "I".into(),
                ip: "P".into(),
                kind: "queue".into(),
                mode: "P".into(),
                app: "a".into(),
                func: "f".into(),
                param: "{}".into(),
                timeout: 7,
                proxy: String::new(),
            },
            flag: -1,
            costtime: 258,
            result: "r".into(),
        };
        let b = encode_run_processor(5, &d);
        let mut want: Vec<u8> = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 12];
        want.extend_from_slice(b"runProcessor");
        want.extend_from_slice(&[0, 0, 0, 5]); // seqid
        want.extend_from_slice(&[12, 0, 1]); // args.reins
        want.extend_from_slice(&[12, 0, 1]); // reins.ins
        for (id, s) in [
            (1u8, "I"),
            (2, "P"),
            (3, "queue"),
            (4, "P"),
            (5, "a"),
            (6, "f"),
            (7, "{}"),
        ] {
            want.extend_from_slice(&[11, 0, id, 0, 0, 0, s.len() as u8]);
            want.extend_from_slice(s.as_bytes());
        }
        want.extend_from_slice(&[8, 0, 8, 0, 0, 0, 7]); // timeout
        want.extend_from_slice(&[11, 0, 9, 0, 0, 0, 0]); // proxy ""
        want.push(0); // end of ins
        want.extend_from_slice(&[8, 0, 3, 0xff, 0xff, 0xff, 0xff]); // flag -1
        want.extend_from_slice(&[8, 0, 4, 0, 0, 1, 2]); // costtime 258
        want.extend_from_slice(&[11, 0, 5, 0, 0, 0, 1, b'r']); // result
        want.extend_from_slice(&[0, 0]);
        assert_eq!(b, want);
    }

    async fn read_reply(bytes: &[u8], seq: i32) -> Result<String, String> {
        let mut r: &[u8] = bytes;
        Reader { r: &mut r, read: 0 }.reply(seq).await
    }

    #[tokio::test]
    async fn replies_are_read_strict_or_not_and_exceptions_are_errors() {
        let mut ok = vec![0x80, 0x01, 0x00, 0x02, 0, 0, 0, 12];
        ok.extend_from_slice(b"runProcessor");
        ok.extend_from_slice(&[0, 0, 0, 9, 11, 0, 0, 0, 0, 0, 7]);
        ok.extend_from_slice(b"success");
        ok.push(0);
        assert_eq!(read_reply(&ok, 9).await, Ok("success".into()));
        assert!(read_reply(&ok, 8).await.unwrap_err().contains("sequence"));

        let mut old = vec![0, 0, 0, 12];
        old.extend_from_slice(b"runProcessor");
        old.extend_from_slice(&[2, 0, 0, 0, 1]);
        // An unknown field (a list of two i32) before the answer is skipped.
        old.extend_from_slice(&[15, 0, 4, 8, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        old.extend_from_slice(&[11, 0, 0, 0, 0, 0, 2, b'o', b'k', 0]);
        assert_eq!(read_reply(&old, 1).await, Ok("ok".into()));

        let mut exc = vec![0x80, 0x01, 0x00, 0x03, 0, 0, 0, 12];
        exc.extend_from_slice(b"runProcessor");
        exc.extend_from_slice(&[0, 0, 0, 1, 11, 0, 1, 0, 0, 0, 4]);
        exc.extend_from_slice(b"boom");
        exc.extend_from_slice(&[8, 0, 2, 0, 0, 0, 6, 0]);
        assert!(read_reply(&exc, 1).await.unwrap_err().contains("boom"));

        for bad in [&ok[..10], &[0xff, 0xff, 0xff, 0xff][..], &[]] {
            assert!(read_reply(bad, 9).await.is_err());
        }
        // A huge declared string length is refused, not allocated.
        let mut huge = vec![0x80, 0x01, 0x00, 0x02, 0x7f, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0; 16]);
        assert!(
            read_reply(&huge, 1)
                .await
                .unwrap_err()
                .contains("too large")
        );
    }
}
