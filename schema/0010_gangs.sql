-- Migration 10: gangs across agents. A fine-tune whose ranks span several agents has one row per
-- agent's part of each attempt placed so (rank 0's agent's part included); the attempt's
-- assignments row stays rank 0's agent's. Released with the attempt; released_at_ms is NULL while
-- the part is live. port: the rendezvous port on rank 0's row (0 on the others).
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
