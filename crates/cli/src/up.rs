//! `elves up`: the whole center, a local agent and the demo app, with nothing to install.
//!
//! The center runs in supervisor mode. First start generates the center's secrets into
//! `DIR/center.toml` (mode 0600), creates the demo app `apptest` bound to the local agent, an
//! API key for it (kept in `DIR/api-key.toml`, mode 0600, and printed at every start) and the
//! first admin account `admin@localhost`, whose generated password is printed once. A data
//! directory made by an older `elves up` in simple mode keeps working as it was.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use elves_config::{AgentConfig, CenterConfig};
use elves_rpc::supervisor::{Admin, AdminCommand};
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct UpArgs {
    /// Where the embedded database, the agent's data and the demo app live.
    #[arg(long, default_value = "./elves-data")]
    data: PathBuf,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:9091")]
    listen: String,
    /// Where agents connect.
    #[arg(long, default_value = "127.0.0.1:9092")]
    agents_listen: String,
}

const DEMO_WORKER: &str = include_str!("../demo/apptest/app-worker.py");
const DEMO_APP: &str = include_str!("../demo/apptest/apptest.py");
const DEMO_VERSION: &str = "1.0.0";

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    hex::encode_upper(b)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Loads `DIR/center.toml`, creating it with fresh secrets on first start.
fn center_config(args: &UpArgs, data: &Path) -> anyhow::Result<(CenterConfig, bool)> {
    let path = data.join("center.toml");
    let first = !path.exists();
    if first {
        let mut cfg = CenterConfig::default();
        cfg.auth.mode = "supervisor".into();
        cfg.admin.token = random_hex(16);
        cfg.supervisor.secret = random_hex(16);
        cfg.supervisor.packages_dir = data.join("packages");
        cfg.agents.token = random_hex(16);
        cfg.store.url = format!("sqlite://{}", data.join("elves.db").display());
        write_private(&path, &toml::to_string(&cfg)?)?;
    }
    let mut cfg = CenterConfig::load(Some(&path))?;
    cfg.server.listen = args.listen.clone();
    cfg.agents.listen = args.agents_listen.clone();
    Ok((cfg, first))
}

fn demo_agent(
    data: &Path,
    center: &CenterConfig,
    agents_addr: std::net::SocketAddr,
) -> anyhow::Result<AgentConfig> {
    let apps_dir = data.join("apps");
    let app_dir = apps_dir.join("apptest");
    std::fs::create_dir_all(&app_dir).with_context(|| format!("creating {}", app_dir.display()))?;
    std::fs::write(app_dir.join("app-worker.py"), DEMO_WORKER)?;
    std::fs::write(app_dir.join("apptest.py"), DEMO_APP)?;
    let mut cfg = AgentConfig {
        ip: "127.0.0.1".into(),
        asset: "localhost".into(),
        center: format!("http://{agents_addr}"),
        token: center.agents.token.clone(),
        data_dir: data.join("agent"),
        apps_dir,
        ..AgentConfig::default()
    };
    cfg.apps.insert("apptest".into(), DEMO_VERSION.into());
    cfg.validate()?;
    Ok(cfg)
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let data = args.data.canonicalize()?;
    let (cfg, first) = center_config(&args, &data)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        let center = elves_center::Center::start(cfg.clone(), cancel.clone()).await?;
        let login = if cfg.auth.mode == "supervisor" {
            supervisor_setup(&center, &data).await?
        } else {
            Login {
                auth_id: cfg.auth.id.clone(),
                auth_key: cfg.auth.key.clone(),
                admin_password: None,
            }
        };
        let agent_cfg = demo_agent(&data, &cfg, center.agents_addr)?;
        let agent = tokio::spawn(elves_agent::run(agent_cfg, cancel.clone()));
        print_welcome(&cfg, center.api_addr, first, &data, &login);
        let c = cancel.clone();
        tokio::spawn(async move {
            elves_agent::shutdown_signal().await;
            c.cancel();
        });
        let result = center.wait().await;
        cancel.cancel();
        let _ = agent.await;
        result
    })
}

/// What `elves up` prints to log in.
struct Login {
    auth_id: String,
    auth_key: String,
    /// Shown only when the account was just created.
    admin_password: Option<String>,
}

async fn admin(
    center: &elves_center::Center,
    command: AdminCommand,
) -> anyhow::Result<serde_json::Value> {
    let msg = Admin {
        actor: "elves up".into(),
        command,
    };
    let answer = center
        .bus("cli")
        .call(msg, std::time::Duration::from_secs(10))
        .await?;
    answer.map_err(|e| anyhow::anyhow!("{e}"))
}

/// First start in supervisor mode: the demo app, its binding, an API key and the first admin.
async fn supervisor_setup(center: &elves_center::Center, data: &Path) -> anyhow::Result<Login> {
    let key_file = data.join("api-key.toml");
    if let Ok(text) = std::fs::read_to_string(&key_file) {
        let t: toml::Table = text
            .parse()
            .with_context(|| format!("reading {}", key_file.display()))?;
        let get = |k: &str| {
            t.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        return Ok(Login {
            auth_id: get("auth_id"),
            auth_key: get("auth_key"),
            admin_password: None,
        });
    }
    let app = "apptest".to_owned();
    admin(
        center,
        AdminCommand::AppAdd {
            app: app.clone(),
            title: "Elves demo app".into(),
            bind_url: None,
        },
    )
    .await?;
    admin(
        center,
        AdminCommand::Bind {
            app: app.clone(),
            ips: vec!["127.0.0.1".into()],
        },
    )
    .await?;
    let key = admin(
        center,
        AdminCommand::KeyAdd {
            app,
            name: "elves up".into(),
            expires_at_ms: None,
        },
    )
    .await?;
    let login = Login {
        auth_id: key["auth_id"].as_str().unwrap_or_default().to_owned(),
        auth_key: key["auth_key"].as_str().unwrap_or_default().to_owned(),
        admin_password: Some(random_hex(12)),
    };
    let password = login.admin_password.clone().unwrap_or_default();
    let user = AdminCommand::UserAdd {
        email: "admin@localhost".into(),
        password,
        role: "admin".into(),
    };
    admin(center, user).await?;
    let mut t = toml::Table::new();
    t.insert("auth_id".into(), login.auth_id.clone().into());
    t.insert("auth_key".into(), login.auth_key.clone().into());
    write_private(&key_file, &toml::to_string(&t)?)?;
    Ok(login)
}

fn print_welcome(
    cfg: &CenterConfig,
    api: std::net::SocketAddr,
    first: bool,
    data: &Path,
    login: &Login,
) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "elves".into());
    let origin = if first { "generated now" } else { "kept" };
    println!(
        "\nElves is up: center, local agent 127.0.0.1 and the demo app `apptest`.\n\
         \n  API        http://{api}\n  auth_id    {id}\n  auth_key   {key}\n  ({origin} in {conf}; keep the key secret)\n\
         \nTry it:\n\n  export ELVES_URL=http://{api} ELVES_AUTH_ID={id} ELVES_AUTH_KEY={key}\n  {exe} rt exec --ip 127.0.0.1 --app apptest --func helloword --param '{{\"my\":\"hello elves\"}}'\n\
         \nOr with curl:\n\n  curl \"http://{api}/api/v2/rt/exec?$({exe} sign /api/v2/rt/exec ip=127.0.0.1 app=apptest func=helloword 'param={{\"my\":\"hi\"}}')\"\n\
         \nPress Ctrl-C to stop.\n",
        id = login.auth_id,
        key = login.auth_key,
        conf = data
            .join(if cfg.auth.mode == "supervisor" {
                "api-key.toml"
            } else {
                "center.toml"
            })
            .display(),
    );
    if let Some(password) = &login.admin_password {
        println!(
            "Admin account (shown once): admin@localhost / {password}\n             Web UI: http://{api}/ui/ (log in with it)\n             Admin API token: in {} (admin.token), for `elves admin --token …`.\n",
            data.join("center.toml").display()
        );
    }
}
