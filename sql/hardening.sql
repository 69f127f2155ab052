-- What the hardening changed, as a psql user sees it: typed tenant ids
-- only in canonical form, partitions closed to direct access, the
-- isolation policy beside the owner's own policies, NULL arguments
-- refused, a pinned login role, DEFERRABLE keys refused by scd2_track,
-- and the lint with a table name that is not a valid regular expression.
CREATE ROLE regress_hown LOGIN;
CREATE ROLE regress_happ LOGIN;
GRANT warden_admin, regress_happ TO regress_hown;
GRANT warden_app TO regress_happ;
CREATE SCHEMA h AUTHORIZATION regress_hown;
GRANT USAGE ON SCHEMA h TO regress_happ;
SET ROLE regress_hown;

-- typed tenant columns: '42' is tenant 42; '042' and '+42' match nothing
CREATE TABLE h.accounts (id int PRIMARY KEY, org bigint NOT NULL, note text);
SELECT warden.enable_tenancy('h.accounts', 'org');
GRANT SELECT, INSERT ON h.accounts TO regress_happ;
BEGIN;
SELECT warden.set_tenant('42');
INSERT INTO h.accounts (id, note) VALUES (1, 'tenant 42');
COMMIT;
SET ROLE regress_happ;
BEGIN;
SELECT warden.set_tenant('42');
SELECT id, org, note FROM h.accounts;
SELECT warden.set_tenant('042');
SELECT count(*) AS visible_as_042 FROM h.accounts;
INSERT INTO h.accounts (id, note) VALUES (2, 'as 042');
ROLLBACK;
BEGIN;
SELECT warden.set_tenant('+42');
SELECT count(*) AS visible_as_plus_42 FROM h.accounts;
ROLLBACK;
SET ROLE regress_hown;
BEGIN;
SELECT warden.set_tenant('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11');
SELECT warden.current_tenant_uuid() AS upper_case_uuid,
       warden.current_tenant_bigint() AS not_a_number;
SELECT warden.set_tenant('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
SELECT warden.current_tenant_uuid() AS canonical_uuid;
COMMIT;

-- a partitioned table: queries through the parent are isolated, and so
-- are queries that name a partition, also one created or attached later
CREATE TABLE h.events (tenant text NOT NULL, id int NOT NULL, body text) PARTITION BY LIST (tenant);
CREATE TABLE h.events_acme PARTITION OF h.events FOR VALUES IN ('acme');
CREATE TABLE h.events_rest PARTITION OF h.events DEFAULT;
SELECT warden.enable_tenancy('h.events');
CREATE TABLE h.events_globex PARTITION OF h.events FOR VALUES IN ('globex');
CREATE TABLE h.events_initech (LIKE h.events);
ALTER TABLE h.events DETACH PARTITION h.events_rest;
ALTER TABLE h.events ATTACH PARTITION h.events_initech FOR VALUES IN ('initech');
ALTER TABLE h.events ATTACH PARTITION h.events_rest DEFAULT;
GRANT SELECT, INSERT ON h.events, h.events_acme, h.events_globex, h.events_initech, h.events_rest TO regress_happ;
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
  FROM pg_class c WHERE c.relnamespace = 'h'::regnamespace AND c.relname LIKE 'events%' AND c.relkind IN ('r', 'p')
 ORDER BY 1;
SET ROLE regress_happ;
BEGIN;
SELECT warden.set_tenant('acme');
INSERT INTO h.events VALUES ('acme', 1, 'a'), (DEFAULT, 2, 'b');
SELECT warden.set_tenant('globex');
INSERT INTO h.events (id, body) VALUES (3, 'g');
SELECT tenant, id FROM h.events ORDER BY id;
SELECT count(*) AS acme_rows_via_partition FROM h.events_acme;
INSERT INTO h.events_globex VALUES ('globex', 4, 'direct');
SELECT tenant, id FROM h.events_globex ORDER BY id;
INSERT INTO h.events_acme VALUES ('acme', 5, 'planted by globex');
ROLLBACK;
SET ROLE regress_hown;

-- the owner's permissive policy keeps its meaning within the tenant
CREATE TABLE h.docs (id int PRIMARY KEY, tenant text NOT NULL, owner_name name NOT NULL DEFAULT current_user);
ALTER TABLE h.docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_docs ON h.docs USING (owner_name = current_user);
SELECT warden.enable_tenancy('h.docs');
-- and a permissive policy added later turns the isolation restrictive
CREATE TABLE h.notes (id int PRIMARY KEY, tenant text NOT NULL, public boolean NOT NULL DEFAULT false);
SELECT warden.enable_tenancy('h.notes');
CREATE POLICY public_notes ON h.notes FOR SELECT USING (public);
SELECT c.relname, p.polname, p.polpermissive
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
 WHERE c.relnamespace = 'h'::regnamespace AND c.relname IN ('docs', 'notes', 'accounts') ORDER BY 1, 2;
SELECT table_name, policies_present FROM warden.tenant_tables WHERE table_name::text LIKE 'h.%' ORDER BY 1;

-- NULL arguments that used to answer NULL silently
BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.encrypt(NULL::text, 'ctx') IS NULL AS null_value_stays_null;
SELECT warden.encrypt('x', NULL);
ROLLBACK;
BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.decrypt('\x00'::bytea, NULL);
ROLLBACK;
BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.blind_index('x', NULL);
ROLLBACK;
BEGIN;
SELECT warden.set_tenant_token(NULL);
ROLLBACK;
SELECT warden.tenant_token(NULL, '1 minute');

-- scd2_track wants a key Postgres checks on every row
CREATE TABLE h.dim (id int NOT NULL, v text, CONSTRAINT dim_key UNIQUE (id) DEFERRABLE INITIALLY DEFERRED);
SELECT warden.scd2_track('h.dim', ARRAY['id']);
SELECT count(*) AS histories FROM warden.scd2_registry WHERE source = 'h.dim'::regclass;

-- a table whose name is not a valid regular expression
CREATE TABLE h."x(" (id int, tenant_id text);
CREATE FUNCTION h.reader() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM h."x("';
SELECT name, level, metadata->>'object' AS object FROM warden.lint()
 WHERE metadata->>'object' LIKE '%x(%' OR metadata->>'object' LIKE 'h.reader%' ORDER BY 1;
RESET ROLE;

-- a login role pinned to a tenant cannot switch
CREATE ROLE regress_pinned LOGIN;
GRANT warden_app TO regress_pinned;
ALTER ROLE regress_pinned SET warden.tenant = 'acme';
\c - regress_pinned
BEGIN;
SELECT warden.current_tenant();
SELECT warden.set_tenant('acme');
SELECT warden.set_tenant('globex');
ROLLBACK;
\c - postgres
DROP ROLE regress_pinned;
DROP SCHEMA h CASCADE;
DROP ROLE regress_happ;
DROP ROLE regress_hown;
