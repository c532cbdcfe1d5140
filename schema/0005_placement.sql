-- Migration 5: memory-aware placement. Agents report their node's memory with every
-- registration and heartbeat; the latest reading of each device and of each host is kept on its
-- row (NULL before the first). Jobs carry the plans the scheduler may choose from and the plan it
-- chose at the latest placement (worker/plan), and whether they may share devices.

ALTER TABLE devices ADD COLUMN used_mib INTEGER CHECK (used_mib >= 0);
ALTER TABLE devices ADD COLUMN fuji_mib INTEGER CHECK (fuji_mib >= 0);  -- of it, fuji's ranks'
ALTER TABLE devices ADD COLUMN sampled_at_ms INTEGER;

ALTER TABLE workers ADD COLUMN host_total_mib INTEGER CHECK (host_total_mib >= 0);
ALTER TABLE workers ADD COLUMN host_used_mib INTEGER CHECK (host_used_mib >= 0);
ALTER TABLE workers ADD COLUMN host_fuji_mib INTEGER CHECK (host_fuji_mib >= 0);
ALTER TABLE workers ADD COLUMN host_sampled_at_ms INTEGER;

ALTER TABLE jobs ADD COLUMN shareable INTEGER NOT NULL DEFAULT 0 CHECK (shareable IN (0, 1));
-- {"label": "...", "options": [{"zero", "offload", "device_mib", "host_mib", ...}, ...]}, in the
-- order of preference (fastest first); NULL for jobs submitted before this migration.
ALTER TABLE jobs ADD COLUMN plans TEXT CHECK (plans IS NULL OR json_valid(plans));
-- One of the options: the one the latest placement chose.
ALTER TABLE jobs ADD COLUMN plan TEXT CHECK (plan IS NULL OR json_valid(plan));
