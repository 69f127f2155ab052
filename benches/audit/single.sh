# Sourced by benches/run: the audit chain's one-backend measurements.
#   audit_drain       seconds until the sequencer chained what a run left
#   audit_verify_group  audit_verify of N events vs sha256() over the same bytes
#   audit_bulk_group  one INSERT ... SELECT of N rows, captured vs not
audit_drain() {
  local psql_cmd=("$@")
  "${psql_cmd[@]}" -At <<'SQL'
DO $$
DECLARE t0 timestamptz := clock_timestamp(); n bigint;
BEGIN
  SELECT inbox_events + ring_events INTO n FROM warden.audit_status;
  LOOP
    EXIT WHEN (SELECT inbox_events = 0 AND ring_events = 0 FROM warden.audit_status);
    PERFORM pg_sleep(0.01);
  END LOOP;
  RAISE NOTICE '% %', n, round(extract(epoch FROM clock_timestamp() - t0) * 1000);
END $$;
SQL
}

audit_verify_group() {
  local psql_cmd=("$@")
  "${psql_cmd[@]}" -At <<'SQL'
SELECT count(*), bench_seconds('SELECT * FROM warden.audit_verify(''global'')'),
       bench_seconds('SELECT count(sha256(convert_to(l::text, ''UTF8''))) FROM warden.audit_log l WHERE chain = ''global''')
  FROM warden.audit_log WHERE chain = 'global';
SQL
}

audit_bulk_group() {
  local psql_cmd=("$@") rows=${BENCH_AUDIT_BULK_ROWS:-1000000}
  "${psql_cmd[@]}" -At -v rows="$rows" <<'SQL'
TRUNCATE bench_cap_plain;
CHECKPOINT;
SELECT bench_seconds(format('INSERT INTO bench_cap_plain (email, amount, note) SELECT ''user'' || g || ''@example.com'', g, ''x'' FROM generate_series(1, %s) g', :rows)),
       bench_seconds(format('INSERT INTO bench_cap_audited (email, amount, note) SELECT ''user'' || g || ''@example.com'', g, ''x'' FROM generate_series(1, %s) g', :rows));
SQL
}

# Commit-to-chained lag under a steady load: SCRIPT at RATE transactions/s
# (pgbench -R, $CLIENTS clients) for $SECONDS_PER_RUN seconds while one
# session samples the age of the oldest unchained inbox event (the lowest
# id: ids are drawn when an event is emitted) every 20 ms, 0 when the
# inbox is empty, each sample its own transaction (a sampler holding one
# transaction open would hold back the xmin horizon and measure its own
# effect). Prints "p50|p99|max|samples|tps reached" (milliseconds).
audit_lag_group() {
  local script=$1 rate=$2; shift 2
  local psql_cmd=("$@") samples tps
  samples=$(mktemp)
  local i
  for ((i = 0; i < SECONDS_PER_RUN * 50; i++)); do
    echo "SELECT coalesce((SELECT round(extract(epoch FROM clock_timestamp() - i.ts) * 1000)
            FROM warden.audit_inbox i ORDER BY i.id LIMIT 1), 0);"
    echo "SELECT pg_sleep(0.02);"
  done | "${psql_cmd[@]}" -At -q > "$samples" 2>/dev/null &
  local sampler=$!
  tps=$("$PG_BINDIR/pgbench" -h "$BENCH_DIR" -p "$BENCH_PORT" -U "${BENCH_USER:-postgres}" -n -M prepared \
    -c "$CLIENTS" -j "$CLIENTS" -R "$rate" -T "$SECONDS_PER_RUN" -f "$script" postgres 2>/dev/null \
    | awk '/^tps = / {print $3}')
  wait "$sampler" || true
  grep -E '^[0-9.]+$' "$samples" | sort -g | awk -v tps="$tps" '
    {a[NR] = $1}
    END {
      if (NR == 0) { print "0|0|0|0|" tps; exit }
      p50 = a[int((NR - 1) * 0.5) + 1]; p99 = a[int((NR - 1) * 0.99) + 1]
      printf "%s|%s|%s|%d|%s\n", p50, p99, a[NR], NR, tps
    }'
  rm -f "$samples"
}
