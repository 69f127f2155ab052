-- pg_warden 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_warden UPDATE).
--
-- Every change to SQL objects made after 0.1.0 goes here as well as into
-- the generated install script (src/), in the same commit. The upgrade
-- test (pgrx-tests upgrade.rs) creates the extension at 0.1.0 with data,
-- runs this, and compares the result with a fresh install object by
-- object: functions, tables, columns, indexes, constraints, policies,
-- triggers, grants and comments.
\echo Use "ALTER EXTENSION pg_warden UPDATE" to load this file. \quit

-- 0.2.0: a commit-time wake-up of one task (workers/wakeup.rs)
CREATE FUNCTION warden._worker_wake_task_on_commit(task text) RETURNS void
  STRICT VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', '_worker_wake_task_on_commit_wrapper';
REVOKE EXECUTE ON FUNCTION warden._worker_wake_task_on_commit(text) FROM PUBLIC;
COMMENT ON FUNCTION warden._worker_wake_task_on_commit(text) IS
  'Internal: runs the named task of this database''s pg_warden worker when the current transaction commits (never on rollback).';
