-- Deferred SCD2 tracking: the trigger queues each change, the worker (or
-- warden.scd2_flush) writes the versions. The same changes are made to a
-- synchronously tracked twin in the same transactions; once applied, the
-- two histories are identical row for row. The worker may apply at any
-- moment, so only states that do not depend on when it runs are shown.
CREATE ROLE regress_dfr_owner LOGIN;
GRANT warden_admin TO regress_dfr_owner;
GRANT CREATE ON SCHEMA public TO regress_dfr_owner;
CREATE ROLE regress_dfr_writer LOGIN;
GRANT warden_app TO regress_dfr_writer;

SET ROLE regress_dfr_owner;
CREATE TABLE public.plans (id int PRIMARY KEY, name text NOT NULL, seats int);
CREATE TABLE public.plans_sync (LIKE public.plans INCLUDING ALL);
INSERT INTO public.plans VALUES (1, 'basic', 1), (2, 'team', 5), (3, 'org', 50);
INSERT INTO public.plans_sync SELECT * FROM public.plans;
-- tracked in one transaction, so both initial loads carry one txid and time
BEGIN;
SELECT warden.scd2_track('public.plans', ARRAY['id'], deferred => true);
SELECT warden.scd2_track('public.plans_sync', ARRAY['id']);
COMMIT;
SELECT source, history, deferred, queue, trigger_enabled FROM warden.scd2_tables ORDER BY source::text;
\d public.plans_history_queue
GRANT SELECT, INSERT, UPDATE, DELETE ON public.plans, public.plans_sync TO regress_dfr_writer;
GRANT SELECT ON public.plans_history TO regress_dfr_writer;
-- bad inputs
SELECT warden.scd2_track('public.plans', ARRAY['id']);
SELECT warden.scd2_flush('public.plans_history');
DROP TABLE public.plans_history_queue;
DROP TABLE public.plans_history;
-- the tables scd2_track would create: names too long or taken, nothing created
CREATE TABLE public.plans_with_a_name_that_leaves_no_room_for_the_suffixes_aaaa (id int PRIMARY KEY, name text);
SELECT warden.scd2_track('public.plans_with_a_name_that_leaves_no_room_for_the_suffixes_aaaa', ARRAY['id']);
CREATE TABLE public.plans_with_room_for_history_but_not_for_queue_aaaa (id int PRIMARY KEY, name text);
SELECT warden.scd2_track('public.plans_with_room_for_history_but_not_for_queue_aaaa', ARRAY['id'], deferred => true);
CREATE TABLE public.addons (id int PRIMARY KEY, name text);
CREATE TABLE public.addons_history (id int);
SELECT warden.scd2_track('public.addons', ARRAY['id']);
DROP TABLE public.addons_history;
CREATE TABLE public.addons_history_queue (id int);
SELECT warden.scd2_track('public.addons', ARRAY['id'], deferred => true);
SELECT count(*) AS nothing_created FROM pg_class
 WHERE relname IN ('plans_with_a_name_that_leaves_no_room_for_the_suffixes_aaaa_history', 'plans_with_room_for_history_but_not_for_queue_aaaa_history', 'plans_with_room_for_history_but_not_for_queue_aaaa_history_queue', 'addons_history');
SELECT count(*) AS nothing_tracked FROM warden.scd2_tables WHERE source::text NOT LIKE 'plans%';
DROP TABLE public.plans_with_a_name_that_leaves_no_room_for_the_suffixes_aaaa, public.plans_with_room_for_history_but_not_for_queue_aaaa, public.addons, public.addons_history_queue;

-- runs a statement (%I = the table) on both tables
CREATE FUNCTION public.on_both(stmt text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format(stmt, 'plans');
  EXECUTE format(stmt, 'plans_sync');
END $$;

SET ROLE regress_dfr_writer;
-- the application cannot read, write or apply the queue
SELECT count(*) FROM public.plans_history_queue;
INSERT INTO public.plans_history_queue (id, name, hash_diff, op, txid, changed_at, change_lsn)
  VALUES (9, 'forged', '\x00', 'I', pg_current_xact_id(), now(), '0/0');
SELECT warden.scd2_flush('public.plans');
-- inside the writing transaction: the change is queued, the history not
-- yet written (no worker sees an uncommitted change)
BEGIN;
SELECT public.on_both('UPDATE public.%I SET seats = 2 WHERE id = 1');
SELECT id, name, seats, is_current FROM public.plans_history WHERE id = 1 ORDER BY valid_from;
COMMIT;
-- a no-op update, two changes in one transaction, a change undone
SELECT public.on_both('UPDATE public.%I SET seats = seats WHERE id = 2');
BEGIN;
SELECT public.on_both('UPDATE public.%I SET seats = 6 WHERE id = 2');
SELECT public.on_both('UPDATE public.%I SET seats = 7 WHERE id = 2');
COMMIT;
BEGIN;
SELECT public.on_both('UPDATE public.%I SET name = ''enterprise'' WHERE id = 3');
SELECT public.on_both('UPDATE public.%I SET name = ''org'' WHERE id = 3');
COMMIT;
-- delete, insert again, delete and insert in one transaction, a key
-- change, an insert deleted in its own transaction, a rollback
SELECT public.on_both('DELETE FROM public.%I WHERE id = 1');
SELECT public.on_both('INSERT INTO public.%I VALUES (1, ''basic'', 3)');
BEGIN;
SELECT public.on_both('DELETE FROM public.%I WHERE id = 2');
SELECT public.on_both('INSERT INTO public.%I VALUES (2, ''team'', 7)');
COMMIT;
SELECT public.on_both('UPDATE public.%I SET id = 4 WHERE id = 3');
BEGIN;
SELECT public.on_both('INSERT INTO public.%I VALUES (5, ''trial'', 1)');
SELECT public.on_both('DELETE FROM public.%I WHERE id = 5');
COMMIT;
-- deleted, inserted again and changed back to the old values: a new
-- life, not the old version reopened; deleted, inserted, deleted: one
-- tombstone
SELECT public.on_both('INSERT INTO public.%I VALUES (6, ''pilot'', 1)');
BEGIN;
SELECT public.on_both('DELETE FROM public.%I WHERE id = 6');
SELECT public.on_both('INSERT INTO public.%I VALUES (6, ''pilot'', 2)');
SELECT public.on_both('UPDATE public.%I SET seats = 1 WHERE id = 6');
COMMIT;
BEGIN;
SELECT public.on_both('DELETE FROM public.%I WHERE id = 6');
SELECT public.on_both('INSERT INTO public.%I VALUES (6, ''pilot'', 3)');
SELECT public.on_both('DELETE FROM public.%I WHERE id = 6');
COMMIT;
BEGIN;
SELECT public.on_both('UPDATE public.%I SET seats = 99 WHERE id = 4');
ROLLBACK;
RESET ROLE;

SET ROLE regress_dfr_owner;
SELECT warden.scd2_flush('public.plans') >= 0 AS flushed;
SELECT count(*) AS still_queued FROM public.plans_history_queue;
-- the same versions, times and txids as the synchronous trigger wrote
SELECT count(*) AS only_deferred FROM (TABLE public.plans_history EXCEPT ALL TABLE public.plans_sync_history) d;
SELECT count(*) AS only_sync FROM (TABLE public.plans_sync_history EXCEPT ALL TABLE public.plans_history) s;
SELECT id, name, seats, op,
       CASE WHEN is_current THEN 'current' WHEN valid_from = valid_to THEN 'tombstone' ELSE 'closed' END AS state
  FROM public.plans_history ORDER BY id, valid_from, valid_to;
-- nothing left to apply
SELECT warden.scd2_flush('public.plans');
SELECT warden.scd2_flush('public.plans_sync');

-- scd2_merge into a deferred history applies the queue first
UPDATE public.plans SET seats = 8 WHERE id = 2;
CREATE TABLE public.plans_stage (id int PRIMARY KEY, name text, seats int);
INSERT INTO public.plans_stage SELECT * FROM public.plans;
UPDATE public.plans_stage SET seats = 9 WHERE id = 2;
SELECT * FROM warden.scd2_merge('public.plans_history', 'public.plans_stage', now() + interval '1 day');
SELECT id, seats, op, is_current FROM public.plans_history WHERE id = 2 ORDER BY valid_from, valid_to;
DROP TABLE public.plans_stage;

-- untrack applies what is queued, then drops the queue
UPDATE public.plans SET seats = 10 WHERE id = 1;
SELECT warden.scd2_untrack('public.plans');
SELECT to_regclass('public.plans_history_queue') IS NULL AS queue_dropped;
SELECT seats FROM public.plans_history WHERE id = 1 AND is_current;
-- dropping a deferred source applies its queue, keeps its history
SELECT warden.scd2_untrack('public.plans_sync', drop_history => true);
SELECT warden.scd2_track('public.plans_sync', ARRAY['id'], deferred => true);
UPDATE public.plans_sync SET seats = 11 WHERE id = 1;
DROP TABLE public.plans_sync;
SELECT to_regclass('public.plans_sync_history_queue') IS NULL AS queue_dropped;
SELECT seats, op FROM public.plans_sync_history WHERE id = 1 AND is_current;
SELECT count(*) AS still_tracked FROM warden.scd2_tables;
DROP TABLE public.plans, public.plans_history, public.plans_sync_history;

-- a tenant-isolated source: its queue is tenant-isolated too (no index)
CREATE TABLE public.seats (id int PRIMARY KEY, tenant text NOT NULL, holder text);
SELECT warden.enable_tenancy('public.seats');
SELECT warden.scd2_track('public.seats', ARRAY['id'], deferred => true);
SELECT table_name, tenant_column, rls_forced FROM warden.tenant_tables WHERE table_name::text LIKE 'seats%' ORDER BY 1;
-- the queue's only index is its primary key (no tenant index)
SELECT indexrelid::regclass AS queue_index, indisprimary FROM pg_index WHERE indrelid = 'public.seats_history_queue'::regclass;
SELECT count(*) AS lint_findings FROM warden.lint() WHERE detail LIKE '%seats%';
GRANT SELECT, INSERT, UPDATE ON public.seats TO regress_dfr_writer;
GRANT SELECT ON public.seats_history TO regress_dfr_writer;
SET ROLE regress_dfr_writer;
BEGIN;
SELECT warden.set_tenant('tenant_a');
INSERT INTO public.seats (id, holder) VALUES (1, 'ann');
COMMIT;
BEGIN;
SELECT warden.set_tenant('tenant_b');
INSERT INTO public.seats (id, holder) VALUES (2, 'bob');
-- tenant_a's seat is out of reach: nothing updated, nothing queued
UPDATE public.seats SET holder = 'mallory' WHERE id = 1;
COMMIT;
BEGIN;
SELECT warden.set_tenant('tenant_a');
UPDATE public.seats SET holder = 'amy' WHERE id = 1;
COMMIT;
RESET ROLE;
SET ROLE regress_dfr_owner;
-- the owner's flush applies every tenant's changes
SELECT warden.scd2_flush('public.seats') >= 0 AS flushed;
SET ROLE regress_dfr_writer;
BEGIN;
SELECT warden.set_tenant('tenant_a');
SELECT id, tenant, holder, op, is_current FROM public.seats_history ORDER BY id, valid_from;
COMMIT;
BEGIN;
SELECT warden.set_tenant('tenant_b');
SELECT id, tenant, holder, op, is_current FROM public.seats_history ORDER BY id, valid_from;
COMMIT;
RESET ROLE;
SET ROLE regress_dfr_owner;
SELECT warden.scd2_untrack('public.seats', drop_history => true);
DROP TABLE public.seats;
DROP FUNCTION public.on_both(text);
RESET ROLE;
-- the worker cannot reach a temporary table: deferred tracking refuses one
CREATE TEMP TABLE scratch (id int PRIMARY KEY, v text);
SELECT warden.scd2_track('scratch', ARRAY['id'], deferred => true);
SELECT count(*) AS registered FROM warden.scd2_registry WHERE source = 'scratch'::regclass;
DROP TABLE scratch;
REVOKE CREATE ON SCHEMA public FROM regress_dfr_owner;
DROP ROLE regress_dfr_writer;
DROP ROLE regress_dfr_owner;
