-- Migration 6: who may do what. Users, agents and join tokens each hold one credential: a random
-- secret of which only a salted SHA-256 is kept (lib/security/token.h). A user's name is never
-- given again, so the jobs it owns never change hands; an agent's credential is bound to its
-- worker id, and only one live credential per worker id exists.

CREATE TABLE credentials (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('user', 'agent', 'join')),
  name TEXT NOT NULL,                 -- the user's name, the agent's worker id; '' for join tokens
  admin INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
  salt TEXT NOT NULL,
  hash TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER,              -- join tokens
  revoked_at_ms INTEGER
);
CREATE UNIQUE INDEX credentials_user_name ON credentials (name) WHERE kind = 'user';
CREATE UNIQUE INDEX credentials_live_agent ON credentials (name)
  WHERE kind = 'agent' AND revoked_at_ms IS NULL;

-- The user who submitted the job ('' for jobs from before users existed: only admins see those).
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_owner ON jobs (owner, id);
