-- Migration 10: gangs across agents.
--
-- Each agent's advertise address and gang port range, as its latest registration said ('' and
-- 0 0: it takes no part in gangs), so that a restarted fujid knows them before the agents
-- register again.
ALTER TABLE workers ADD COLUMN advertise_addr TEXT NOT NULL DEFAULT '' CHECK (length(advertise_addr) <= 255);
ALTER TABLE workers ADD COLUMN gang_port_lo INTEGER NOT NULL DEFAULT 0 CHECK (gang_port_lo BETWEEN 0 AND 65535);
ALTER TABLE workers ADD COLUMN gang_port_hi INTEGER NOT NULL DEFAULT 0 CHECK (gang_port_hi BETWEEN 0 AND 65535);

-- A fine-tune whose ranks span several agents has one row per agent's part of each attempt placed
-- so (rank 0's agent's part included); the attempt's assignments row stays rank 0's agent's.
-- Released with the attempt; released_at_ms is NULL while the part is live. port: the rendezvous
-- port on rank 0's row (0 on the others).
CREATE TABLE gang_members (
  job_id           INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt          INTEGER NOT NULL,
  worker_id        TEXT    NOT NULL REFERENCES workers (id),
  advertise_addr   TEXT    NOT NULL,
  first_rank       INTEGER NOT NULL CHECK (first_rank >= 0),
  device_indices   TEXT    NOT NULL CHECK (json_valid(device_indices)),  -- JSON array of ints
  port             INTEGER NOT NULL DEFAULT 0 CHECK (port BETWEEN 0 AND 65535),
  lease_expires_ms INTEGER NOT NULL,
  released_at_ms   INTEGER,
  PRIMARY KEY (job_id, attempt, first_rank)
) WITHOUT ROWID;

CREATE INDEX gang_members_live_by_worker ON gang_members (worker_id) WHERE released_at_ms IS NULL;
