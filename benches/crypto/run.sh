# Sourced by benches/run: the crypto group. Prints one markdown table row
# per (operation, size): calls/s (or MB/s for 1 MiB) of pg_warden and the
# pgcrypto baselines, and ratios.
crypto_group() {
  local psql_cmd=("$@")
  "${psql_cmd[@]}" -q -f benches/crypto/setup.sql >/dev/null
  # One session: the tenant context and cached data key stay warm, as in an
  # application's connection.
  local sql
  sql=$(cat <<'SQL'
SET warden.max_plaintext_bytes = 2097152;
BEGIN;
SELECT warden.set_tenant('bench');
CREATE TEMP TABLE v AS
  SELECT s.size, gen_random_bytes(least(s.size, 1024)) AS b FROM (VALUES (64), (1024), (65536), (1048576)) s(size);
UPDATE v SET b = (SELECT string_agg(b, ''::bytea) FROM (SELECT gen_random_bytes(1024) b FROM generate_series(1, size / 1024)) x) WHERE size > 1024;
CREATE TEMP TABLE c AS
  SELECT size, b,
         warden.encrypt(b) AS w,
         encrypt_iv(b, '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, '\x000102030405060708090a0b0c0d0e0f'::bytea, 'aes-cbc/pad:pkcs') AS e,
         pgp_sym_encrypt_bytea(b, 'passphrase') AS p,
         pgp_sym_encrypt_bytea(b, 'passphrase', 's2k-mode=1') AS p1
    FROM v;
CREATE TEMP TABLE r (op text, size int, impl text, n int, secs float8);
DO $$
DECLARE
  s int; n int; impl text; q text;
  ops text[][] := ARRAY[
    ['encrypt', 'warden',     'SELECT count(warden.encrypt(b)) FROM c, generate_series(1, %s) WHERE size = %s'],
    ['encrypt', 'encrypt_iv', 'SELECT count(encrypt_iv(b, ''\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f''::bytea, ''\x000102030405060708090a0b0c0d0e0f''::bytea, ''aes-cbc/pad:pkcs'')) FROM c, generate_series(1, %s) WHERE size = %s'],
    ['encrypt', 'pgp_sym',    'SELECT count(pgp_sym_encrypt_bytea(b, ''passphrase'')) FROM c, generate_series(1, %s) WHERE size = %s'],
    ['encrypt', 'pgp_sym_s2k1','SELECT count(pgp_sym_encrypt_bytea(b, ''passphrase'', ''s2k-mode=1'')) FROM c, generate_series(1, %s) WHERE size = %s'],
    ['decrypt', 'warden',     'SELECT count(warden.decrypt(w)) FROM c, generate_series(1, %s) WHERE size = %s'],
    ['decrypt', 'encrypt_iv', 'SELECT count(decrypt_iv(e, ''\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f''::bytea, ''\x000102030405060708090a0b0c0d0e0f''::bytea, ''aes-cbc/pad:pkcs'')) FROM c, generate_series(1, %s) WHERE size = %s'],
    ['decrypt', 'pgp_sym',    'SELECT count(pgp_sym_decrypt_bytea(p, ''passphrase'')) FROM c, generate_series(1, %s) WHERE size = %s'],
    ['decrypt', 'pgp_sym_s2k1','SELECT count(pgp_sym_decrypt_bytea(p1, ''passphrase'')) FROM c, generate_series(1, %s) WHERE size = %s']
  ];
  i int;
BEGIN
  FOREACH s IN ARRAY ARRAY[64, 1024, 65536, 1048576] LOOP
    FOR i IN 1 .. array_length(ops, 1) LOOP
      impl := ops[i][2];
      n := CASE WHEN impl = 'pgp_sym' THEN 300
                WHEN s = 64 THEN 300000 WHEN s = 1024 THEN 150000 WHEN s = 65536 THEN 4000 ELSE 300 END;
      IF impl = 'pgp_sym_s2k1' AND s <= 1024 THEN n := 30000; END IF;
      -- warm-up, then the timed run
      PERFORM bench_seconds(format(ops[i][3], greatest(n / 20, 1), s));
      INSERT INTO r VALUES (ops[i][1], s, impl, n, bench_seconds(format(ops[i][3], n, s)));
    END LOOP;
  END LOOP;
END $$;
SELECT op, size, impl, n, round((n / secs)::numeric) AS calls_per_s, round((n::float8 * size / secs / 1e6)::numeric) AS mb_per_s
  FROM r ORDER BY op DESC, size, impl;
COMMIT;
SQL
)
  "${psql_cmd[@]}" -A -F '|' -t -c "$sql" 2>&1 | grep '|' 
}
