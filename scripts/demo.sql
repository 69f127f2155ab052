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

-- SCD2: one call keeps a version history of a table; an update that
-- changes nothing makes no version, a delete closes the key with a tombstone.
CREATE TABLE public.demo_plans (id int PRIMARY KEY, name text, price numeric);
INSERT INTO public.demo_plans VALUES (1, 'basic', 10), (2, 'pro', 30);
SELECT warden.scd2_track('public.demo_plans', ARRAY['id']);
UPDATE public.demo_plans SET price = 12 WHERE id = 1;
UPDATE public.demo_plans SET price = 12 WHERE id = 1;
DELETE FROM public.demo_plans WHERE id = 2;
SELECT id, name, price, op, is_current, valid_from < valid_to AS lived
  FROM public.demo_plans_history ORDER BY id, valid_from, op;

-- Deferred tracking: the trigger only queues the change; the background
-- worker of this database (started when CREATE EXTENSION committed, woken
-- when the change commits) writes the same versions a moment later.
CREATE TABLE public.demo_prices (sku text PRIMARY KEY, amount int);
SELECT warden.scd2_track('public.demo_prices', ARRAY['sku'], deferred => true);
INSERT INTO public.demo_prices VALUES ('a-1', 100);
UPDATE public.demo_prices SET amount = 120;
SELECT pg_sleep(1);
SELECT sku, amount, op, is_current FROM public.demo_prices_history ORDER BY valid_from, op;
SELECT datname, state, task, runs, failures, wake_requests, backlog
  FROM warden.worker_status WHERE datname = current_database();
