-- SCD2 history kept by warden.scd2_track, merged by warden.scd2_merge, as a
-- table owner (warden_admin) and an application role see it; two tenants.
-- Timestamps differ run to run, so versions are shown by what they are
-- (open, closed, tombstone) rather than when.
CREATE ROLE regress_scd2_owner LOGIN;
GRANT warden_admin TO regress_scd2_owner;
GRANT CREATE ON SCHEMA public TO regress_scd2_owner;
CREATE ROLE regress_scd2_writer LOGIN;
GRANT warden_app TO regress_scd2_writer;

SET ROLE regress_scd2_owner;
CREATE TABLE public.customers (id int PRIMARY KEY, name text NOT NULL, email text, tier text);
INSERT INTO public.customers VALUES (1, 'Ann', 'ann@example.com', 'gold');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.customers TO regress_scd2_writer;

-- bad inputs: clear errors, nothing created
SELECT warden.scd2_track('public.customers', ARRAY[]::text[]);
SELECT warden.scd2_track('public.customers', ARRAY['nope']);
SELECT warden.scd2_track('public.customers', ARRAY['name']);
SELECT warden.scd2_track('public.customers', ARRAY['id'], ARRAY['email', 'email']);
SELECT warden.scd2_track('public.customers', ARRAY['id'], ARRAY[]::text[]);
SELECT to_regclass('public.customers_history') IS NULL AS nothing_created;
-- a partitioned table is refused (a TRUNCATE of one partition would bypass
-- its history); a partition can be tracked on its own
CREATE TABLE public.events (id int, day date, kind text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT warden.scd2_track('public.events', ARRAY['id', 'day']);
SELECT warden.scd2_track('public.events_2026', ARRAY['id', 'day']);
INSERT INTO public.events VALUES (1, '2026-05-01', 'open');
UPDATE public.events SET kind = 'closed' WHERE id = 1;
SELECT id, day, kind, op, is_current FROM public.events_2026_history ORDER BY valid_from, is_current;
SELECT warden.scd2_untrack('public.events_2026', drop_history => true);
DROP TABLE public.events;

-- track: the history starts with the current rows
SELECT warden.scd2_track('public.customers', ARRAY['id']);
SELECT warden.scd2_track('public.customers', ARRAY['id']);
SELECT source, history, business_key, tracked, trigger_enabled FROM warden.scd2_tables;
GRANT SELECT ON public.customers_history TO regress_scd2_writer;

CREATE FUNCTION public.versions() RETURNS TABLE (id int, name text, email text, tier text, op text, state text)
LANGUAGE sql AS $$
  SELECT id, name, email, tier, op,
         CASE WHEN is_current THEN 'current' WHEN valid_from = valid_to THEN 'tombstone' ELSE 'closed' END
    FROM public.customers_history ORDER BY id, valid_from, valid_to
$$;

SET ROLE regress_scd2_writer;
-- the application writes the table, never the history
INSERT INTO public.customers_history (id, hash_diff, valid_from, valid_to, is_current, op, txid)
  VALUES (9, '\x00', now(), 'infinity', true, 'I', pg_current_xact_id());
-- a no-op update writes no version
UPDATE public.customers SET tier = 'gold' WHERE id = 1;
-- insert opens, update closes and opens
INSERT INTO public.customers VALUES (2, 'Bob', NULL, 'silver');
UPDATE public.customers SET email = 'bob@example.com' WHERE id = 2;
-- two changes in one transaction: one version, with the end state
BEGIN;
UPDATE public.customers SET tier = 'platinum' WHERE id = 1;
UPDATE public.customers SET tier = 'diamond' WHERE id = 1;
COMMIT;
-- a change undone within its transaction: no version
BEGIN;
UPDATE public.customers SET tier = 'iron' WHERE id = 2;
UPDATE public.customers SET tier = 'silver' WHERE id = 2;
COMMIT;
SELECT * FROM public.versions();
-- delete closes with a tombstone; the key may come back
DELETE FROM public.customers WHERE id = 2;
INSERT INTO public.customers VALUES (2, 'Bob', 'bob@example.com', 'bronze');
SELECT * FROM public.versions();
-- at most one current version per key; versions of a key do not overlap
SELECT count(*) = count(DISTINCT id) AS one_current_per_key FROM public.customers_history WHERE is_current;
SELECT bool_and(next_from IS NULL OR next_from >= valid_to) AS no_overlap
  FROM (SELECT valid_to, lead(valid_from) OVER (PARTITION BY id ORDER BY valid_from, valid_to) AS next_from
          FROM public.customers_history WHERE valid_from < valid_to) v;
-- point in time
SELECT id, tier FROM warden.scd2_as_of(NULL::public.customers_history, now()) ORDER BY id;
SELECT count(*) AS before_anything FROM warden.scd2_as_of(NULL::public.customers_history, '2000-01-01');
SELECT * FROM warden.scd2_as_of(NULL::public.customers, now());
RESET ROLE;

-- TRUNCATE would bypass the history; dropping a history in use is refused
SET ROLE regress_scd2_owner;
TRUNCATE public.customers;
DROP TABLE public.customers_history;

-- tenant-isolated source, tenant-isolated history
CREATE TABLE public.orders (id int PRIMARY KEY, tenant text NOT NULL, status text NOT NULL);
SELECT warden.enable_tenancy('public.orders');
SELECT warden.scd2_track('public.orders', ARRAY['id']);
SELECT table_name, tenant_column, rls_forced FROM warden.tenant_tables WHERE table_name::text LIKE '%orders%' ORDER BY 1;
GRANT SELECT, INSERT, UPDATE ON public.orders TO regress_scd2_writer;
GRANT SELECT ON public.orders_history TO regress_scd2_writer;
SET ROLE regress_scd2_writer;
BEGIN;
SELECT warden.set_tenant('tenant_a');
INSERT INTO public.orders (id, status) VALUES (1, 'new');
UPDATE public.orders SET status = 'paid' WHERE id = 1;
COMMIT;
BEGIN;
SELECT warden.set_tenant('tenant_b');
INSERT INTO public.orders (id, status) VALUES (2, 'new');
-- tenant_b sees only its own history, and cannot touch tenant_a's order
SELECT id, tenant, status, is_current FROM public.orders_history ORDER BY id, valid_from;
UPDATE public.orders SET status = 'stolen' WHERE id = 1;
COMMIT;
BEGIN;
SELECT warden.set_tenant('tenant_a');
SELECT id, tenant, status, is_current FROM public.orders_history ORDER BY id, valid_from;
COMMIT;
RESET ROLE;
-- a batch merged into a tenant-isolated history sees only the current
-- tenant's versions (close_missing leaves tenant_b's order alone), and a
-- staging row of another tenant is refused by the policy, nothing written
SET ROLE regress_scd2_owner;
CREATE TABLE public.orders_stage (id int PRIMARY KEY, tenant text, status text);
INSERT INTO public.orders_stage VALUES (1, 'tenant_a', 'shipped');
BEGIN;
SELECT warden.set_tenant('tenant_a');
SELECT * FROM warden.scd2_merge('public.orders_history', 'public.orders_stage', '2030-01-01', close_missing => true);
COMMIT;
INSERT INTO public.orders_stage VALUES (2, 'tenant_b', 'forged');
BEGIN;
SELECT warden.set_tenant('tenant_a');
SELECT * FROM warden.scd2_merge('public.orders_history', 'public.orders_stage', '2030-01-02');
ROLLBACK;
BEGIN;
SELECT warden.set_tenant('tenant_b');
SELECT id, tenant, status, is_current FROM public.orders_history ORDER BY id, valid_from;
COMMIT;
BEGIN;
SELECT warden.set_tenant('tenant_a');
SELECT id, tenant, status, is_current FROM public.orders_history ORDER BY id, valid_from;
COMMIT;
DROP TABLE public.orders_stage;
RESET ROLE;

-- batch loads: an empty dimension table tracked, fed from staging
SET ROLE regress_scd2_owner;
CREATE TABLE public.products (sku text PRIMARY KEY, title text, price numeric);
SELECT warden.scd2_track('public.products', ARRAY['sku']);
CREATE TABLE public.products_stage (sku text, title text, price numeric, loaded_at date);
INSERT INTO public.products_stage VALUES ('A-1', 'Anvil', 10.0, '2026-01-01'), ('B-2', 'Bell', 5, '2026-01-01'), ('C-3', 'Cup', 2.5, '2026-01-01');
SELECT * FROM warden.scd2_merge('public.products_history', 'public.products_stage', '2026-01-01');
-- the same batch again changes nothing (10.0 and 10.00 are the same price)
UPDATE public.products_stage SET price = 10.00 WHERE sku = 'A-1';
SELECT * FROM warden.scd2_merge('public.products_history', 'public.products_stage', '2026-01-01');
-- next batch: one changed, one gone
UPDATE public.products_stage SET price = 6 WHERE sku = 'B-2';
DELETE FROM public.products_stage WHERE sku = 'C-3';
SELECT * FROM warden.scd2_merge('public.products_history', 'public.products_stage', '2026-02-01', close_missing => true);
SELECT sku, price, op, valid_from, valid_to, is_current FROM public.products_history ORDER BY sku, valid_from, valid_to;
SELECT sku, price FROM warden.scd2_as_of(NULL::public.products_history, '2026-01-15') ORDER BY sku;
-- bad batches: nothing written
INSERT INTO public.products_stage VALUES ('D-4', 'Dish', 1, '2026-03-01'), ('D-4', 'Dish', 2, '2026-03-01');
SELECT * FROM warden.scd2_merge('public.products_history', 'public.products_stage', '2026-03-01');
DELETE FROM public.products_stage WHERE sku = 'D-4';
-- a duplicate is refused even when one of its rows equals the current version
INSERT INTO public.products_stage SELECT sku, title, price + 1, loaded_at FROM public.products_stage WHERE sku = 'A-1';
SELECT * FROM warden.scd2_merge('public.products_history', 'public.products_stage', '2026-03-01');
DELETE FROM public.products_stage WHERE sku = 'A-1' AND price = 11;
INSERT INTO public.products_stage VALUES (NULL, 'Nameless', 1, '2026-03-01'), (NULL, 'Nameless too', 2, '2026-03-01');
SELECT * FROM warden.scd2_merge('public.products_history', 'public.products_stage', '2026-03-01');
DELETE FROM public.products_stage WHERE sku IS NULL;
UPDATE public.products_stage SET price = 7 WHERE sku = 'B-2';
SELECT * FROM warden.scd2_merge('public.products_history', 'public.products_stage', '2025-12-01');
SELECT * FROM warden.scd2_merge('public.products_history', 'public.customers', '2026-03-01');
SELECT count(*) AS versions_unchanged FROM public.products_history;

-- columns whose equality is not byte-exact (jsonb here) are compared by hash
CREATE TABLE public.docs (id int PRIMARY KEY, body jsonb);
SELECT warden.scd2_track('public.docs', ARRAY['id']);
CREATE TABLE public.docs_stage (id int PRIMARY KEY, body jsonb);
INSERT INTO public.docs_stage VALUES (1, '{"a": 1}'), (2, '{"b": [1, 2]}');
SELECT * FROM warden.scd2_merge('public.docs_history', 'public.docs_stage', '2026-01-01');
SELECT * FROM warden.scd2_merge('public.docs_history', 'public.docs_stage', '2026-01-02');
UPDATE public.docs_stage SET body = '{"a": 2}' WHERE id = 1;
SELECT * FROM warden.scd2_merge('public.docs_history', 'public.docs_stage', '2026-01-03');
SELECT id, body, op, is_current FROM public.docs_history ORDER BY id, valid_from;
SELECT warden.scd2_untrack('public.docs', drop_history => true);
DROP TABLE public.docs, public.docs_stage;

-- untracking keeps the history unless asked
SELECT warden.scd2_untrack('public.products');
SELECT warden.scd2_untrack('public.products');
SELECT to_regclass('public.products_history') IS NOT NULL AS history_kept;
SELECT warden.scd2_untrack('public.customers', drop_history => true);
SELECT warden.scd2_untrack('public.orders', drop_history => true);
SELECT to_regclass('public.customers_history') IS NULL AS history_dropped;
SELECT count(*) AS still_tracked FROM warden.scd2_tables;
DROP TABLE public.customers, public.orders, public.products, public.products_history, public.products_stage;
DROP FUNCTION public.versions();
RESET ROLE;
REVOKE CREATE ON SCHEMA public FROM regress_scd2_owner;
DROP ROLE regress_scd2_writer;
DROP ROLE regress_scd2_owner;
