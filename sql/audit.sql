-- The audit chain as a psql user sees it: events on both paths (a
-- durable one survives ROLLBACK), actor and correlation id, the chains
-- and their verification, status, a digest kept outside and checked,
-- the export, the log refusing changes, redaction and pruning, bad input
-- refused, and an application reading its own tenant's chain only. The
-- earlier tests' operations are in the log too (pg_warden audits its own
-- sensitive operations): this test looks at its own chain, shop7, and at
-- its own events in the global chain.
CREATE ROLE regress_audit_app LOGIN;
GRANT warden_app TO regress_audit_app;
-- waits until the worker chained everything emitted so far
CREATE FUNCTION pg_temp.wait_chained() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..600 LOOP
    IF (SELECT inbox_events = 0 AND ring_events = 0 FROM warden.audit_status) THEN
      RETURN 'chained';
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RETURN 'the sequencer did not catch up';
END
$$;

SELECT warden.audit_emit('app.started');
BEGIN;
SELECT warden.set_tenant('shop7');
SELECT warden.set_actor('alice');
SELECT warden.set_correlation_id('req-42');
SELECT warden.audit_emit('invoice.paid', '{"invoice": 7, "amount": 12.50}');
SELECT warden.audit_emit('config.read', '{"name": "stripe"}', durable => true);
ROLLBACK;
SELECT pg_temp.wait_chained();
BEGIN;
SELECT warden.set_tenant('shop7');
SELECT warden.set_actor('billing-service', 'service');
SELECT warden.audit_emit('invoice.paid', '{"invoice": 8, "amount": 99.00}');
COMMIT;
SELECT warden.audit_emit('deploy.done', '{"version": "1.2.3"}', durable => true, strict => true);
SELECT pg_temp.wait_chained();
-- the rolled-back invoice is gone; the durable read survived the rollback
SELECT chain, seq, event_type, tenant, actor, actor_kind, correlation_id, fields,
       length(hash) AS hash_bytes, prev_hash = decode(repeat('00', 32), 'hex') AS from_genesis
  FROM warden.audit_log WHERE chain = 'shop7' ORDER BY seq;
SELECT event_type, fields FROM warden.audit_log
 WHERE chain = 'global' AND event_type IN ('app.started', 'deploy.done') ORDER BY seq;
-- what pg_warden recorded of the earlier tests' operations
SELECT event_type, count(*) FROM warden.audit_log
 WHERE event_type LIKE 'keys.%' OR event_type LIKE 'tenancy.%' GROUP BY 1 ORDER BY 1;
SELECT chain, ok, first_bad_seq, reason FROM warden.audit_verify() WHERE chain IN ('shop7', 'global');
SELECT bool_and(ok) AS every_chain_verifies FROM warden.audit_verify();
SELECT inbox_events, ring_events, ring_capacity, signing_key, last_checkpoint_at IS NOT NULL AS signed
  FROM warden.audit_status;
SELECT chain, tenant, last_seq, last_checkpoint_seq = last_seq AS checkpointed
  FROM warden.audit_chains WHERE chain IN ('shop7', 'global') ORDER BY chain;
SELECT length(warden.audit_public_key()) AS public_key_bytes;

-- a digest to keep outside the database, and its check
SELECT jsonb_array_length(d->'checkpoints') = (SELECT count(*) FROM warden.audit_chains) AS every_chain,
       d->>'format' AS format
  FROM warden.audit_digest() d;
SELECT chain, seq, ok, reason FROM warden.audit_verify_digest(warden.audit_digest('shop7'));
SELECT bool_and(ok) AS digest_verifies FROM warden.audit_verify_digest(warden.audit_digest());
-- a digest whose checkpoint was altered is refused
SELECT chain, ok, reason
  FROM warden.audit_verify_digest(jsonb_set(warden.audit_digest('shop7'), '{checkpoints,0,seq}', '1'));

-- the export the offline verifier reads
SELECT e::jsonb->>'type' AS line, e::jsonb->>'seq' AS seq, e::jsonb->>'event_type' AS event_type
  FROM warden.audit_export('shop7') e;

-- append-only, for superusers too
UPDATE warden.audit_log SET fields = '{}' WHERE chain = 'shop7';
DELETE FROM warden.audit_log WHERE chain = 'shop7';
TRUNCATE warden.audit_log;
DELETE FROM warden.audit_checkpoints;
SET session_replication_role = replica;
DELETE FROM warden.audit_log WHERE chain = 'shop7';
RESET session_replication_role;
-- and DDL that would get around the triggers is refused before it runs
ALTER TABLE warden.audit_log DISABLE TRIGGER audit_log_append_only;
ALTER TABLE warden.audit_log ENABLE TRIGGER audit_log_append_only;
ALTER TABLE warden.audit_log SET UNLOGGED;
ALTER TABLE warden.audit_log ADD COLUMN note text;
ALTER TABLE warden.audit_checkpoints DROP COLUMN signature;
DROP TRIGGER audit_log_append_only ON warden.audit_log;
CREATE RULE forget AS ON INSERT TO warden.audit_log DO INSTEAD NOTHING;
ALTER TABLE warden.audit_log RENAME TO audit_log_old;
GRANT INSERT ON warden.audit_log TO regress_audit_app;
ALTER EXTENSION pg_warden DROP TABLE warden.audit_log;
DROP TABLE warden.audit_log;
DROP EXTENSION pg_warden;
DROP SCHEMA warden CASCADE;
TRUNCATE warden.audit_inbox;
ALTER TABLE warden.audit_log SET SCHEMA public;
CREATE OR REPLACE FUNCTION warden._audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
ALTER FUNCTION warden._audit_capture() RENAME TO x;
ALTER EXTENSION pg_warden DROP FUNCTION warden._audit_refuse_change();
-- storage settings are fine
ALTER TABLE warden.audit_log SET (autovacuum_vacuum_scale_factor = 0.01);
ALTER TABLE warden.audit_log RESET (autovacuum_vacuum_scale_factor);

-- bad input: a clear error, nothing recorded
SELECT warden.audit_emit('Invoice Paid');
SELECT warden.audit_emit('invoice.paid', '[1, 2]');
SELECT warden.audit_emit('invoice.paid', NULL);
SELECT warden.audit_emit('invoice.paid', '{}', strict => true);
SELECT warden.audit_emit('audit.untable', '{"table": "public.orders"}');
SELECT warden.audit_emit('row.delete', '{}');
SELECT warden.audit_emit('deep.event', (repeat('{"a": ', 70) || '1' || repeat('}', 70))::jsonb);
SELECT warden.set_actor('bob');
BEGIN;
SELECT warden.set_actor('bob', 'robot');
ROLLBACK;
BEGIN;
SELECT warden.set_correlation_id(repeat('x', 201));
ROLLBACK;
SELECT * FROM warden.audit_verify_digest('{"format": "something else"}');
SELECT * FROM warden.audit_export('shop7', 0);
SELECT pg_temp.wait_chained();
SELECT count(*) AS events FROM warden.audit_log WHERE chain = 'shop7';

-- erasure: the payload goes, the chain still verifies, and the redaction
-- is itself recorded (so is a prune)
SELECT warden.audit_redact('shop7', 1, 'GDPR request 118');
SELECT warden.audit_redact('shop7', 1, 'again');
SELECT warden.audit_redact('shop7', 99, 'no such event');
SELECT warden.audit_redact('shop7', 2, '');
SELECT pg_temp.wait_chained();
SELECT seq, event_type, fields, fields_salt IS NULL AS salt_gone, redacted_at IS NOT NULL AS redacted
  FROM warden.audit_log WHERE chain = 'shop7' ORDER BY seq;
SELECT chain, ok, first_bad_seq, reason FROM warden.audit_verify('shop7');
-- pruning cannot reach events younger than warden.audit_min_retention
SELECT warden.audit_prune('shop7', now());
SELECT warden.audit_prune('shop7', now() - interval '60 days') AS pruned;
SELECT pg_temp.wait_chained();
SELECT seq, event_type, fields - 'role' - 'before_us' AS fields FROM warden.audit_log
 WHERE chain = 'shop7' AND event_type LIKE 'audit.%' ORDER BY seq;

-- table capture: an owner captures a tenant table; the application
-- writes for two tenants; redacted values appear only as fingerprints
-- (the same for the same value in one tenant, different across
-- tenants), excluded ones not at all, and each row lands in its tenant's
-- chain
CREATE ROLE regress_audit_owner LOGIN;
GRANT warden_admin TO regress_audit_owner;
GRANT regress_audit_app TO regress_audit_owner;
CREATE SCHEMA cap AUTHORIZATION regress_audit_owner;
GRANT USAGE ON SCHEMA cap TO regress_audit_app;
SET ROLE regress_audit_owner;
CREATE TABLE cap.customers (id int PRIMARY KEY, tenant text NOT NULL, email text, pin text, name text);
SELECT warden.enable_tenancy('cap.customers');
GRANT SELECT, INSERT, UPDATE, DELETE ON cap.customers TO regress_audit_app;
SELECT warden.audit_table('cap.customers', redact => '{email}', exclude => '{pin}');
SELECT warden.audit_table('cap.customers', redact => '{nope}');
SELECT warden.audit_table('cap.customers', redact => '{email}', exclude => '{email}');
SELECT warden.audit_table('cap.customers', exclude => '{id}');
-- a look-alike trigger of the owner's is not taken for pg_warden's
CREATE TABLE cap.fake (id int PRIMARY KEY);
CREATE FUNCTION cap.noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE TRIGGER warden_audit_insert AFTER INSERT ON cap.fake FOR EACH STATEMENT EXECUTE FUNCTION cap.noop();
SELECT warden.audit_table('cap.fake');
-- statement triggers of a parent do not see writes to its partitions
CREATE TABLE cap.parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
SELECT warden.audit_table('cap.parted');
SELECT table_name, key_columns, redact, exclude, tenant_column FROM warden.audited_tables;
RESET ROLE;
SET ROLE regress_audit_app;
BEGIN;
SELECT warden.set_tenant('cap_a');
INSERT INTO cap.customers VALUES (1, 'cap_a', 'same@example.com', 'pin-alpha', 'Ann'),
                                    (2, 'cap_a', 'same@example.com', 'pin-bravo', 'Bob');
UPDATE cap.customers SET name = 'Ann B.' WHERE id = 1;
UPDATE cap.customers SET email = 'new@example.com' WHERE id = 2;
DELETE FROM cap.customers WHERE id = 2;
COMMIT;
BEGIN;
SELECT warden.set_tenant('cap_b');
INSERT INTO cap.customers VALUES (3, 'cap_b', 'same@example.com', 'pin-xray', 'Cy');
COMMIT;
RESET ROLE;
SELECT pg_temp.wait_chained();
SELECT chain, seq, event_type, fields #- '{new,email}' #- '{old,email}' AS fields
  FROM warden.audit_log WHERE event_type LIKE 'row.%' ORDER BY chain, seq;
-- the same address: one fingerprint in cap_a, another in cap_b
SELECT count(DISTINCT fields->'new'->>'email') AS fingerprints,
       bool_and(fields->'new'->>'email' LIKE 'fp:%') AS all_fingerprints
  FROM warden.audit_log WHERE event_type = 'row.insert';
SELECT count(*) AS leaks FROM warden.audit_log l
 WHERE l::text LIKE '%@example.com%' OR l::text LIKE '%pin-%';
-- the capture cannot be switched off quietly, not even by the owner
SET ROLE regress_audit_owner;
ALTER TABLE cap.customers DISABLE TRIGGER warden_audit_insert;
ALTER TABLE cap.customers DISABLE TRIGGER USER;
DROP TRIGGER warden_audit_update ON cap.customers;
ALTER TRIGGER warden_audit_delete ON cap.customers RENAME TO x;
ALTER TABLE cap.customers ENABLE TRIGGER USER;
ALTER TABLE cap.customers RENAME COLUMN email TO mail;
ALTER TABLE cap.customers ALTER COLUMN name TYPE varchar(100);
DROP TABLE cap.customers;
SELECT warden.audit_untable('cap.customers');
SELECT count(*) AS captured FROM warden.audited_tables;
SELECT count(*) AS capture_triggers FROM pg_trigger WHERE tgfoid = 'warden._audit_capture()'::regprocedure;
RESET ROLE;

-- break-glass: an operator reads across tenants for one transaction,
-- after the reason is recorded
CREATE ROLE regress_audit_op LOGIN;
GRANT warden_admin TO regress_audit_op;
-- a SECURITY DEFINER function whose exception block swallows an error
CREATE FUNCTION public.audit_swallow() RETURNS void SECURITY DEFINER SET search_path = pg_catalog
  LANGUAGE plpgsql AS $$BEGIN PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END$$;
CREATE FUNCTION public.audit_wrapped_break_glass() RETURNS void SECURITY DEFINER SET search_path = pg_catalog
  LANGUAGE sql AS $$SELECT warden.break_glass('from a definer')$$;
CREATE TABLE public.audit_notes (id int PRIMARY KEY, tenant text NOT NULL, note text);
SELECT warden.enable_tenancy('public.audit_notes');
INSERT INTO public.audit_notes VALUES (1, 'shop7', 'a'), (2, 'beta', 'b');
GRANT SELECT ON public.audit_notes TO warden_break_glass, regress_audit_op;
SET SESSION AUTHORIZATION regress_audit_op;
SELECT count(*) AS seen_without_tenant FROM public.audit_notes;
SELECT warden.break_glass('incident 4711');
-- the role cannot be reached without the function
SET ROLE warden_break_glass;
BEGIN;
SELECT warden.break_glass('');
ROLLBACK;
BEGIN;
SELECT warden.break_glass('incident 4711: restore a deleted note');
SELECT current_user, count(*) AS seen_during_break_glass FROM public.audit_notes;
-- nor kept beyond the transaction
SET ROLE regress_audit_op;
COMMIT;
SELECT current_user, count(*) AS seen_after FROM public.audit_notes;
BEGIN;
SELECT warden.break_glass('incident 4712');
ROLLBACK;
SELECT current_user AS after_rollback;
-- neither an exception block nor DDL keeps the access past the
-- transaction, and a SECURITY DEFINER wrapper cannot break the glass
BEGIN;
SELECT warden.break_glass('incident 4713');
CREATE FUNCTION pg_temp.keep() RETURNS bigint LANGUAGE sql AS $$SELECT 1::bigint$$;
ROLLBACK;
BEGIN;
SELECT warden.break_glass('incident 4714');
SELECT public.audit_swallow();
SELECT current_user AS during;
COMMIT;
SELECT current_user AS after_exception_block;
BEGIN;
SELECT public.audit_wrapped_break_glass();
ROLLBACK;
RESET SESSION AUTHORIZATION;
SELECT pg_temp.wait_chained();
SELECT chain, event_type, fields->>'reason' AS reason FROM warden.audit_log WHERE event_type = 'admin.break_glass' ORDER BY seq;
SET ROLE regress_audit_app;
BEGIN;
SELECT warden.break_glass('let me in');
ROLLBACK;
RESET ROLE;

-- an application reads its own tenant's chain, nothing else, and
-- cannot verify, export or turn strict mode off
SET ROLE regress_audit_app;
BEGIN;
SELECT warden.set_tenant('shop7');
SELECT chain, seq, event_type FROM warden.audit_log ORDER BY seq;
SELECT chain, seq FROM warden.audit_checkpoints ORDER BY seq DESC LIMIT 1;
COMMIT;
BEGIN;
SELECT warden.set_tenant('beta');
SELECT count(*) AS beta_sees FROM warden.audit_log;
COMMIT;
SELECT count(*) AS without_tenant_sees FROM warden.audit_log;
SELECT * FROM warden.audit_verify();
SELECT * FROM warden.audit_export('shop7');
SET warden.audit_strict = off;
INSERT INTO warden.audit_log SELECT * FROM warden.audit_log;
RESET ROLE;
