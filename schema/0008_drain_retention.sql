-- Migration 8: an agent's drain outlives fujid, and retention finds ended jobs by their end.
--
-- An admin drains an agent before maintenance: the scheduler places nothing new on it while jobs
-- already there run on. The drain is recorded here before it is acknowledged, so a restarted
-- fujid keeps it; NULL while the agent takes work.
ALTER TABLE workers ADD COLUMN drained_at_ms INTEGER;

-- fujid --retain deletes the logs, samples and losses of jobs that ended long enough ago: it
-- walks the ended jobs by the time they ended, from where its last sweep stopped.
CREATE INDEX jobs_by_finish ON jobs (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
