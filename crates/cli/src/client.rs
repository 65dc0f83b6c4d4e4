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

/// The task options shared by `queue add` and `queue quick`.
#[derive(Args, Clone, Debug)]
pub struct TaskArgs {
    #[arg(long)]
    ip: String,
    #[arg(long)]
    func: String,
    /// The param, JSON text.
    #[arg(long)]
    param: Option<String>,
    /// NP (default) or P (also hand the result to the app's processor).
    #[arg(long)]
    mode: Option<String>,
    /// Seconds; 0 = no limit.
    #[arg(long)]
    timeout: Option<String>,
    #[arg(long)]
    proxy: Option<String>,
}

impl TaskArgs {
    fn push<'a>(&'a self, p: &mut Vec<(&'static str, &'a str)>) {
        p.push(("ip", &self.ip));
        p.push(("func", &self.func));
        for (k, v) in [
            ("param", &self.param),
            ("mode", &self.mode),
            ("timeout", &self.timeout),
            ("proxy", &self.proxy),
        ] {
            if let Some(v) = v {
                p.push((k, v));
            }
        }
    }
}

#[derive(Subcommand)]
pub enum QueueCmd {
    /// Creates a pending queue for APP; prints its id.
    Create {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        app: String,
    },
    /// Adds a task to a pending queue.
    Add {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        queue_id: String,
        #[command(flatten)]
        task: TaskArgs,
        /// A task of the same queue this one waits for.
        #[arg(long)]
        depend_task_id: Option<String>,
    },
    /// Commits a queue: its root tasks start.
    Commit {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        queue_id: String,
    },
    /// Stops a queue: pending tasks stop, running ones are cancelled on their agents.
    Stop {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        queue_id: String,
    },
    /// Prints every task's status and result.
    Result {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        queue_id: String,
    },
    /// A queue of one task, committed at once.
    Quick {
        #[command(flatten)]
        creds: Creds,
        #[arg(long)]
        app: String,
        #[command(flatten)]
        task: TaskArgs,
    },
}

pub fn queue(cmd: QueueCmd) -> ExitCode {
    match cmd {
        QueueCmd::Create { creds, app } => call(&creds, "/api/v2/queue/create", &[("app", &app)]),
        QueueCmd::Add {
            creds,
            queue_id,
            task,
            depend_task_id,
        } => {
            let mut p = vec![("queue_id", queue_id.as_str())];
            task.push(&mut p);
            if let Some(d) = &depend_task_id {
                p.push(("depend_task_id", d));
            }
            call(&creds, "/api/v2/queue/addtask", &p)
        }
        QueueCmd::Commit { creds, queue_id } => {
            call(&creds, "/api/v2/queue/commit", &[("queue_id", &queue_id)])
        }
        QueueCmd::Stop { creds, queue_id } => {
            call(&creds, "/api/v2/queue/stop", &[("queue_id", &queue_id)])
        }
        QueueCmd::Result { creds, queue_id } => {
            call(&creds, "/api/v2/queue/result", &[("queue_id", &queue_id)])
        }
        QueueCmd::Quick { creds, app, task } => {
            let mut p = vec![("app", app.as_str())];
            task.push(&mut p);
            call(&creds, "/api/v2/queue/qksqueue", &p)
        }
    }
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
pub(crate) fn call(creds: &Creds, path: &str, params: &[(&str, &str)]) -> ExitCode {
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
