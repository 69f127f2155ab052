# Sourced by benches/run: hash_diff calls/s against md5(row::text), the
# usual hand-written change hash, over the same 200 000 rows of a typical
# dimension (10 columns of common types). One backend; the two scans
# alternate BENCH_ROUNDS times; the median is reported.
scd2_hash_group() {
  local psql_cmd=("$@")
  "${psql_cmd[@]}" -q <<'SQL' >/dev/null
DROP TABLE IF EXISTS bench_dim;
CREATE TABLE bench_dim AS
  SELECT i AS id, 'customer ' || i AS name, 'c' || i || '@example.com' AS email,
         (i % 1000)::numeric / 7 AS balance, now() - i * interval '1 minute' AS updated_at,
         i % 2 = 0 AS active, (i % 97)::float8 / 3 AS score, date '2020-01-01' + i % 2000 AS since,
         CASE WHEN i % 5 = 0 THEN NULL ELSE 'segment ' || i % 13 END AS segment, i % 40 AS region
    FROM generate_series(1, 200000) i;
VACUUM ANALYZE bench_dim;
SQL
  local rounds=${BENCH_ROUNDS:-3} r
  local sql="CREATE TEMP TABLE r (impl text, secs float8);"
  for ((r = 1; r <= rounds; r++)); do
    sql+="INSERT INTO r SELECT 'warden', bench_seconds('SELECT count(warden.hash_diff(d)) FROM bench_dim d');"
    sql+="INSERT INTO r SELECT 'md5', bench_seconds('SELECT count(md5(d::text)) FROM bench_dim d');"
  done
  sql+="SELECT impl, round(200000 / percentile_disc(0.5) WITHIN GROUP (ORDER BY secs))::bigint FROM r GROUP BY impl ORDER BY impl;"
  "${psql_cmd[@]}" -A -F '|' -t -c "SET max_parallel_workers_per_gather = 0" -c "SELECT warden.hash_diff(d) FROM bench_dim d LIMIT 1" -c "$sql" 2>&1 | grep -E '^(warden|md5)\|'
}
