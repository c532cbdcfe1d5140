-- Migration 11: operator levers. fuji submit --notify URL and fuji usage.
--
-- A job may name a URL that fujid POSTs its final state to once it ends (daemon/server/notifier.h).
-- The URL and the delivery's progress are on the job's row, so that a restarted fujid still
-- delivers a pending notification: notify_attempts POSTs so far, the next not before
-- notify_next_at_ms, and notify_done_at_ms once it was delivered or given up (notify_outcome
-- says which). NULL notify_url: no notification.
ALTER TABLE jobs ADD COLUMN notify_url TEXT CHECK (notify_url IS NULL OR length(notify_url) BETWEEN 1 AND 2048);
ALTER TABLE jobs ADD COLUMN notify_attempts INTEGER NOT NULL DEFAULT 0 CHECK (notify_attempts >= 0);
ALTER TABLE jobs ADD COLUMN notify_next_at_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN notify_done_at_ms INTEGER;
ALTER TABLE jobs ADD COLUMN notify_outcome TEXT CHECK (notify_outcome IS NULL OR notify_outcome IN ('delivered', 'gave_up'));

-- The notifier's scan: only jobs whose notification is still owed, whatever their state.
CREATE INDEX jobs_notify_pending ON jobs (notify_next_at_ms) WHERE notify_url IS NOT NULL AND notify_done_at_ms IS NULL;

-- fuji usage: the first job submitted since a time (the jobs after it are read in id order).
CREATE INDEX jobs_by_submit ON jobs (submitted_at_ms);
