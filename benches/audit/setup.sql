-- The audit benchmark's tables: a plain table of an event's shape, a
-- hand-written PL/pgSQL hash chain (an advisory lock serialises the
-- writers, or the chain forks), and a pair of tables for capture.
DROP TABLE IF EXISTS bench_event_plain, bench_hand_chain, bench_cap_plain, bench_cap_audited CASCADE;
CREATE TABLE bench_event_plain (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ts timestamptz NOT NULL, event_type text NOT NULL,
    tenant text, actor text, txid xid8 NOT NULL, fields jsonb NOT NULL);
CREATE TABLE bench_hand_chain (
    seq bigint PRIMARY KEY, ts timestamptz NOT NULL, event_type text NOT NULL, tenant text,
    txid xid8 NOT NULL, fields jsonb NOT NULL, prev_hash bytea NOT NULL, hash bytea NOT NULL);
CREATE FUNCTION bench_hand_chain_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE last record;
BEGIN
  PERFORM pg_advisory_xact_lock(4242);
  SELECT seq, hash INTO last FROM bench_hand_chain ORDER BY seq DESC LIMIT 1;
  NEW.seq := coalesce(last.seq, 0) + 1;
  NEW.prev_hash := coalesce(last.hash, '\x'::bytea);
  NEW.hash := sha256(NEW.prev_hash || convert_to(NEW.ts::text || NEW.event_type || coalesce(NEW.tenant, '')
                                                 || NEW.txid::text || NEW.fields::text, 'UTF8'));
  RETURN NEW;
END $$;
CREATE TRIGGER link BEFORE INSERT ON bench_hand_chain FOR EACH ROW EXECUTE FUNCTION bench_hand_chain_link();
CREATE TABLE bench_cap_plain (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text, amount int, note text);
CREATE TABLE bench_cap_audited (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text, amount int, note text);
SELECT warden.audit_table('bench_cap_audited', redact => '{email}');
