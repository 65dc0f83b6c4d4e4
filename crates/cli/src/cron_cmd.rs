//! `elves cron add|start|stop|delete|detail|list` (operations.md): the v2 cron routes, and
//! `elves cron next` (evaluated locally, see `cron_next`).

use std::process::ExitCode;

use clap::Subcommand;

use crate::client::{Creds, call};
use crate::cron_next;

// Parsed once per process; boxing the big variant would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum CronCmd {
    /// Prints the next fire times of a Quartz rule.
    Next(cron_next::CronNextArgs),
    /// Creates a cron (started at once); prints its id.
    Add {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        app: String,
        #[arg(long)]
        func: String,
        /// A Quartz rule, e.g. "0 0/15 * * * ?".
        #[arg(long)]
        rule: String,
        /// The param, JSON text.
        #[arg(long)]
        param: Option<String>,
        /// NP (default) or P.
        #[arg(long)]
        mode: Option<String>,
        /// Seconds; 0 = no limit.
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        proxy: Option<String>,
        /// IANA zone the rule is read in (default: the center's).
        #[arg(long)]
        tz: Option<String>,
        /// fire_once (default) or skip.
        #[arg(long)]
        misfire: Option<String>,
    },
    /// Starts a stopped cron.
    Start {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        cron_id: String,
    },
    /// Stops a cron.
    Stop {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        cron_id: String,
    },
    /// Deletes a cron and its history.
    Delete {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        cron_id: String,
    },
    /// Prints a cron, its last result and its next fire time.
    Detail {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        cron_id: String,
    },
    /// Prints the ids of your crons (on one agent with --ip).
    List {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        ip: Option<String>,
    },
}

pub fn run(cmd: CronCmd) -> ExitCode {
    match cmd {
        CronCmd::Next(args) => match cron_next::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("elves: {e:#}");
                ExitCode::FAILURE
            }
        },
        CronCmd::Add {
            creds,
            ip,
            app,
            func,
            rule,
            param,
            mode,
            timeout,
            proxy,
            tz,
            misfire,
        } => {
            let mut p: Vec<(&str, &str)> =
                vec![("ip", &ip), ("app", &app), ("func", &func), ("rule", &rule)];
            for (k, v) in [
                ("param", &param),
                ("mode", &mode),
                ("timeout", &timeout),
                ("proxy", &proxy),
                ("tz", &tz),
                ("misfire", &misfire),
            ] {
                if let Some(v) = v {
                    p.push((k, v));
                }
            }
            call(&creds, "/api/v2/cron/add", &p)
        }
        CronCmd::Start { creds, cron_id } => {
            call(&creds, "/api/v2/cron/start", &[("cron_id", &cron_id)])
        }
        CronCmd::Stop { creds, cron_id } => {
            call(&creds, "/api/v2/cron/stop", &[("cron_id", &cron_id)])
        }
        CronCmd::Delete { creds, cron_id } => {
            call(&creds, "/api/v2/cron/delete", &[("cron_id", &cron_id)])
        }
        CronCmd::Detail { creds, cron_id } => {
            call(&creds, "/api/v2/cron/detail", &[("cron_id", &cron_id)])
        }
        CronCmd::List { creds, ip } => match &ip {
            Some(ip) => call(&creds, "/api/v2/cron/list", &[("ip", ip)]),
            None => call(&creds, "/api/v2/cron/list", &[]),
        },
    }
}
