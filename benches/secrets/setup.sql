-- The secrets group: a secret per tenant to read, the same value in a
-- plain table (the baseline: one row by primary key), a role that reads
-- in strict mode, and a standard-webhooks secret with a 2 KiB payload.
DROP TABLE IF EXISTS bench_plain_secrets;
CREATE TABLE bench_plain_secrets (tenant text, name text, value text, PRIMARY KEY (tenant, name));
INSERT INTO bench_plain_secrets VALUES ('bench', 'api/key', 'sk_live_0123456789abcdef0123456789abcdef');
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_secrets') THEN
    CREATE ROLE bench_secrets LOGIN;
    CREATE ROLE bench_secrets_strict LOGIN;
  END IF;
END $$;
GRANT warden_app TO bench_secrets, bench_secrets_strict;
GRANT SELECT ON bench_plain_secrets TO bench_secrets, bench_secrets_strict;
ALTER ROLE bench_secrets_strict SET warden.audit_strict = on;
BEGIN;
SELECT warden.set_tenant('bench');
SELECT warden.secret_set('api/key', 'sk_live_0123456789abcdef0123456789abcdef')
 WHERE NOT EXISTS (SELECT FROM warden.secret_catalog WHERE name = 'api/key');
SELECT warden.secret_set('hook/sw', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')
 WHERE NOT EXISTS (SELECT FROM warden.secret_catalog WHERE name = 'hook/sw');
COMMIT;
