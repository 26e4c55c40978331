-- The envctl ledger on PostgreSQL: least-privilege roles.
--
-- envctl_reader      reads everything (status, history, describe, diff, report)
-- envctl_staging     what the staging trigger uses: records versions, test runs and
--                    pipeline runs; moves, pins and records events of *.staging only
-- envctl_production  what the production trigger and operators use: all of the above,
--                    and moves production and fallback (promote, rollback, pin); signs off
-- envctl_tester      what testers use: reads everything, records sign-offs, nothing else
--
-- Nobody but the owner of the tables updates or deletes an event, a version or a test
-- run (a version's `pruned_at` mark aside): history is never rewritten. The owner creates and migrates the schema.
--
-- Apply as the owner of the ledger's tables (or a superuser; creating the three roles
-- needs CREATEROLE), in the ledger's database, after envctl made the schema (run any
-- envctl command once with the owner's URL), and again after an envctl upgrade:
--
--   psql "postgresql://OWNER@HOST/DB" -v ON_ERROR_STOP=1 -f pipeline/ledger/roles.sql
--   CREATE ROLE ci_staging LOGIN PASSWORD '...' IN ROLE envctl_staging;
--   CREATE ROLE ci_production LOGIN PASSWORD '...' IN ROLE envctl_production;
--   CREATE ROLE tess LOGIN PASSWORD '...' IN ROLE envctl_tester;
--
-- Applying it twice changes nothing. Row-level security enforces the stages; the
-- owner is exempt (it is not one of these roles).

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'envctl_reader') THEN
    CREATE ROLE envctl_reader NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'envctl_staging') THEN
    CREATE ROLE envctl_staging NOLOGIN IN ROLE envctl_reader;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'envctl_production') THEN
    CREATE ROLE envctl_production NOLOGIN IN ROLE envctl_reader;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'envctl_tester') THEN
    CREATE ROLE envctl_tester NOLOGIN IN ROLE envctl_reader;
  END IF;
END
$$;

GRANT SELECT ON schema_version, versions, test_runs, environments, events, pipeline_runs TO envctl_reader;

-- What both writers do. Versions, test runs and events are insert-only.
GRANT INSERT ON versions, test_runs, events, environments, pipeline_runs
  TO envctl_staging, envctl_production;
GRANT USAGE ON SEQUENCE versions_id_seq, test_runs_id_seq, events_id_seq, pipeline_runs_id_seq
  TO envctl_staging, envctl_production;
-- A pointer's image and stage never change; its target, generation and pin do.
GRANT UPDATE (sha, digest, generation, pinned, pin_reason, pinned_by, updated_at) ON environments
  TO envctl_staging, envctl_production;
GRANT UPDATE (state, verdicts, finished_at) ON pipeline_runs TO envctl_staging, envctl_production;
-- Whether a version's bytes are in the registry: `envctl prune` marks it (production
-- role only: it deletes from the registry), a rebuild (`envctl build IMAGE --rev SHA`, a
-- staging run) clears it (either writer; the policies below). Nothing else of a version changes.
GRANT UPDATE (pruned_at) ON versions TO envctl_staging, envctl_production;

-- Which rows each writer may write.
ALTER TABLE versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE environments ENABLE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE pipeline_runs ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS envctl_read ON environments;
DROP POLICY IF EXISTS envctl_production_write ON environments;
DROP POLICY IF EXISTS envctl_staging_insert ON environments;
DROP POLICY IF EXISTS envctl_staging_update ON environments;
CREATE POLICY envctl_read ON environments FOR SELECT USING (true);
CREATE POLICY envctl_production_write ON environments TO envctl_production USING (true) WITH CHECK (true);
CREATE POLICY envctl_staging_insert ON environments FOR INSERT TO envctl_staging
  WITH CHECK (stage = 'staging');
-- USING (true): an update of another stage's row is an error, not a silent no-op
-- that envctl would take for a lost compare-and-swap.
CREATE POLICY envctl_staging_update ON environments FOR UPDATE TO envctl_staging
  USING (true) WITH CHECK (stage = 'staging');

DROP POLICY IF EXISTS envctl_read ON versions;
DROP POLICY IF EXISTS envctl_write_insert ON versions;
DROP POLICY IF EXISTS envctl_production_update ON versions;
DROP POLICY IF EXISTS envctl_staging_update ON versions;
CREATE POLICY envctl_read ON versions FOR SELECT USING (true);
CREATE POLICY envctl_write_insert ON versions FOR INSERT TO envctl_staging, envctl_production
  WITH CHECK (true);
CREATE POLICY envctl_production_update ON versions FOR UPDATE TO envctl_production
  USING (true) WITH CHECK (true);
-- The staging role only clears the mark (a rebuild put the bytes back); it never marks one pruned.
CREATE POLICY envctl_staging_update ON versions FOR UPDATE TO envctl_staging
  USING (true) WITH CHECK (pruned_at IS NULL);

DROP POLICY IF EXISTS envctl_read ON events;
DROP POLICY IF EXISTS envctl_production_insert ON events;
DROP POLICY IF EXISTS envctl_staging_insert ON events;
CREATE POLICY envctl_read ON events FOR SELECT USING (true);
CREATE POLICY envctl_production_insert ON events FOR INSERT TO envctl_production WITH CHECK (true);
CREATE POLICY envctl_staging_insert ON events FOR INSERT TO envctl_staging WITH CHECK (stage = 'staging');

DROP POLICY IF EXISTS envctl_read ON pipeline_runs;
DROP POLICY IF EXISTS envctl_production_write ON pipeline_runs;
DROP POLICY IF EXISTS envctl_staging_insert ON pipeline_runs;
DROP POLICY IF EXISTS envctl_staging_update ON pipeline_runs;
CREATE POLICY envctl_read ON pipeline_runs FOR SELECT USING (true);
CREATE POLICY envctl_production_write ON pipeline_runs TO envctl_production USING (true) WITH CHECK (true);
CREATE POLICY envctl_staging_insert ON pipeline_runs FOR INSERT TO envctl_staging
  WITH CHECK (branch = 'staging');
-- A staging run leaves the records of production runs alone (reaping skips them).
CREATE POLICY envctl_staging_update ON pipeline_runs FOR UPDATE TO envctl_staging
  USING (branch = 'staging') WITH CHECK (branch = 'staging');

-- Testers' sign-offs (`envctl signoff`): insert-only, by people: testers and operators.
-- Not the staging trigger's role (CI does not sign off; envctl refuses it too).
GRANT SELECT ON signoffs TO envctl_reader;
REVOKE INSERT ON signoffs FROM envctl_staging;
REVOKE USAGE ON SEQUENCE signoffs_id_seq FROM envctl_staging;
GRANT INSERT ON signoffs TO envctl_tester, envctl_production;
GRANT USAGE ON SEQUENCE signoffs_id_seq TO envctl_tester, envctl_production;
