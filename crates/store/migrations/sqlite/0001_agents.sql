-- Agents and the credentials they are pinned to.
-- Instants are Unix milliseconds (INTEGER).

-- One row per enrolled agent address: the agent at `ip` must present a secret whose
-- SHA-256 (lower-case hex) is `secret_sha256`. Only the hash is stored.
CREATE TABLE agent_credentials (
    ip             TEXT    PRIMARY KEY NOT NULL,
    secret_sha256  TEXT    NOT NULL,
    asset          TEXT    NOT NULL,
    enrolled_at_ms INTEGER NOT NULL
);

-- The registry of agents the center has seen.
-- `apps` is a JSON object mapping an app name to its installed version.
-- `connected_to` names the gateway instance holding the agent's stream, or '' when none does.
CREATE TABLE agents (
    ip                TEXT    PRIMARY KEY NOT NULL,
    asset             TEXT    NOT NULL,
    version           TEXT    NOT NULL,
    apps              TEXT    NOT NULL,
    connected_to      TEXT    NOT NULL,
    last_heartbeat_ms INTEGER NOT NULL,
    first_seen_ms     INTEGER NOT NULL
);
