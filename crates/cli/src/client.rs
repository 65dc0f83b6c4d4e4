//! The API client commands: sign and send v2 requests.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use elves_sign::{SignType, signed_query};

/// Where and as whom to call the API.
#[derive(Args, Clone, Debug)]
pub struct Creds {
    /// The center's URL.
    #[arg(long, env = "ELVES_URL", default_value = "http://127.0.0.1:9091")]
    url: String,
    #[arg(long, env = "ELVES_AUTH_ID", hide_env_values = true)]
    auth_id: String,
    #[arg(long, env = "ELVES_AUTH_KEY", hide_env_values = true)]
    auth_key: String,
    /// MD5 or HMAC-SHA256.
    #[arg(long, default_value = "HMAC-SHA256")]
    sign_type: String,
}

#[derive(Subcommand)]
pub enum RtCmd {
    /// Runs APP.FUNC(PARAM) on the agent IP and waits for its answer.
    Exec {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        app: String,
        #[arg(long)]
        func: String,
        /// The param, JSON text.
        #[arg(long)]
        param: Option<String>,
        /// Seconds; 0 = no limit.
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        proxy: Option<String>,
    },
}

#[derive(Args)]
pub struct SignArgs {
    #[command(flatten)]
    creds: Creds,
    /// The request path, e.g. /api/v2/rt/exec.
    path: String,
    /// Parameters as name=value.
    params: Vec<String>,
}

fn sign_type(s: &str) -> anyhow::Result<SignType> {
    SignType::parse(s).with_context(|| format!("unknown --sign-type {s:?}: use MD5 or HMAC-SHA256"))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn query(creds: &Creds, path: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
    Ok(signed_query(
        path,
        params,
        &creds.auth_id,
        &creds.auth_key,
        sign_type(&creds.sign_type)?,
        now_secs(),
        None,
    ))
}

/// `elves sign PATH k=v…`
pub fn sign(args: SignArgs) -> anyhow::Result<()> {
    let mut pairs = Vec::new();
    for p in &args.params {
        let Some((k, v)) = p.split_once('=') else {
            bail!("parameter {p:?} is not name=value")
        };
        pairs.push((k, v));
    }
    println!("{}", query(&args.creds, &args.path, &pairs)?);
    Ok(())
}

/// Sends a signed POST and prints the envelope; exit status 0 only when `flag` is `"true"`.
fn call(creds: &Creds, path: &str, params: &[(&str, &str)]) -> ExitCode {
    let run = || -> anyhow::Result<bool> {
        let body = query(creds, path, params)?;
        let url = format!("{}{path}", creds.url.trim_end_matches('/'));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let text = rt.block_on(async {
            let resp = reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            resp.text().await.context("reading the answer")
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("the center's answer is not JSON: {text}"))?;
        println!("{}", text.trim_end());
        Ok(v["flag"] == "true")
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("elves: {e:#}");
            ExitCode::from(2)
        }
    }
}

pub fn rt(cmd: RtCmd) -> ExitCode {
    match cmd {
        RtCmd::Exec {
            creds,
            ip,
            app,
            func,
            param,
            timeout,
            proxy,
        } => {
            let mut p: Vec<(&str, &str)> = vec![("ip", &ip), ("app", &app), ("func", &func)];
            for (k, v) in [("param", &param), ("timeout", &timeout), ("proxy", &proxy)] {
                if let Some(v) = v {
                    p.push((k, v));
                }
            }
            call(&creds, "/api/v2/rt/exec", &p)
        }
    }
}
