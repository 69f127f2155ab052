BEGIN;
SELECT warden.set_tenant('bench');
SELECT value FROM bench_plain_secrets WHERE tenant = 'bench' AND name = 'api/key';
COMMIT;
