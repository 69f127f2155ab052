-- pg_warden 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_warden UPDATE).
--
-- Every change to SQL objects made after 0.1.0 goes here as well as into
-- the generated install script (src/), in the same commit. The upgrade
-- test (pgrx-tests upgrade.rs) creates the extension at 0.1.0 with data,
-- runs this, and compares the result with a fresh install object by
-- object: functions, tables, columns, indexes, constraints, policies,
-- triggers, grants and comments.
\echo Use "ALTER EXTENSION pg_warden UPDATE" to load this file. \quit
