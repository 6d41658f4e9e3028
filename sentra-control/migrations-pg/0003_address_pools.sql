-- The address pool of an interface: the prefixes onboarded clients get their address from.
CREATE TABLE address_pools (
    agent_id   TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    interface  TEXT NOT NULL,
    -- Comma-separated prefixes, validated before they are written.
    prefixes   TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (agent_id, interface)
);
