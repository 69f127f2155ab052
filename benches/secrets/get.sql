BEGIN;
SELECT warden.set_tenant('bench');
SELECT warden.secret_get('api/key');
COMMIT;
