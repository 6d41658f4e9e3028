-- Sentra control store on PostgreSQL: users, agents and their signing keys, bootstrap
-- tokens, the peers operators declare, the audit log, and the control version. This
-- database is secret material (agent HMAC keys). All times are Unix milliseconds (UTC).

CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    -- PHC string, argon2id.
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_ms    BIGINT NOT NULL,
    -- Copied into every access token; logout, a password change and disabling bump it.
    token_version BIGINT NOT NULL DEFAULT 0,
    -- Set while the user is disabled: no login, no token accepted.
    disabled_ms   BIGINT
);

CREATE TABLE agents (
    agent_id         TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    created_ms       BIGINT NOT NULL,
    revoked_ms       BIGINT,
    -- Bumped on every change to the agent's desired peers.
    desired_revision BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE agent_keys (
    agent_id      TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    key_id        BIGINT NOT NULL,
    -- The raw 32-byte HMAC secret: the server must hold it to verify tags.
    secret        BYTEA NOT NULL CHECK (length(secret) = 32),
    created_ms    BIGINT NOT NULL,
    not_before_ms BIGINT,
    not_after_ms  BIGINT,
    PRIMARY KEY (agent_id, key_id)
);

CREATE TABLE bootstrap_tokens (
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash    BYTEA PRIMARY KEY CHECK (length(token_hash) = 32),
    token_id      TEXT NOT NULL UNIQUE,
    created_ms    BIGINT NOT NULL,
    expires_ms    BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    note          TEXT NOT NULL DEFAULT '',
    used_ms       BIGINT,
    used_by_agent TEXT
);

CREATE TABLE desired_interfaces (
    agent_id   TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    interface  TEXT NOT NULL,
    -- JSON array of {public_key, endpoint, allowed_ips, persistent_keepalive_s}, validated
    -- and normalised before it is written (compared as text: keep it TEXT, not JSONB).
    peers_json TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (agent_id, interface)
);

CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms   BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);

CREATE INDEX audit_log_at ON audit_log (at_ms);

-- One counter bumped by every write transaction (its row lock also serialises writers
-- across servers), so every server sharing this database notices a change cheaply.
CREATE TABLE control_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO control_version (id, version) VALUES (1, 0);
