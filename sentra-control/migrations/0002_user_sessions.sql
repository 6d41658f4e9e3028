-- Access tokens are checked against the current user on every request (issue 10).
-- token_version is copied into every token at login; logout, a password change and
-- disabling the user bump it, which ends every token issued before.
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
-- Set while the user is disabled: no login, no token accepted.
ALTER TABLE users ADD COLUMN disabled_ms INTEGER;
