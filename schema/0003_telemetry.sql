-- Migration 3: what jobs report while they run: timings, memory samples, losses, logs, results.

CREATE TABLE job_timings (
  job_id   INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt  INTEGER NOT NULL,
  rank     INTEGER NOT NULL,
  phase    TEXT    NOT NULL,  -- e.g. load, generate, train_step
  start_ms INTEGER NOT NULL,
  end_ms   INTEGER NOT NULL CHECK (end_ms >= start_ms)
);
CREATE INDEX job_timings_by_job ON job_timings (job_id, attempt, rank);

-- nvidia-smi style readings. job_id is NULL for a device sampled while idle.
CREATE TABLE memory_samples (
  job_id          INTEGER REFERENCES jobs (id) ON DELETE CASCADE,
  worker_id       TEXT    NOT NULL,
  device_index    INTEGER NOT NULL,  -- -1 for host memory
  device_name     TEXT    NOT NULL,
  used_mib        INTEGER NOT NULL,
  total_mib       INTEGER NOT NULL,
  utilization_pct INTEGER NOT NULL,
  process_mib     INTEGER NOT NULL,  -- held by the job's own processes
  at_ms           INTEGER NOT NULL,
  host_memory     INTEGER NOT NULL CHECK (host_memory IN (0, 1))
);
CREATE INDEX memory_samples_by_job ON memory_samples (job_id, at_ms);

-- A retried attempt resumes from a checkpoint and may report a step again: the latest wins.
CREATE TABLE losses (
  job_id       INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  step         INTEGER NOT NULL,
  loss         REAL    NOT NULL,
  tokens_per_s REAL    NOT NULL,
  at_ms        INTEGER NOT NULL,
  PRIMARY KEY (job_id, step)
) WITHOUT ROWID;

CREATE TABLE job_logs (
  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  seq    INTEGER NOT NULL,  -- 1, 2, ... per job, assigned by the store
  at_ms  INTEGER NOT NULL,
  stream TEXT    NOT NULL,  -- e.g. rank0/stderr
  line   TEXT    NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- Recorded once per attempt.
CREATE TABLE results (
  job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt     INTEGER NOT NULL,
  result      TEXT    NOT NULL CHECK (json_valid(result)),
  saved_at_ms INTEGER NOT NULL,
  PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
