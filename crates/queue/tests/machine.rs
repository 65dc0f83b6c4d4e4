//! The queue state machine, driven step by step through scripts.
//!
//! A script is a transcript: each `> command` line is followed by the outcome the command
//! must have and a snapshot of the whole queue after it. The harness runs the commands and
//! rebuilds the transcript from what really happened; the two must be equal. The expected
//! transcripts are written by hand from api-v2 §6 "Queues".
//!
//! Commands:
//! * `add T2`, `add T2 <-T1` — `add_task` (names are turned into ids);
//! * `commit`, `stop`;
//! * `result r1 true 1` — the result of run r1: flag, then worker_flag or `-` when unknown
//!   (a failed result carries the error `boom`);
//! * `undeliverable r1` — `on_delivery_failed`;
//! * `cancel r1 ok`, `cancel r1 fail` — `on_cancel_result`;
//! * `statuses` — the reply of `queue/stop`.
//!
//! Outcome line: `ok` (nothing to do), the effects (`dispatch T1 r1, cancel T2 r2`), the
//! error (`err [412.2]Queue Status Incorrect`) or, for `statuses`, `T1 finish, T2 stopped`
//! (`-` when there are no tasks).
//! Snapshot line: `Q <status> | <task> | …` in insertion order, a task being
//! `<name> <status>[ <run>][ <-<dependency>][ =<flag>/<worker_flag>][ !"<error>"]`.
//! Run ids are drawn as r1, r2, … in dispatch order.

use elves_queue::machine::{
    Effect, Queue, QueueStatus, TaskResult, TaskStatus, result_text, statuses_json,
};
use elves_types::{ErrorCode, Id};
use serde_json::json;

/// Test names ↔ ids. Every new name gets the next id.
#[derive(Default)]
struct Names(Vec<(String, Id)>);

impl Names {
    fn id(&mut self, name: &str) -> Id {
        if let Some((_, id)) = self.0.iter().find(|(n, _)| n == name) {
            return *id;
        }
        let n = u8::try_from(self.0.len() + 1).expect("fewer than 256 names");
        let id = Id::from_bytes([0xA0, 0, 0, 0, 0, 0, 0, n]);
        self.0.push((name.to_owned(), id));
        id
    }

    fn name(&self, id: Id) -> String {
        self.0
            .iter()
            .find(|(_, i)| *i == id)
            .map_or_else(|| id.to_string(), |(n, _)| n.clone())
    }

    /// `text` with every known id replaced by its name.
    fn unhex(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_owned(), |t, (n, id)| t.replace(id.as_str(), n))
    }
}

struct World {
    queue: Queue,
    names: Names,
    runs: u32,
}

impl World {
    fn new() -> World {
        World {
            queue: Queue::new(Id::from_bytes([0xF0, 0, 0, 0, 0, 0, 0, 1]), "apptest"),
            names: Names::default(),
            runs: 0,
        }
    }

    /// Runs one command and returns its outcome line.
    fn run(&mut self, command: &str) -> String {
        let words: Vec<&str> = command.split_whitespace().collect();
        let World { queue, names, runs } = self;
        let effects = match words.as_slice() {
            ["add", task] => {
                let task = names.id(task);
                queue.add_task(task, None).map(|()| Vec::new())
            }
            ["add", task, dep] => {
                let dep = dep.strip_prefix("<-").expect("`<-` before a dependency");
                let (task, dep) = (names.id(task), names.id(dep));
                queue.add_task(task, Some(dep)).map(|()| Vec::new())
            }
            ["commit"] => queue.commit(&mut run_ids(names, runs)),
            ["stop"] => Ok(queue.stop()),
            ["result", run, flag, worker_flag] => {
                let flag = match *flag {
                    "true" => true,
                    "false" => false,
                    other => panic!("flag {other:?}"),
                };
                let worker_flag = match *worker_flag {
                    "-" => None,
                    n => Some(n.parse().expect("worker_flag")),
                };
                let result = TaskResult {
                    flag,
                    error: if flag { "" } else { "boom" }.to_owned(),
                    worker_flag,
                    worker_message: "msg".to_owned(),
                    worker_costtime: worker_flag.map(|_| 7),
                };
                let run = names.id(run);
                Ok(queue.on_result(run, result, &mut run_ids(names, runs)))
            }
            ["givenup", run] => {
                queue.on_given_up(names.id(run), "agent gone");
                Ok(Vec::new())
            }
            ["undeliverable", run] => {
                queue.on_delivery_failed(names.id(run));
                Ok(Vec::new())
            }
            ["cancel", run, ok] => {
                let ok = match *ok {
                    "ok" => true,
                    "fail" => false,
                    other => panic!("cancel outcome {other:?}"),
                };
                queue.on_cancel_result(names.id(run), ok);
                Ok(Vec::new())
            }
            ["statuses"] => {
                let list: Vec<String> = queue
                    .statuses()
                    .into_iter()
                    .map(|(id, s)| format!("{} {s}", names.name(id)))
                    .collect();
                return if list.is_empty() {
                    "-".to_owned()
                } else {
                    list.join(", ")
                };
            }
            _ => panic!("unknown command {command:?}"),
        };
        match effects {
            Err(code) => format!("err {code}"),
            Ok(effects) if effects.is_empty() => "ok".to_owned(),
            Ok(effects) => effects
                .iter()
                .map(|e| match *e {
                    Effect::Dispatch { task, run_id } => {
                        format!("dispatch {} {}", names.name(task), names.name(run_id))
                    }
                    Effect::Cancel { task, run_id } => {
                        format!("cancel {} {}", names.name(task), names.name(run_id))
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The whole queue on one line.
    fn snapshot(&self) -> String {
        let mut out = format!("Q {}", self.queue.status);
        for t in &self.queue.tasks {
            out += &format!(" | {} {}", self.names.name(t.id), t.status);
            if let Some(run) = t.run_id {
                out += &format!(" {}", self.names.name(run));
            }
            if let Some(dep) = t.depend_on {
                out += &format!(" <-{}", self.names.name(dep));
            }
            if let Some(r) = &t.result {
                let wf = r.worker_flag.map_or("-".to_owned(), |f| f.to_string());
                out += &format!(" ={}/{wf}", r.flag);
            }
            if !t.reported_error().is_empty() {
                out += &format!(" !\"{}\"", self.names.unhex(t.reported_error()));
            }
        }
        out
    }
}

/// The run-id generator: r1, r2, … in the order runs are drawn.
fn run_ids<'a>(names: &'a mut Names, runs: &'a mut u32) -> impl FnMut() -> Id + 'a {
    move || {
        *runs += 1;
        names.id(&format!("r{runs}"))
    }
}

/// Runs the `> command` lines of `script` on a fresh queue and compares the transcript.
fn check(script: &str) {
    let expected: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut world = World::new();
    let mut actual = Vec::new();
    for line in &expected {
        if let Some(command) = line.strip_prefix("> ") {
            actual.push(line.to_string());
            actual.push(world.run(command));
            actual.push(world.snapshot());
        }
    }
    assert_eq!(
        actual.join("\n"),
        expected.join("\n"),
        "\n--- actual transcript ---\n{}\n",
        actual.join("\n")
    );
}

#[test]
fn a_chain_runs_one_task_after_the_other() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > add T3 <-T2
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding <-T2
        > commit
        dispatch T1 r1
        Q running | T1 running r1 | T2 pendding <-T1 | T3 pendding <-T2
        > result r1 true 1
        dispatch T2 r2
        Q running | T1 finish r1 =true/1 | T2 running r2 <-T1 | T3 pendding <-T2
        > result r2 true 1
        dispatch T3 r3
        Q running | T1 finish r1 =true/1 | T2 finish r2 <-T1 =true/1 | T3 running r3 <-T2
        > result r3 true 1
        ok
        Q finish | T1 finish r1 =true/1 | T2 finish r2 <-T1 =true/1 | T3 finish r3 <-T2 =true/1
        "#,
    );
}

#[test]
fn every_root_is_dispatched_on_commit_and_siblings_together() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2
        ok
        Q pendding | T1 pendding | T2 pendding
        > add T3 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding | T3 pendding <-T1
        > add T4 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding | T3 pendding <-T1 | T4 pendding <-T1
        > commit
        dispatch T1 r1, dispatch T2 r2
        Q running | T1 running r1 | T2 running r2 | T3 pendding <-T1 | T4 pendding <-T1
        > result r2 true 1
        ok
        Q running | T1 running r1 | T2 finish r2 =true/1 | T3 pendding <-T1 | T4 pendding <-T1
        > result r1 true 1
        dispatch T3 r3, dispatch T4 r4
        Q running | T1 finish r1 =true/1 | T2 finish r2 =true/1 | T3 running r3 <-T1 | T4 running r4 <-T1
        > result r4 true 1
        ok
        Q running | T1 finish r1 =true/1 | T2 finish r2 =true/1 | T3 running r3 <-T1 | T4 finish r4 <-T1 =true/1
        > result r3 true 1
        ok
        Q finish | T1 finish r1 =true/1 | T2 finish r2 =true/1 | T3 finish r3 <-T1 =true/1 | T4 finish r4 <-T1 =true/1
        "#,
    );
}

/// T1 → (T2 → (T4, T5), T3 → T6); T2's worker reports failure.
#[test]
fn a_tree_of_six_with_one_failing_branch() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > add T3 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding <-T1
        > add T4 <-T2
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding <-T1 | T4 pendding <-T2
        > add T5 <-T2
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding <-T1 | T4 pendding <-T2 | T5 pendding <-T2
        > add T6 <-T3
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding <-T1 | T4 pendding <-T2 | T5 pendding <-T2 | T6 pendding <-T3
        > commit
        dispatch T1 r1
        Q running | T1 running r1 | T2 pendding <-T1 | T3 pendding <-T1 | T4 pendding <-T2 | T5 pendding <-T2 | T6 pendding <-T3
        > result r1 true 1
        dispatch T2 r2, dispatch T3 r3
        Q running | T1 finish r1 =true/1 | T2 running r2 <-T1 | T3 running r3 <-T1 | T4 pendding <-T2 | T5 pendding <-T2 | T6 pendding <-T3
        > result r2 true 0
        ok
        Q running | T1 finish r1 =true/1 | T2 finish r2 <-T1 =true/0 | T3 running r3 <-T1 | T4 stopped <-T2 !"dependency T2 did not succeed" | T5 stopped <-T2 !"dependency T2 did not succeed" | T6 pendding <-T3
        > result r3 true 1
        dispatch T6 r4
        Q running | T1 finish r1 =true/1 | T2 finish r2 <-T1 =true/0 | T3 finish r3 <-T1 =true/1 | T4 stopped <-T2 !"dependency T2 did not succeed" | T5 stopped <-T2 !"dependency T2 did not succeed" | T6 running r4 <-T3
        > result r4 true 1
        ok
        Q finish | T1 finish r1 =true/1 | T2 finish r2 <-T1 =true/0 | T3 finish r3 <-T1 =true/1 | T4 stopped <-T2 !"dependency T2 did not succeed" | T5 stopped <-T2 !"dependency T2 did not succeed" | T6 finish r4 <-T3 =true/1
        > statuses
        T1 finish, T2 finish, T3 finish, T4 stopped, T5 stopped, T6 finish
        Q finish | T1 finish r1 =true/1 | T2 finish r2 <-T1 =true/0 | T3 finish r3 <-T1 =true/1 | T4 stopped <-T2 !"dependency T2 did not succeed" | T5 stopped <-T2 !"dependency T2 did not succeed" | T6 finish r4 <-T3 =true/1
        "#,
    );
}

/// Anything but `flag` true with `worker_flag` 1 stops the whole subtree, each task naming
/// its own dependency; an unrelated root carries on.
#[test]
fn a_failure_cascades_down_the_subtree() {
    let failures = [
        ("result r1 true 0", r#"=true/0"#),
        ("result r1 true -1", r#"=true/-1"#),
        ("result r1 false -", r#"=false/- !"boom""#),
        ("result r1 false 1", r#"=false/1 !"boom""#),
        (
            "undeliverable r1",
            r#"=false/-1 !"[410.1]Send Job To Agent Fail""#,
        ),
    ];
    for (failure, t1) in failures {
        check(&format!(
            r#"
            > add T1
            ok
            Q pendding | T1 pendding
            > add T2 <-T1
            ok
            Q pendding | T1 pendding | T2 pendding <-T1
            > add T3 <-T2
            ok
            Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding <-T2
            > add T4
            ok
            Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding <-T2 | T4 pendding
            > commit
            dispatch T1 r1, dispatch T4 r2
            Q running | T1 running r1 | T2 pendding <-T1 | T3 pendding <-T2 | T4 running r2
            > {failure}
            ok
            Q running | T1 finish r1 {t1} | T2 stopped <-T1 !"dependency T1 did not succeed" | T3 stopped <-T2 !"dependency T2 did not succeed" | T4 running r2
            > result r2 true 1
            ok
            Q finish | T1 finish r1 {t1} | T2 stopped <-T1 !"dependency T1 did not succeed" | T3 stopped <-T2 !"dependency T2 did not succeed" | T4 finish r2 =true/1
            "#
        ));
    }
}

/// A dependant released by its dependency can itself fail to be delivered.
#[test]
fn a_released_dependant_that_cannot_be_delivered_stops_its_own_subtree() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > add T3 <-T2
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding <-T2
        > commit
        dispatch T1 r1
        Q running | T1 running r1 | T2 pendding <-T1 | T3 pendding <-T2
        > result r1 true 1
        dispatch T2 r2
        Q running | T1 finish r1 =true/1 | T2 running r2 <-T1 | T3 pendding <-T2
        > undeliverable r2
        ok
        Q finish | T1 finish r1 =true/1 | T2 finish r2 <-T1 =false/-1 !"[410.1]Send Job To Agent Fail" | T3 stopped <-T2 !"dependency T2 did not succeed"
        "#,
    );
}

/// A task whose agent never came back is given up: it finishes like an undelivered one, its
/// subtree is stopped, a sibling is untouched, and the result that comes in later changes
/// nothing.
#[test]
fn a_given_up_task_stops_its_subtree_and_ignores_a_late_result() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > add T3
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding
        > commit
        dispatch T1 r1, dispatch T3 r2
        Q running | T1 running r1 | T2 pendding <-T1 | T3 running r2
        > givenup r1
        ok
        Q running | T1 finish r1 =false/-1 !"[410.1]Send Job To Agent Fail" | T2 stopped <-T1 !"dependency T1 did not succeed" | T3 running r2
        > result r1 true 1
        ok
        Q running | T1 finish r1 =false/-1 !"[410.1]Send Job To Agent Fail" | T2 stopped <-T1 !"dependency T1 did not succeed" | T3 running r2
        > givenup r2
        ok
        Q finish | T1 finish r1 =false/-1 !"[410.1]Send Job To Agent Fail" | T2 stopped <-T1 !"dependency T1 did not succeed" | T3 finish r2 =false/-1 !"[410.1]Send Job To Agent Fail"
        > givenup r2
        ok
        Q finish | T1 finish r1 =false/-1 !"[410.1]Send Job To Agent Fail" | T2 stopped <-T1 !"dependency T1 did not succeed" | T3 finish r2 =false/-1 !"[410.1]Send Job To Agent Fail"
        "#,
    );
}

#[test]
fn a_given_up_task_says_why_in_its_worker_message() {
    let mut world = World::new();
    world.run("add T1");
    world.run("commit");
    world.run("givenup r1");
    let r = world.queue.tasks[0].result.as_ref().unwrap();
    assert_eq!(
        (
            r.flag,
            r.worker_flag,
            r.worker_message.as_str(),
            r.worker_costtime
        ),
        (false, Some(-1), "agent gone", None)
    );
}

#[test]
fn stop_before_commit_stops_every_task_and_refuses_further_changes() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > stop
        ok
        Q stopped | T1 stopped | T2 stopped <-T1
        > statuses
        T1 stopped, T2 stopped
        Q stopped | T1 stopped | T2 stopped <-T1
        > commit
        err [412.2]Queue Status Incorrect
        Q stopped | T1 stopped | T2 stopped <-T1
        > add T3
        err [412.2]Queue Status Incorrect
        Q stopped | T1 stopped | T2 stopped <-T1
        "#,
    );
}

/// T1 → T2 and T3 → T4; stop while T1 and T3 run. T1's cancel works, T3's fails, and T3's
/// result still arrives afterwards without releasing T4.
#[test]
fn stop_while_roots_run_cancels_them() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > add T3
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding
        > add T4 <-T3
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding | T4 pendding <-T3
        > commit
        dispatch T1 r1, dispatch T3 r2
        Q running | T1 running r1 | T2 pendding <-T1 | T3 running r2 | T4 pendding <-T3
        > stop
        cancel T1 r1, cancel T3 r2
        Q stopped | T1 running r1 | T2 stopped <-T1 | T3 running r2 | T4 stopped <-T3
        > cancel r1 ok
        ok
        Q stopped | T1 stopped r1 | T2 stopped <-T1 | T3 running r2 | T4 stopped <-T3
        > cancel r2 fail
        ok
        Q stopped | T1 stopped r1 | T2 stopped <-T1 | T3 running r2 !"[412.3]Stop Task Error" | T4 stopped <-T3
        > statuses
        T1 stopped, T2 stopped, T3 running, T4 stopped
        Q stopped | T1 stopped r1 | T2 stopped <-T1 | T3 running r2 !"[412.3]Stop Task Error" | T4 stopped <-T3
        > result r1 true 1
        ok
        Q stopped | T1 stopped r1 | T2 stopped <-T1 | T3 running r2 !"[412.3]Stop Task Error" | T4 stopped <-T3
        > result r2 true 1
        ok
        Q stopped | T1 stopped r1 | T2 stopped <-T1 | T3 finish r2 =true/1 | T4 stopped <-T3
        > cancel r2 ok
        ok
        Q stopped | T1 stopped r1 | T2 stopped <-T1 | T3 finish r2 =true/1 | T4 stopped <-T3
        "#,
    );
}

#[test]
fn stop_while_a_dependant_is_pending() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > add T3 <-T2
        ok
        Q pendding | T1 pendding | T2 pendding <-T1 | T3 pendding <-T2
        > commit
        dispatch T1 r1
        Q running | T1 running r1 | T2 pendding <-T1 | T3 pendding <-T2
        > result r1 true 1
        dispatch T2 r2
        Q running | T1 finish r1 =true/1 | T2 running r2 <-T1 | T3 pendding <-T2
        > stop
        cancel T2 r2
        Q stopped | T1 finish r1 =true/1 | T2 running r2 <-T1 | T3 stopped <-T2
        > cancel r2 ok
        ok
        Q stopped | T1 finish r1 =true/1 | T2 stopped r2 <-T1 | T3 stopped <-T2
        > statuses
        T1 finish, T2 stopped, T3 stopped
        Q stopped | T1 finish r1 =true/1 | T2 stopped r2 <-T1 | T3 stopped <-T2
        > result r2 true 1
        ok
        Q stopped | T1 finish r1 =true/1 | T2 stopped r2 <-T1 | T3 stopped <-T2
        "#,
    );
}

/// The result overtakes the cancel: the task finishes, its dependant stays stopped, and the
/// cancel's answer no longer matters.
#[test]
fn a_result_that_overtakes_the_cancel_finishes_the_task() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > commit
        dispatch T1 r1
        Q running | T1 running r1 | T2 pendding <-T1
        > stop
        cancel T1 r1
        Q stopped | T1 running r1 | T2 stopped <-T1
        > result r1 true 1
        ok
        Q stopped | T1 finish r1 =true/1 | T2 stopped <-T1
        > cancel r1 ok
        ok
        Q stopped | T1 finish r1 =true/1 | T2 stopped <-T1
        > cancel r1 fail
        ok
        Q stopped | T1 finish r1 =true/1 | T2 stopped <-T1
        > statuses
        T1 finish, T2 stopped
        Q stopped | T1 finish r1 =true/1 | T2 stopped <-T1
        "#,
    );
}

#[test]
fn a_delivery_failure_after_stop_finishes_the_task() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > commit
        dispatch T1 r1
        Q running | T1 running r1
        > stop
        cancel T1 r1
        Q stopped | T1 running r1
        > undeliverable r1
        ok
        Q stopped | T1 finish r1 =false/-1 !"[410.1]Send Job To Agent Fail"
        > cancel r1 ok
        ok
        Q stopped | T1 finish r1 =false/-1 !"[410.1]Send Job To Agent Fail"
        "#,
    );
}

#[test]
fn a_second_stop_retries_a_failed_cancel() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > commit
        dispatch T1 r1
        Q running | T1 running r1
        > stop
        cancel T1 r1
        Q stopped | T1 running r1
        > cancel r1 fail
        ok
        Q stopped | T1 running r1 !"[412.3]Stop Task Error"
        > stop
        cancel T1 r1
        Q stopped | T1 running r1 !"[412.3]Stop Task Error"
        > cancel r1 ok
        ok
        Q stopped | T1 stopped r1
        > stop
        ok
        Q stopped | T1 stopped r1
        "#,
    );
}

#[test]
fn stop_after_finish_changes_nothing() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > commit
        dispatch T1 r1
        Q running | T1 running r1 | T2 pendding <-T1
        > result r1 false -
        ok
        Q finish | T1 finish r1 =false/- !"boom" | T2 stopped <-T1 !"dependency T1 did not succeed"
        > stop
        ok
        Q finish | T1 finish r1 =false/- !"boom" | T2 stopped <-T1 !"dependency T1 did not succeed"
        > statuses
        T1 finish, T2 stopped
        Q finish | T1 finish r1 =false/- !"boom" | T2 stopped <-T1 !"dependency T1 did not succeed"
        "#,
    );
}

#[test]
fn a_duplicate_result_changes_nothing() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        > commit
        dispatch T1 r1
        Q running | T1 running r1 | T2 pendding <-T1
        > result r1 true 1
        dispatch T2 r2
        Q running | T1 finish r1 =true/1 | T2 running r2 <-T1
        > result r1 true 1
        ok
        Q running | T1 finish r1 =true/1 | T2 running r2 <-T1
        > result r1 false -
        ok
        Q running | T1 finish r1 =true/1 | T2 running r2 <-T1
        > undeliverable r1
        ok
        Q running | T1 finish r1 =true/1 | T2 running r2 <-T1
        > result r2 true 0
        ok
        Q finish | T1 finish r1 =true/1 | T2 finish r2 <-T1 =true/0
        > result r2 true 1
        ok
        Q finish | T1 finish r1 =true/1 | T2 finish r2 <-T1 =true/0
        "#,
    );
}

#[test]
fn events_for_unknown_run_ids_change_nothing() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > result r7 true 1
        ok
        Q pendding | T1 pendding
        > commit
        dispatch T1 r1
        Q running | T1 running r1
        > result r7 true 1
        ok
        Q running | T1 running r1
        > undeliverable r7
        ok
        Q running | T1 running r1
        > cancel r7 ok
        ok
        Q running | T1 running r1
        > result T1 true 1
        ok
        Q running | T1 running r1
        "#,
    );
}

#[test]
fn a_second_commit_is_refused_and_dispatches_nothing() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > commit
        dispatch T1 r1
        Q running | T1 running r1
        > commit
        err [412.2]Queue Status Incorrect
        Q running | T1 running r1
        > result r1 true 1
        ok
        Q finish | T1 finish r1 =true/1
        > commit
        err [412.2]Queue Status Incorrect
        Q finish | T1 finish r1 =true/1
        "#,
    );
}

#[test]
fn adding_after_commit_is_refused() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > commit
        dispatch T1 r1
        Q running | T1 running r1
        > add T2
        err [412.2]Queue Status Incorrect
        Q running | T1 running r1
        > add T2 <-T1
        err [412.2]Queue Status Incorrect
        Q running | T1 running r1
        > add T3 <-X1
        err [412.2]Queue Status Incorrect
        Q running | T1 running r1
        "#,
    );
}

#[test]
fn a_dependency_must_be_a_task_of_the_queue() {
    check(
        r#"
        > add T1
        ok
        Q pendding | T1 pendding
        > add T2 <-X1
        err [412.4]Depend Task Not Found
        Q pendding | T1 pendding
        > add T2 <-T1
        ok
        Q pendding | T1 pendding | T2 pendding <-T1
        "#,
    );
}

/// The original accepted a task of another queue as a dependency; it could never fire.
#[test]
fn a_task_of_another_queue_is_not_a_dependency() {
    let mut other = Queue::new(Id::from_bytes([0xB0, 0, 0, 0, 0, 0, 0, 1]), "apptest");
    let foreign = Id::from_bytes([0xB1, 0, 0, 0, 0, 0, 0, 1]);
    other.add_task(foreign, None).unwrap();

    let mut queue = Queue::new(Id::from_bytes([0xB0, 0, 0, 0, 0, 0, 0, 2]), "apptest");
    let before = queue.clone();
    let task = Id::from_bytes([0xB1, 0, 0, 0, 0, 0, 0, 2]);
    assert_eq!(
        queue.add_task(task, Some(foreign)),
        Err(ErrorCode::DependTaskNotFound)
    );
    assert_eq!(queue, before);
    assert_eq!(other.task(foreign).unwrap().status, TaskStatus::Pendding);
}

#[test]
fn an_empty_queue_finishes_on_commit() {
    check(
        r#"
        > commit
        ok
        Q finish
        > commit
        err [412.2]Queue Status Incorrect
        Q finish
        > add T1
        err [412.2]Queue Status Incorrect
        Q finish
        > stop
        ok
        Q finish
        > statuses
        -
        Q finish
        "#,
    );
}

#[test]
fn an_empty_queue_can_be_stopped() {
    check(
        r#"
        > stop
        ok
        Q stopped
        > commit
        err [412.2]Queue Status Incorrect
        Q stopped
        "#,
    );
}

#[test]
fn a_task_id_is_never_added_twice() {
    let mut queue = Queue::new(Id::from_bytes([0xC0, 0, 0, 0, 0, 0, 0, 1]), "apptest");
    let task = Id::from_bytes([0xC1, 0, 0, 0, 0, 0, 0, 1]);
    queue.add_task(task, None).unwrap();
    assert_eq!(queue.add_task(task, None), Err(ErrorCode::Internal));
    assert_eq!(queue.tasks.len(), 1);
}

#[test]
fn statuses_are_spelled_as_v2_clients_parse_them() {
    let spelled = [
        (TaskStatus::Pendding, QueueStatus::Pendding, "pendding"),
        (TaskStatus::Running, QueueStatus::Running, "running"),
        (TaskStatus::Finish, QueueStatus::Finish, "finish"),
        (TaskStatus::Stopped, QueueStatus::Stopped, "stopped"),
    ];
    for (task, queue, text) in spelled {
        assert_eq!(task.as_str(), text);
        assert_eq!(queue.as_str(), text);
        assert_eq!(TaskStatus::parse(text), Some(task));
        assert_eq!(QueueStatus::parse(text), Some(queue));
        assert_eq!(serde_json::to_value(task).unwrap(), json!(text));
        assert_eq!(serde_json::to_value(queue).unwrap(), json!(text));
    }
    for wrong in ["pending", "stoped", "execing", "finished", "Running", ""] {
        assert_eq!(TaskStatus::parse(wrong), None, "{wrong}");
        assert_eq!(QueueStatus::parse(wrong), None, "{wrong}");
    }
}

/// The result the center sends, as a value and as text: the text is written straight from
/// the queue and must be exactly the expected value serialized (keys sorted).
#[track_caller]
fn assert_result(queue: &Queue, expected: serde_json::Value) {
    let text = result_text(queue).unwrap();
    let value: serde_json::Value = serde_json::from_str(text.get()).unwrap();
    assert_eq!(value, expected);
    assert_eq!(text.get(), serde_json::to_string(&expected).unwrap());
}

/// `queue/result`: unknown fields are `""`, worker_flag / worker_costtime numbers once known.
#[test]
fn result_reports_every_task() {
    let id = |n: u8| Id::from_bytes([0xD0, 0, 0, 0, 0, 0, 0, n]);
    let (t1, t2, t3, t4) = (id(1), id(2), id(3), id(4));
    let (r1, r2, r3) = (id(11), id(12), id(13));
    let mut runs = vec![r3, r2, r1];
    let mut next_run_id = || runs.pop().expect("three runs");

    let mut queue = Queue::new(id(0), "apptest");
    queue.add_task(t1, None).unwrap();
    queue.add_task(t2, Some(t1)).unwrap();
    queue.add_task(t3, None).unwrap();
    queue.add_task(t4, Some(t3)).unwrap();

    let pending = |task: Id, dep: &str| {
        json!({"status": "pendding", "depend_task_id": dep, "flag": "", "error": "",
               "id": task.to_string(), "worker_flag": "", "worker_message": "",
               "worker_costtime": ""})
    };
    assert_result(
        &queue,
        json!({
            t1.to_string(): pending(t1, ""),
            t2.to_string(): pending(t2, t1.as_str()),
            t3.to_string(): pending(t3, ""),
            t4.to_string(): pending(t4, t3.as_str()),
        }),
    );

    assert_eq!(
        queue.commit(&mut next_run_id),
        Ok(vec![
            Effect::Dispatch {
                task: t1,
                run_id: r1
            },
            Effect::Dispatch {
                task: t3,
                run_id: r2
            },
        ])
    );
    let ok = TaskResult {
        flag: true,
        error: String::new(),
        worker_flag: Some(1),
        worker_message: "hello".to_owned(),
        worker_costtime: Some(42),
    };
    assert_eq!(
        queue.on_result(r1, ok, &mut next_run_id),
        vec![Effect::Dispatch {
            task: t2,
            run_id: r3
        }]
    );
    queue.on_delivery_failed(r2);
    assert_eq!(
        queue.stop(),
        vec![Effect::Cancel {
            task: t2,
            run_id: r3
        }]
    );
    queue.on_cancel_result(r3, false);

    assert_result(
        &queue,
        json!({
            t1.to_string(): {"status": "finish", "depend_task_id": "", "flag": "true",
                "error": "", "id": t1.to_string(), "worker_flag": 1,
                "worker_message": "hello", "worker_costtime": 42},
            t2.to_string(): {"status": "running", "depend_task_id": t1.to_string(),
                "flag": "", "error": "[412.3]Stop Task Error", "id": t2.to_string(),
                "worker_flag": "", "worker_message": "", "worker_costtime": ""},
            t3.to_string(): {"status": "finish", "depend_task_id": "", "flag": "false",
                "error": "[410.1]Send Job To Agent Fail", "id": t3.to_string(),
                "worker_flag": -1, "worker_message": "", "worker_costtime": ""},
            t4.to_string(): {"status": "stopped", "depend_task_id": t3.to_string(),
                "flag": "", "error": format!("dependency {t3} did not succeed"),
                "id": t4.to_string(), "worker_flag": "", "worker_message": "",
                "worker_costtime": ""},
        }),
    );
    assert_eq!(
        statuses_json(&queue),
        json!({
            t1.to_string(): "finish",
            t2.to_string(): "running",
            t3.to_string(): "finish",
            t4.to_string(): "stopped",
        })
    );
}
