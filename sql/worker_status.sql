-- The worker runtime as an operator sees it.
CREATE ROLE regress_ops LOGIN;
GRANT warden_admin TO regress_ops;
CREATE ROLE regress_app2 LOGIN;
GRANT warden_app TO regress_app2;

-- wait (up to 20 s) for this database's worker to have run its heartbeat
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    PERFORM FROM warden.worker_status
      WHERE datname = current_database() AND state = 'running' AND runs > 0;
    IF FOUND THEN RETURN; END IF;
    PERFORM pg_sleep(0.1);
  END LOOP;
  RAISE EXCEPTION 'no running worker';
END $$;

SELECT state, pid IS NOT NULL AS has_pid, task, runs > 0 AS ran, failures, last_error,
       backlog, started_at <= now() AS started, next_run_at > last_run_at AS scheduled
  FROM warden.worker_status WHERE datname = current_database() ORDER BY task;

-- the worker is visible as a background process of its own type
SELECT backend_type, datname = current_database() AS here
  FROM pg_stat_activity WHERE backend_type LIKE 'pg_warden%' AND (datname = current_database() OR datname IS NULL)
 ORDER BY 1;

-- commit-time wake-ups are counted on commit only
SELECT wake_requests AS before FROM warden.worker_status WHERE datname = current_database() AND task = 'heartbeat' \gset
BEGIN;
SELECT warden._worker_wake_on_commit();
ROLLBACK;
SELECT wake_requests - :before AS after_rollback FROM warden.worker_status WHERE datname = current_database() AND task = 'heartbeat';
BEGIN;
SELECT warden._worker_wake_on_commit();
COMMIT;
SELECT wake_requests - :before AS after_commit FROM warden.worker_status WHERE datname = current_database() AND task = 'heartbeat';

-- operators read it; applications do not
SET ROLE regress_ops;
SELECT count(*) > 0 AS ops_sees_workers FROM warden.worker_status;
RESET ROLE;
SET ROLE regress_app2;
SELECT count(*) FROM warden.worker_status;
RESET ROLE;

-- fault injection is superuser-only and validated
SELECT warden._inject_worker_fault('no_such_fault');
SET ROLE regress_ops;
SELECT warden._inject_worker_fault('task_panic');
RESET ROLE;

DROP ROLE regress_ops;
DROP ROLE regress_app2;
