-- Migration 12: a drain that requeues.
--
-- `fuji admin drain AGENT --requeue` asks every fine-tune with a rank on the agent to checkpoint at
-- its next step boundary and go back to the queue. The request lives here, beside drained_at_ms,
-- before it is acknowledged: fujid derives the jobs to preempt from it on every heartbeat, so a
-- restarted fujid, or an agent that missed a heartbeat's answer, still preempts them. 0 while the
-- agent is not drained, or drained without requeue.
ALTER TABLE workers ADD COLUMN drain_requeue INTEGER NOT NULL DEFAULT 0 CHECK (drain_requeue IN (0, 1));
