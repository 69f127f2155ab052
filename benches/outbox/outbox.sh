# Sourced by benches/run: the outbox's measurements besides plain
# pgbench runs.
#   outbox_fill N        tops up the SKIP LOCKED queue, the pgmq-shaped
#                        queue and the pull subscription to N messages
#   outbox_push_group N  N messages to a no-op handler: messages/s
#   outbox_peak_group    publishers at full speed (CLIENTS) for SECONDS_PER_RUN,
#                        then until every message is handled: messages/s
#                        from the first publish to the last handler call
#   outbox_latency_group RATE  commit-to-handler-start latency percentiles
#   outbox_held_group SCRIPT HELD TABLES  tps without, then with a REPEATABLE
#                        READ transaction holding the xmin horizon for HELD s;
#                        dead tuples summed over TABLES (comma-separated)

outbox_fill() {
  local n=$1; shift
  "$@" -q -At -v n="$n" <<'SQL'
INSERT INTO bench_queue (payload)
  SELECT '{"order": 42}' FROM generate_series(1, greatest(0, :n - (SELECT count(*) FROM bench_queue)));
UPDATE bench_pgmq SET vt = clock_timestamp() WHERE vt > clock_timestamp();
INSERT INTO bench_pgmq (vt, message)
  SELECT clock_timestamp(), '{"order": 42}' FROM generate_series(1, greatest(0, :n - (SELECT count(*) FROM bench_pgmq)));
-- leases left by a run end at once (their messages are topped up below)
UPDATE warden.outbox_deliveries SET lease = NULL, lease_until = NULL WHERE lease IS NOT NULL;
DELETE FROM warden.outbox_leases;
SELECT :n - (SELECT pending + in_flight FROM warden.outbox_stats WHERE subscription = 'bench_pull') AS k \gset
SELECT warden.publish_batch('bench.pull.order', array_fill('{"order": 42}'::jsonb, ARRAY[least(10000, :k - (g - 1) * 10000)]))
  FROM generate_series(1, ceil(greatest(:k, 0) / 10000.0)::int) g;
\i benches/outbox/wait_fanned_out.sql
VACUUM ANALYZE bench_queue, bench_pgmq, warden.outbox_deliveries, warden.outbox_leases;
SQL
}

# how many messages a queue holds: pull (the subscription's deliveries),
# skip (the queue table), pgmq
outbox_depth() {
  local system=$1; shift
  case $system in
    pull | loop) "$@" -At -c "SELECT pending + in_flight FROM warden.outbox_stats WHERE subscription = 'bench_pull'" ;;
    skip) "$@" -At -c "SELECT count(*) FROM bench_queue" ;;
    pgmq) "$@" -At -c "SELECT count(*) FROM bench_pgmq" ;;
  esac
}

outbox_push_group() {
  local n=$1; shift
  "$@" -q -At -v n="$n" <<'SQL'
SET ROLE bench_handler;
SELECT warden.pause('bench_push');
RESET ROLE;
SELECT warden.publish_batch('bench.push.order', array_fill('{"order": 42}'::jsonb, ARRAY[least(10000, :n - (g - 1) * 10000)]))
  FROM generate_series(1, ceil(:n / 10000.0)::int) g;
\i benches/outbox/wait_fanned_out.sql
-- what the pull runs left dead (the baselines' queues too) is vacuumed
-- now, not by autovacuum during the measurement: a VACUUM of bench_queue
-- running beside the worker took the rate from 34 000 to 21 000 msg/s
VACUUM;
CHECKPOINT;
SET ROLE bench_handler;
SELECT warden.resume('bench_push');
RESET ROLE;
SELECT clock_timestamp() AS t0 \gset
DO $$
BEGIN
  FOR i IN 1..60000 LOOP
    EXIT WHEN (SELECT pending = 0 FROM warden.outbox_stats WHERE subscription = 'bench_push');
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT round(:n / extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));
SQL
}

outbox_peak_group() {
  "$@" -q -c "TRUNCATE bench_latency" >/dev/null
  local t0 t1 n
  t0=$(date +%s.%N)
  "$PG_BINDIR/pgbench" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -n -M prepared \
    -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_PER_RUN" -f benches/outbox/lat.sql postgres >/dev/null 2>&1
  "$@" -q -f benches/outbox/wait_fanned_out.sql >/dev/null
  "$@" -q -c "DO \$\$ BEGIN
                FOR i IN 1..60000 LOOP
                  EXIT WHEN (SELECT pending = 0 FROM warden.outbox_stats WHERE subscription = 'bench_lat');
                  PERFORM pg_sleep(0.01);
                END LOOP;
              END \$\$" >/dev/null
  t1=$(date +%s.%N)
  n=$("$@" -At -c "SELECT count(*) FROM bench_latency")
  awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%d\n", n / (b - a)}'
}

# prints "p50|p99|max|count|tps" (milliseconds)
outbox_latency_group() {
  local rate=$1; shift
  "$@" -q -c "TRUNCATE bench_latency" >/dev/null
  local tps
  tps=$("$PG_BINDIR/pgbench" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -n -M prepared \
    -c "$CLIENTS" -j "$CLIENTS" -R "$rate" -T "$SECONDS_PER_RUN" -f benches/outbox/lat.sql postgres 2>/dev/null \
    | awk '/^tps = / {print $3}')
  sleep 1
  "$@" -At -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lat_ms)::numeric, 1) || '|' ||
                      round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lat_ms)::numeric, 1) || '|' ||
                      round(max(lat_ms)::numeric, 1) || '|' || count(*) || '|' || '$tps' FROM bench_latency"
}

# prints "tps without|tps held|dead tuples at the end of the held run"
outbox_held_group() {
  local script=$1 held=$2 table=$3; shift 3
  local before during dead holder
  before=$(SECONDS_PER_RUN=$held pgbench_tps "$script" prepared)
  "$@" -q -c "VACUUM $table" >/dev/null
  "$@" -q -c "BEGIN ISOLATION LEVEL REPEATABLE READ" -c "SELECT count(*) FROM pg_class" \
    -c "SELECT pg_sleep($held + 5)" -c "COMMIT" >/dev/null 2>&1 &
  holder=$!
  sleep 1
  during=$(SECONDS_PER_RUN=$held pgbench_tps "$script" prepared)
  dead=$("$@" -At -c "SELECT sum(n_dead_tup) FROM pg_stat_all_tables WHERE relid = ANY ('{$table}'::regclass[])")
  kill "$holder" 2>/dev/null || true
  wait "$holder" 2>/dev/null || true
  "$@" -q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(%' AND pid <> pg_backend_pid()" >/dev/null
  "$@" -q -c "VACUUM $table" >/dev/null
  echo "$before|$during|$dead"
}
