-- pg_warden demo: what the extension does today. Each subsystem adds its
-- part here as it lands.
\pset footer off
CREATE EXTENSION pg_warden;

-- An application role gets warden_app; nothing in schema warden is PUBLIC.
CREATE ROLE demo_app LOGIN;
GRANT warden_app TO demo_app;

-- The tenant context: set once per transaction, read by RLS policies.
SET ROLE demo_app;
BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.current_tenant() AS tenant_inside_transaction;
COMMIT;
SELECT warden.current_tenant() IS NULL AS tenant_gone_after_commit;

-- The application cannot switch tenants behind pg_warden's back.
\set ON_ERROR_STOP 0
SET warden.tenant = 'globex';
SELECT set_config('warden.tenant', 'globex', false);
SELECT warden.set_tenant($$acme' OR '1'='1$$);
\set ON_ERROR_STOP 1
RESET ROLE;

-- Envelope encryption under the tenant's data key; aad binds a value to
-- its row, so a ciphertext copied elsewhere does not decrypt.
SET ROLE demo_app;
BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.encrypt('alice@example.com', 'users.email:42') AS ct \gset
SELECT encode(:'ct'::bytea, 'hex') AS envelope;
SELECT warden.decrypt_text(:'ct'::bytea, 'users.email:42') AS decrypted;
\set ON_ERROR_STOP 0
SELECT warden.decrypt_text(:'ct'::bytea, 'users.email:43') AS wrong_row;
\set ON_ERROR_STOP 1
COMMIT;
BEGIN;
SELECT warden.set_tenant('globex');
\set ON_ERROR_STOP 0
SELECT warden.decrypt_text(:'ct'::bytea, 'users.email:42') AS other_tenant;
\set ON_ERROR_STOP 1
ROLLBACK;
RESET ROLE;
-- One call makes a table tenant-isolated; the lint and the self-test prove it.
CREATE TABLE public.demo_orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant text NOT NULL, item text DEFAULT 'widget');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.demo_orders TO demo_app;
SELECT name, level, metadata->>'object' AS object FROM warden.lint();
SELECT warden.enable_tenancy('public.demo_orders');
SELECT name, level, metadata->>'object' AS object FROM warden.lint();
SELECT check_name, passed FROM warden.tenant_isolation_selftest('public.demo_orders', 'demo_app');
-- Tenant tokens: minted by an admin (your auth service), verified in the database.
SELECT warden.tenant_token('acme', '15 minutes') AS token \gset
SET ROLE demo_app;
BEGIN;
SELECT warden.set_tenant_token(:'token') AS tenant_from_token;
INSERT INTO public.demo_orders (item) VALUES ('acme order');
SELECT tenant, item FROM public.demo_orders;
COMMIT;
RESET ROLE;

-- Keys as an operator sees them: wrapped, never shown.
SELECT key_id, tenant, purpose, root_version, state FROM warden.key_catalog;

-- The background worker of this database, started when CREATE EXTENSION
-- committed, and woken at commit by subsystems that leave it work.
SELECT pg_sleep(0.5);
BEGIN;
SELECT warden._worker_wake_on_commit();
COMMIT;
SELECT pg_sleep(0.2);
SELECT datname, state, task, runs, failures, wake_requests, last_run_at
  FROM warden.worker_status WHERE datname = current_database();
