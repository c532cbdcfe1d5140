-- Migration 9: fencing tokens. Every placement of a job adds one to its lease epoch; with the
-- attempt number it is the token an agent's reports, completions and running lists must carry,
-- so that nothing from an attempt fujid has given up on (its agent cut off, then back) is taken.
ALTER TABLE jobs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
