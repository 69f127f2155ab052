# Sourced by benches/run: scd2_merge of a 1M-row dimension with 1% changed
# rows against a hand-written set-based merge that compares every tracked
# column with IS DISTINCT FROM. Each round stages a fresh 1% change (a
# different slice of keys), then times both merges of that same batch.
scd2_merge_group() {
  local psql_cmd=("$@")
  local rows=${BENCH_MERGE_ROWS:-1000000} rounds=${BENCH_ROUNDS:-3} r
  "${psql_cmd[@]}" -q -v rows="$rows" <<'SQL' >/dev/null
DROP TABLE IF EXISTS merge_dim_history, merge_hand, merge_stage;
SELECT warden.scd2_untrack(source, true) FROM warden.scd2_tables WHERE source = to_regclass('merge_dim');
DROP TABLE IF EXISTS merge_dim;
CREATE TABLE merge_dim (id int PRIMARY KEY, name text, email text, balance numeric, updated_at timestamptz,
                        active boolean, score float8, since date, segment text, region int);
SELECT warden.scd2_track('merge_dim', ARRAY['id']);
CREATE TABLE merge_stage AS
  SELECT i AS id, 'customer ' || i AS name, 'c' || i || '@example.com' AS email,
         (i % 1000)::numeric / 7 AS balance, timestamptz '2026-01-01' - i * interval '1 minute' AS updated_at,
         i % 2 = 0 AS active, (i % 97)::float8 / 3 AS score, date '2020-01-01' + i % 2000 AS since,
         CASE WHEN i % 5 = 0 THEN NULL ELSE 'segment ' || i % 13 END AS segment, i % 40 AS region
    FROM generate_series(1, :rows) i;
ALTER TABLE merge_stage ADD PRIMARY KEY (id);
-- the hand-written history: same columns, same indexes as scd2_track's
CREATE TABLE merge_hand (LIKE merge_stage, valid_from timestamptz NOT NULL, valid_to timestamptz NOT NULL, is_current boolean NOT NULL);
CREATE UNIQUE INDEX ON merge_hand (id) WHERE is_current;
CREATE INDEX ON merge_hand (id, valid_from);
SELECT * FROM warden.scd2_merge('merge_dim_history', 'merge_stage', '2026-01-01');
INSERT INTO merge_hand SELECT s.*, '2026-01-01', 'infinity', true FROM merge_stage s;
VACUUM ANALYZE merge_dim_history, merge_hand, merge_stage;
CREATE TABLE IF NOT EXISTS merge_results (impl text, secs float8);
TRUNCATE merge_results;
SQL
  local warden_sql hand_sql
  warden_sql=$(cat <<'SQL'
CHECKPOINT;
INSERT INTO merge_results SELECT 'warden', bench_seconds(format(
  $q$SELECT * FROM warden.scd2_merge('merge_dim_history', 'merge_stage', %L)$q$, timestamptz '2026-01-01' + :r * interval '1 day'));
SQL
)
  hand_sql=$(cat <<'SQL'
CHECKPOINT;
INSERT INTO merge_results SELECT 'hand', bench_seconds(format($q$
  DO $do$ BEGIN
    UPDATE merge_hand h SET valid_to = %1$L, is_current = false FROM merge_stage s
     WHERE h.id = s.id AND h.is_current
       AND (h.name IS DISTINCT FROM s.name OR h.email IS DISTINCT FROM s.email OR h.balance IS DISTINCT FROM s.balance
            OR h.updated_at IS DISTINCT FROM s.updated_at OR h.active IS DISTINCT FROM s.active
            OR h.score IS DISTINCT FROM s.score OR h.since IS DISTINCT FROM s.since
            OR h.segment IS DISTINCT FROM s.segment OR h.region IS DISTINCT FROM s.region);
    INSERT INTO merge_hand
    SELECT s.*, %1$L, 'infinity', true FROM merge_stage s
     WHERE NOT EXISTS (SELECT FROM merge_hand h WHERE h.id = s.id AND h.is_current);
  END $do$$q$,
  timestamptz '2026-01-01' + :r * interval '1 day'));
SQL
)
  for ((r = 1; r <= rounds; r++)); do
    "${psql_cmd[@]}" -q -v r="$r" -c "UPDATE merge_stage SET balance = balance + 1, segment = 'moved ' || $r WHERE id % 100 = $r" \
      -c "VACUUM ANALYZE merge_stage" >/dev/null
    # alternate which merge goes first, so caches favour neither
    if ((r % 2)); then
      "${psql_cmd[@]}" -q -v r="$r" <<<"$warden_sql" >/dev/null
      "${psql_cmd[@]}" -q -v r="$r" <<<"$hand_sql" >/dev/null
    else
      "${psql_cmd[@]}" -q -v r="$r" <<<"$hand_sql" >/dev/null
      "${psql_cmd[@]}" -q -v r="$r" <<<"$warden_sql" >/dev/null
    fi
  done
  "${psql_cmd[@]}" -A -F '|' -t -c "SELECT impl, round(percentile_disc(0.5) WITHIN GROUP (ORDER BY secs)::numeric, 3) FROM merge_results GROUP BY impl ORDER BY impl" \
    -c "SELECT 'check', (SELECT count(*) FROM merge_dim_history WHERE is_current), (SELECT count(*) FROM merge_hand WHERE is_current), (SELECT count(*) FROM merge_dim_history), (SELECT count(*) FROM merge_hand)"
}
