//! What the center's `/readyz` and `/metrics` read: a round trip to the database and the
//! number of queue tasks in each state.

use sqlx::Row;

use crate::{Error, Store};

impl Store {
    /// One trivial query: `Ok` when the database answers.
    pub async fn ping(&self) -> Result<(), Error> {
        let _t = elves_telemetry::store_op("ping");
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db("ping", e))?;
        Ok(())
    }

    /// How many queue tasks are in each state (`pendding`, `running`, `finish`, `stopped`),
    /// states without tasks left out.
    pub async fn queue_task_counts(&self) -> Result<Vec<(String, i64)>, Error> {
        let _t = elves_telemetry::store_op("queue_task_counts");
        let rows = sqlx::query("SELECT status, COUNT(*) FROM queue_tasks GROUP BY status")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("counting queue tasks", e))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)
                        .map_err(|e| Error::db("counting queue tasks", e))?,
                    r.try_get::<i64, _>(1)
                        .map_err(|e| Error::db("counting queue tasks", e))?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::{QueueRow, Store, TaskRow};

    fn task(n: i64, status: &str) -> TaskRow {
        TaskRow {
            id: format!("T{n}"),
            queue_id: "Q".into(),
            seq: n,
            ip: "10.0.0.1".into(),
            mode: "NP".into(),
            func: "f".into(),
            param: String::new(),
            timeout: 0,
            proxy: String::new(),
            depend_on: None,
            status: status.into(),
            run_id: None,
            error: String::new(),
            result_flag: None,
            result_error: String::new(),
            worker_flag: None,
            worker_message: String::new(),
            worker_costtime: None,
            created_at_ms: 1,
            finished_at_ms: None,
        }
    }

    #[tokio::test]
    async fn ping_answers_and_tasks_are_counted_by_state() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        store.ping().await.unwrap();
        assert_eq!(store.queue_task_counts().await.unwrap(), vec![]);
        let q = QueueRow {
            id: "Q".into(),
            app: "a".into(),
            owner: "o".into(),
            status: "running".into(),
            version: 0,
            created_at_ms: 1,
            committed_at_ms: Some(1),
            finished_at_ms: None,
        };
        store.create_queue(&q).await.unwrap();
        let tasks = [
            task(0, "finish"),
            task(1, "finish"),
            task(2, "running"),
            task(3, "pendding"),
        ];
        assert!(store.save_queue(&q, &tasks, 0).await.unwrap());
        let mut counts = store.queue_task_counts().await.unwrap();
        counts.sort();
        let want = [("finish", 2), ("pendding", 1), ("running", 1)];
        let want: Vec<(String, i64)> = want.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        assert_eq!(counts, want);
        store.close().await;
        assert!(store.ping().await.is_err(), "a closed store is not ready");
    }
}
