//! `elves-bench callgrind OP --iters N`: runs one hot pure path N times and nothing else, so
//! that `scripts/callgrind.sh` can count its instructions under valgrind (the count of a run
//! of N minus that of a run of 0, divided by N). Instruction counts do not move with the
//! machine's load, so a regression shows even on a noisy machine.

use std::hint::black_box;

use anyhow::Context;
use clap::{Args, ValueEnum};
use elves_cron_expr::Schedule;
use elves_cron_expr::jiff::{Timestamp, tz::TimeZone};
use elves_sign::{NonceCache, Params, Policy, SignType, signed_query};

#[derive(Clone, Copy, ValueEnum)]
pub enum Op {
    /// Parse a signed rt/exec query, then §3 steps 1–5 and 7–8 (HMAC-SHA256, no nonce).
    SignVerify,
    /// The same with MD5.
    SignVerifyMd5,
    /// Parse a worker's typical stdout (markers around a 200-byte result).
    OutputParse,
    /// Parse 64 KiB of worker stdout (noise, then the markers).
    OutputParse64k,
    /// Next fire of `0 0/15 * * * ?` in Asia/Shanghai after a moving instant.
    CronNext,
    /// Next fire of `0 30 2 ? * MON-FRI` in Europe/Berlin (DST rules in play).
    CronNextDst,
}

#[derive(Args)]
pub struct CallgrindArgs {
    op: Op,
    /// Repetitions (0 measures the set-up alone).
    #[arg(long, default_value_t = 1000)]
    iters: u64,
}

const NOW: i64 = 1_700_000_000;

pub fn callgrind(args: CallgrindArgs) -> anyhow::Result<()> {
    let n = args.iters;
    match args.op {
        Op::SignVerify | Op::SignVerifyMd5 => {
            let st = if matches!(args.op, Op::SignVerify) {
                SignType::HmacSha256
            } else {
                SignType::Md5
            };
            let path = "/api/v2/rt/exec";
            let key = "0123456789ABCDEF0123456789ABCDEF";
            let query = signed_query(
                path,
                &[
                    ("ip", "10.1.2.3"),
                    ("app", "deploy"),
                    ("func", "restart"),
                    ("param", r#"{"service":"nginx","graceful":true}"#),
                    ("timeout", "30"),
                ],
                "ABCDEF0123456789",
                key,
                st,
                NOW,
                None,
            );
            let policy = Policy::default();
            let nonces = NonceCache::new(16, policy.window_secs);
            for _ in 0..n {
                let mut p = Params::new();
                p.extend_urlencoded(black_box(query.as_bytes()));
                let pre = elves_sign::precheck(&p, &policy, NOW)
                    .ok()
                    .context("precheck")?;
                elves_sign::verify(path, &p, &pre, black_box(key), &nonces, NOW)
                    .ok()
                    .context("verify")?;
            }
        }
        Op::OutputParse | Op::OutputParse64k => {
            let mut out = Vec::new();
            if matches!(args.op, Op::OutputParse64k) {
                while out.len() < 64 * 1024 - 300 {
                    out.extend_from_slice(b"INFO step done, moving on to the next one\n");
                }
            }
            out.extend_from_slice(b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>");
            out.extend(std::iter::repeat_n(b'r', 200));
            out.extend_from_slice(b"</ElvesWResult>\n");
            for _ in 0..n {
                black_box(elves_worker_output::parse(black_box(&out)));
            }
        }
        Op::CronNext | Op::CronNextDst => {
            let (rule, zone) = if matches!(args.op, Op::CronNext) {
                ("0 0/15 * * * ?", "Asia/Shanghai")
            } else {
                ("0 30 2 ? * MON-FRI", "Europe/Berlin")
            };
            let s = Schedule::parse_quartz(rule).map_err(|e| anyhow::anyhow!("{e}"))?;
            let tz = TimeZone::get(zone)?;
            let mut at = Timestamp::from_second(NOW)?;
            for _ in 0..n {
                at = s.next_after(black_box(at), &tz).context("no next fire")?;
            }
            black_box(at);
        }
    }
    Ok(())
}
