-- The supervisor's data: apps, their versions and bound agents, API keys, admin users and
-- the audit log. Instants are Unix milliseconds (INTEGER). Names are the v2 `app` values
-- (the original's `instruct`).

-- One row per app. `active_version` is the version agents should run (NULL: none yet); it
-- must name a row of `app_versions` of the same app. `bind_url`, when set, is polled for the
-- list of ips the app's bindings are replaced with.
CREATE TABLE apps (
    name           TEXT    PRIMARY KEY NOT NULL,
    title          TEXT    NOT NULL,
    creator        TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    active_version TEXT,
    bind_url       TEXT,
    FOREIGN KEY (name, active_version) REFERENCES app_versions (app, version)
);

-- The uploaded packages of an app: `{app}_{version}.zip`, identified by its SHA-256
-- (lower-case hex) and size in bytes. Re-uploading a version replaces its row.
CREATE TABLE app_versions (
    app           TEXT    NOT NULL REFERENCES apps (name),
    version       TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,
    size          INTEGER NOT NULL CHECK (size >= 0),
    uploader      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (app, version)
);

-- Which agents (by ip) an app may run on; also the agents it is installed on.
CREATE TABLE app_bindings (
    app TEXT NOT NULL REFERENCES apps (name),
    ip  TEXT NOT NULL,
    PRIMARY KEY (app, ip)
);
CREATE INDEX app_bindings_by_ip ON app_bindings (ip);

-- API keys of the v2 API in supervisor mode. A key belongs to one app; an app may have
-- several (for rotation). `secret_enc` is the key's secret encrypted with the center's
-- secret by the supervisor module: a copy of the database alone cannot sign requests.
CREATE TABLE api_keys (
    auth_id       TEXT    PRIMARY KEY NOT NULL CHECK (length(auth_id) = 16),
    app           TEXT    NOT NULL REFERENCES apps (name),
    name          TEXT    NOT NULL,
    secret_enc    TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);
CREATE INDEX api_keys_by_app ON api_keys (app);

-- People who log in to the admin UI and API. Emails compare case-insensitively (ASCII).
-- `password_hash` is an argon2 PHC string; the plain password is never stored.
CREATE TABLE users (
    email         TEXT    PRIMARY KEY NOT NULL COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'operator')),
    created_at_ms INTEGER NOT NULL,
    last_login_ms INTEGER
);

-- Every administrative change, written in the transaction that makes it. Append-only: the
-- triggers below refuse to change or remove a row, whoever asks.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    detail TEXT    NOT NULL CHECK (json_valid(detail))
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
