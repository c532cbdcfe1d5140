-- Migration 4: losses per attempt and split. Migration 3's losses table kept one value per step
-- (no split, no attempt); its rows become attempt 0's train losses.
--
-- A retried attempt resumes from a checkpoint and reports the steps after it again: each attempt
-- keeps its own points, and readers take the latest attempt's point of each (split, step). The
-- key's order (job, step, split, attempt) is the reading order, so reading a job's curve, a page
-- of it (step > ?), or the latest attempt of one step is a range scan of the primary key: it is
-- the index for reading by job.

CREATE TABLE losses_v4 (
  job_id       INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt      INTEGER NOT NULL CHECK (attempt >= 0),
  step         INTEGER NOT NULL CHECK (step >= 0),
  split        TEXT    NOT NULL CHECK (split IN ('train', 'eval')),
  loss         REAL    NOT NULL,
  tokens_per_s REAL    NOT NULL DEFAULT 0 CHECK (tokens_per_s >= 0),
  at_ms        INTEGER NOT NULL,
  PRIMARY KEY (job_id, step, split, attempt)
) WITHOUT ROWID;

INSERT INTO losses_v4 (job_id, attempt, step, split, loss, tokens_per_s, at_ms)
  SELECT job_id, 0, step, 'train', loss, MAX(tokens_per_s, 0), at_ms FROM losses WHERE step >= 0;
DROP TABLE losses;
ALTER TABLE losses_v4 RENAME TO losses;
