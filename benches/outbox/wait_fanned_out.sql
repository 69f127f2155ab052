-- Waits (up to 5 minutes) until the worker's fan-out has seen every
-- message published so far.
DO $$
BEGIN
  FOR i IN 1..6000 LOOP
    EXIT WHEN (SELECT f.upto >= (SELECT max(id) FROM warden.outbox_messages) AND cardinality(f.pending_lo) = 0
                 FROM warden.outbox_fanout f ORDER BY f.id DESC LIMIT 1);
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
