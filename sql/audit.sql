-- The audit chain as a psql user sees it: events on both paths (a
-- durable one survives ROLLBACK), actor and correlation id, the chains
-- and their verification, status, a digest kept outside and checked,
-- the export, the log refusing changes, bad input refused, and an
-- application reading its own tenant's chain only.
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
SELECT warden.set_tenant('acme');
SELECT warden.set_actor('alice');
SELECT warden.set_correlation_id('req-42');
SELECT warden.audit_emit('invoice.paid', '{"invoice": 7, "amount": 12.50}');
SELECT warden.audit_emit('secret.read', '{"name": "stripe"}', durable => true);
ROLLBACK;
SELECT pg_temp.wait_chained();
BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.set_actor('billing-service', 'service');
SELECT warden.audit_emit('invoice.paid', '{"invoice": 8, "amount": 99.00}');
COMMIT;
SELECT warden.audit_emit('deploy.done', '{"version": "1.2.3"}', durable => true, strict => true);
SELECT pg_temp.wait_chained();
-- the rolled-back invoice is gone; the durable read survived the rollback
SELECT chain, seq, event_type, tenant, actor, actor_kind, correlation_id, fields,
       length(hash) AS hash_bytes, prev_hash = decode(repeat('00', 32), 'hex') AS from_genesis
  FROM warden.audit_log ORDER BY chain, seq;
SELECT chain, checked, ok, first_bad_seq, reason FROM warden.audit_verify();
SELECT inbox_events, ring_events, ring_capacity, signing_key, last_checkpoint_at IS NOT NULL AS signed
  FROM warden.audit_status;
SELECT chain, tenant, last_seq, last_checkpoint_seq FROM warden.audit_chains ORDER BY chain;
SELECT length(warden.audit_public_key()) AS public_key_bytes;

-- a digest to keep outside the database, and its check
SELECT jsonb_array_length(d->'checkpoints') AS chains, d->>'format' AS format
  FROM warden.audit_digest() d;
SELECT chain, seq, ok, reason FROM warden.audit_verify_digest(warden.audit_digest()) ORDER BY chain;
-- a digest whose checkpoint was altered is refused
SELECT chain, ok, reason
  FROM warden.audit_verify_digest(jsonb_set(warden.audit_digest('acme'), '{checkpoints,0,seq}', '1'));

-- the export the offline verifier reads
SELECT e::jsonb->>'type' AS line, e::jsonb->>'seq' AS seq, e::jsonb->>'event_type' AS event_type
  FROM warden.audit_export('acme') e;

-- append-only, for superusers too
UPDATE warden.audit_log SET fields = '{}' WHERE chain = 'acme';
DELETE FROM warden.audit_log WHERE chain = 'acme';
TRUNCATE warden.audit_log;
DELETE FROM warden.audit_checkpoints;
SET session_replication_role = replica;
DELETE FROM warden.audit_log WHERE chain = 'acme';
RESET session_replication_role;

-- bad input: a clear error, nothing recorded
SELECT warden.audit_emit('Invoice Paid');
SELECT warden.audit_emit('invoice.paid', '[1, 2]');
SELECT warden.audit_emit('invoice.paid', NULL);
SELECT warden.audit_emit('invoice.paid', '{}', strict => true);
SELECT warden.set_actor('bob');
BEGIN;
SELECT warden.set_actor('bob', 'robot');
ROLLBACK;
BEGIN;
SELECT warden.set_correlation_id(repeat('x', 201));
ROLLBACK;
SELECT * FROM warden.audit_verify_digest('{"format": "something else"}');
SELECT * FROM warden.audit_export('acme', 0);
SELECT pg_temp.wait_chained();
SELECT count(*) AS events FROM warden.audit_log;

-- an application reads its own tenant's chain, nothing else, and
-- cannot verify, export or turn strict mode off
SET ROLE regress_audit_app;
BEGIN;
SELECT warden.set_tenant('acme');
SELECT chain, seq, event_type FROM warden.audit_log ORDER BY seq;
SELECT chain, seq FROM warden.audit_checkpoints ORDER BY seq DESC LIMIT 1;
COMMIT;
BEGIN;
SELECT warden.set_tenant('beta');
SELECT count(*) AS beta_sees FROM warden.audit_log;
COMMIT;
SELECT count(*) AS without_tenant_sees FROM warden.audit_log;
SELECT * FROM warden.audit_verify();
SELECT * FROM warden.audit_export('acme');
SET warden.audit_strict = off;
INSERT INTO warden.audit_log SELECT * FROM warden.audit_log;
RESET ROLE;
