-- The outbox benchmark's baselines and subscriptions: a hand-written
-- queue table (INSERT to send, DELETE ... FOR UPDATE SKIP LOCKED to
-- consume), pgmq-shaped SQL (send; read sets a visibility timeout; delete
-- by id), INSERT + pg_notify; and pg_warden subscriptions: pull ones, a
-- no-op handler and a latency-recording handler (owned by a role that is
-- not a superuser, as handlers must be).
DROP TABLE IF EXISTS bench_queue, bench_pgmq, bench_notify, bench_latency CASCADE;
CREATE TABLE bench_queue (id bigserial PRIMARY KEY, payload jsonb NOT NULL,
                          created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE bench_pgmq (msg_id bigserial PRIMARY KEY, read_ct int NOT NULL DEFAULT 0,
                         enqueued_at timestamptz NOT NULL DEFAULT now(), vt timestamptz NOT NULL, message jsonb);
CREATE INDEX ON bench_pgmq (vt);
CREATE OR REPLACE FUNCTION bench_pgmq_send(msg jsonb) RETURNS bigint LANGUAGE sql AS
  $$ INSERT INTO bench_pgmq (vt, message) VALUES (clock_timestamp(), msg) RETURNING msg_id $$;
CREATE OR REPLACE FUNCTION bench_pgmq_read(vt_s int, qty int) RETURNS SETOF bench_pgmq LANGUAGE sql AS $$
  WITH c AS (SELECT msg_id FROM bench_pgmq WHERE vt <= clock_timestamp() ORDER BY msg_id LIMIT qty
             FOR UPDATE SKIP LOCKED)
  UPDATE bench_pgmq m SET vt = clock_timestamp() + make_interval(secs => vt_s), read_ct = m.read_ct + 1
    FROM c WHERE m.msg_id = c.msg_id RETURNING m.* $$;
CREATE OR REPLACE FUNCTION bench_pgmq_delete(ids bigint[]) RETURNS bigint LANGUAGE sql AS
  $$ WITH d AS (DELETE FROM bench_pgmq WHERE msg_id = ANY (ids) RETURNING 1) SELECT count(*) FROM d $$;
CREATE TABLE bench_notify (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
CREATE TABLE bench_latency (lat_ms float8);

DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_handler') THEN
    CREATE ROLE bench_handler;
  END IF;
END $$;
GRANT warden_admin TO bench_handler;
GRANT INSERT ON bench_latency TO bench_handler;
CREATE OR REPLACE FUNCTION bench_noop(msg warden.message) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE OR REPLACE FUNCTION bench_lat(msg warden.message) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.bench_latency VALUES (extract(epoch FROM clock_timestamp() - msg.published_at) * 1000) $$;
ALTER FUNCTION bench_noop(warden.message) OWNER TO bench_handler;
ALTER FUNCTION bench_lat(warden.message) OWNER TO bench_handler;

SELECT warden.unsubscribe(name) FROM warden.outbox_subscriptions;
SELECT warden.subscribe('bench_pub', 'bench.pub.#');
SELECT warden.subscribe('bench_pull', 'bench.pull.#');
SET ROLE bench_handler;
SELECT warden.subscribe('bench_push', 'bench.push.#', 'public.bench_noop(warden.message)');
SELECT warden.subscribe('bench_lat', 'bench.lat.#', 'public.bench_lat(warden.message)');
RESET ROLE;
