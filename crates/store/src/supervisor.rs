//! The supervisor's data: apps, their versions and bound agents, API keys, admin users and the
//! append-only audit log.
//!
//! # Rules
//!
//! * Every method that changes this data takes a [`Change`] (who, and when) and writes one
//!   audit row in the same `BEGIN IMMEDIATE` transaction as the change, so the log can never
//!   miss a change nor record one that did not happen. A call that turns out to change nothing
//!   (binding an ip that is already bound, disabling a disabled key) writes no audit row.
//! * A change aimed at something that does not exist fails with [`Error::NotFound`]; one that
//!   would break a rule (a second app of the same name, deleting an app that still has
//!   versions) fails with [`Error::Conflict`]. Both leave the database untouched.
//! * The store knows no cryptography: a key's secret arrives already encrypted
//!   ([`NewKey::secret_enc`]) and a user's password already hashed. Audit details never hold
//!   either.
//! * The audit log has no update or delete method, and SQLite triggers refuse an `UPDATE` or
//!   `DELETE` of its rows from anywhere else too.
//!
//! # Audit actions
//!
//! `app.create`, `app.update`, `app.delete`, `version.add`, `version.replace`,
//! `app.activate`, `binding.add`, `binding.remove`, `binding.replace`, `key.create`,
//! `key.disable`, `key.enable`, `key.expiry`, `key.delete`, `user.create`, `user.password`,
//! `user.role`, `user.login`, `user.delete`, plus whatever callers append with
//! [`Store::append_audit`]. The detail is a JSON object naming what changed.

use std::collections::BTreeSet;
use std::fmt;

use elves_types::Id;
use serde_json::{Value, json};
use sqlx::{Sqlite, Transaction};

use crate::{Error, Store};

/// The most audit rows one [`Store::audit`] call returns.
pub const MAX_AUDIT_PAGE: u32 = 500;

/// Who makes an administrative change, and when (Unix milliseconds). The instant is also the
/// one written into the changed record (`created_at_ms`, `updated_at_ms`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change<'a> {
    pub actor: &'a str,
    pub at_ms: i64,
}

/// An app: the unit that is packaged, versioned, bound to agents and owns API keys.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct App {
    /// The v2 `app` value (the original's `instruct`); unique.
    pub name: String,
    /// A human-readable title.
    pub title: String,
    /// The actor who created the app.
    pub creator: String,
    pub created_at_ms: i64,
    /// When the app, its versions or its active version last changed.
    pub updated_at_ms: i64,
    /// The version agents should run, if one was activated.
    pub active_version: Option<String>,
    /// A URL polled for the ips the app's bindings are replaced with, if any.
    pub bind_url: Option<String>,
}

/// One uploaded package of an app.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Version {
    pub app: String,
    pub version: String,
    /// SHA-256 of the package, as the uploading code wrote it (lower-case hex).
    pub sha256: String,
    /// The package's size in bytes.
    pub size: u64,
    /// The actor who uploaded (or last re-uploaded) the package.
    pub uploader: String,
    /// When the package was uploaded (or last re-uploaded).
    pub created_at_ms: i64,
}

/// A package to record with [`Store::add_version`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewVersion<'a> {
    pub app: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
    pub size: u64,
}

/// What a bindings change did: the ips that became bound and those that stopped being bound,
/// each sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindingChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl BindingChange {
    /// Whether the change left the bindings as they were.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// An API key of the v2 API in supervisor mode.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub auth_id: Id,
    /// The one app this key may act on.
    pub app: String,
    /// A label for people (for example which client holds the key).
    pub name: String,
    /// The key's secret, encrypted by the supervisor with the center's secret. Opaque here.
    pub secret_enc: String,
    pub created_at_ms: i64,
    /// After this instant the key no longer works; `None` means never.
    pub expires_at_ms: Option<i64>,
    pub disabled: bool,
}

impl fmt::Debug for ApiKey {
    /// Everything but the secret, even encrypted, so that logs never carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("auth_id", &self.auth_id)
            .field("app", &self.app)
            .field("name", &self.name)
            .field("secret_enc", &"<redacted>")
            .field("created_at_ms", &self.created_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// A key to create with [`Store::create_key`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NewKey<'a> {
    pub auth_id: Id,
    pub app: &'a str,
    pub name: &'a str,
    /// The secret, already encrypted by the caller; stored as given.
    pub secret_enc: &'a str,
    pub expires_at_ms: Option<i64>,
}

impl fmt::Debug for NewKey<'_> {
    /// Everything but the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("auth_id", &self.auth_id)
            .field("app", &self.app)
            .field("name", &self.name)
            .field("secret_enc", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// What a user may do in the admin UI and API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, users included.
    Admin,
    /// Apps, versions, bindings and keys, but not users.
    Operator,
}

impl Role {
    /// The role as stored and as the admin API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }

    /// Parses `admin` or `operator` (exactly).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person who logs in to the admin UI or API.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Unique, compared case-insensitively (ASCII); kept as first written.
    pub email: String,
    /// An argon2 PHC string (`$argon2id$…`).
    pub password_hash: String,
    pub role: Role,
    pub created_at_ms: i64,
    pub last_login_ms: Option<i64>,
}

impl fmt::Debug for User {
    /// Everything but the password hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("created_at_ms", &self.created_at_ms)
            .field("last_login_ms", &self.last_login_ms)
            .finish()
    }
}

/// One row of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Increases with every row; never reused.
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    /// A JSON object naming what changed.
    pub detail: Value,
}

/// Rows as SELECTed with the column lists below, in their order.
type AppRow = (
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
);
type VersionRow = (String, String, String, i64, String, i64);
type KeyRow = (String, String, String, String, i64, Option<i64>, bool);
type UserRow = (String, String, String, i64, Option<i64>);
type AuditRow = (i64, i64, String, String, String);

// Column lists as macros, because sqlx takes only `&'static str` statements (`concat!` needs
// literals, not constants).
macro_rules! app_columns {
    () => {
        "name, title, creator, created_at_ms, updated_at_ms, active_version, bind_url"
    };
}
macro_rules! version_columns {
    () => {
        "app, version, sha256, size, uploader, created_at_ms"
    };
}
macro_rules! key_columns {
    () => {
        "auth_id, app, name, secret_enc, created_at_ms, expires_at_ms, disabled"
    };
}
macro_rules! user_columns {
    () => {
        "email, password_hash, role, created_at_ms, last_login_ms"
    };
}

fn app_from_row(row: AppRow) -> App {
    let (name, title, creator, created_at_ms, updated_at_ms, active_version, bind_url) = row;
    App {
        name,
        title,
        creator,
        created_at_ms,
        updated_at_ms,
        active_version,
        bind_url,
    }
}

fn version_from_row(row: VersionRow) -> Result<Version, Error> {
    let (app, version, sha256, size, uploader, created_at_ms) = row;
    let size = u64::try_from(size)
        .map_err(|_| Error::Db(format!("version {app} {version}: negative size {size}")))?;
    Ok(Version {
        app,
        version,
        sha256,
        size,
        uploader,
        created_at_ms,
    })
}

fn key_from_row(row: KeyRow) -> Result<ApiKey, Error> {
    let (auth_id, app, name, secret_enc, created_at_ms, expires_at_ms, disabled) = row;
    let auth_id = Id::parse(&auth_id)
        .ok_or_else(|| Error::Db("an api key's auth_id is not 16 hex characters".to_owned()))?;
    Ok(ApiKey {
        auth_id,
        app,
        name,
        secret_enc,
        created_at_ms,
        expires_at_ms,
        disabled,
    })
}

fn user_from_row(row: UserRow) -> Result<User, Error> {
    let (email, password_hash, role, created_at_ms, last_login_ms) = row;
    let role = Role::parse(&role)
        .ok_or_else(|| Error::Db(format!("user {email}: unknown role {role:?}")))?;
    Ok(User {
        email,
        password_hash,
        role,
        created_at_ms,
        last_login_ms,
    })
}

fn audit_from_row(row: AuditRow) -> Result<AuditEntry, Error> {
    let (id, at_ms, actor, action, detail) = row;
    let detail = serde_json::from_str(&detail)
        .map_err(|e| Error::Db(format!("audit row {id}: the detail is not JSON: {e}")))?;
    Ok(AuditEntry {
        id,
        at_ms,
        actor,
        action,
        detail,
    })
}

/// The distinct ips of `ips`, sorted.
fn distinct<S: AsRef<str>>(ips: &[S]) -> BTreeSet<String> {
    ips.iter().map(|ip| ip.as_ref().to_owned()).collect()
}

/// `n thing` or `n things`.
fn count(n: i64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// A write transaction (`BEGIN IMMEDIATE`).
type Tx = Transaction<'static, Sqlite>;

/// Starts a write transaction for `what`.
async fn begin(store: &Store, what: &str) -> Result<Tx, Error> {
    crate::sqlite::begin_immediate(&store.pool)
        .await
        .map_err(|e| Error::db(&format!("cannot begin to {what}"), e))
}

/// Commits a write transaction for `what`.
async fn commit(tx: Tx, what: &str) -> Result<(), Error> {
    tx.commit()
        .await
        .map_err(|e| Error::db(&format!("cannot commit: {what}"), e))
}

/// Writes one audit row inside `tx` and returns its id.
async fn audit_in(
    tx: &mut Tx,
    change: Change<'_>,
    action: &str,
    detail: &Value,
) -> Result<i64, Error> {
    let detail = serde_json::to_string(detail)
        .map_err(|e| Error::Db(format!("cannot encode an audit detail: {e}")))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (at_ms, actor, action, detail) VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind(change.at_ms)
    .bind(change.actor)
    .bind(action)
    .bind(detail)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| Error::db("cannot append to the audit log", e))?;
    Ok(id)
}

/// Fails with [`Error::NotFound`] unless the app exists.
async fn require_app(tx: &mut Tx, app: &str) -> Result<(), Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM apps WHERE name = ?")
        .bind(app)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| Error::db("cannot read an app", e))?;
    match found {
        Some(_) => Ok(()),
        None => Err(Error::not_found(&format!("app `{app}` not found"))),
    }
}

/// What an app may still have that keeps it from being deleted.
#[derive(Clone, Copy)]
enum Dependent {
    Versions,
    Bindings,
    Keys,
}

/// Counts the app's rows of one dependent kind.
async fn count_of(tx: &mut Tx, what: Dependent, app: &str) -> Result<i64, Error> {
    let sql = match what {
        Dependent::Versions => "SELECT COUNT(*) FROM app_versions WHERE app = ?",
        Dependent::Bindings => "SELECT COUNT(*) FROM app_bindings WHERE app = ?",
        Dependent::Keys => "SELECT COUNT(*) FROM api_keys WHERE app = ?",
    };
    sqlx::query_scalar(sql)
        .bind(app)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| Error::db("cannot count what an app still has", e))
}

/// Marks the app as changed at `at_ms`.
async fn touch_app(tx: &mut Tx, app: &str, at_ms: i64) -> Result<(), Error> {
    sqlx::query("UPDATE apps SET updated_at_ms = ? WHERE name = ?")
        .bind(at_ms)
        .bind(app)
        .execute(&mut **tx)
        .await
        .map_err(|e| Error::db("cannot update an app", e))?;
    Ok(())
}

/// The bound ips of `app`, sorted, read inside `tx`.
async fn bindings_in(tx: &mut Tx, app: &str) -> Result<BTreeSet<String>, Error> {
    let ips: Vec<String> = sqlx::query_scalar("SELECT ip FROM app_bindings WHERE app = ?")
        .bind(app)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| Error::db("cannot read bindings", e))?;
    Ok(ips.into_iter().collect())
}

/// The key with this `auth_id`, read inside `tx`; [`Error::NotFound`] when there is none.
async fn key_in(tx: &mut Tx, auth_id: &Id) -> Result<ApiKey, Error> {
    let row: Option<KeyRow> = sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE auth_id = ?"
    ))
    .bind(auth_id.as_str())
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| Error::db("cannot read an api key", e))?;
    match row {
        Some(row) => key_from_row(row),
        None => Err(Error::not_found(&format!("api key {auth_id} not found"))),
    }
}

/// The user with this email, read inside `tx`; [`Error::NotFound`] when there is none.
async fn user_in(tx: &mut Tx, email: &str) -> Result<User, Error> {
    let row: Option<UserRow> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE email = ?"
    ))
    .bind(email)
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| Error::db("cannot read a user", e))?;
    match row {
        Some(row) => user_from_row(row),
        None => Err(Error::not_found(&format!("user {email} not found"))),
    }
}

/// Fails with [`Error::Conflict`] when `user` is the only admin, whom removing or demoting
/// would lock everyone out of user administration.
async fn refuse_last_admin(tx: &mut Tx, user: &User, what: &str) -> Result<(), Error> {
    if user.role != Role::Admin {
        return Ok(());
    }
    let admins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| Error::db("cannot count admins", e))?;
    if admins <= 1 {
        return Err(Error::conflict(&format!(
            "cannot {what} {}: it is the last admin",
            user.email
        )));
    }
    Ok(())
}

/// Apps.
impl Store {
    /// Creates an app with no version, binding or key. Fails with [`Error::Conflict`] when an
    /// app of that name exists.
    pub async fn create_app(
        &self,
        name: &str,
        title: &str,
        bind_url: Option<&str>,
        change: Change<'_>,
    ) -> Result<App, Error> {
        let mut tx = begin(self, "create an app").await?;
        let done = sqlx::query(
            "INSERT INTO apps (name, title, creator, created_at_ms, updated_at_ms, bind_url)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(title)
        .bind(change.actor)
        .bind(change.at_ms)
        .bind(change.at_ms)
        .bind(bind_url)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db("cannot create an app", e))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(&format!("app `{name}` already exists")));
        }
        audit_in(
            &mut tx,
            change,
            "app.create",
            &json!({ "app": name, "title": title, "bind_url": bind_url }),
        )
        .await?;
        commit(tx, "create an app").await?;
        Ok(App {
            name: name.to_owned(),
            title: title.to_owned(),
            creator: change.actor.to_owned(),
            created_at_ms: change.at_ms,
            updated_at_ms: change.at_ms,
            active_version: None,
            bind_url: bind_url.map(str::to_owned),
        })
    }

    /// Sets an app's title and bind URL.
    pub async fn update_app(
        &self,
        name: &str,
        title: &str,
        bind_url: Option<&str>,
        change: Change<'_>,
    ) -> Result<App, Error> {
        let mut tx = begin(self, "update an app").await?;
        let row: Option<AppRow> = sqlx::query_as(concat!(
            "UPDATE apps SET title = ?, bind_url = ?, updated_at_ms = ? WHERE name = ?
             RETURNING ",
            app_columns!()
        ))
        .bind(title)
        .bind(bind_url)
        .bind(change.at_ms)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| Error::db("cannot update an app", e))?;
        let Some(row) = row else {
            return Err(Error::not_found(&format!("app `{name}` not found")));
        };
        audit_in(
            &mut tx,
            change,
            "app.update",
            &json!({ "app": name, "title": title, "bind_url": bind_url }),
        )
        .await?;
        commit(tx, "update an app").await?;
        Ok(app_from_row(row))
    }

    /// The app called `name`, if any.
    pub async fn app(&self, name: &str) -> Result<Option<App>, Error> {
        let row: Option<AppRow> = sqlx::query_as(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::db("cannot read an app", e))?;
        Ok(row.map(app_from_row))
    }

    /// Every app, ordered by name (byte order).
    pub async fn apps(&self) -> Result<Vec<App>, Error> {
        let rows: Vec<AppRow> = sqlx::query_as(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot list apps", e))?;
        Ok(rows.into_iter().map(app_from_row).collect())
    }

    /// Deletes an app. Refused with [`Error::Conflict`] while the app still has versions,
    /// bindings or keys: those are removed first, deliberately, so that deleting an app never
    /// silently revokes keys or uninstalls agents.
    pub async fn delete_app(&self, name: &str, change: Change<'_>) -> Result<(), Error> {
        let mut tx = begin(self, "delete an app").await?;
        require_app(&mut tx, name).await?;
        let versions = count_of(&mut tx, Dependent::Versions, name).await?;
        let bindings = count_of(&mut tx, Dependent::Bindings, name).await?;
        let keys = count_of(&mut tx, Dependent::Keys, name).await?;
        if versions + bindings + keys > 0 {
            let left: Vec<String> = [(versions, "version"), (bindings, "binding"), (keys, "key")]
                .into_iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| count(n, what))
                .collect();
            return Err(Error::conflict(&format!(
                "app `{name}` still has {}; remove them before deleting the app",
                left.join(", ")
            )));
        }
        sqlx::query("DELETE FROM apps WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot delete an app", e))?;
        audit_in(&mut tx, change, "app.delete", &json!({ "app": name })).await?;
        commit(tx, "delete an app").await
    }
}

/// Versions.
impl Store {
    /// Records an uploaded package as a version of its app. An existing version is refused
    /// with [`Error::Conflict`] unless `force` is set; then its hash, size, uploader and time
    /// are replaced. Returns whether an existing version was replaced. The caller tells the
    /// agents when a replaced version is the active one.
    pub async fn add_version(
        &self,
        v: &NewVersion<'_>,
        force: bool,
        change: Change<'_>,
    ) -> Result<bool, Error> {
        let size = i64::try_from(v.size)
            .map_err(|_| Error::conflict(&format!("package size {} is too large", v.size)))?;
        let mut tx = begin(self, "add a version").await?;
        require_app(&mut tx, v.app).await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM app_versions WHERE app = ? AND version = ?")
                .bind(v.app)
                .bind(v.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| Error::db("cannot read a version", e))?;
        let replaced = exists.is_some();
        if replaced && !force {
            return Err(Error::conflict(&format!(
                "app `{}` already has version `{}`; force to replace it",
                v.app, v.version
            )));
        }
        sqlx::query(
            "INSERT INTO app_versions (app, version, sha256, size, uploader, created_at_ms)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (app, version) DO UPDATE SET
                 sha256 = excluded.sha256,
                 size = excluded.size,
                 uploader = excluded.uploader,
                 created_at_ms = excluded.created_at_ms",
        )
        .bind(v.app)
        .bind(v.version)
        .bind(v.sha256)
        .bind(size)
        .bind(change.actor)
        .bind(change.at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db("cannot add a version", e))?;
        touch_app(&mut tx, v.app, change.at_ms).await?;
        let action = if replaced {
            "version.replace"
        } else {
            "version.add"
        };
        audit_in(
            &mut tx,
            change,
            action,
            &json!({ "app": v.app, "version": v.version, "sha256": v.sha256, "size": v.size }),
        )
        .await?;
        commit(tx, "add a version").await?;
        Ok(replaced)
    }

    /// One version of an app, if recorded.
    pub async fn version(&self, app: &str, version: &str) -> Result<Option<Version>, Error> {
        let row: Option<VersionRow> = sqlx::query_as(concat!(
            "SELECT ",
            version_columns!(),
            " FROM app_versions WHERE app = ? AND version = ?"
        ))
        .bind(app)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::db("cannot read a version", e))?;
        row.map(version_from_row).transpose()
    }

    /// The versions of an app, oldest upload first (ties by version text).
    pub async fn versions(&self, app: &str) -> Result<Vec<Version>, Error> {
        let rows: Vec<VersionRow> = sqlx::query_as(concat!(
            "SELECT ",
            version_columns!(),
            " FROM app_versions WHERE app = ?
             ORDER BY created_at_ms, version"
        ))
        .bind(app)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot list versions", e))?;
        rows.into_iter().map(version_from_row).collect()
    }

    /// Makes `version` the one the app's agents should run. The version must have been
    /// recorded ([`Error::NotFound`] otherwise). Returns whether the active version changed;
    /// the caller tells the agents only then.
    pub async fn set_active_version(
        &self,
        app: &str,
        version: &str,
        change: Change<'_>,
    ) -> Result<bool, Error> {
        let mut tx = begin(self, "activate a version").await?;
        let current: Option<Option<String>> =
            sqlx::query_scalar("SELECT active_version FROM apps WHERE name = ?")
                .bind(app)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| Error::db("cannot read an app", e))?;
        let Some(current) = current else {
            return Err(Error::not_found(&format!("app `{app}` not found")));
        };
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM app_versions WHERE app = ? AND version = ?")
                .bind(app)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| Error::db("cannot read a version", e))?;
        if exists.is_none() {
            return Err(Error::not_found(&format!(
                "app `{app}` has no version `{version}`"
            )));
        }
        if current.as_deref() == Some(version) {
            return Ok(false);
        }
        sqlx::query("UPDATE apps SET active_version = ?, updated_at_ms = ? WHERE name = ?")
            .bind(version)
            .bind(change.at_ms)
            .bind(app)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot activate a version", e))?;
        audit_in(
            &mut tx,
            change,
            "app.activate",
            &json!({ "app": app, "version": version, "previous": current }),
        )
        .await?;
        commit(tx, "activate a version").await?;
        Ok(true)
    }
}

/// Bindings.
impl Store {
    /// Binds ips to an app. Ips already bound are left alone, so binding is idempotent.
    pub async fn bind<S: AsRef<str> + Sync>(
        &self,
        app: &str,
        ips: &[S],
        change: Change<'_>,
    ) -> Result<BindingChange, Error> {
        let mut tx = begin(self, "bind agents").await?;
        require_app(&mut tx, app).await?;
        let mut added = Vec::new();
        for ip in distinct(ips) {
            let done = sqlx::query(
                "INSERT INTO app_bindings (app, ip) VALUES (?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(app)
            .bind(&ip)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot bind an agent", e))?;
            if done.rows_affected() == 1 {
                added.push(ip);
            }
        }
        let result = BindingChange {
            added,
            removed: Vec::new(),
        };
        finish_bindings(tx, change, "binding.add", app, result).await
    }

    /// Unbinds ips from an app. Ips that are not bound are ignored, so unbinding is idempotent.
    pub async fn unbind<S: AsRef<str> + Sync>(
        &self,
        app: &str,
        ips: &[S],
        change: Change<'_>,
    ) -> Result<BindingChange, Error> {
        let mut tx = begin(self, "unbind agents").await?;
        require_app(&mut tx, app).await?;
        let mut removed = Vec::new();
        for ip in distinct(ips) {
            let done = sqlx::query("DELETE FROM app_bindings WHERE app = ? AND ip = ?")
                .bind(app)
                .bind(&ip)
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::db("cannot unbind an agent", e))?;
            if done.rows_affected() == 1 {
                removed.push(ip);
            }
        }
        let result = BindingChange {
            added: Vec::new(),
            removed,
        };
        finish_bindings(tx, change, "binding.remove", app, result).await
    }

    /// Makes `ips` exactly the app's bindings, in one transaction (the bind-URL sync): readers
    /// see the old set or the new one, never a mix.
    pub async fn replace_bindings<S: AsRef<str> + Sync>(
        &self,
        app: &str,
        ips: &[S],
        change: Change<'_>,
    ) -> Result<BindingChange, Error> {
        let mut tx = begin(self, "replace bindings").await?;
        require_app(&mut tx, app).await?;
        let old = bindings_in(&mut tx, app).await?;
        let new = distinct(ips);
        let result = BindingChange {
            added: new.difference(&old).cloned().collect(),
            removed: old.difference(&new).cloned().collect(),
        };
        for ip in &result.removed {
            sqlx::query("DELETE FROM app_bindings WHERE app = ? AND ip = ?")
                .bind(app)
                .bind(ip)
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::db("cannot unbind an agent", e))?;
        }
        for ip in &result.added {
            sqlx::query("INSERT INTO app_bindings (app, ip) VALUES (?, ?)")
                .bind(app)
                .bind(ip)
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::db("cannot bind an agent", e))?;
        }
        finish_bindings(tx, change, "binding.replace", app, result).await
    }

    /// The ips bound to an app, sorted (byte order). Empty for an unknown app.
    pub async fn bindings(&self, app: &str) -> Result<Vec<String>, Error> {
        sqlx::query_scalar("SELECT ip FROM app_bindings WHERE app = ? ORDER BY ip")
            .bind(app)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("cannot read bindings", e))
    }

    /// Whether `ip` is bound to `app`.
    pub async fn is_bound(&self, app: &str, ip: &str) -> Result<bool, Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM app_bindings WHERE app = ? AND ip = ?")
                .bind(app)
                .bind(ip)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| Error::db("cannot read a binding", e))?;
        Ok(found.is_some())
    }

    /// The apps `ip` is bound to, sorted by name (what the agent at `ip` should have installed).
    pub async fn apps_bound_to(&self, ip: &str) -> Result<Vec<String>, Error> {
        let _t = elves_telemetry::store_op("apps_bound_to");
        sqlx::query_scalar("SELECT app FROM app_bindings WHERE ip = ? ORDER BY app")
            .bind(ip)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("cannot read bindings", e))
    }
}

/// Audits (when something changed) and commits a bindings change.
async fn finish_bindings(
    mut tx: Tx,
    change: Change<'_>,
    action: &str,
    app: &str,
    result: BindingChange,
) -> Result<BindingChange, Error> {
    if result.is_empty() {
        // Nothing changed: no audit row, and the rollback on drop releases the lock.
        return Ok(result);
    }
    audit_in(
        &mut tx,
        change,
        action,
        &json!({ "app": app, "added": result.added, "removed": result.removed }),
    )
    .await?;
    commit(tx, "change bindings").await?;
    Ok(result)
}

/// API keys.
impl Store {
    /// Creates an API key of an existing app. Fails with [`Error::Conflict`] when the
    /// `auth_id` is taken (generate another and retry).
    pub async fn create_key(&self, k: &NewKey<'_>, change: Change<'_>) -> Result<ApiKey, Error> {
        let mut tx = begin(self, "create an api key").await?;
        require_app(&mut tx, k.app).await?;
        let done = sqlx::query(
            "INSERT INTO api_keys
                 (auth_id, app, name, secret_enc, created_at_ms, expires_at_ms, disabled)
             VALUES (?, ?, ?, ?, ?, ?, 0)
             ON CONFLICT (auth_id) DO NOTHING",
        )
        .bind(k.auth_id.as_str())
        .bind(k.app)
        .bind(k.name)
        .bind(k.secret_enc)
        .bind(change.at_ms)
        .bind(k.expires_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db("cannot create an api key", e))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(&format!(
                "api key {} already exists",
                k.auth_id
            )));
        }
        audit_in(
            &mut tx,
            change,
            "key.create",
            &json!({
                "auth_id": k.auth_id,
                "app": k.app,
                "name": k.name,
                "expires_at_ms": k.expires_at_ms,
            }),
        )
        .await?;
        commit(tx, "create an api key").await?;
        Ok(ApiKey {
            auth_id: k.auth_id,
            app: k.app.to_owned(),
            name: k.name.to_owned(),
            secret_enc: k.secret_enc.to_owned(),
            created_at_ms: change.at_ms,
            expires_at_ms: k.expires_at_ms,
            disabled: false,
        })
    }

    /// The key with this `auth_id`, if any, whether usable or not.
    pub async fn key(&self, auth_id: &Id) -> Result<Option<ApiKey>, Error> {
        let _t = elves_telemetry::store_op("key_load");
        let row: Option<KeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE auth_id = ?"
        ))
        .bind(auth_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::db("cannot read an api key", e))?;
        row.map(key_from_row).transpose()
    }

    /// The keys of an app, oldest first (ties by `auth_id`).
    pub async fn keys(&self, app: &str) -> Result<Vec<ApiKey>, Error> {
        let rows: Vec<KeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE app = ? ORDER BY created_at_ms, auth_id"
        ))
        .bind(app)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot list api keys", e))?;
        rows.into_iter().map(key_from_row).collect()
    }

    /// Disables (or re-enables) a key. Returns whether that changed anything.
    pub async fn set_key_disabled(
        &self,
        auth_id: &Id,
        disabled: bool,
        change: Change<'_>,
    ) -> Result<bool, Error> {
        let mut tx = begin(self, "disable an api key").await?;
        let key = key_in(&mut tx, auth_id).await?;
        if key.disabled == disabled {
            return Ok(false);
        }
        sqlx::query("UPDATE api_keys SET disabled = ? WHERE auth_id = ?")
            .bind(disabled)
            .bind(auth_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot disable an api key", e))?;
        let action = if disabled {
            "key.disable"
        } else {
            "key.enable"
        };
        audit_in(
            &mut tx,
            change,
            action,
            &json!({ "auth_id": auth_id, "app": key.app }),
        )
        .await?;
        commit(tx, "disable an api key").await?;
        Ok(true)
    }

    /// Sets (or, with `None`, clears) a key's expiry. Returns whether that changed anything.
    pub async fn set_key_expiry(
        &self,
        auth_id: &Id,
        expires_at_ms: Option<i64>,
        change: Change<'_>,
    ) -> Result<bool, Error> {
        let mut tx = begin(self, "set an api key's expiry").await?;
        let key = key_in(&mut tx, auth_id).await?;
        if key.expires_at_ms == expires_at_ms {
            return Ok(false);
        }
        sqlx::query("UPDATE api_keys SET expires_at_ms = ? WHERE auth_id = ?")
            .bind(expires_at_ms)
            .bind(auth_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot set an api key's expiry", e))?;
        audit_in(
            &mut tx,
            change,
            "key.expiry",
            &json!({
                "auth_id": auth_id,
                "app": key.app,
                "expires_at_ms": expires_at_ms,
                "previous": key.expires_at_ms,
            }),
        )
        .await?;
        commit(tx, "set an api key's expiry").await?;
        Ok(true)
    }

    /// Deletes a key; requests signed with it fail from now on with `[413.1]`.
    pub async fn delete_key(&self, auth_id: &Id, change: Change<'_>) -> Result<(), Error> {
        let mut tx = begin(self, "delete an api key").await?;
        let key = key_in(&mut tx, auth_id).await?;
        sqlx::query("DELETE FROM api_keys WHERE auth_id = ?")
            .bind(auth_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot delete an api key", e))?;
        audit_in(
            &mut tx,
            change,
            "key.delete",
            &json!({ "auth_id": auth_id, "app": key.app, "name": key.name }),
        )
        .await?;
        commit(tx, "delete an api key").await
    }
}

/// Users.
impl Store {
    /// Creates a user. Fails with [`Error::Conflict`] when the email is taken (compared
    /// case-insensitively).
    pub async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        role: Role,
        change: Change<'_>,
    ) -> Result<User, Error> {
        let mut tx = begin(self, "create a user").await?;
        let done = sqlx::query(
            "INSERT INTO users (email, password_hash, role, created_at_ms)
             VALUES (?, ?, ?, ?)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(email)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(change.at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db("cannot create a user", e))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(&format!("user {email} already exists")));
        }
        audit_in(
            &mut tx,
            change,
            "user.create",
            &json!({ "email": email, "role": role }),
        )
        .await?;
        commit(tx, "create a user").await?;
        Ok(User {
            email: email.to_owned(),
            password_hash: password_hash.to_owned(),
            role,
            created_at_ms: change.at_ms,
            last_login_ms: None,
        })
    }

    /// The user with this email (compared case-insensitively), if any.
    pub async fn user(&self, email: &str) -> Result<Option<User>, Error> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE email = ?"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::db("cannot read a user", e))?;
        row.map(user_from_row).transpose()
    }

    /// Every user, ordered by email (case-insensitively).
    pub async fn users(&self) -> Result<Vec<User>, Error> {
        let rows: Vec<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY email"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot list users", e))?;
        rows.into_iter().map(user_from_row).collect()
    }

    /// Replaces a user's password hash.
    pub async fn set_password_hash(
        &self,
        email: &str,
        password_hash: &str,
        change: Change<'_>,
    ) -> Result<(), Error> {
        let mut tx = begin(self, "set a password").await?;
        let user = user_in(&mut tx, email).await?;
        sqlx::query("UPDATE users SET password_hash = ? WHERE email = ?")
            .bind(password_hash)
            .bind(email)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot set a password", e))?;
        audit_in(
            &mut tx,
            change,
            "user.password",
            &json!({ "email": user.email }),
        )
        .await?;
        commit(tx, "set a password").await
    }

    /// Changes a user's role. Refused with [`Error::Conflict`] when it would demote the last
    /// admin. Returns whether the role changed.
    pub async fn set_role(
        &self,
        email: &str,
        role: Role,
        change: Change<'_>,
    ) -> Result<bool, Error> {
        let mut tx = begin(self, "set a role").await?;
        let user = user_in(&mut tx, email).await?;
        if user.role == role {
            return Ok(false);
        }
        refuse_last_admin(&mut tx, &user, "demote").await?;
        sqlx::query("UPDATE users SET role = ? WHERE email = ?")
            .bind(role.as_str())
            .bind(email)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot set a role", e))?;
        audit_in(
            &mut tx,
            change,
            "user.role",
            &json!({ "email": user.email, "role": role, "previous": user.role }),
        )
        .await?;
        commit(tx, "set a role").await?;
        Ok(true)
    }

    /// Records a successful login at `change.at_ms` (audited as `user.login`; the actor is
    /// normally the user).
    pub async fn record_login(&self, email: &str, change: Change<'_>) -> Result<(), Error> {
        let mut tx = begin(self, "record a login").await?;
        let user = user_in(&mut tx, email).await?;
        sqlx::query("UPDATE users SET last_login_ms = ? WHERE email = ?")
            .bind(change.at_ms)
            .bind(email)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot record a login", e))?;
        audit_in(
            &mut tx,
            change,
            "user.login",
            &json!({ "email": user.email }),
        )
        .await?;
        commit(tx, "record a login").await
    }

    /// Deletes a user. Refused with [`Error::Conflict`] for the last admin.
    pub async fn delete_user(&self, email: &str, change: Change<'_>) -> Result<(), Error> {
        let mut tx = begin(self, "delete a user").await?;
        let user = user_in(&mut tx, email).await?;
        refuse_last_admin(&mut tx, &user, "delete").await?;
        sqlx::query("DELETE FROM users WHERE email = ?")
            .bind(email)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("cannot delete a user", e))?;
        audit_in(
            &mut tx,
            change,
            "user.delete",
            &json!({ "email": user.email, "role": user.role }),
        )
        .await?;
        commit(tx, "delete a user").await
    }
}

/// The audit log.
impl Store {
    /// Appends an audit row for an event that is not a store change (a refused login, a
    /// rejected upload). Returns the row's id. `detail` should be a JSON object and must never
    /// hold a secret.
    pub async fn append_audit(
        &self,
        action: &str,
        detail: &Value,
        change: Change<'_>,
    ) -> Result<i64, Error> {
        let mut tx = begin(self, "append to the audit log").await?;
        let id = audit_in(&mut tx, change, action, detail).await?;
        commit(tx, "append to the audit log").await?;
        Ok(id)
    }

    /// Audit rows, newest first: at most `limit` (capped at [`MAX_AUDIT_PAGE`]) rows, starting
    /// after the row `before_id` when given (pass the last id of a page to get the next).
    pub async fn audit(
        &self,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditEntry>, Error> {
        let limit = limit.min(MAX_AUDIT_PAGE);
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at_ms, actor, action, detail FROM audit_log
             WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot read the audit log", e))?;
        rows.into_iter().map(audit_from_row).collect()
    }
}

/// Agent credentials, as an operator sees them (`elves admin agent …`).
impl Store {
    /// Every pinned credential, ordered by ip (secrets' hashes included: the caller must not
    /// show them).
    pub async fn credentials(&self) -> Result<Vec<crate::Credential>, Error> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT ip, secret_sha256, asset, enrolled_at_ms FROM agent_credentials ORDER BY ip",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot list agent credentials", e))?;
        Ok(rows
            .into_iter()
            .map(
                |(ip, secret_sha256, asset, enrolled_at_ms)| crate::Credential {
                    ip,
                    secret_sha256,
                    asset,
                    enrolled_at_ms,
                },
            )
            .collect())
    }

    /// Releases the credential `ip` is pinned to, so that the next agent to enroll with the
    /// center's token under that ip gets a new one (a reinstalled host, a lost secret), and
    /// audits it in the same transaction. [`Error::NotFound`] when `ip` is not pinned.
    pub async fn release_agent(&self, ip: &str, change: Change<'_>) -> Result<(), Error> {
        let mut tx = begin(self, "release an agent").await?;
        let asset: Option<String> =
            sqlx::query_scalar("DELETE FROM agent_credentials WHERE ip = ? RETURNING asset")
                .bind(ip)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| Error::db("cannot release an agent credential", e))?;
        let Some(asset) = asset else {
            return Err(Error::not_found(&format!(
                "no agent credential is pinned to {ip}"
            )));
        };
        audit_in(
            &mut tx,
            change,
            "agent.release",
            &json!({ "ip": ip, "asset": asset }),
        )
        .await?;
        commit(tx, "release an agent").await
    }
}
