-- Sentra control store: users, agents and their signing keys, bootstrap tokens, the peers
-- operators declare, and the audit log. This file is secret material (agent HMAC keys).
-- All times are Unix milliseconds (UTC).

CREATE TABLE users (
    username      TEXT PRIMARY KEY NOT NULL,
    -- PHC string, argon2id.
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_ms    INTEGER NOT NULL
) STRICT;

CREATE TABLE agents (
    agent_id         TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    created_ms       INTEGER NOT NULL,
    revoked_ms       INTEGER,
    -- Bumped on every change to the agent's desired peers.
    desired_revision INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE agent_keys (
    agent_id      TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    key_id        INTEGER NOT NULL,
    -- The raw 32-byte HMAC secret: the server must hold it to verify tags.
    secret        BLOB NOT NULL CHECK (length(secret) = 32),
    created_ms    INTEGER NOT NULL,
    not_before_ms INTEGER,
    not_after_ms  INTEGER,
    PRIMARY KEY (agent_id, key_id)
) STRICT;

CREATE TABLE bootstrap_tokens (
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash    BLOB PRIMARY KEY NOT NULL CHECK (length(token_hash) = 32),
    token_id      TEXT NOT NULL UNIQUE,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    note          TEXT NOT NULL DEFAULT '',
    used_ms       INTEGER,
    used_by_agent TEXT
) STRICT;

CREATE TABLE desired_interfaces (
    agent_id   TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    interface  TEXT NOT NULL,
    -- JSON array of {public_key, endpoint, allowed_ips, persistent_keepalive_s}, validated
    -- and normalised before it is written.
    peers_json TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (agent_id, interface)
) STRICT;

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX audit_log_at ON audit_log (at_ms);
