//! The supervisor data's rules, one test each. Every test has its own database file in its own
//! temp directory, so the tests run in parallel.

use std::path::{Path, PathBuf};

use elves_store::{
    ApiKey, App, BindingChange, Change, Error, MAX_AUDIT_PAGE, NewKey, NewVersion, Role, Store,
    Version,
};
use elves_types::Id;
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

/// A store on a fresh file; the directory lives as long as the returned guard.
async fn fresh() -> (Store, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elves.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    (store, dir, path)
}

/// A raw connection to the file, bypassing the store.
async fn peek(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

fn by(actor: &str, at_ms: i64) -> Change<'_> {
    Change { actor, at_ms }
}

const ADMIN: &str = "admin@example.com";

fn id(n: u8) -> Id {
    Id::from_bytes([0xA0, 0, 0, 0, 0, 0, 0, n])
}

fn package<'a>(app: &'a str, version: &'a str, sha256: &'a str) -> NewVersion<'a> {
    NewVersion {
        app,
        version,
        sha256,
        size: 1234,
    }
}

fn new_key<'a>(auth_id: Id, app: &'a str) -> NewKey<'a> {
    NewKey {
        auth_id,
        app,
        name: "ci",
        secret_enc: "v1:c2VjcmV0LWNpcGhlcnRleHQ=",
        expires_at_ms: None,
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, Error>, expected: &str) {
    match result {
        Err(e @ Error::NotFound(_)) => {
            let msg = e.to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        other => panic!("expected Error::NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, Error>, expected: &str) {
    match result {
        Err(e @ Error::Conflict(_)) => {
            let msg = e.to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        other => panic!("expected Error::Conflict, got {other:?}"),
    }
}

/// The actions of the whole audit log, oldest first.
async fn actions(store: &Store) -> Vec<String> {
    let mut rows = store.audit(MAX_AUDIT_PAGE, None).await.unwrap();
    rows.reverse();
    rows.into_iter().map(|r| r.action).collect()
}

#[tokio::test]
async fn the_supervisor_migration_is_recorded_after_the_agents_one() {
    let (store, _dir, path) = fresh().await;
    store.close().await;
    let mut conn = peek(&path).await;
    let versions: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM schema_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        versions[..2],
        [(1, "agents".to_owned()), (2, "supervisor".to_owned())]
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn create_read_list_and_update_apps() {
    let (store, _dir, _path) = fresh().await;
    assert_eq!(store.app("ops").await.unwrap(), None);
    assert_eq!(store.apps().await.unwrap(), []);

    let ops = store
        .create_app("ops", "Operations", None, by(ADMIN, 100))
        .await
        .unwrap();
    let expected = App {
        name: "ops".to_owned(),
        title: "Operations".to_owned(),
        creator: ADMIN.to_owned(),
        created_at_ms: 100,
        updated_at_ms: 100,
        active_version: None,
        bind_url: None,
    };
    assert_eq!(ops, expected);
    assert_eq!(store.app("ops").await.unwrap(), Some(expected.clone()));
    // The app name may contain `_`, and names are case-sensitive.
    store
        .create_app("my_app", "Mine", Some("http://cmdb/ips"), by(ADMIN, 101))
        .await
        .unwrap();
    store
        .create_app("Ops", "Other", None, by(ADMIN, 102))
        .await
        .unwrap();
    let names: Vec<String> = store
        .apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["Ops", "my_app", "ops"]);

    let updated = store
        .update_app("ops", "Ops team", Some("http://x/ips"), by("bob", 200))
        .await
        .unwrap();
    assert_eq!(
        updated,
        App {
            title: "Ops team".to_owned(),
            bind_url: Some("http://x/ips".to_owned()),
            updated_at_ms: 200,
            ..expected
        }
    );
    assert_eq!(store.app("ops").await.unwrap(), Some(updated));
    assert_not_found(
        store.update_app("nope", "x", None, by(ADMIN, 1)).await,
        "app `nope` not found",
    );
    assert_eq!(
        actions(&store).await,
        ["app.create", "app.create", "app.create", "app.update"]
    );
    store.close().await;
}

#[tokio::test]
async fn a_second_app_of_the_same_name_is_refused_and_not_audited() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    assert_conflict(
        store.create_app("ops", "Again", None, by("eve", 2)).await,
        "app `ops` already exists",
    );
    assert_eq!(store.app("ops").await.unwrap().unwrap().title, "Operations");
    assert_eq!(actions(&store).await, ["app.create"]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_app_have_exactly_one_winner() {
    let (store, _dir, _path) = fresh().await;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let actor = format!("admin-{i}");
                store
                    .create_app("ops", "Operations", None, by(&actor, i))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(actions(&store).await, ["app.create"]);
    store.close().await;
}

#[tokio::test]
async fn an_app_is_not_deleted_while_it_has_versions_bindings_or_keys() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    store
        .add_version(&package("ops", "1.0", "aa"), false, by(ADMIN, 2))
        .await
        .unwrap();
    store
        .add_version(&package("ops", "1.1", "bb"), false, by(ADMIN, 3))
        .await
        .unwrap();
    store
        .bind("ops", &["10.0.0.1"], by(ADMIN, 4))
        .await
        .unwrap();
    store
        .create_key(&new_key(id(1), "ops"), by(ADMIN, 5))
        .await
        .unwrap();

    assert_conflict(
        store.delete_app("ops", by(ADMIN, 6)).await,
        "app `ops` still has 2 versions, 1 binding, 1 key; remove them before deleting the app",
    );
    store.delete_key(&id(1), by(ADMIN, 7)).await.unwrap();
    store
        .unbind("ops", &["10.0.0.1"], by(ADMIN, 8))
        .await
        .unwrap();
    assert_conflict(
        store.delete_app("ops", by(ADMIN, 9)).await,
        "app `ops` still has 2 versions;",
    );
    assert!(store.app("ops").await.unwrap().is_some());
    store.close().await;
}

#[tokio::test]
async fn an_app_without_versions_bindings_or_keys_is_deleted() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    store
        .bind("ops", &["10.0.0.1"], by(ADMIN, 2))
        .await
        .unwrap();
    store
        .unbind("ops", &["10.0.0.1"], by(ADMIN, 3))
        .await
        .unwrap();
    store.delete_app("ops", by("bob", 4)).await.unwrap();
    assert_eq!(store.app("ops").await.unwrap(), None);
    assert_not_found(
        store.delete_app("ops", by("bob", 5)).await,
        "app `ops` not found",
    );
    let last = &store.audit(1, None).await.unwrap()[0];
    assert_eq!(
        (last.actor.as_str(), last.action.as_str(), last.at_ms),
        ("bob", "app.delete", 4)
    );
    assert_eq!(last.detail, json!({ "app": "ops" }));
    // The name is free again.
    store
        .create_app("ops", "Operations", None, by(ADMIN, 6))
        .await
        .unwrap();
    store.close().await;
}

#[tokio::test]
async fn an_existing_version_is_refused_unless_forced_and_forcing_replaces_it() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    let replaced = store
        .add_version(&package("ops", "1.0", "aa"), false, by("alice", 10))
        .await
        .unwrap();
    assert!(!replaced);
    let first = Version {
        app: "ops".to_owned(),
        version: "1.0".to_owned(),
        sha256: "aa".to_owned(),
        size: 1234,
        uploader: "alice".to_owned(),
        created_at_ms: 10,
    };
    assert_eq!(
        store.version("ops", "1.0").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.app("ops").await.unwrap().unwrap().updated_at_ms, 10);

    assert_conflict(
        store
            .add_version(&package("ops", "1.0", "bb"), false, by("bob", 20))
            .await,
        "app `ops` already has version `1.0`; force to replace it",
    );
    assert_eq!(
        store.version("ops", "1.0").await.unwrap(),
        Some(first.clone())
    );

    let replacement = NewVersion {
        size: 99,
        ..package("ops", "1.0", "cc")
    };
    assert!(
        store
            .add_version(&replacement, true, by("bob", 30))
            .await
            .unwrap()
    );
    assert_eq!(
        store.version("ops", "1.0").await.unwrap(),
        Some(Version {
            sha256: "cc".to_owned(),
            size: 99,
            uploader: "bob".to_owned(),
            created_at_ms: 30,
            ..first
        })
    );
    // Forcing a new version simply adds it.
    assert!(
        !store
            .add_version(&package("ops", "2.0", "dd"), true, by("bob", 40))
            .await
            .unwrap()
    );
    let listed: Vec<(String, i64)> = store
        .versions("ops")
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.version, v.created_at_ms))
        .collect();
    assert_eq!(listed, [("1.0".to_owned(), 30), ("2.0".to_owned(), 40)]);
    assert_not_found(
        store
            .add_version(&package("nope", "1.0", "aa"), false, by("bob", 50))
            .await,
        "app `nope` not found",
    );
    assert_eq!(
        actions(&store).await,
        [
            "app.create",
            "version.add",
            "version.replace",
            "version.add"
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn the_active_version_must_exist_and_is_set_once() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    assert_not_found(
        store.set_active_version("ops", "1.0", by(ADMIN, 2)).await,
        "app `ops` has no version `1.0`",
    );
    assert_not_found(
        store.set_active_version("nope", "1.0", by(ADMIN, 2)).await,
        "app `nope` not found",
    );
    store
        .add_version(&package("ops", "1.0", "aa"), false, by(ADMIN, 3))
        .await
        .unwrap();
    store
        .add_version(&package("ops", "1.1", "bb"), false, by(ADMIN, 4))
        .await
        .unwrap();

    assert!(
        store
            .set_active_version("ops", "1.0", by(ADMIN, 5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_active_version("ops", "1.0", by(ADMIN, 6))
            .await
            .unwrap()
    );
    assert!(
        store
            .set_active_version("ops", "1.1", by(ADMIN, 7))
            .await
            .unwrap()
    );
    let app = store.app("ops").await.unwrap().unwrap();
    assert_eq!(
        (app.active_version.as_deref(), app.updated_at_ms),
        (Some("1.1"), 7)
    );
    let last = &store.audit(1, None).await.unwrap()[0];
    assert_eq!(last.action, "app.activate");
    assert_eq!(
        last.detail,
        json!({ "app": "ops", "version": "1.1", "previous": "1.0" })
    );
    assert_eq!(
        actions(&store).await,
        [
            "app.create",
            "version.add",
            "version.add",
            "app.activate",
            "app.activate"
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn binding_and_unbinding_are_idempotent() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    store
        .create_app("web", "Web", None, by(ADMIN, 1))
        .await
        .unwrap();

    let change = store
        .bind("ops", &["10.0.0.2", "10.0.0.10", "10.0.0.2"], by(ADMIN, 2))
        .await
        .unwrap();
    assert_eq!(
        change,
        BindingChange {
            added: vec!["10.0.0.10".to_owned(), "10.0.0.2".to_owned()],
            removed: vec![],
        }
    );
    let again = store
        .bind("ops", &["10.0.0.2"], by(ADMIN, 3))
        .await
        .unwrap();
    assert!(again.is_empty());
    store
        .bind("web", &["10.0.0.2"], by(ADMIN, 4))
        .await
        .unwrap();

    assert_eq!(
        store.bindings("ops").await.unwrap(),
        ["10.0.0.10", "10.0.0.2"]
    );
    assert!(store.is_bound("ops", "10.0.0.2").await.unwrap());
    assert!(!store.is_bound("ops", "10.0.0.3").await.unwrap());
    assert!(!store.is_bound("nope", "10.0.0.2").await.unwrap());
    assert_eq!(
        store.apps_bound_to("10.0.0.2").await.unwrap(),
        ["ops", "web"]
    );

    let removed = store
        .unbind("ops", &["10.0.0.2", "10.0.0.99"], by(ADMIN, 5))
        .await
        .unwrap();
    assert_eq!(removed.removed, ["10.0.0.2"]);
    assert!(
        store
            .unbind("ops", &["10.0.0.2"], by(ADMIN, 6))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.bindings("ops").await.unwrap(), ["10.0.0.10"]);
    assert_eq!(store.bindings("nope").await.unwrap(), Vec::<String>::new());

    assert_not_found(
        store.bind("nope", &["10.0.0.1"], by(ADMIN, 7)).await,
        "app `nope` not found",
    );
    assert_not_found(
        store.unbind("nope", &["10.0.0.1"], by(ADMIN, 7)).await,
        "app `nope` not found",
    );
    // The calls that changed nothing wrote no audit row.
    assert_eq!(
        actions(&store).await,
        [
            "app.create",
            "app.create",
            "binding.add",
            "binding.add",
            "binding.remove"
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn replace_bindings_makes_the_set_exact_in_one_change() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", Some("http://cmdb"), by(ADMIN, 1))
        .await
        .unwrap();
    store
        .bind("ops", &["10.0.0.1", "10.0.0.2"], by(ADMIN, 2))
        .await
        .unwrap();

    let change = store
        .replace_bindings("ops", &["10.0.0.2", "10.0.0.3", "10.0.0.3"], by("sync", 3))
        .await
        .unwrap();
    assert_eq!(
        change,
        BindingChange {
            added: vec!["10.0.0.3".to_owned()],
            removed: vec!["10.0.0.1".to_owned()],
        }
    );
    assert_eq!(
        store.bindings("ops").await.unwrap(),
        ["10.0.0.2", "10.0.0.3"]
    );
    let last = &store.audit(1, None).await.unwrap()[0];
    assert_eq!(
        (last.actor.as_str(), last.action.as_str()),
        ("sync", "binding.replace")
    );
    assert_eq!(
        last.detail,
        json!({ "app": "ops", "added": ["10.0.0.3"], "removed": ["10.0.0.1"] })
    );

    // The same set again changes nothing and is not audited; an empty set unbinds all.
    assert!(
        store
            .replace_bindings("ops", &["10.0.0.3", "10.0.0.2"], by("sync", 4))
            .await
            .unwrap()
            .is_empty()
    );
    let none: &[&str] = &[];
    let cleared = store
        .replace_bindings("ops", none, by("sync", 5))
        .await
        .unwrap();
    assert_eq!(cleared.removed, ["10.0.0.2", "10.0.0.3"]);
    assert_eq!(store.bindings("ops").await.unwrap(), Vec::<String>::new());
    assert_not_found(
        store.replace_bindings("nope", none, by("sync", 6)).await,
        "app `nope` not found",
    );
    assert_eq!(
        actions(&store).await,
        [
            "app.create",
            "binding.add",
            "binding.replace",
            "binding.replace"
        ]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_half_of_a_bindings_replacement() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    let old: Vec<String> = (0..50).map(|i| format!("10.0.0.{i}")).collect();
    let new: Vec<String> = (0..50).map(|i| format!("10.0.1.{i}")).collect();
    store.bind("ops", &old, by(ADMIN, 2)).await.unwrap();

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let (old_sorted, new_sorted) = (sorted(old.clone()), sorted(new.clone()));
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                let seen = store.bindings("ops").await.unwrap();
                assert!(
                    seen == old_sorted || seen == new_sorted,
                    "a reader saw a mix of {} ips",
                    seen.len()
                );
            }
        })
    };
    for round in 0..10 {
        let target = if round % 2 == 0 { &new } else { &old };
        store
            .replace_bindings("ops", target, by("sync", 3 + round))
            .await
            .unwrap();
    }
    reader.await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn keys_are_created_read_listed_disabled_expired_and_deleted() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    store
        .create_app("web", "Web", None, by(ADMIN, 1))
        .await
        .unwrap();

    let key = store
        .create_key(
            &NewKey {
                expires_at_ms: Some(9_000),
                ..new_key(id(2), "ops")
            },
            by(ADMIN, 10),
        )
        .await
        .unwrap();
    let expected = ApiKey {
        auth_id: id(2),
        app: "ops".to_owned(),
        name: "ci".to_owned(),
        secret_enc: "v1:c2VjcmV0LWNpcGhlcnRleHQ=".to_owned(),
        created_at_ms: 10,
        expires_at_ms: Some(9_000),
        disabled: false,
    };
    assert_eq!(key, expected);
    assert_eq!(store.key(&id(2)).await.unwrap(), Some(expected.clone()));
    assert_eq!(store.key(&id(3)).await.unwrap(), None);

    // Several keys per app (rotation), listed oldest first; other apps' keys are not listed.
    store
        .create_key(&new_key(id(1), "ops"), by(ADMIN, 20))
        .await
        .unwrap();
    store
        .create_key(&new_key(id(3), "web"), by(ADMIN, 15))
        .await
        .unwrap();
    let listed: Vec<Id> = store
        .keys("ops")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.auth_id)
        .collect();
    assert_eq!(listed, [id(2), id(1)]);

    assert_conflict(
        store
            .create_key(&new_key(id(2), "web"), by(ADMIN, 30))
            .await,
        &format!("api key {} already exists", id(2)),
    );
    assert_not_found(
        store
            .create_key(&new_key(id(9), "nope"), by(ADMIN, 30))
            .await,
        "app `nope` not found",
    );

    assert!(
        store
            .set_key_disabled(&id(2), true, by(ADMIN, 40))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_key_disabled(&id(2), true, by(ADMIN, 41))
            .await
            .unwrap()
    );
    assert!(store.key(&id(2)).await.unwrap().unwrap().disabled);
    assert!(
        store
            .set_key_disabled(&id(2), false, by(ADMIN, 42))
            .await
            .unwrap()
    );
    assert!(
        store
            .set_key_expiry(&id(2), None, by(ADMIN, 43))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_key_expiry(&id(2), None, by(ADMIN, 44))
            .await
            .unwrap()
    );
    assert_eq!(
        store.key(&id(2)).await.unwrap().unwrap(),
        ApiKey {
            expires_at_ms: None,
            ..expected
        }
    );

    store.delete_key(&id(2), by(ADMIN, 50)).await.unwrap();
    assert_eq!(store.key(&id(2)).await.unwrap(), None);
    assert_not_found(
        store.delete_key(&id(2), by(ADMIN, 51)).await,
        &format!("api key {} not found", id(2)),
    );
    assert_not_found(
        store.set_key_disabled(&id(2), true, by(ADMIN, 51)).await,
        "not found",
    );
    assert_not_found(
        store.set_key_expiry(&id(2), Some(1), by(ADMIN, 51)).await,
        "not found",
    );
    assert_eq!(
        actions(&store).await,
        [
            "app.create",
            "app.create",
            "key.create",
            "key.create",
            "key.create",
            "key.disable",
            "key.enable",
            "key.expiry",
            "key.delete"
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn key_secrets_never_reach_the_audit_log_or_debug_output() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    let secret = "v1:VERY-SECRET-CIPHERTEXT";
    let key = store
        .create_key(
            &NewKey {
                secret_enc: secret,
                ..new_key(id(4), "ops")
            },
            by(ADMIN, 2),
        )
        .await
        .unwrap();
    assert_eq!(store.key(&id(4)).await.unwrap().unwrap().secret_enc, secret);
    assert!(!format!("{key:?}").contains("VERY-SECRET"));
    store
        .create_user(
            ADMIN,
            "$argon2id$v=19$SECRET-HASH",
            Role::Admin,
            by("setup", 3),
        )
        .await
        .unwrap();
    let user = store.user(ADMIN).await.unwrap().unwrap();
    assert!(!format!("{user:?}").contains("SECRET-HASH"));
    store.delete_key(&id(4), by(ADMIN, 4)).await.unwrap();
    for row in store.audit(MAX_AUDIT_PAGE, None).await.unwrap() {
        let text = row.detail.to_string();
        assert!(!text.contains("SECRET"), "{}: {text}", row.action);
    }
    store.close().await;
}

#[tokio::test]
async fn users_are_created_found_case_insensitively_and_changed() {
    let (store, _dir, _path) = fresh().await;
    let created = store
        .create_user(
            "Admin@Example.com",
            "$argon2id$h1",
            Role::Admin,
            by("setup", 1),
        )
        .await
        .unwrap();
    assert_eq!(created.email, "Admin@Example.com");
    assert_eq!(created.last_login_ms, None);
    assert_eq!(
        store.user("admin@example.COM").await.unwrap(),
        Some(created.clone())
    );
    assert_conflict(
        store
            .create_user(
                "ADMIN@example.com",
                "$argon2id$h2",
                Role::Operator,
                by("x", 2),
            )
            .await,
        "user ADMIN@example.com already exists",
    );
    store
        .create_user(
            "bob@example.com",
            "$argon2id$h3",
            Role::Operator,
            by(ADMIN, 3),
        )
        .await
        .unwrap();
    store
        .create_user(
            "alice@example.com",
            "$argon2id$h4",
            Role::Operator,
            by(ADMIN, 4),
        )
        .await
        .unwrap();
    let emails: Vec<String> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(
        emails,
        ["Admin@Example.com", "alice@example.com", "bob@example.com"]
    );

    store
        .set_password_hash("bob@example.com", "$argon2id$new", by("bob@example.com", 5))
        .await
        .unwrap();
    assert!(
        store
            .set_role("bob@example.com", Role::Admin, by(ADMIN, 6))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_role("bob@example.com", Role::Admin, by(ADMIN, 7))
            .await
            .unwrap()
    );
    store
        .record_login("BOB@example.com", by("bob@example.com", 8))
        .await
        .unwrap();
    let bob = store.user("bob@example.com").await.unwrap().unwrap();
    assert_eq!(
        (bob.password_hash.as_str(), bob.role, bob.last_login_ms),
        ("$argon2id$new", Role::Admin, Some(8))
    );

    store
        .delete_user("alice@example.com", by(ADMIN, 9))
        .await
        .unwrap();
    assert_eq!(store.user("alice@example.com").await.unwrap(), None);
    assert_not_found(
        store.delete_user("alice@example.com", by(ADMIN, 10)).await,
        "user alice@example.com not found",
    );
    assert_not_found(
        store.set_password_hash("x@y", "h", by(ADMIN, 10)).await,
        "user x@y not found",
    );
    assert_not_found(
        store.set_role("x@y", Role::Admin, by(ADMIN, 10)).await,
        "user x@y not found",
    );
    assert_not_found(
        store.record_login("x@y", by("x@y", 10)).await,
        "user x@y not found",
    );
    assert_eq!(
        actions(&store).await,
        [
            "user.create",
            "user.create",
            "user.create",
            "user.password",
            "user.role",
            "user.login",
            "user.delete"
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn the_last_admin_cannot_be_deleted_or_demoted() {
    let (store, _dir, _path) = fresh().await;
    store
        .create_user(ADMIN, "h", Role::Admin, by("setup", 1))
        .await
        .unwrap();
    store
        .create_user("op@example.com", "h", Role::Operator, by(ADMIN, 2))
        .await
        .unwrap();
    assert_conflict(
        store.delete_user(ADMIN, by(ADMIN, 3)).await,
        "cannot delete admin@example.com: it is the last admin",
    );
    assert_conflict(
        store.set_role(ADMIN, Role::Operator, by(ADMIN, 4)).await,
        "cannot demote admin@example.com: it is the last admin",
    );
    // Operators can always go; with a second admin the first can be demoted.
    store
        .set_role("op@example.com", Role::Admin, by(ADMIN, 5))
        .await
        .unwrap();
    store
        .set_role(ADMIN, Role::Operator, by("op@example.com", 6))
        .await
        .unwrap();
    assert_conflict(
        store.delete_user("op@example.com", by(ADMIN, 7)).await,
        "last admin",
    );
    store
        .delete_user(ADMIN, by("op@example.com", 8))
        .await
        .unwrap();
    assert_eq!(store.users().await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn role_names_round_trip() {
    for role in [Role::Admin, Role::Operator] {
        assert_eq!(Role::parse(role.as_str()), Some(role));
        assert_eq!(role.to_string(), role.as_str());
        assert_eq!(serde_json::to_value(role).unwrap(), json!(role.as_str()));
    }
    assert_eq!(Role::parse("Admin"), None);
    assert_eq!(Role::parse("root"), None);
}

#[tokio::test]
async fn the_audit_log_is_listed_newest_first_in_bounded_pages() {
    let (store, _dir, _path) = fresh().await;
    let mut ids = Vec::new();
    for i in 0..(MAX_AUDIT_PAGE as i64 + 20) {
        let id = store
            .append_audit("login.refused", &json!({ "n": i }), by("web", i))
            .await
            .unwrap();
        ids.push(id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");

    let page = store.audit(3, None).await.unwrap();
    let ns: Vec<i64> = page.iter().map(|r| r.at_ms).collect();
    let top = MAX_AUDIT_PAGE as i64 + 19;
    assert_eq!(ns, [top, top - 1, top - 2]);
    assert_eq!(page[0].detail, json!({ "n": top }));
    assert_eq!(
        (page[0].actor.as_str(), page[0].action.as_str()),
        ("web", "login.refused")
    );

    let next = store.audit(3, Some(page[2].id)).await.unwrap();
    assert_eq!(next[0].at_ms, top - 3);
    assert_eq!(store.audit(0, None).await.unwrap(), []);
    assert_eq!(
        store.audit(u32::MAX, None).await.unwrap().len(),
        MAX_AUDIT_PAGE as usize
    );
    assert_eq!(store.audit(10, Some(ids[0])).await.unwrap(), []);
    store.close().await;
}

#[tokio::test]
async fn audit_rows_cannot_be_changed_or_removed_even_with_raw_sql() {
    let (store, _dir, path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    let mut conn = peek(&path).await;
    for sql in [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(
            err.to_string().contains("audit_log is append-only"),
            "{err}"
        );
    }
    // A detail that is not JSON is refused by the schema too.
    let err = sqlx::query(
        "INSERT INTO audit_log (at_ms, actor, action, detail) VALUES (1, 'a', 'b', 'not json')",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
    conn.close().await.unwrap();
    let rows = store.audit(10, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor, ADMIN);
    store.close().await;
}

#[tokio::test]
async fn a_refused_change_leaves_no_trace_and_a_change_always_has_its_audit_row() {
    let (store, _dir, path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    store
        .add_version(&package("ops", "1.0", "aa"), false, by(ADMIN, 2))
        .await
        .unwrap();

    // Make every audit insert fail; the change it belongs to must then not happen either.
    let mut conn = peek(&path).await;
    sqlx::raw_sql(
        "CREATE TRIGGER audit_log_broken BEFORE INSERT ON audit_log
         BEGIN SELECT RAISE(ABORT, 'audit disk full'); END;",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let err = store
        .set_active_version("ops", "1.0", by(ADMIN, 3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit disk full"), "{err}");
    assert_eq!(
        store.app("ops").await.unwrap().unwrap().active_version,
        None
    );
    assert!(
        store
            .create_app("web", "Web", None, by(ADMIN, 4))
            .await
            .is_err()
    );
    assert_eq!(store.app("web").await.unwrap(), None);
    assert!(
        store
            .bind("ops", &["10.0.0.1"], by(ADMIN, 5))
            .await
            .is_err()
    );
    assert_eq!(store.bindings("ops").await.unwrap(), Vec::<String>::new());

    sqlx::raw_sql("DROP TRIGGER audit_log_broken")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(actions(&store).await, ["app.create", "version.add"]);
    store.close().await;
}

#[tokio::test]
async fn supervisor_data_survives_a_restart() {
    let (store, dir, path) = fresh().await;
    store
        .create_app("ops", "Operations", None, by(ADMIN, 1))
        .await
        .unwrap();
    store
        .add_version(&package("ops", "1.0", "aa"), false, by(ADMIN, 2))
        .await
        .unwrap();
    store
        .set_active_version("ops", "1.0", by(ADMIN, 3))
        .await
        .unwrap();
    store
        .bind("ops", &["10.0.0.1"], by(ADMIN, 4))
        .await
        .unwrap();
    store
        .create_key(&new_key(id(5), "ops"), by(ADMIN, 5))
        .await
        .unwrap();
    store
        .create_user(ADMIN, "h", Role::Admin, by("setup", 6))
        .await
        .unwrap();
    let app = store.app("ops").await.unwrap();
    store.close().await;

    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(store.app("ops").await.unwrap(), app);
    assert_eq!(store.bindings("ops").await.unwrap(), ["10.0.0.1"]);
    assert!(store.key(&id(5)).await.unwrap().is_some());
    assert!(store.user(ADMIN).await.unwrap().is_some());
    assert_eq!(store.audit(MAX_AUDIT_PAGE, None).await.unwrap().len(), 6);
    store.close().await;
    drop(dir);
}
