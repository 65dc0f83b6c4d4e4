//! The store's rules, one test each. Every test has its own database file in its own temp
//! directory, so the tests run in parallel.

use std::collections::BTreeMap;
use std::path::Path;

use elves_store::{AgentRecord, Credential, Error, Store};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A raw connection to the file, bypassing the store, to look at what it wrote.
async fn peek(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

fn credential(ip: &str, secret: &str) -> Credential {
    Credential {
        ip: ip.to_owned(),
        secret_sha256: secret.to_owned(),
        asset: format!("asset-{ip}"),
        enrolled_at_ms: 1_700_000_000_000,
    }
}

fn agent(ip: &str, heartbeat_ms: i64) -> AgentRecord {
    AgentRecord {
        ip: ip.to_owned(),
        asset: format!("asset-{ip}"),
        version: "1.0.0".to_owned(),
        apps: BTreeMap::from([("ops".to_owned(), "2.1".to_owned())]),
        connected_to: "gw-1".to_owned(),
        last_heartbeat_ms: heartbeat_ms,
        first_seen_ms: heartbeat_ms,
    }
}

#[track_caller]
fn assert_open_error(result: Result<Store, Error>, expected: &str) {
    match result {
        Err(e @ Error::Open(_)) => {
            let msg = e.to_string();
            assert!(msg.starts_with("store: "), "{msg}");
            assert!(msg.contains(expected), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        Err(e) => panic!("expected Error::Open, got {e:?}"),
        Ok(_) => panic!("expected Error::Open, got a store"),
    }
}

#[tokio::test]
async fn open_creates_the_directory_and_the_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not/yet/there/elves.db");
    let store = Store::open(&url(&path)).await.unwrap();
    assert!(path.is_file());

    let mut conn = peek(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn reopening_is_idempotent_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elves.db");

    let store = Store::open(&url(&path)).await.unwrap();
    assert!(
        store
            .pin_credential(&credential("10.0.0.1", "aa"))
            .await
            .unwrap()
    );
    store.record_agent(&agent("10.0.0.1", 5)).await.unwrap();
    store.close().await;

    for _restart in 0..2 {
        let store = Store::open(&url(&path)).await.unwrap();
        assert_eq!(
            store.credential("10.0.0.1").await.unwrap(),
            Some(credential("10.0.0.1", "aa"))
        );
        assert_eq!(
            store.agent("10.0.0.1").await.unwrap(),
            Some(agent("10.0.0.1", 5))
        );
        store.close().await;
    }

    let mut conn = peek(&path).await;
    let versions: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM schema_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        versions,
        [
            (1, "agents".to_owned()),
            (2, "supervisor".to_owned()),
            (3, "queues".to_owned()),
            (4, "crons".to_owned()),
            (5, "cron_list_by_app_and_dispatch".to_owned()),
        ]
    );
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_new_database_apply_each_migration_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elves.db");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url(&path);
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap().close().await;
    }
    let mut conn = peek(&path).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 5);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elves.db");
    Store::open(&url(&path)).await.unwrap().close().await;

    let mut conn = peek(&path).await;
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (9999, 'future', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    assert_open_error(
        Store::open(&url(&path)).await,
        "schema is at version 9999 but this build knows versions up to 5",
    );
}

#[tokio::test]
async fn in_memory_and_non_sqlite_urls_are_refused_clearly() {
    assert_open_error(
        Store::open("sqlite::memory:").await,
        "in-memory SQLite is not supported",
    );
    assert_open_error(
        Store::open("postgres://elves:hunter2@db/elves").await,
        "`postgres` databases are not supported by this build yet; expected sqlite://PATH",
    );
    let msg = Store::open("postgres://elves:hunter2@db/elves")
        .await
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("hunter2"), "{msg}");
    assert_open_error(
        Store::open("https://example.com/elves.db").await,
        "unsupported database URL scheme `https`",
    );
}

#[tokio::test]
async fn pin_read_and_release_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir.path().join("elves.db")))
        .await
        .unwrap();
    let ip = "192.168.1.7";

    assert_eq!(store.credential(ip).await.unwrap(), None);
    assert!(
        store
            .pin_credential(&credential(ip, "first"))
            .await
            .unwrap()
    );
    // A second pin changes nothing.
    assert!(
        !store
            .pin_credential(&credential(ip, "second"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.credential(ip).await.unwrap(),
        Some(credential(ip, "first"))
    );

    assert!(store.release_credential(ip).await.unwrap());
    assert!(!store.release_credential(ip).await.unwrap());
    assert_eq!(store.credential(ip).await.unwrap(), None);

    // After a release the address can be pinned again.
    assert!(
        store
            .pin_credential(&credential(ip, "second"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.credential(ip).await.unwrap(),
        Some(credential(ip, "second"))
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pins_of_one_ip_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elves.db");
    // Two stores on one file stand in for two center processes.
    let stores = [
        Store::open(&url(&path)).await.unwrap(),
        Store::open(&url(&path)).await.unwrap(),
    ];
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = stores[i % 2].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let won = store
                    .pin_credential(&credential("10.1.1.1", &format!("secret-{i}")))
                    .await
                    .unwrap();
                (i, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (i, won) = task.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let pinned = stores[0].credential("10.1.1.1").await.unwrap().unwrap();
    assert_eq!(pinned.secret_sha256, format!("secret-{}", winners[0]));
    for store in stores {
        store.close().await;
    }
}

#[tokio::test]
async fn record_agent_keeps_first_seen_and_updates_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir.path().join("elves.db")))
        .await
        .unwrap();

    let first = agent("10.0.0.5", 1_000);
    store.record_agent(&first).await.unwrap();

    let later = AgentRecord {
        ip: "10.0.0.5".to_owned(),
        asset: "renamed".to_owned(),
        version: "1.1.0".to_owned(),
        apps: BTreeMap::from([("ops".to_owned(), "2.2".to_owned())]),
        connected_to: "gw-2".to_owned(),
        last_heartbeat_ms: 9_000,
        first_seen_ms: 9_000,
    };
    store.record_agent(&later).await.unwrap();

    assert_eq!(
        store.agent("10.0.0.5").await.unwrap(),
        Some(AgentRecord {
            first_seen_ms: 1_000,
            ..later
        })
    );
    assert_eq!(store.agent("10.0.0.6").await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn set_agent_connection_changes_only_connected_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir.path().join("elves.db")))
        .await
        .unwrap();
    let record = agent("10.0.0.5", 1_000);
    store.record_agent(&record).await.unwrap();

    store.set_agent_connection("10.0.0.5", "").await.unwrap();
    assert_eq!(
        store.agent("10.0.0.5").await.unwrap(),
        Some(AgentRecord {
            connected_to: String::new(),
            ..record.clone()
        })
    );
    store
        .set_agent_connection("10.0.0.5", "gw-3")
        .await
        .unwrap();
    assert_eq!(
        store.agent("10.0.0.5").await.unwrap().unwrap().connected_to,
        "gw-3"
    );

    // An agent without a record stays without one.
    store
        .set_agent_connection("10.0.0.99", "gw-3")
        .await
        .unwrap();
    assert_eq!(store.agent("10.0.0.99").await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn agents_are_listed_in_ip_text_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&url(&dir.path().join("elves.db")))
        .await
        .unwrap();
    assert_eq!(store.agents().await.unwrap(), []);

    for ip in ["10.0.0.2", "10.0.0.10", "192.168.0.1", "10.0.0.1"] {
        store.record_agent(&agent(ip, 1)).await.unwrap();
    }
    let ips: Vec<String> = store
        .agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.ip)
        .collect();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.10", "10.0.0.2", "192.168.0.1"]);
    store.close().await;
}

#[tokio::test]
async fn apps_round_trip_through_json_with_non_ascii_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elves.db");
    let store = Store::open(&url(&path)).await.unwrap();

    let apps = BTreeMap::from([
        ("巡检".to_owned(), "1.0".to_owned()),
        ("überwachung".to_owned(), "2.0-β".to_owned()),
        ("🧝 elves".to_owned(), "3".to_owned()),
        ("quote\"and\\slash".to_owned(), "".to_owned()),
    ]);
    let record = AgentRecord {
        apps: apps.clone(),
        ..agent("10.0.0.8", 1)
    };
    store.record_agent(&record).await.unwrap();
    assert_eq!(store.agent("10.0.0.8").await.unwrap().unwrap().apps, apps);
    assert_eq!(store.agents().await.unwrap()[0].apps, apps);

    // The column holds a JSON object, readable by anything that reads the database.
    let mut conn = peek(&path).await;
    let raw: String = sqlx::query_scalar("SELECT apps FROM agents WHERE ip = '10.0.0.8'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<BTreeMap<String, String>>(&raw).unwrap(),
        apps
    );
    conn.close().await.unwrap();
    store.close().await;
}
