-- Tenancy for a psql user: one call isolates a table; the lint before and
-- after; the self-test; tenant tokens.
CREATE ROLE regress_owner LOGIN;            -- owns the tables, no BYPASSRLS
CREATE ROLE regress_tapp LOGIN;             -- the application
GRANT warden_app TO regress_tapp;
GRANT warden_admin, regress_tapp TO regress_owner;
CREATE SCHEMA shop AUTHORIZATION regress_owner;

SET ROLE regress_owner;
CREATE TABLE shop.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant text NOT NULL, item text DEFAULT 'thing', amount int DEFAULT 1);
CREATE TABLE shop.customers (id int PRIMARY KEY, org_id uuid NOT NULL, name text, api_key text);
CREATE VIEW shop.order_totals AS SELECT tenant, sum(amount) AS total FROM shop.orders GROUP BY tenant;
GRANT USAGE ON SCHEMA shop TO regress_tapp;
GRANT SELECT, INSERT, UPDATE, DELETE ON shop.orders, shop.customers TO regress_tapp;
GRANT SELECT ON shop.order_totals TO regress_tapp;

-- before: the lint finds the unprotected tenant tables (pg_warden's own schema is clean)
SELECT name, level, metadata->>'object' AS object FROM warden.lint() ORDER BY 1, 3;

-- bad input: clear errors, nothing changed
SELECT warden.enable_tenancy('shop.orders', 'tenant_id');
SELECT warden.enable_tenancy('shop.order_totals');
ALTER TABLE shop.customers ADD COLUMN region point;
SELECT warden.enable_tenancy('shop.customers', 'region');
SELECT warden.enable_tenancy('shop.no_such_table');

-- one call per table; a second call changes nothing
SELECT warden.enable_tenancy('shop.orders');
SELECT warden.enable_tenancy('shop.orders');
SELECT warden.enable_tenancy('shop.customers', 'org_id');
SELECT * FROM warden.tenant_tables WHERE table_name::text LIKE 'shop.%' ORDER BY 1;
\d shop.orders

-- after: only the view (no security_invoker) and the plaintext api_key remain
SELECT name, level, metadata->>'object' AS object FROM warden.lint() ORDER BY 1, 3;
ALTER VIEW shop.order_totals SET (security_invoker = true);
SELECT name, level, metadata->>'object' AS object FROM warden.lint() ORDER BY 1, 3;

-- the self-test, as the application role
SELECT * FROM warden.tenant_isolation_selftest('shop.orders', 'regress_tapp');
SELECT * FROM warden.tenant_isolation_selftest('shop.customers', 'regress_tapp');
SELECT count(*) AS rows_left_behind FROM shop.orders;

-- the owner has no BYPASSRLS: FORCE applies to it too
BEGIN;
SELECT warden.set_tenant('acme');
INSERT INTO shop.orders (item) VALUES ('acme widget');
SELECT warden.set_tenant('globex');
INSERT INTO shop.orders (item) VALUES ('globex gadget');
SELECT tenant, item FROM shop.orders;
COMMIT;
SELECT count(*) AS owner_without_tenant_sees FROM shop.orders;

-- the plan: the tenant is an InitPlan parameter (evaluated once) in an index condition
-- (read from the plan's text: PostgreSQL 17 prints InitPlan parameters differently)
SET enable_seqscan = off;
DO $$
DECLARE
  plan text := '';
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) SELECT * FROM shop.orders WHERE item = ''x''' LOOP
    plan := plan || line || E'\n';
  END LOOP;
  RAISE NOTICE 'tenant in an index condition: %; computed once, by an InitPlan: %',
    plan ~ 'Index Cond: \(tenant = ', plan ~ 'InitPlan 1';
END $$;
RESET enable_seqscan;
RESET ROLE;

-- tenant tokens: minted by an admin, verified by the application
SELECT warden.tenant_token('acme', '10 minutes') AS acme_token \gset
SELECT warden.tenant_token('acme', '0 seconds');
SELECT warden.tenant_token('acme', '31 days');
SELECT warden.tenant_token('bad tenant', '1 minute');
SET ROLE regress_tapp;
SELECT warden.tenant_token('acme', '10 minutes');
BEGIN;
SELECT warden.set_tenant_token(:'acme_token');
SELECT item FROM shop.orders;
-- a token for acme cannot write globex's rows
INSERT INTO shop.orders (tenant, item) VALUES ('globex', 'forged');
ROLLBACK;
CREATE FUNCTION pg_temp.b64url(t text) RETURNS text LANGUAGE sql
  AS $$ SELECT rtrim(translate(encode(convert_to(t, 'UTF8'), 'base64'), '+/', '-_'), '=') $$;
BEGIN;
SAVEPOINT s;
-- alg: none
SELECT warden.set_tenant_token(pg_temp.b64url('{"alg":"none","typ":"JWT"}') || '.' || pg_temp.b64url('{"tid":"acme","exp":9999999999}') || '.');
ROLLBACK TO SAVEPOINT s;
-- acme's signature on a payload naming globex
SELECT warden.set_tenant_token(split_part(:'acme_token', '.', 1) || '.' || pg_temp.b64url('{"tid":"globex","exp":9999999999}') || '.' || split_part(:'acme_token', '.', 3));
ROLLBACK TO SAVEPOINT s;
-- one character changed
SELECT warden.set_tenant_token(overlay(:'acme_token' placing (CASE WHEN right(:'acme_token', 1) = 'A' THEN 'B' ELSE 'A' END) from length(:'acme_token')));
ROLLBACK TO SAVEPOINT s;
SELECT warden.set_tenant_token('not.a.token');
ROLLBACK TO SAVEPOINT s;
SELECT warden.current_tenant() IS NULL AS no_tenant_after_failures;
ROLLBACK;
SELECT warden.set_tenant_token(:'acme_token');
RESET ROLE;
SELECT warden.tenant_token('acme', '1 second') AS short_token \gset
SELECT pg_sleep(1.2);
BEGIN;
SELECT warden.set_tenant_token(:'short_token');
ROLLBACK;

-- with warden.require_tenant_token, plain set_tenant is for admins only
ALTER ROLE regress_tapp SET warden.require_tenant_token = on;
\c - regress_tapp
BEGIN;
SELECT warden.set_tenant('acme');
ROLLBACK;
BEGIN;
SELECT warden.set_tenant_token(:'acme_token');
SELECT count(*) AS acme_rows FROM shop.orders;
COMMIT;
\c - postgres
ALTER ROLE regress_tapp RESET warden.require_tenant_token;

-- rotating the tenant's token key revokes its tokens
SELECT warden.rotate_data_key('acme', 'token') > 0 AS rotated;
BEGIN;
SELECT warden.set_tenant_token(:'acme_token');
ROLLBACK;

-- disable_tenancy undoes it
SELECT warden.disable_tenancy('shop.customers');
SELECT warden.disable_tenancy('shop.customers');
SELECT table_name FROM warden.tenant_tables ORDER BY table_name::text;

DROP SCHEMA shop CASCADE;
DROP ROLE regress_owner;
DROP ROLE regress_tapp;
