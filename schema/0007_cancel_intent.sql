-- Migration 7: a cancel outlives fujid. The cancel of a job that an agent runs is recorded here
-- before it is acknowledged; a restarted fujid tells the agent to stop the job again, and the
-- attempt, however it ends, ends the job CANCELLED.
ALTER TABLE jobs ADD COLUMN cancel_requested_at_ms INTEGER;
