//! `elves`: every role in one binary (operations.md).

mod admin;
mod client;
mod cron_cmd;
mod cron_next;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "elves",
    version,
    about = "Elves: run app functions on your fleet"
)]
struct Cli {
    /// Log format of long-running roles.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Quick start: center, local agent (127.0.0.1) and the demo app, no external services.
    Up(up::UpArgs),
    /// A center process running the modules its configuration enables.
    Center {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// An agent.
    Agent {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Real-time tasks.
    Rt {
        #[command(subcommand)]
        cmd: client::RtCmd,
    },
    /// Queues of dependent tasks.
    Queue {
        #[command(subcommand)]
        cmd: client::QueueCmd,
    },
    /// Cron rules.
    Cron {
        #[command(subcommand)]
        cmd: cron_cmd::CronCmd,
    },
    /// App packages.
    App {
        #[command(subcommand)]
        cmd: AppCmd,
    },
    /// Supervisor administration over the admin API.
    Admin(admin::AdminArgs),
    /// Prints the signed query string for a request to PATH with k=v parameters.
    Sign(client::SignArgs),
}

#[derive(Subcommand)]
enum AppCmd {
    /// Builds APP_VERSION.zip from an app directory.
    Pack {
        /// The app directory (its content becomes the package's top level).
        dir: PathBuf,
        #[arg(long)]
        app: String,
        #[arg(long)]
        version: String,
        /// Where to write the package (default: the current directory).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.log_format == "json";
    let result = match cli.cmd {
        Cmd::Up(args) => {
            elves_config::init_logging(json);
            up::run(args)
        }
        Cmd::Center { config } => {
            elves_config::init_logging(json);
            run_center(&config)
        }
        Cmd::Agent { config } => {
            elves_config::init_logging(json);
            elves_agent::main_with(Some(&config))
        }
        Cmd::Rt { cmd } => return client::rt(cmd),
        Cmd::Queue { cmd } => return client::queue(cmd),
        Cmd::Admin(args) => return admin::run(args),
        Cmd::Cron { cmd } => return cron_cmd::run(cmd),
        Cmd::App {
            cmd:
                AppCmd::Pack {
                    dir,
                    app,
                    version,
                    out,
                },
        } => elves_agent::pack::pack(&dir, &app, &version, &out)
            .map(|path| println!("{}", path.display()))
            .map_err(Into::into),
        Cmd::Sign(args) => client::sign(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elves: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_center(config: &std::path::Path) -> anyhow::Result<()> {
    let cfg = elves_config::CenterConfig::load(Some(config))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cancel = tokio_util::sync::CancellationToken::new();
        let center = elves_center::Center::start(cfg, cancel.clone()).await?;
        tokio::spawn(async move {
            elves_agent::shutdown_signal().await;
            cancel.cancel();
        });
        center.wait().await
    })
}
