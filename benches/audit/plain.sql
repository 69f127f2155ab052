\set i random(1, 1000000)
BEGIN;
INSERT INTO bench_event_plain (ts, event_type, tenant, actor, txid, fields)
  VALUES (clock_timestamp(), 'bench.event', 't1', NULL, pg_current_xact_id(), jsonb_build_object('i', (:i)::int, 'note', 'x'));
COMMIT;
