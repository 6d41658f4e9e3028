-- Secrets every server sharing this database must agree on, created once by whichever
-- server starts first: the access-token (JWT HS256) signing key, so a token issued by one
-- server is accepted by all.
CREATE TABLE shared_secrets (
    name   TEXT PRIMARY KEY,
    secret BYTEA NOT NULL CHECK (length(secret) >= 32)
);
