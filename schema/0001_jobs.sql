-- Migration 1: jobs and their state history (job_events).
-- The daemon validates every value before it gets here; the CHECKs are a last line of defence.

CREATE TABLE jobs (
  id              INTEGER PRIMARY KEY,
  kind            TEXT    NOT NULL CHECK (kind IN ('infer', 'finetune')),
  state           TEXT    NOT NULL CHECK (state IN ('QUEUED', 'ASSIGNED', 'RUNNING', 'SUCCEEDED',
                                                    'FAILED', 'CANCELLED', 'RETRYING')),
  priority        INTEGER NOT NULL DEFAULT 0,
  spec            TEXT    NOT NULL CHECK (json_valid(spec)),
  devices         INTEGER NOT NULL CHECK (devices >= 1),        -- ranks the job needs
  attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),  -- +1 on each RETRYING
  max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
  timeout_ms      INTEGER NOT NULL DEFAULT 0 CHECK (timeout_ms >= 0),  -- 0: no timeout
  reason          TEXT    NOT NULL DEFAULT '',  -- why it failed, was cancelled, or still waits
  worker_id       TEXT,                          -- set while ASSIGNED or RUNNING
  submitted_at_ms INTEGER NOT NULL,
  started_at_ms   INTEGER,                       -- start of the latest attempt
  finished_at_ms  INTEGER,                       -- set on SUCCEEDED, FAILED, CANCELLED
  updated_at_ms   INTEGER NOT NULL
);

-- List pages walk ids downwards; each filter combination has an index whose order within one
-- key is the rowid, so "WHERE ... AND id < ? ORDER BY id DESC LIMIT n" reads n rows, never sorts.
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_by_kind ON jobs (kind);
CREATE INDEX jobs_by_state_kind ON jobs (state, kind);
-- The scheduler's queue: only QUEUED rows, already in dispatch order.
CREATE INDEX jobs_queue ON jobs (priority DESC, id) WHERE state = 'QUEUED';

CREATE TABLE job_events (
  job_id     INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  seq        INTEGER NOT NULL,  -- 1, 2, ... per job
  at_ms      INTEGER NOT NULL,
  from_state TEXT,              -- NULL for the submit event
  to_state   TEXT    NOT NULL,
  message    TEXT    NOT NULL DEFAULT '',
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
