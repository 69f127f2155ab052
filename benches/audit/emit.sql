\set i random(1, 1000000)
BEGIN;
SELECT warden.audit_emit('bench.event', jsonb_build_object('i', (:i)::int, 'note', 'x'));
COMMIT;
