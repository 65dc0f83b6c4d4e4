//! `elves-agent --config FILE`: the lean agent binary (same as `elves agent --config FILE`).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config: Option<PathBuf> = None;
    let mut json = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config = args.next().map(PathBuf::from),
            "--log-format" => match args.next().as_deref() {
                Some("json") => json = true,
                Some("text") => json = false,
                other => {
                    eprintln!("elves-agent: --log-format must be text or json, not {other:?}");
                    return ExitCode::from(2);
                }
            },
            "--version" | "-v" => {
                println!("elves-agent {}", elves_agent::link::VERSION);
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("usage: elves-agent --config FILE [--log-format text|json]");
                return ExitCode::from(2);
            }
        }
    }
    elves_config::init_logging(json);
    match elves_agent::main_with(config.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elves-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
