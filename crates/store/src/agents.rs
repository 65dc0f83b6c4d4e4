//! Agent credentials and the agent registry.

use std::collections::BTreeMap;

use crate::{Error, Store};

/// The credential an agent address is pinned to. Only the secret's hash is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub ip: String,
    /// SHA-256 of the agent's secret, as the enrolling code wrote it (lower-case hex).
    pub secret_sha256: String,
    pub asset: String,
    pub enrolled_at_ms: i64,
}

/// What the center knows about one agent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentRecord {
    pub ip: String,
    pub asset: String,
    /// The agent's own version.
    pub version: String,
    /// Installed apps: app name → version.
    pub apps: BTreeMap<String, String>,
    /// The gateway instance holding the agent's stream, or `""` when none does.
    pub connected_to: String,
    pub last_heartbeat_ms: i64,
    /// When the agent was first recorded; later records never change it.
    pub first_seen_ms: i64,
}

/// A row of `agents`, in the column order of the SELECTs below.
type AgentRow = (String, String, String, String, String, i64, i64);

/// The `apps` column when some app has an install error: `{"apps": {app: version},
/// "errors": {app: message}}`. Without errors the column is the plain `{app: version}` object
/// it has always been (an object whose values are strings, so the two never look alike).
#[derive(serde::Serialize, serde::Deserialize)]
struct AppsWithErrors {
    apps: BTreeMap<String, String>,
    errors: BTreeMap<String, String>,
}

/// Decodes the `apps` column: installed apps and their install errors.
fn decode_apps(ip: &str, text: &str) -> Result<AppsWithErrors, Error> {
    if let Ok(apps) = serde_json::from_str::<BTreeMap<String, String>>(text) {
        return Ok(AppsWithErrors {
            apps,
            errors: BTreeMap::new(),
        });
    }
    serde_json::from_str::<AppsWithErrors>(text).map_err(|e| {
        Error::Db(format!(
            "agent {ip}: the apps column is not a JSON object of strings: {e}"
        ))
    })
}

/// Encodes the `apps` column of `r` with its install `errors` (see `AppsWithErrors`).
fn encode_apps(r: &AgentRecord, errors: &BTreeMap<String, String>) -> Result<String, Error> {
    if errors.is_empty() {
        serde_json::to_string(&r.apps)
    } else {
        serde_json::to_string(&AppsWithErrors {
            apps: r.apps.clone(),
            errors: errors.clone(),
        })
    }
    .map_err(|e| Error::Db(format!("agent {}: cannot encode apps: {e}", r.ip)))
}

/// The most rows one statement of [`Store::record_agents`] writes (7 parameters each, far
/// under SQLite's limit of 32,766).
const RECORD_CHUNK: usize = 500;

fn agent_from_row(row: AgentRow) -> Result<AgentRecord, Error> {
    let (ip, asset, version, apps, connected_to, last_heartbeat_ms, first_seen_ms) = row;
    let apps = decode_apps(&ip, &apps)?.apps;
    Ok(AgentRecord {
        ip,
        asset,
        version,
        apps,
        connected_to,
        last_heartbeat_ms,
        first_seen_ms,
    })
}

impl Store {
    /// The credential `ip` is pinned to, if any.
    pub async fn credential(&self, ip: &str) -> Result<Option<Credential>, Error> {
        let _t = elves_telemetry::store_op("agent_credential");
        let row: Option<(String, String, String, i64)> = sqlx::query_as(
            "SELECT ip, secret_sha256, asset, enrolled_at_ms FROM agent_credentials WHERE ip = ?",
        )
        .bind(ip)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::db("cannot read a credential", e))?;
        Ok(
            row.map(|(ip, secret_sha256, asset, enrolled_at_ms)| Credential {
                ip,
                secret_sha256,
                asset,
                enrolled_at_ms,
            }),
        )
    }

    /// Pins `ip` to a credential. Returns false (and changes nothing) when the ip is already
    /// pinned. Atomic: of two concurrent pins of one ip, exactly one returns true.
    pub async fn pin_credential(&self, c: &Credential) -> Result<bool, Error> {
        // One statement: the primary key decides the race, no read-then-write needed.
        let done = sqlx::query(
            "INSERT INTO agent_credentials (ip, secret_sha256, asset, enrolled_at_ms)
             VALUES (?, ?, ?, ?)
             ON CONFLICT (ip) DO NOTHING",
        )
        .bind(&c.ip)
        .bind(&c.secret_sha256)
        .bind(&c.asset)
        .bind(c.enrolled_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::db("cannot pin a credential", e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets the pin of `ip` (an operator's release). Returns whether one existed.
    pub async fn release_credential(&self, ip: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM agent_credentials WHERE ip = ?")
            .bind(ip)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db("cannot release a credential", e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Inserts or updates the agent's record. `first_seen_ms` is kept from the first insert;
    /// every other field takes the new value.
    pub async fn record_agent(&self, r: &AgentRecord) -> Result<(), Error> {
        self.record_agent_with_errors(r, &BTreeMap::new()).await
    }

    /// [`Store::record_agent`], plus the agent's last install error of each app that has one
    /// (app → message; read back with [`Store::agent_app_errors`]). They are kept in the
    /// `apps` column (see `AppsWithErrors`), so no schema change was needed.
    pub async fn record_agent_with_errors(
        &self,
        r: &AgentRecord,
        errors: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let _t = elves_telemetry::store_op("agent_record");
        let apps = encode_apps(r, errors)?;
        sqlx::query(
            "INSERT INTO agents
                 (ip, asset, version, apps, connected_to, last_heartbeat_ms, first_seen_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (ip) DO UPDATE SET
                 asset = excluded.asset,
                 version = excluded.version,
                 apps = excluded.apps,
                 connected_to = excluded.connected_to,
                 last_heartbeat_ms = excluded.last_heartbeat_ms",
        )
        .bind(&r.ip)
        .bind(&r.asset)
        .bind(&r.version)
        .bind(apps)
        .bind(&r.connected_to)
        .bind(r.last_heartbeat_ms)
        .bind(r.first_seen_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::db("cannot record an agent", e))?;
        Ok(())
    }

    /// Records many agents at once, in one transaction (the gateway's batched heartbeats):
    /// each entry as [`Store::record_agent_with_errors`] would, with the same upsert rule
    /// (`first_seen_ms` kept from the first insert). All or nothing. Written as multi-row
    /// statements of at most [`RECORD_CHUNK`] rows, so a batch costs a few round trips to
    /// SQLite rather than one per agent.
    pub async fn record_agents(
        &self,
        batch: &[(AgentRecord, BTreeMap<String, String>)],
    ) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let _t = elves_telemetry::store_op("agent_record_batch");
        let mut encoded = Vec::with_capacity(batch.len());
        for (r, errors) in batch {
            encoded.push((r, encode_apps(r, errors)?));
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| Error::db("cannot begin to record agents", e))?;
        for chunk in encoded.chunks(RECORD_CHUNK) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO agents
                     (ip, asset, version, apps, connected_to, last_heartbeat_ms, first_seen_ms) ",
            );
            q.push_values(chunk, |mut b, (r, apps)| {
                b.push_bind(&r.ip)
                    .push_bind(&r.asset)
                    .push_bind(&r.version)
                    .push_bind(apps)
                    .push_bind(&r.connected_to)
                    .push_bind(r.last_heartbeat_ms)
                    .push_bind(r.first_seen_ms);
            });
            q.push(
                " ON CONFLICT (ip) DO UPDATE SET
                     asset = excluded.asset,
                     version = excluded.version,
                     apps = excluded.apps,
                     connected_to = excluded.connected_to,
                     last_heartbeat_ms = excluded.last_heartbeat_ms",
            );
            q.build()
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::db("cannot record agents", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| Error::db("cannot commit recorded agents", e))?;
        Ok(())
    }

    /// Sets `connected_to` (for example `""` on disconnect) without touching the rest of the
    /// record. Does nothing when the agent has no record.
    pub async fn set_agent_connection(&self, ip: &str, connected_to: &str) -> Result<(), Error> {
        let done = sqlx::query("UPDATE agents SET connected_to = ? WHERE ip = ?")
            .bind(connected_to)
            .bind(ip)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db("cannot set an agent's connection", e))?;
        if done.rows_affected() == 0 {
            tracing::debug!(ip, "no agent record to set the connection of");
        }
        Ok(())
    }

    /// The record of the agent at `ip`, if any.
    pub async fn agent(&self, ip: &str) -> Result<Option<AgentRecord>, Error> {
        let _t = elves_telemetry::store_op("agent_load");
        let row: Option<AgentRow> = sqlx::query_as(
            "SELECT ip, asset, version, apps, connected_to, last_heartbeat_ms, first_seen_ms
             FROM agents WHERE ip = ?",
        )
        .bind(ip)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::db("cannot read an agent", e))?;
        row.map(agent_from_row).transpose()
    }

    /// The install errors the agent at `ip` last reported (app → message); empty when it has
    /// none or no record.
    pub async fn agent_app_errors(&self, ip: &str) -> Result<BTreeMap<String, String>, Error> {
        let apps: Option<String> = sqlx::query_scalar("SELECT apps FROM agents WHERE ip = ?")
            .bind(ip)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::db("cannot read an agent", e))?;
        match apps {
            Some(text) => Ok(decode_apps(ip, &text)?.errors),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Every agent record, ordered by ip as text (byte order, so `10.0.0.10` sorts before
    /// `10.0.0.2`, as it does for Rust strings).
    pub async fn agents(&self) -> Result<Vec<AgentRecord>, Error> {
        let _t = elves_telemetry::store_op("agents_list");
        let rows: Vec<AgentRow> = sqlx::query_as(
            "SELECT ip, asset, version, apps, connected_to, last_heartbeat_ms, first_seen_ms
             FROM agents ORDER BY ip",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("cannot list agents", e))?;
        rows.into_iter().map(agent_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn install_errors_ride_along_with_the_apps_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("a.db").display()))
            .await
            .unwrap();
        let rec = AgentRecord {
            ip: "10.0.0.1".into(),
            asset: "a".into(),
            version: "1".into(),
            apps: BTreeMap::from([("apps".into(), "1.0".into())]),
            connected_to: String::new(),
            last_heartbeat_ms: 5,
            first_seen_ms: 5,
        };
        let errors = BTreeMap::from([("demo".to_string(), "digest mismatch".to_string())]);
        store.record_agent_with_errors(&rec, &errors).await.unwrap();
        assert_eq!(store.agent("10.0.0.1").await.unwrap(), Some(rec.clone()));
        assert_eq!(store.agent_app_errors("10.0.0.1").await.unwrap(), errors);
        store.record_agent(&rec).await.unwrap();
        assert_eq!(store.agent("10.0.0.1").await.unwrap(), Some(rec));
        assert!(store.agent_app_errors("10.0.0.1").await.unwrap().is_empty());
        assert!(store.agent_app_errors("10.9.9.9").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_batch_records_every_agent_in_several_chunks_and_keeps_first_seen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("a.db").display()))
            .await
            .unwrap();
        let rec = |i: usize, at: i64| AgentRecord {
            ip: format!("10.0.{}.{}", i / 250, i % 250 + 1),
            asset: format!("a{i}"),
            version: "1".into(),
            apps: BTreeMap::from([("apps".into(), format!("{at}"))]),
            connected_to: "c".into(),
            last_heartbeat_ms: at,
            first_seen_ms: at,
        };
        // Agent 0 exists before the batch: its first_seen_ms must survive.
        store.record_agent(&rec(0, 1)).await.unwrap();
        let n = RECORD_CHUNK * 2 + 7;
        let batch: Vec<_> = (0..n)
            .map(|i| {
                let errors = if i == 3 {
                    BTreeMap::from([("x".to_string(), "broken".to_string())])
                } else {
                    BTreeMap::new()
                };
                (rec(i, 50), errors)
            })
            .collect();
        store.record_agents(&batch).await.unwrap();
        store.record_agents(&[]).await.unwrap();
        let all = store.agents().await.unwrap();
        assert_eq!(all.len(), n);
        let first = store.agent("10.0.0.1").await.unwrap().unwrap();
        assert_eq!(
            first,
            AgentRecord {
                first_seen_ms: 1,
                ..rec(0, 50)
            },
            "every field but first_seen_ms takes the batch's value"
        );
        let last = rec(n - 1, 50);
        assert_eq!(store.agent(&last.ip).await.unwrap(), Some(last));
        assert_eq!(
            store.agent_app_errors("10.0.0.4").await.unwrap(),
            BTreeMap::from([("x".to_string(), "broken".to_string())])
        );
        assert!(store.agent_app_errors("10.0.0.5").await.unwrap().is_empty());
    }
}
