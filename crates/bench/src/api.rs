//! `elves-bench api`: signed `info/agents/detail` requests per second on keep-alive
//! connections, against `/healthz` on the same server with the same generator (the ceiling
//! of HTTP and the generator on this machine), in alternating rounds.
//!
//! `info/*` routes need supervisor mode, so the center is `elves up` (supervisor mode, demo app
//! bound to its local agent `127.0.0.1`, API key in `DIR/api-key.toml`) on free ports in a
//! temporary directory.

use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::Args;
use elves_bench::{Summary, TABLE_HEAD, row};
use elves_sign::{SignType, signed_query};

use crate::harness::{Machine, free_port, loadavg};
use crate::load::{self, Conn, cpu_time};

const PATH: &str = "/api/v2/info/agents/detail";
const READY_LIMIT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct ApiArgs {
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    conns: u32,
    /// Seconds of load per measure.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    secs: u64,
    /// Rounds (each: `/healthz`, then `info/agents/detail`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Threads of the load generator.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    client_threads: u32,
    /// MD5 or HMAC-SHA256.
    #[arg(long, default_value = "HMAC-SHA256")]
    sign_type: String,
    /// Where `elves` is; default: next to this executable.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `elves up` as a child; killed when dropped (and by the kernel if the bench dies).
struct Up {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_up(elves: &std::path::Path, api: &str, agents: &str) -> anyhow::Result<(Up, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("elves-bench-api-")
        .tempdir()?;
    let data = dir.path().join("data");
    let err = std::fs::File::create(dir.path().join("up.stderr"))?;
    let mut cmd = crate::harness::elves_command(elves, err, "warn");
    cmd.args(["--log-format", "json", "up", "--data"])
        .arg(&data)
        .args(["--listen", api, "--agents-listen", agents]);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} up", elves.display()))?;
    Ok((Up { child, _dir: dir }, data))
}

pub fn api(args: ApiArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let sign_type = SignType::parse(&args.sign_type)
        .with_context(|| format!("unknown --sign-type {:?}", args.sign_type))?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench executable has no directory")?
            .to_owned(),
    };
    let elves = bin_dir.join("elves");
    ensure!(
        elves.is_file(),
        "{} not found: build elves-cli first (or pass --bin-dir)",
        elves.display()
    );
    let m = Machine::describe();
    let load_start = loadavg();
    let api_addr = format!("127.0.0.1:{}", free_port()?);
    let agents_addr = format!("127.0.0.1:{}", free_port()?);
    let (mut up, data) = start_up(&elves, &api_addr, &agents_addr)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads as usize)
        .enable_all()
        .build()?;

    // The API key `elves up` wrote, then a first successful request (the agent has linked).
    let key_file = data.join("api-key.toml");
    let (auth_id, auth_key) = loop {
        if let Some(status) = up.child.try_wait()? {
            bail!("elves up exited ({status})");
        }
        if let Ok(text) = std::fs::read_to_string(&key_file)
            && let Ok(t) = text.parse::<toml::Table>()
            && let (Some(id), Some(key)) = (
                t.get("auth_id").and_then(|v| v.as_str()),
                t.get("auth_key").and_then(|v| v.as_str()),
            )
        {
            break (id.to_owned(), key.to_owned());
        }
        ensure!(
            started.elapsed() < READY_LIMIT,
            "elves up wrote no api-key.toml in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let sign = {
        let (id, key, addr) = (auth_id.clone(), auth_key.clone(), api_addr.clone());
        move || {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            let q = signed_query(
                PATH,
                &[("ip", "127.0.0.1")],
                &id,
                &key,
                sign_type,
                now,
                None,
            );
            load::get(&addr, &format!("{PATH}?{q}"))
        }
    };
    rt.block_on(async {
        loop {
            let last = match Conn::connect(&api_addr).await {
                Ok(mut c) => match c.request(&sign()).await {
                    Ok((s, b)) if load::envelope_ok(s, b) => break anyhow::Ok(()),
                    Ok((s, b)) => format!("HTTP {s}: {}", String::from_utf8_lossy(b)),
                    Err(e) => format!("{e:#}"),
                },
                Err(e) => format!("{e:#}"),
            };
            ensure!(
                started.elapsed() < READY_LIMIT,
                "info/agents/detail never succeeded: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    eprintln!(
        "elves-bench: elves up ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let pid = up.child.id();
    let api_req: load::MakeRequest = Arc::new(move |_, _| sign());
    let health = load::get(&api_addr, "/healthz");
    let health_req: load::MakeRequest = Arc::new(move |_, _| health.clone());
    let run = |make: &load::MakeRequest, check: load::Check| {
        let c0 = cpu_time(pid).unwrap_or_default();
        let g0 = cpu_time(std::process::id()).unwrap_or_default();
        let r = rt.block_on(load::closed_loop(
            &api_addr,
            args.conns as usize,
            Duration::from_secs(args.secs),
            make.clone(),
            check,
        ));
        let c1 = cpu_time(pid).unwrap_or_default();
        let g1 = cpu_time(std::process::id()).unwrap_or_default();
        r.map(|r| (r, c1 - c0, g1 - g0))
    };
    // Warm-up: one short run of each.
    let _ = run(&health_req, load::status_ok)?;
    let _ = run(&api_req, load::envelope_ok)?;
    let mut rows = Vec::new();
    for _ in 0..args.rounds {
        let h = run(&health_req, load::status_ok)?;
        let a = run(&api_req, load::envelope_ok)?;
        ensure!(
            a.0.failed == 0 && h.0.failed == 0,
            "failed requests: {} api, {} healthz; first: {}",
            a.0.failed,
            h.0.failed,
            a.0.first_failure.or(h.0.first_failure).unwrap_or_default()
        );
        eprintln!(
            "elves-bench: healthz {:.0}/s, info/agents/detail {:.0}/s",
            h.0.rate(),
            a.0.rate()
        );
        rows.push((h, a));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = elves_bench::proc_status_kb(&status, "VmHWM").unwrap_or_default();
    drop(up);

    let mut out = format!(
        "## api\n\n{} keep-alive connections, {} generator thread(s), {} rounds of {} s per series \
         (after a warm-up of each); signed ({}) `GET {PATH}?ip=127.0.0.1`, signed per request, \
         against `GET /healthz` on the same server.\n\n{}\nload average: {} at the start, {} at the end; \
         `elves up` peak RSS {:.1} MiB\n\n\
         | round | `/healthz` req/s (**baseline**) | **info/agents/detail req/s** | ratio | center CPU µs/req (healthz, api) | generator CPU µs/req (healthz, api) |\n\
         |--:|--:|--:|--:|--:|--:|\n",
        args.conns,
        args.client_threads,
        rows.len(),
        args.secs,
        sign_type.name(),
        m.lines(),
        load_start,
        loadavg(),
        rss as f64 / 1024.0,
    );
    let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    let mut rates = Vec::new();
    let mut lat = Vec::new();
    for (i, (h, a)) in rows.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.0} | **{:.0}** | {:.2} | {:.0}, {:.0} | {:.0}, {:.0} |\n",
            i + 1,
            h.0.rate(),
            a.0.rate(),
            a.0.rate() / h.0.rate(),
            per(h.1, h.0.ok),
            per(a.1, a.0.ok),
            per(h.2, h.0.ok),
            per(a.2, a.0.ok),
        ));
        rates.push(a.0.rate());
        lat.extend_from_slice(&a.0.latencies_us);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    out.push_str(&format!(
        "\nMedian: **{median:.0} requests/s** (target ≥ 20,000: {}).\n\n",
        if median >= 20_000.0 { "met" } else { "missed" }
    ));
    if let Some(s) = Summary::of(&lat) {
        out.push_str(&format!(
            "{TABLE_HEAD}\n{}\n\n",
            row("info/agents/detail under load", &s)
        ));
    }
    print!("{out}");
    if let Some(p) = &args.out {
        std::fs::write(p, &out).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
