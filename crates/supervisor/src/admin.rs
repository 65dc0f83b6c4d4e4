//! Administration commands (admin API, `elves admin`, web UI).
//!
//! Every command validates its input, then makes at most one store change, which the store
//! audits in the same transaction (`Change { actor, at_ms }`). Answers are JSON and never hold
//! a secret, a password hash or an encrypted key secret — except the new key's secret in the
//! answer to `KeyAdd`, the only time it is shown.
//!
//! Errors are typed ([`AdminError`]): the admin API and the web UI map the kind to an HTTP
//! status, never the message text.
//!
//! | Kind | Meaning |
//! |---|---|
//! | `Invalid` | the input is malformed (the message says which) |
//! | `NotFound` | no such app, version, key or user |
//! | `Conflict` | refused by a rule of the data (a duplicate, a dependent, the last admin, an existing version without force) |
//! | `Denied` | a login with a wrong email or password |
//! | `Internal` | the store failed (`supervisor store failure`; the cause is logged) |

use std::sync::OnceLock;

use elves_rpc::supervisor::{AdminCommand, AdminError, AdminErrorKind};
use elves_store::{ApiKey, App, AuditEntry, Change, NewKey, NewVersion, Role, User, Version};
use elves_types::Id;
use elves_types::validate::is_ipv4;
use serde_json::{Value, json};

use crate::package_name::is_valid_version;
use crate::secrets::{
    encrypt_secret, generate_auth_id, generate_secret, hash_password, verify_password,
};
use crate::service::Inner;

/// The longest app name, title, key name and email accepted.
const MAX_APP_NAME: usize = 64;
const MAX_TITLE: usize = 200;
const MAX_KEY_NAME: usize = 100;
const MAX_EMAIL: usize = 254;
/// Password length bounds, in characters.
const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 1024;
/// The most ips one bind or unbind takes.
const MAX_IPS: usize = 10_000;
/// The audit page when the caller asks for 0 rows.
const DEFAULT_AUDIT_PAGE: u32 = 100;
/// The one answer to a failed login, whatever failed.
const BAD_LOGIN: &str = "wrong email or password";

/// Runs one administration command as `actor`.
pub(crate) async fn run(
    inner: &Inner,
    actor: &str,
    cmd: AdminCommand,
    now_ms: i64,
) -> Result<Value, AdminError> {
    let change = Change {
        actor,
        at_ms: now_ms,
    };
    let store = &inner.store;
    match cmd {
        AdminCommand::AppAdd {
            app,
            title,
            bind_url,
        } => {
            check_app_name(&app)?;
            let title = check_text("title", &title, 1, MAX_TITLE)?;
            let bind_url = bind_url.filter(|u| !u.trim().is_empty());
            if let Some(u) = &bind_url {
                check_bind_url(u)?;
            }
            let created = store
                .create_app(&app, title, bind_url.as_deref(), change)
                .await
                .map_err(store_fail)?;
            Ok(app_json(&created))
        }
        AdminCommand::AppList => {
            let apps = store.apps().await.map_err(store_fail)?;
            let mut out = Vec::with_capacity(apps.len());
            for a in apps {
                let agents = store.bindings(&a.name).await.map_err(store_fail)?.len();
                let versions: Vec<String> = store
                    .versions(&a.name)
                    .await
                    .map_err(store_fail)?
                    .into_iter()
                    .map(|v| v.version)
                    .collect();
                out.push(json!({
                    "name": a.name,
                    "title": a.title,
                    "active_version": a.active_version,
                    "agents": agents,
                    "versions": versions,
                }));
            }
            Ok(Value::Array(out))
        }
        AdminCommand::AppShow { app } => {
            let a = require_app(inner, &app).await?;
            let versions = store.versions(&app).await.map_err(store_fail)?;
            let bindings = store.bindings(&app).await.map_err(store_fail)?;
            let keys = store.keys(&app).await.map_err(store_fail)?;
            let mut v = app_json(&a);
            v["versions"] = versions.iter().map(version_json).collect();
            v["bindings"] = json!(bindings);
            v["keys"] = keys.iter().map(|k| key_json(k, now_ms)).collect();
            Ok(v)
        }
        AdminCommand::AppDelete { app } => {
            require_app(inner, &app).await?;
            store
                .delete_app(&app, change)
                .await
                .map_err(|e| app_err(e, &app))?;
            Ok(json!({ "app": app, "deleted": true }))
        }
        AdminCommand::VersionAdd {
            app,
            version,
            sha256,
            size,
            force,
        } => {
            if !is_valid_version(&version) {
                return Err(param(
                    "the version must be 1 to 64 characters of A-Z a-z 0-9 . _ - and not start with . or -",
                ));
            }
            if sha256.len() != 64
                || !sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err(param("sha256 must be 64 lower-case hex characters"));
            }
            let size = u64::try_from(size).map_err(|_| param("size must not be negative"))?;
            require_app(inner, &app).await?;
            let replaced = store
                .add_version(
                    &NewVersion {
                        app: &app,
                        version: &version,
                        sha256: &sha256,
                        size,
                    },
                    force,
                    change,
                )
                .await
                .map_err(|e| app_err(e, &app))?;
            Ok(json!({
                "app": app,
                "version": version,
                "sha256": sha256,
                "size": size,
                "replaced": replaced,
            }))
        }
        AdminCommand::Activate { app, version } => {
            require_app(inner, &app).await?;
            let changed = store
                .set_active_version(&app, &version, change)
                .await
                .map_err(store_fail)?;
            Ok(json!({ "app": app, "active_version": version, "changed": changed }))
        }
        AdminCommand::Bind { app, ips } => {
            check_ips(&ips)?;
            require_app(inner, &app).await?;
            let done = store
                .bind(&app, &ips, change)
                .await
                .map_err(|e| app_err(e, &app))?;
            Ok(json!({ "app": app, "added": done.added, "removed": done.removed }))
        }
        AdminCommand::Unbind { app, ips } => {
            check_ips(&ips)?;
            require_app(inner, &app).await?;
            let done = store
                .unbind(&app, &ips, change)
                .await
                .map_err(|e| app_err(e, &app))?;
            Ok(json!({ "app": app, "added": done.added, "removed": done.removed }))
        }
        AdminCommand::AppSync { app } => {
            crate::bind_sync::sync_app(inner, &app, actor, now_ms).await
        }
        AdminCommand::KeyAdd {
            app,
            name,
            expires_at_ms,
        } => {
            let name = check_text("key name", &name, 0, MAX_KEY_NAME)?;
            if let Some(at) = expires_at_ms
                && at <= now_ms
            {
                return Err(param("the expiry must be in the future"));
            }
            require_app(inner, &app).await?;
            let secret = generate_secret();
            // A fresh auth_id collides with probability 2^-64; retry a few times anyway.
            let mut tries = 0;
            let key = loop {
                tries += 1;
                let auth_id = generate_auth_id();
                let secret_enc = encrypt_secret(&inner.key, &auth_id, &secret);
                let k = NewKey {
                    auth_id,
                    app: &app,
                    name,
                    secret_enc: &secret_enc,
                    expires_at_ms,
                };
                match store.create_key(&k, change).await {
                    Ok(key) => break key,
                    Err(elves_store::Error::Conflict(_)) if tries < 3 => continue,
                    Err(e) => return Err(app_err(e, &app)),
                }
            };
            Ok(json!({
                "auth_id": key.auth_id.as_str(),
                "auth_key": secret,
                "app": key.app,
                "name": key.name,
                "expires_at_ms": key.expires_at_ms,
            }))
        }
        AdminCommand::KeyList { app } => {
            require_app(inner, &app).await?;
            let keys = store.keys(&app).await.map_err(store_fail)?;
            Ok(keys.iter().map(|k| key_json(k, now_ms)).collect())
        }
        AdminCommand::KeyDisable { auth_id, disabled } => {
            let id = parse_auth_id(&auth_id)?;
            let changed = store
                .set_key_disabled(&id, disabled, change)
                .await
                .map_err(key_err)?;
            Ok(json!({ "auth_id": id.as_str(), "disabled": disabled, "changed": changed }))
        }
        AdminCommand::KeyExpire {
            auth_id,
            expires_at_ms,
        } => {
            let id = parse_auth_id(&auth_id)?;
            let changed = store
                .set_key_expiry(&id, expires_at_ms, change)
                .await
                .map_err(key_err)?;
            Ok(
                json!({ "auth_id": id.as_str(), "expires_at_ms": expires_at_ms, "changed": changed }),
            )
        }
        AdminCommand::KeyRm { auth_id } => {
            let id = parse_auth_id(&auth_id)?;
            store.delete_key(&id, change).await.map_err(key_err)?;
            Ok(json!({ "auth_id": id.as_str(), "deleted": true }))
        }
        AdminCommand::UserAdd {
            email,
            password,
            role,
        } => {
            check_email(&email)?;
            let role =
                Role::parse(&role).ok_or_else(|| param("the role must be admin or operator"))?;
            check_password(&password)?;
            let hash = hash(password).await?;
            let user = store
                .create_user(&email, &hash, role, change)
                .await
                .map_err(store_fail)?;
            Ok(user_json(&user))
        }
        AdminCommand::UserList => {
            let users = store.users().await.map_err(store_fail)?;
            Ok(users.iter().map(user_json).collect())
        }
        AdminCommand::UserRm { email } => {
            store
                .delete_user(&email, change)
                .await
                .map_err(store_fail)?;
            Ok(json!({ "email": email, "deleted": true }))
        }
        AdminCommand::UserPassword { email, password } => {
            check_password(&password)?;
            if store.user(&email).await.map_err(store_fail)?.is_none() {
                return Err(AdminError::new(
                    AdminErrorKind::NotFound,
                    format!("user {email} not found"),
                ));
            }
            let hash = hash(password).await?;
            store
                .set_password_hash(&email, &hash, change)
                .await
                .map_err(store_fail)?;
            Ok(json!({ "email": email, "changed": true }))
        }
        AdminCommand::Login { email, password } => login(inner, email, password, now_ms).await,
        AdminCommand::Audit { limit, before_id } => {
            let limit = if limit == 0 {
                DEFAULT_AUDIT_PAGE
            } else {
                limit
            };
            let rows = store.audit(limit, before_id).await.map_err(store_fail)?;
            Ok(rows.iter().map(audit_json).collect())
        }
        AdminCommand::AgentList => {
            let records = store.agents().await.map_err(store_fail)?;
            let pins = store.credentials().await.map_err(store_fail)?;
            Ok(agents_json(&records, &pins))
        }
        AdminCommand::AgentRelease { ip } => {
            check_ips(std::slice::from_ref(&ip))?;
            store.release_agent(&ip, change).await.map_err(key_err)?;
            Ok(json!({ "ip": ip, "released": true }))
        }
    }
}

/// One row per ip that has a registry record or a pinned credential, ordered by ip. Never
/// holds a secret's hash.
fn agents_json(records: &[elves_store::AgentRecord], pins: &[elves_store::Credential]) -> Value {
    let mut rows: std::collections::BTreeMap<&str, Value> = std::collections::BTreeMap::new();
    for r in records {
        rows.insert(
            &r.ip,
            json!({
                "ip": r.ip,
                "asset": r.asset,
                "version": r.version,
                "apps": r.apps,
                "linked": !r.connected_to.is_empty(),
                "last_heartbeat_ms": r.last_heartbeat_ms,
                "first_seen_ms": r.first_seen_ms,
                "pinned": false,
                "enrolled_at_ms": null,
            }),
        );
    }
    for c in pins {
        let row = rows.entry(&c.ip).or_insert_with(|| {
            json!({
                "ip": c.ip,
                "asset": c.asset,
                "version": null,
                "apps": {},
                "linked": false,
                "last_heartbeat_ms": null,
                "first_seen_ms": null,
            })
        });
        row["pinned"] = json!(true);
        row["enrolled_at_ms"] = json!(c.enrolled_at_ms);
    }
    Value::Array(rows.into_values().collect())
}

/// Checks a password. A wrong email and a wrong password give the same error after the same
/// work: an unknown email is verified against a dummy hash.
async fn login(
    inner: &Inner,
    email: String,
    password: String,
    now_ms: i64,
) -> Result<Value, AdminError> {
    let user = if password.len() > MAX_PASSWORD * 4 {
        None
    } else {
        inner.store.user(&email).await.map_err(store_fail)?
    };
    let hash = match &user {
        Some(u) => u.password_hash.clone(),
        None => dummy_hash().to_owned(),
    };
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|_| internal("password check failed"))?;
    match user {
        Some(user) if ok => {
            inner
                .store
                .record_login(
                    &user.email,
                    Change {
                        actor: &user.email,
                        at_ms: now_ms,
                    },
                )
                .await
                .map_err(store_fail)?;
            let mut v = user_json(&user);
            v["last_login_ms"] = json!(now_ms);
            Ok(v)
        }
        _ => {
            let refused = inner
                .store
                .append_audit(
                    "user.login_refused",
                    &json!({ "email": email }),
                    Change {
                        actor: &email,
                        at_ms: now_ms,
                    },
                )
                .await;
            if let Err(e) = refused {
                tracing::warn!(error = %e, "cannot audit a refused login");
            }
            Err(AdminError::new(AdminErrorKind::Denied, BAD_LOGIN))
        }
    }
}

/// A hash of a random password, made once, that unknown emails are checked against.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&generate_secret()).expect("argon2 hashes a fixed-size password")
    })
}

/// Hashes a password off the async threads (argon2 is deliberately slow).
async fn hash(password: String) -> Result<String, AdminError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| internal("password hashing failed"))?
        .map_err(|e| internal(&e.to_string()))
}

fn internal(msg: &str) -> AdminError {
    AdminError::new(AdminErrorKind::Internal, msg)
}

/// A store error as an admin error: its kind is kept, a failure's cause is only logged.
pub(crate) fn store_fail(e: elves_store::Error) -> AdminError {
    match e {
        elves_store::Error::NotFound(m) => AdminError::new(AdminErrorKind::NotFound, m),
        elves_store::Error::Conflict(m) => AdminError::new(AdminErrorKind::Conflict, m),
        other => {
            tracing::error!(error = %other, "supervisor store failure");
            internal("supervisor store failure")
        }
    }
}

/// A malformed-input error with a short message.
pub(crate) fn param(msg: &str) -> AdminError {
    AdminError::new(AdminErrorKind::Invalid, msg)
}

fn app_not_found(app: &str) -> AdminError {
    AdminError::new(AdminErrorKind::NotFound, format!("app `{app}` not found"))
}

/// The app, or `AppNotFound`.
pub(crate) async fn require_app(inner: &Inner, app: &str) -> Result<App, AdminError> {
    inner
        .store
        .app(app)
        .await
        .map_err(store_fail)?
        .ok_or_else(|| app_not_found(app))
}

/// A store error of a change aimed at `app`: its disappearance becomes `AppNotFound`.
pub(crate) fn app_err(e: elves_store::Error, app: &str) -> AdminError {
    match e {
        elves_store::Error::NotFound(m) if m.contains(&format!("app `{app}`")) => {
            app_not_found(app)
        }
        other => store_fail(other),
    }
}

/// A store error of a change aimed at a key: its absence becomes `AuthIdNotFound`.
fn key_err(e: elves_store::Error) -> AdminError {
    match e {
        elves_store::Error::NotFound(m) => AdminError::new(AdminErrorKind::NotFound, m),
        other => store_fail(other),
    }
}

fn parse_auth_id(s: &str) -> Result<Id, AdminError> {
    Id::parse(s.trim()).ok_or_else(|| {
        AdminError::new(
            AdminErrorKind::NotFound,
            format!("api key {} not found", s.trim()),
        )
    })
}

/// `[A-Za-z0-9_.-]{1,64}`.
fn check_app_name(app: &str) -> Result<(), AdminError> {
    let ok = (1..=MAX_APP_NAME).contains(&app.len())
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(param(
            "the app name must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
        ))
    }
}

/// Trimmed text of `min..=max` characters without control characters.
fn check_text<'a>(
    what: &str,
    text: &'a str,
    min: usize,
    max: usize,
) -> Result<&'a str, AdminError> {
    let t = text.trim();
    let n = t.chars().count();
    if n < min || n > max || t.chars().any(char::is_control) {
        return Err(param(&format!(
            "the {what} must be {min} to {max} characters without control characters"
        )));
    }
    Ok(t)
}

/// An `http://` URL (the center has no TLS client: see `bind_sync`).
fn check_bind_url(url: &str) -> Result<(), AdminError> {
    if url.starts_with("https://") {
        return Err(param(
            "https bind URLs are not supported (the center has no TLS client): use an http:// URL",
        ));
    }
    let ok = url.len() > "http://".len()
        && url.starts_with("http://")
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(param("the bind URL must be an http:// URL"))
    }
}

/// Every ip must be dotted IPv4; nothing is changed otherwise.
fn check_ips(ips: &[String]) -> Result<(), AdminError> {
    if ips.is_empty() || ips.len() > MAX_IPS {
        return Err(param(&format!("give 1 to {MAX_IPS} ips")));
    }
    match ips.iter().find(|ip| !is_ipv4(ip)) {
        None => Ok(()),
        Some(bad) => {
            let mut shown: String = bad.chars().take(64).collect();
            if shown.len() < bad.len() {
                shown.push('…');
            }
            Err(param(&format!(
                "`{shown}` is not a dotted IPv4 address; nothing changed"
            )))
        }
    }
}

fn check_email(email: &str) -> Result<(), AdminError> {
    let ok = email.len() <= MAX_EMAIL
        && !email.chars().any(|c| c.is_control() || c.is_whitespace())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(param("the email must look like name@domain"))
    }
}

fn check_password(password: &str) -> Result<(), AdminError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(param("the password must be at least 12 characters"));
    }
    if n > MAX_PASSWORD {
        return Err(param("the password must be at most 1024 characters"));
    }
    Ok(())
}

fn app_json(a: &App) -> Value {
    json!({
        "name": a.name,
        "title": a.title,
        "creator": a.creator,
        "created_at_ms": a.created_at_ms,
        "updated_at_ms": a.updated_at_ms,
        "active_version": a.active_version,
        "bind_url": a.bind_url,
    })
}

fn version_json(v: &Version) -> Value {
    json!({
        "version": v.version,
        "sha256": v.sha256,
        "size": v.size,
        "uploader": v.uploader,
        "created_at_ms": v.created_at_ms,
    })
}

/// A key without its secret.
fn key_json(k: &ApiKey, now_ms: i64) -> Value {
    let state = if k.disabled {
        "disabled"
    } else if k.expires_at_ms.is_some_and(|at| at <= now_ms) {
        "expired"
    } else {
        "active"
    };
    json!({
        "auth_id": k.auth_id.as_str(),
        "app": k.app,
        "name": k.name,
        "created_at_ms": k.created_at_ms,
        "expires_at_ms": k.expires_at_ms,
        "disabled": k.disabled,
        "state": state,
    })
}

/// A user without the password hash.
fn user_json(u: &User) -> Value {
    json!({
        "email": u.email,
        "role": u.role.as_str(),
        "created_at_ms": u.created_at_ms,
        "last_login_ms": u.last_login_ms,
    })
}

fn audit_json(e: &AuditEntry) -> Value {
    json!({
        "id": e.id,
        "at_ms": e.at_ms,
        "actor": e.actor,
        "action": e.action,
        "detail": e.detail,
    })
}

#[cfg(test)]
mod tests {
    use elves_rpc::supervisor::AdminCommand as C;
    use elves_store::Store;

    use super::*;
    use crate::secrets::decrypt_secret;

    const CENTER: &str = "0123456789ABCDEF0123456789ABCDEF";
    const NOW: i64 = 1_700_000_000_000;
    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ACTOR: &str = "admin-token";

    struct T {
        inner: Inner,
        _dir: tempfile::TempDir,
    }

    impl T {
        async fn new() -> T {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("elves.db").display());
            let store = Store::open(&url).await.unwrap();
            T {
                inner: Inner::for_tests(store, CENTER),
                _dir: dir,
            }
        }

        async fn run(&self, cmd: C) -> Result<Value, AdminError> {
            run(&self.inner, ACTOR, cmd, NOW).await
        }

        async fn ok(&self, cmd: C) -> Value {
            let what = format!("{cmd:?}");
            self.run(cmd)
                .await
                .unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
        }

        async fn err(&self, cmd: C) -> AdminError {
            let what = format!("{cmd:?}");
            match self.run(cmd).await {
                Ok(v) => panic!("{what} should fail, answered {v}"),
                Err(e) => e,
            }
        }

        async fn app(&self, app: &str) {
            self.ok(C::AppAdd {
                app: app.into(),
                title: format!("{app} title"),
                bind_url: None,
            })
            .await;
        }

        async fn version(
            &self,
            app: &str,
            version: &str,
            force: bool,
        ) -> Result<Value, AdminError> {
            self.run(C::VersionAdd {
                app: app.into(),
                version: version.into(),
                sha256: SHA.into(),
                size: 10,
                force,
            })
            .await
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn detail(e: &AdminError) -> &str {
        &e.message
    }

    #[tokio::test]
    async fn malformed_input_is_refused_with_its_code() {
        let t = T::new().await;
        t.app("demo").await;
        let long = "a".repeat(65);
        let cases: Vec<(&str, C, AdminErrorKind)> = vec![
            (
                "empty app name",
                C::AppAdd {
                    app: "".into(),
                    title: "x".into(),
                    bind_url: None,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "65-char app name",
                C::AppAdd {
                    app: long.clone(),
                    title: "x".into(),
                    bind_url: None,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "slash in app name",
                C::AppAdd {
                    app: "a/b".into(),
                    title: "x".into(),
                    bind_url: None,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "space in app name",
                C::AppAdd {
                    app: "a b".into(),
                    title: "x".into(),
                    bind_url: None,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "blank title",
                C::AppAdd {
                    app: "ok".into(),
                    title: "  ".into(),
                    bind_url: None,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "control in title",
                C::AppAdd {
                    app: "ok".into(),
                    title: "a\nb".into(),
                    bind_url: None,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "ftp bind url",
                C::AppAdd {
                    app: "ok".into(),
                    title: "x".into(),
                    bind_url: Some("ftp://x".into()),
                },
                AdminErrorKind::Invalid,
            ),
            (
                "dotdot version",
                C::VersionAdd {
                    app: "demo".into(),
                    version: "..".into(),
                    sha256: SHA.into(),
                    size: 1,
                    force: false,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "slash version",
                C::VersionAdd {
                    app: "demo".into(),
                    version: "1/2".into(),
                    sha256: SHA.into(),
                    size: 1,
                    force: false,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "short sha",
                C::VersionAdd {
                    app: "demo".into(),
                    version: "1".into(),
                    sha256: "abc".into(),
                    size: 1,
                    force: false,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "upper sha",
                C::VersionAdd {
                    app: "demo".into(),
                    version: "1".into(),
                    sha256: SHA.to_uppercase(),
                    size: 1,
                    force: false,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "negative size",
                C::VersionAdd {
                    app: "demo".into(),
                    version: "1".into(),
                    sha256: SHA.into(),
                    size: -1,
                    force: false,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "no ips",
                C::Bind {
                    app: "demo".into(),
                    ips: vec![],
                },
                AdminErrorKind::Invalid,
            ),
            (
                "hostname",
                C::Bind {
                    app: "demo".into(),
                    ips: s(&["host"]),
                },
                AdminErrorKind::Invalid,
            ),
            (
                "one bad ip among good",
                C::Bind {
                    app: "demo".into(),
                    ips: s(&["10.0.0.1", "10.0.0.256"]),
                },
                AdminErrorKind::Invalid,
            ),
            (
                "ipv6",
                C::Unbind {
                    app: "demo".into(),
                    ips: s(&["::1"]),
                },
                AdminErrorKind::Invalid,
            ),
            (
                "past expiry",
                C::KeyAdd {
                    app: "demo".into(),
                    name: "n".into(),
                    expires_at_ms: Some(NOW),
                },
                AdminErrorKind::Invalid,
            ),
            (
                "control in key name",
                C::KeyAdd {
                    app: "demo".into(),
                    name: "a\u{7}".into(),
                    expires_at_ms: None,
                },
                AdminErrorKind::Invalid,
            ),
            (
                "bad auth_id",
                C::KeyRm {
                    auth_id: "nope".into(),
                },
                AdminErrorKind::NotFound,
            ),
            (
                "email without @",
                C::UserAdd {
                    email: "bob".into(),
                    password: "correct horse battery".into(),
                    role: "admin".into(),
                },
                AdminErrorKind::Invalid,
            ),
            (
                "short password",
                C::UserAdd {
                    email: "bob@x.io".into(),
                    password: "elevenchars".into(),
                    role: "admin".into(),
                },
                AdminErrorKind::Invalid,
            ),
            (
                "unknown role",
                C::UserAdd {
                    email: "bob@x.io".into(),
                    password: "correct horse battery".into(),
                    role: "root".into(),
                },
                AdminErrorKind::Invalid,
            ),
            (
                "short new password",
                C::UserPassword {
                    email: "bob@x.io".into(),
                    password: "short".into(),
                },
                AdminErrorKind::Invalid,
            ),
        ];
        for (name, cmd, code) in cases {
            let e = t.err(cmd).await;
            assert_eq!(e.kind, code, "{name}: {e:?}");
            assert!(!detail(&e).is_empty(), "{name}: no message");
        }
        // Nothing was bound by the refused all-or-nothing bind.
        assert!(t.inner.store.bindings("demo").await.unwrap().is_empty());
        let apps = t.ok(C::AppList).await;
        assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
    }

    #[tokio::test]
    async fn unknown_apps_are_app_not_found() {
        let t = T::new().await;
        let cases = vec![
            C::AppShow {
                app: "ghost".into(),
            },
            C::AppDelete {
                app: "ghost".into(),
            },
            C::VersionAdd {
                app: "ghost".into(),
                version: "1".into(),
                sha256: SHA.into(),
                size: 1,
                force: false,
            },
            C::Activate {
                app: "ghost".into(),
                version: "1".into(),
            },
            C::Bind {
                app: "ghost".into(),
                ips: s(&["10.0.0.1"]),
            },
            C::Unbind {
                app: "ghost".into(),
                ips: s(&["10.0.0.1"]),
            },
            C::KeyAdd {
                app: "ghost".into(),
                name: "".into(),
                expires_at_ms: None,
            },
            C::KeyList {
                app: "ghost".into(),
            },
        ];
        for cmd in cases {
            let what = format!("{cmd:?}");
            let e = t.err(cmd).await;
            assert_eq!(e.kind, AdminErrorKind::NotFound, "{what}");
            assert_eq!(detail(&e), "app `ghost` not found", "{what}");
        }
    }

    #[tokio::test]
    async fn apps_versions_bindings_lifecycle() {
        let t = T::new().await;
        let created = t
            .ok(C::AppAdd {
                app: "demo".into(),
                title: "  Demo app ".into(),
                bind_url: None,
            })
            .await;
        assert_eq!(created["name"], "demo");
        assert_eq!(created["title"], "Demo app");
        assert_eq!(created["creator"], ACTOR);
        let dup = t
            .err(C::AppAdd {
                app: "demo".into(),
                title: "again".into(),
                bind_url: None,
            })
            .await;
        assert!(detail(&dup).contains("already exists"), "{dup:?}");
        assert_eq!(dup.kind, AdminErrorKind::Conflict);

        assert_eq!(
            t.version("demo", "1.0", false).await.unwrap()["replaced"],
            false
        );
        let again = t.version("demo", "1.0", false).await.unwrap_err();
        assert!(detail(&again).contains("force"), "{again:?}");
        assert_eq!(again.kind, AdminErrorKind::Conflict);
        assert_eq!(
            t.version("demo", "1.0", true).await.unwrap()["replaced"],
            true
        );
        t.version("demo", "2.0", false).await.unwrap();

        let e = t
            .err(C::Activate {
                app: "demo".into(),
                version: "3.0".into(),
            })
            .await;
        assert!(detail(&e).contains("3.0"), "{e:?}");
        assert_eq!(e.kind, AdminErrorKind::NotFound);
        let on = t
            .ok(C::Activate {
                app: "demo".into(),
                version: "2.0".into(),
            })
            .await;
        assert_eq!(on["changed"], true);
        let again = t
            .ok(C::Activate {
                app: "demo".into(),
                version: "2.0".into(),
            })
            .await;
        assert_eq!(again["changed"], false);

        let b = t
            .ok(C::Bind {
                app: "demo".into(),
                ips: s(&["10.0.0.2", "10.0.0.1", "10.0.0.1"]),
            })
            .await;
        assert_eq!(b["added"], json!(["10.0.0.1", "10.0.0.2"]));
        let u = t
            .ok(C::Unbind {
                app: "demo".into(),
                ips: s(&["10.0.0.2", "10.0.0.9"]),
            })
            .await;
        assert_eq!(u["removed"], json!(["10.0.0.2"]));

        let list = t.ok(C::AppList).await;
        assert_eq!(
            list,
            json!([{
                "name": "demo", "title": "Demo app", "active_version": "2.0",
                "agents": 1, "versions": ["1.0", "2.0"],
            }])
        );
        let show = t.ok(C::AppShow { app: "demo".into() }).await;
        assert_eq!(show["active_version"], "2.0");
        assert_eq!(show["bindings"], json!(["10.0.0.1"]));
        assert_eq!(show["versions"][1]["sha256"], SHA);
        assert_eq!(show["versions"][1]["uploader"], ACTOR);

        let refused = t.err(C::AppDelete { app: "demo".into() }).await;
        assert_eq!(refused.kind, AdminErrorKind::Conflict);
        assert!(
            detail(&refused).contains("still has 2 versions, 1 binding"),
            "{refused:?}"
        );

        t.app("empty").await;
        assert_eq!(
            t.ok(C::AppDelete {
                app: "empty".into()
            })
            .await["deleted"],
            true
        );
        assert!(t.inner.store.app("empty").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn keys_show_the_secret_once() {
        let t = T::new().await;
        t.app("demo").await;
        let made = t
            .ok(C::KeyAdd {
                app: "demo".into(),
                name: "ci".into(),
                expires_at_ms: Some(NOW + 1000),
            })
            .await;
        let auth_id = made["auth_id"].as_str().unwrap().to_owned();
        let secret = made["auth_key"].as_str().unwrap().to_owned();
        assert_eq!(secret.len(), 32);
        assert_eq!(made["app"], "demo");
        assert_eq!(made["name"], "ci");
        assert_eq!(made["expires_at_ms"], NOW + 1000);

        let id = Id::parse(&auth_id).unwrap();
        let stored = t.inner.store.key(&id).await.unwrap().unwrap();
        assert_ne!(stored.secret_enc, secret);
        assert_eq!(
            decrypt_secret(&t.inner.key, &id, &stored.secret_enc).unwrap(),
            secret
        );

        let list = t.ok(C::KeyList { app: "demo".into() }).await;
        let text = list.to_string();
        assert!(
            !text.contains(&secret) && !text.contains(&stored.secret_enc),
            "{text}"
        );
        assert_eq!(list[0]["auth_id"], auth_id.as_str());
        assert_eq!(list[0]["state"], "active");

        let d = t
            .ok(C::KeyDisable {
                auth_id: auth_id.clone(),
                disabled: true,
            })
            .await;
        assert_eq!(d["changed"], true);
        assert_eq!(
            t.ok(C::KeyList { app: "demo".into() }).await[0]["state"],
            "disabled"
        );
        t.ok(C::KeyDisable {
            auth_id: auth_id.clone(),
            disabled: false,
        })
        .await;
        t.ok(C::KeyExpire {
            auth_id: auth_id.clone(),
            expires_at_ms: Some(NOW - 1),
        })
        .await;
        assert_eq!(
            t.ok(C::KeyList { app: "demo".into() }).await[0]["state"],
            "expired"
        );

        let refused = t.err(C::AppDelete { app: "demo".into() }).await;
        assert!(detail(&refused).contains("1 key"), "{refused:?}");

        t.ok(C::KeyRm {
            auth_id: auth_id.clone(),
        })
        .await;
        assert_eq!(t.ok(C::KeyList { app: "demo".into() }).await, json!([]));
        for cmd in [
            C::KeyRm {
                auth_id: auth_id.clone(),
            },
            C::KeyDisable {
                auth_id: auth_id.clone(),
                disabled: true,
            },
            C::KeyExpire {
                auth_id: auth_id.clone(),
                expires_at_ms: None,
            },
        ] {
            assert_eq!(t.err(cmd).await.kind, AdminErrorKind::NotFound);
        }
    }

    #[tokio::test]
    async fn users_and_logins() {
        let t = T::new().await;
        let pw = "correct horse battery";
        let made = t
            .ok(C::UserAdd {
                email: "Ann@x.io".into(),
                password: pw.into(),
                role: "admin".into(),
            })
            .await;
        assert_eq!(
            made,
            json!({"email": "Ann@x.io", "role": "admin", "created_at_ms": NOW, "last_login_ms": null})
        );
        t.ok(C::UserAdd {
            email: "bob@x.io".into(),
            password: pw.into(),
            role: "operator".into(),
        })
        .await;
        let dup = t
            .err(C::UserAdd {
                email: "ann@X.io".into(),
                password: pw.into(),
                role: "operator".into(),
            })
            .await;
        assert!(detail(&dup).contains("already exists"), "{dup:?}");
        assert_eq!(dup.kind, AdminErrorKind::Conflict);

        let list = t.ok(C::UserList).await;
        assert_eq!(list.as_array().unwrap().len(), 2);
        assert!(!list.to_string().contains("argon2"), "{list}");

        let ok = t
            .ok(C::Login {
                email: "ann@x.io".into(),
                password: pw.into(),
            })
            .await;
        assert_eq!(ok["email"], "Ann@x.io");
        assert_eq!(ok["last_login_ms"], NOW);
        assert!(ok.get("password_hash").is_none());

        let wrong_pw = t
            .err(C::Login {
                email: "ann@x.io".into(),
                password: "not the password".into(),
            })
            .await;
        let wrong_email = t
            .err(C::Login {
                email: "nobody@x.io".into(),
                password: pw.into(),
            })
            .await;
        assert_eq!(wrong_pw, wrong_email);
        assert_eq!(wrong_pw.kind, AdminErrorKind::Denied);

        let new_pw = "another long password";
        t.ok(C::UserPassword {
            email: "ann@x.io".into(),
            password: new_pw.into(),
        })
        .await;
        t.err(C::Login {
            email: "ann@x.io".into(),
            password: pw.into(),
        })
        .await;
        t.ok(C::Login {
            email: "ann@x.io".into(),
            password: new_pw.into(),
        })
        .await;
        let ghost = t
            .err(C::UserPassword {
                email: "ghost@x.io".into(),
                password: new_pw.into(),
            })
            .await;
        assert!(detail(&ghost).contains("not found"), "{ghost:?}");
        assert_eq!(ghost.kind, AdminErrorKind::NotFound);

        let last = t
            .err(C::UserRm {
                email: "ann@x.io".into(),
            })
            .await;
        assert!(detail(&last).contains("last admin"), "{last:?}");
        assert_eq!(last.kind, AdminErrorKind::Conflict);
        t.ok(C::UserRm {
            email: "bob@x.io".into(),
        })
        .await;
        let gone = t
            .err(C::UserRm {
                email: "bob@x.io".into(),
            })
            .await;
        assert!(detail(&gone).contains("not found"), "{gone:?}");
        assert_eq!(gone.kind, AdminErrorKind::NotFound);
    }

    #[tokio::test]
    async fn every_change_is_audited_with_its_actor() {
        let t = T::new().await;
        t.app("demo").await;
        t.version("demo", "1", false).await.unwrap();
        t.ok(C::Bind {
            app: "demo".into(),
            ips: s(&["10.0.0.1"]),
        })
        .await;
        let key = t
            .ok(C::KeyAdd {
                app: "demo".into(),
                name: "".into(),
                expires_at_ms: None,
            })
            .await;
        let rows = t
            .ok(C::Audit {
                limit: 0,
                before_id: None,
            })
            .await;
        let actions: Vec<&str> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions.len(), 4, "{rows}");
        assert_eq!(actions[3], "app.create");
        assert!(
            rows.as_array()
                .unwrap()
                .iter()
                .all(|r| r["actor"] == ACTOR && r["at_ms"] == NOW)
        );
        assert!(!rows.to_string().contains(key["auth_key"].as_str().unwrap()));
        let first = rows[0]["id"].as_i64().unwrap();
        let page = t
            .ok(C::Audit {
                limit: 2,
                before_id: Some(first),
            })
            .await;
        assert_eq!(page.as_array().unwrap().len(), 2);
        assert_eq!(page[0]["id"], rows[1]["id"]);
    }

    #[tokio::test]
    async fn agents_are_listed_and_released_without_their_secrets() {
        let t = T::new().await;
        let store = &t.inner.store;
        let pin = |ip: &str, secret: &str| elves_store::Credential {
            ip: ip.into(),
            secret_sha256: secret.into(),
            asset: format!("asset-{ip}"),
            enrolled_at_ms: NOW - 5,
        };
        let secret_a = "a".repeat(64);
        let secret_b = "b".repeat(64);
        assert!(
            store
                .pin_credential(&pin("10.0.0.1", &secret_a))
                .await
                .unwrap()
        );
        assert!(
            store
                .pin_credential(&pin("10.0.0.2", &secret_b))
                .await
                .unwrap()
        );
        // 10.0.0.1 said hello; 10.0.0.3 is in the registry without a pin (released before).
        for ip in ["10.0.0.1", "10.0.0.3"] {
            let rec = elves_store::AgentRecord {
                ip: ip.into(),
                asset: format!("asset-{ip}"),
                version: "0.1.0".into(),
                apps: [("demo".to_string(), "1.0".to_string())].into(),
                connected_to: if ip == "10.0.0.1" {
                    "gw".into()
                } else {
                    String::new()
                },
                last_heartbeat_ms: NOW - 1,
                first_seen_ms: NOW - 9,
            };
            store.record_agent(&rec).await.unwrap();
        }
        let list = t.ok(C::AgentList).await;
        let rows: Vec<(&str, bool, bool)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["ip"].as_str().unwrap(),
                    r["pinned"].as_bool().unwrap(),
                    r["linked"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("10.0.0.1", true, true),
                ("10.0.0.2", true, false),
                ("10.0.0.3", false, false)
            ]
        );
        assert_eq!(list[0]["apps"]["demo"], "1.0");
        assert!(!list.to_string().contains(&secret_a) && !list.to_string().contains(&secret_b));

        let cases: Vec<(&str, AdminErrorKind)> = vec![
            ("10.0.0.3", AdminErrorKind::NotFound),
            ("10.0.0.9", AdminErrorKind::NotFound),
            ("not-an-ip", AdminErrorKind::Invalid),
            ("", AdminErrorKind::Invalid),
        ];
        for (ip, kind) in cases {
            let e = t.err(C::AgentRelease { ip: ip.into() }).await;
            assert_eq!(e.kind, kind, "release {ip:?}: {e:?}");
        }
        let done = t
            .ok(C::AgentRelease {
                ip: "10.0.0.1".into(),
            })
            .await;
        assert_eq!(done["released"], true);
        assert_eq!(store.credential("10.0.0.1").await.unwrap(), None);
        assert!(store.credential("10.0.0.2").await.unwrap().is_some());
        let again = t
            .err(C::AgentRelease {
                ip: "10.0.0.1".into(),
            })
            .await;
        assert_eq!(again.kind, AdminErrorKind::NotFound);
        let audit = t
            .ok(C::Audit {
                limit: 0,
                before_id: None,
            })
            .await;
        assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
        assert_eq!(audit[0]["action"], "agent.release");
        assert_eq!(audit[0]["detail"]["ip"], "10.0.0.1");
    }
}
