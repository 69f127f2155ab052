# Sourced by benches/run: the secrets group's single-session parts.
#   secrets_latency ROLE N   p50|p99|max ms of N secret_get calls in one
#                            session as ROLE (strict: each waits for its
#                            access event's commit)
#   secrets_webhook N        webhook_verify calls/s (standard-webhooks,
#                            2 KiB payload) in one backend, and
#                            hmac_sha256 + timing_safe_equal of the same
#                            in SQL as a reference

secrets_latency() {
  local role=$1 n=$2; shift 2
  "$@" -q -At -v n="$n" -v role="$role" <<'SQL' | tail -1
SET bench.n = :n;
-- strict for the strict role (a superuser's session setting, kept across
-- the switch below; an application cannot turn it off)
SELECT set_config('warden.audit_strict', (:'role' = 'bench_secrets_strict')::text, false);
SET SESSION AUTHORIZATION :"role";
CREATE TEMP TABLE lat (ms float8);
BEGIN;
DO $$
DECLARE t0 timestamptz; v text;
BEGIN
  FOR i IN 1..current_setting('bench.n')::int LOOP
    t0 := clock_timestamp();
    PERFORM warden.set_tenant('bench');
    v := warden.secret_get('api/key');
    INSERT INTO lat VALUES (extract(epoch FROM clock_timestamp() - t0) * 1000);
  END LOOP;
END $$;
COMMIT;
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) || '|' ||
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3) || '|' ||
       round(max(ms)::numeric, 3) FROM lat;
SQL
}

secrets_webhook() {
  local n=$1; shift
  "$@" -q -At -v n="$n" <<'SQL' | tail -1
SET bench.n = :n;
BEGIN;
SELECT warden.set_tenant('bench');
SELECT set_config('bench.payload', encode(convert_to(repeat('{"a": 1}', 256), 'UTF8'), 'hex'), true);
SELECT set_config('bench.sig', warden.webhook_sign('hook/sw', decode(current_setting('bench.payload'), 'hex'),
                  'standard-webhooks', 'msg_1', now()), true);
CREATE TEMP TABLE r (what text, per_s float8);
DO $$
DECLARE t0 timestamptz; ok boolean; p bytea := decode(current_setting('bench.payload'), 'hex');
        s text := current_setting('bench.sig'); n int := current_setting('bench.n')::int;
        key bytea := decode('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'base64'); mac bytea;
BEGIN
  t0 := clock_timestamp();
  FOR i IN 1..n LOOP
    ok := warden.webhook_verify('hook/sw', p, s, 'standard-webhooks', msg_id => 'msg_1', sent_at => now());
  END LOOP;
  IF NOT ok THEN RAISE EXCEPTION 'the signature did not verify'; END IF;
  INSERT INTO r VALUES ('verify', n / extract(epoch FROM clock_timestamp() - t0));
  t0 := clock_timestamp();
  FOR i IN 1..n LOOP
    mac := warden.hmac_sha256(key, convert_to('msg_1.' || extract(epoch FROM now())::bigint || '.', 'UTF8') || p);
    ok := warden.timing_safe_equal(mac, mac);
  END LOOP;
  INSERT INTO r VALUES ('sql_hmac', n / extract(epoch FROM clock_timestamp() - t0));
END $$;
SELECT string_agg(round(per_s)::text, '|' ORDER BY what DESC) FROM r;
COMMIT;
SQL
}
