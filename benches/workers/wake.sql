BEGIN;
INSERT INTO bench_wake_log DEFAULT VALUES;
SELECT warden._worker_wake_on_commit();
COMMIT;
