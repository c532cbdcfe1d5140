-- Migration 2: workers (fuji-agent processes), their devices, and job assignments (leases).

CREATE TABLE workers (
  id                TEXT    PRIMARY KEY,
  host              TEXT    NOT NULL,
  registered_at_ms  INTEGER NOT NULL,
  last_heartbeat_ms INTEGER NOT NULL,
  state             TEXT    NOT NULL CHECK (state IN ('ONLINE', 'LOST'))
) WITHOUT ROWID;

CREATE TABLE devices (
  worker_id    TEXT    NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
  device_index INTEGER NOT NULL CHECK (device_index >= 0),
  name         TEXT    NOT NULL,
  total_mib    INTEGER NOT NULL CHECK (total_mib >= 0),
  kind         TEXT    NOT NULL CHECK (kind IN ('cuda', 'cpu')),
  PRIMARY KEY (worker_id, device_index)
) WITHOUT ROWID;

-- One row per attempt that was placed on a worker. The row stays as history; released_at_ms is
-- NULL while the lease is live (the job is ASSIGNED or RUNNING).
CREATE TABLE assignments (
  job_id           INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt          INTEGER NOT NULL,  -- jobs.attempts when assigned: 0 for the first run
  worker_id        TEXT    NOT NULL REFERENCES workers (id),
  device_indices   TEXT    NOT NULL CHECK (json_valid(device_indices)),  -- JSON array of ints
  assigned_at_ms   INTEGER NOT NULL,
  lease_expires_ms INTEGER NOT NULL,
  released_at_ms   INTEGER,
  PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;

-- Live leases only: renewal by worker, expiry sweeps, restart recovery.
CREATE INDEX assignments_live_by_worker ON assignments (worker_id) WHERE released_at_ms IS NULL;
CREATE INDEX assignments_live_by_expiry ON assignments (lease_expires_ms)
  WHERE released_at_ms IS NULL;
