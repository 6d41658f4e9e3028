-- Preshared keys of onboarded peers (issue 16). A PSK is a secret shared with the server
-- interface, so the control plane holds it (like the agents' HMAC keys: plaintext in the
-- control database, the trust root) and sends it to the agent in FetchDesiredState. It is
-- never logged, audited or returned by a REST view. The client's private key is never
-- stored. One row per peer that has a PSK; NULL or no row: no PSK.
CREATE TABLE peer_preshared_keys (
    agent_id      TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    interface     TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    preshared_key TEXT,
    PRIMARY KEY (agent_id, interface, public_key)
) STRICT;
