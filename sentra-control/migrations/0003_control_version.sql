-- One durable counter bumped by every write transaction of the control plane, so every
-- process sharing this database notices a key, agent or user change with one cheap read.
CREATE TABLE control_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO control_version (id, version) VALUES (1, 0);
