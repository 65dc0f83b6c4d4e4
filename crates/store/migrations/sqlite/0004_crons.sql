-- Crons of the v2 API (crate elves-cron): the jobs, their recent runs and the firer lease.
-- Instants are Unix milliseconds (INTEGER).

-- One row per cron. `owner` is the auth_id that created it. `started` is the v2 `cron_flag`
-- (1 started, 0 stopped); `started_at_ms` is when it was last started, and no fire at or
-- before it is ever made. `last_fire_at_ms` is the newest fire recorded: fires are recorded
-- in increasing order, so no instant can be fired twice even after old runs are pruned. The
-- `last_*` columns are the last result received (the v2 `last_exec_*`).
CREATE TABLE crons (
    id                   TEXT    PRIMARY KEY NOT NULL,
    app                  TEXT    NOT NULL,
    owner                TEXT    NOT NULL,
    ip                   TEXT    NOT NULL,
    func                 TEXT    NOT NULL,
    mode                 TEXT    NOT NULL CHECK (mode IN ('NP', 'P')),
    param                TEXT    NOT NULL,
    timeout              INTEGER NOT NULL,
    proxy                TEXT    NOT NULL,
    rule                 TEXT    NOT NULL,
    tz                   TEXT    NOT NULL,
    misfire              TEXT    NOT NULL CHECK (misfire IN ('fire_once', 'skip')),
    started              INTEGER NOT NULL CHECK (started IN (0, 1)),
    started_at_ms        INTEGER NOT NULL,
    last_fire_at_ms      INTEGER,
    created_at_ms        INTEGER NOT NULL,
    last_run_id          TEXT,
    last_exec_at_ms      INTEGER,
    last_flag            INTEGER CHECK (last_flag IN (0, 1)),
    last_error           TEXT    NOT NULL DEFAULT '',
    last_worker_flag     INTEGER,
    last_worker_message  TEXT    NOT NULL DEFAULT '',
    last_worker_costtime INTEGER
);
CREATE INDEX crons_by_owner ON crons (owner, created_at_ms);
CREATE INDEX crons_by_started ON crons (started);

-- One row per fire, written before the fire is dispatched. (cron_id, fire_at_ms) is unique:
-- an instant is fired at most once. The result columns stay NULL/'' until the result (or the
-- delivery failure) arrives. Only the newest runs of each cron are kept.
CREATE TABLE cron_runs (
    run_id          TEXT    PRIMARY KEY NOT NULL,
    cron_id         TEXT    NOT NULL REFERENCES crons (id) ON DELETE CASCADE,
    fire_at_ms      INTEGER NOT NULL,
    recorded_at_ms  INTEGER NOT NULL,
    catch_up        INTEGER NOT NULL CHECK (catch_up IN (0, 1)),
    finished_at_ms  INTEGER,
    result_flag     INTEGER CHECK (result_flag IN (0, 1)),
    result_error    TEXT    NOT NULL DEFAULT '',
    worker_flag     INTEGER,
    worker_message  TEXT    NOT NULL DEFAULT '',
    worker_costtime INTEGER
);
CREATE UNIQUE INDEX cron_runs_by_fire ON cron_runs (cron_id, fire_at_ms);
CREATE INDEX cron_runs_unfinished ON cron_runs (recorded_at_ms) WHERE finished_at_ms IS NULL;

-- The one firer lease. `token` grows by 1 on every acquisition (a fencing token): a fire is
-- recorded only if the caller's token is the current one and the lease has not expired, in
-- the same transaction, so a firer that lost its lease cannot fire.
CREATE TABLE cron_lease (
    id            INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    holder        TEXT    NOT NULL,
    token         INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
