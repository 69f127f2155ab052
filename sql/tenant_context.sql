-- The tenant context: transaction-local, validated, and out of reach of
-- SET / set_config for application roles.
CREATE ROLE regress_app LOGIN;
GRANT warden_app TO regress_app;
CREATE ROLE regress_nobody LOGIN;

-- unset: NULL, and require_tenant() says what to do
SELECT warden.current_tenant() IS NULL AS unset;
SELECT warden.require_tenant();

-- outside a transaction block it is an error, not a silent no-op
SELECT warden.set_tenant('acme');

BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.current_tenant(), warden.require_tenant(), current_setting('warden.tenant');
-- a savepoint rolled back restores the previous tenant
SAVEPOINT s;
SELECT warden.set_tenant('globex');
SELECT warden.current_tenant();
ROLLBACK TO SAVEPOINT s;
SELECT warden.current_tenant();
COMMIT;
-- gone after COMMIT
SELECT warden.current_tenant() IS NULL AS cleared_after_commit;

BEGIN;
SELECT warden.set_tenant('globex');
ROLLBACK;
SELECT warden.current_tenant() IS NULL AS cleared_after_rollback;

-- bad input: clear errors, and the tenant is unchanged
BEGIN;
SELECT warden.set_tenant('acme');
SAVEPOINT s;
SELECT warden.set_tenant(NULL);
ROLLBACK TO SAVEPOINT s;
SELECT warden.set_tenant('');
ROLLBACK TO SAVEPOINT s;
SELECT warden.set_tenant($$acme' OR '1'='1$$);
ROLLBACK TO SAVEPOINT s;
SELECT warden.set_tenant(repeat('x', 129));
ROLLBACK TO SAVEPOINT s;
SELECT warden.set_tenant(E'acme\nforged log line');
ROLLBACK TO SAVEPOINT s;
SELECT warden.current_tenant() AS still;
COMMIT;

-- the accepted alphabet
BEGIN;
SELECT warden.set_tenant('3f2504e0-4f89-11d3-9a0c-0305e82c3301');
SELECT warden.set_tenant('ops+billing@acme.example');
SELECT warden.set_tenant('org:acme.eu_1');
SELECT warden.current_tenant();
ROLLBACK;

-- as an application role
SET ROLE regress_app;
BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.current_tenant();
-- direct writes to the setting are refused
SAVEPOINT s;
SET LOCAL warden.tenant = 'globex';
ROLLBACK TO SAVEPOINT s;
SELECT set_config('warden.tenant', 'globex', true);
ROLLBACK TO SAVEPOINT s;
RESET warden.tenant;
ROLLBACK TO SAVEPOINT s;
SELECT warden.current_tenant() AS unchanged;
COMMIT;
SET warden.tenant = 'globex';
ALTER ROLE regress_app SET warden.tenant = 'globex';
RESET ROLE;

-- a role without warden_app cannot call the functions at all
SET ROLE regress_nobody;
SELECT warden.current_tenant();
RESET ROLE;

-- a superuser may pin a role to a tenant; the value is validated
ALTER ROLE regress_app SET warden.tenant = 'bad tenant';
SET warden.tenant = '';
SELECT warden.current_tenant() IS NULL AS empty_reads_as_null;
RESET warden.tenant;

DROP ROLE regress_app;
DROP ROLE regress_nobody;
