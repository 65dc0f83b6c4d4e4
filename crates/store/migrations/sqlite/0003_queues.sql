-- Queues of the v2 API and their tasks, as the queue state machine (crate elves-queue) leaves
-- them. Instants are Unix milliseconds (INTEGER). Statuses are spelled as the original spelled
-- them (`pendding`).

-- One row per queue. `id` is 16 hex characters; `owner` is the auth_id that created it.
-- `version` is for optimistic concurrency: every save checks it and adds 1. A queue that is
-- `finish` or `stopped` has `finished_at_ms`, which retention purges by.
CREATE TABLE queues (
    id              TEXT    PRIMARY KEY NOT NULL,
    app             TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    status          TEXT    NOT NULL
                    CHECK (status IN ('pendding', 'running', 'finish', 'stopped')),
    version         INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    committed_at_ms INTEGER,
    finished_at_ms  INTEGER
);
CREATE INDEX queues_by_status_finished ON queues (status, finished_at_ms);

-- The tasks of a queue, in insertion order (`seq`). `depend_on` is the id of a task of the
-- same queue, or NULL. `run_id` is the id of the task's dispatch, unique across all queues so a
-- result can be routed to its queue. `result_flag` is NULL until a result arrives, then 0 or
-- 1; the `worker_*` columns are the agent's report, NULL or '' while unknown.
CREATE TABLE queue_tasks (
    id              TEXT    PRIMARY KEY NOT NULL,
    queue_id        TEXT    NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    ip              TEXT    NOT NULL,
    mode            TEXT    NOT NULL,
    func            TEXT    NOT NULL,
    param           TEXT    NOT NULL,
    timeout         INTEGER NOT NULL,
    proxy           TEXT    NOT NULL,
    depend_on       TEXT,
    status          TEXT    NOT NULL
                    CHECK (status IN ('pendding', 'running', 'finish', 'stopped')),
    run_id          TEXT,
    error           TEXT    NOT NULL DEFAULT '',
    result_flag     INTEGER CHECK (result_flag IN (0, 1)),
    result_error    TEXT    NOT NULL DEFAULT '',
    worker_flag     INTEGER,
    worker_message  TEXT    NOT NULL DEFAULT '',
    worker_costtime INTEGER,
    created_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER
);
CREATE UNIQUE INDEX queue_tasks_by_run ON queue_tasks (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX queue_tasks_by_queue ON queue_tasks (queue_id, seq);
CREATE INDEX queue_tasks_by_status ON queue_tasks (status);
