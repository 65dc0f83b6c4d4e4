//! What the dashboard shows about recent activity: the last [`TASKS`] runs and the last
//! [`ERRORS`] errors, in bounded rings, newest first.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// How many recent runs are kept.
pub const TASKS: usize = 40;
/// How many recent errors are kept.
pub const ERRORS: usize = 20;
/// How many characters of a run's result (or an error) are kept.
const TEXT_CAP: usize = 300;

/// One run, as `/stat/tasks` shows it (the original dashboard's field names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskRecord {
    /// `yyyy/MM/dd HH:mm:ss`, local time.
    pub time: String,
    #[serde(rename = "ID")]
    pub id: String,
    /// `rt`, `queue`, `cron`, `agentcron` or `dev`.
    #[serde(rename = "Type")]
    pub kind: String,
    pub mode: String,
    pub proxy: String,
    pub app: String,
    pub func: String,
    /// Milliseconds.
    pub costtime: i64,
    /// `success` (1), `failure` (0) or `error` (-1).
    pub flag: String,
    /// The start of the result or the error message (**ext**).
    pub result: String,
}

/// The recent runs and errors; safe to share between threads.
#[derive(Debug, Default)]
pub struct Stats {
    tasks: Mutex<VecDeque<TaskRecord>>,
    errors: Mutex<VecDeque<String>>,
    /// The same runs and errors, counted for `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

/// Now, local time, as the original dashboard wrote it: `yyyy/MM/dd HH:mm:ss`.
pub fn now_text() -> String {
    elves_cron_expr::jiff::ZonedDateTime::now()
        .strftime("%Y/%m/%d %H:%M:%S")
        .to_string()
}

/// The first `TEXT_CAP` characters of `s`.
fn clip(s: &str) -> String {
    match s.char_indices().nth(TEXT_CAP) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The dashboard's name of a worker flag.
pub fn flag_name(flag: i32) -> &'static str {
    match flag {
        1 => "success",
        0 => "failure",
        _ => "error",
    }
}

impl Stats {
    /// Records a finished run.
    pub fn task(&self, mut t: TaskRecord) {
        self.metrics.run(&t.kind, &t.flag, t.costtime);
        t.result = clip(&t.result);
        let mut q = self.tasks.lock().expect("stats poisoned");
        q.push_front(t);
        q.truncate(TASKS);
    }

    /// Records an error message.
    pub fn error(&self, message: &str) {
        self.metrics.error();
        let line = format!("{}|{}", now_text(), clip(message));
        let mut q = self.errors.lock().expect("stats poisoned");
        q.push_front(line);
        q.truncate(ERRORS);
    }

    /// The recent runs, newest first.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        self.tasks
            .lock()
            .expect("stats poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// The recent errors (`time|message`), newest first.
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .expect("stats poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: usize) -> TaskRecord {
        TaskRecord {
            time: now_text(),
            id: id.to_string(),
            kind: "rt".into(),
            mode: "NP".into(),
            proxy: String::new(),
            app: "a".into(),
            func: "f".into(),
            costtime: 1,
            flag: flag_name(1).into(),
            result: "x".repeat(1000),
        }
    }

    #[test]
    fn rings_are_bounded_and_newest_first() {
        let s = Stats::default();
        for i in 0..100 {
            s.task(task(i));
            s.error(&format!("e{i}"));
        }
        let tasks = s.tasks();
        assert_eq!(tasks.len(), TASKS);
        assert_eq!(tasks[0].id, "99");
        assert_eq!(tasks[TASKS - 1].id, (100 - TASKS).to_string());
        assert_eq!(tasks[0].result.chars().count(), TEXT_CAP + 1);
        let errors = s.errors();
        assert_eq!(errors.len(), ERRORS);
        assert!(errors[0].ends_with("|e99"), "{}", errors[0]);
        // yyyy/MM/dd HH:mm:ss
        assert_eq!(errors[0].find('|'), Some(19));
    }

    #[test]
    fn flag_names() {
        assert_eq!([1, 0, -1].map(flag_name), ["success", "failure", "error"]);
    }
}
