-- The secrets store as a psql user sees it: set, get, a new version
-- (rotation) with check-and-set, JSON values, the catalog, delete,
-- undelete and destroy, webhooks signed and verified (a rotated secret's
-- older version still verifies within the overlap), bad input refused
-- with its SQLSTATE, another tenant seeing nothing, an application role
-- without access to the tables, and every access in the audit chain
-- without its value. First the digest helpers.
CREATE ROLE regress_secrets_app LOGIN;
GRANT warden_app TO regress_secrets_app;
CREATE ROLE regress_secrets_admin;
GRANT warden_admin TO regress_secrets_admin;
CREATE FUNCTION pg_temp.wait_chained() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..600 LOOP
    IF (SELECT inbox_events = 0 AND ring_events = 0 FROM warden.audit_status) THEN
      RETURN 'chained';
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RETURN 'the sequencer did not catch up';
END
$$;

-- RFC 4231, test case 2
SELECT encode(warden.hmac_sha256('Jefe', 'what do ya want for nothing?'), 'hex');
SELECT warden.timing_safe_equal('\x0102', '\x0102') AS same,
       warden.timing_safe_equal('\x0102', '\x0103') AS other,
       warden.timing_safe_equal('\x01', '\x0100') AS longer;
SELECT warden.hash_prefix('abc') AS eight, warden.hash_prefix('abc', 2) AS at_least_four,
       warden.hash_prefix('abc', 100) AS at_most_all;

SET ROLE regress_secrets_app;
-- no tenant: refused, never a global secret
SELECT warden.secret_set('stripe/webhook', 'whsec_test_secret');
BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.secret_set('stripe/webhook', 'whsec_test_secret', description => 'Stripe endpoint secret');
SELECT warden.secret_get('stripe/webhook');
-- rotation: a new version, checked against the one read
SELECT warden.secret_set('stripe/webhook', 'whsec_rotated_secret', expected_version => 1);
SELECT warden.secret_get('stripe/webhook') AS latest, warden.secret_get('stripe/webhook', 1) AS first;
-- a stale writer, and one that expected no secret yet
SAVEPOINT s;
SELECT warden.secret_set('stripe/webhook', 'whsec_lost', expected_version => 1);
ROLLBACK TO s;
SELECT warden.secret_set('stripe/webhook', 'whsec_lost', expected_version => 0);
ROLLBACK TO s;
SELECT warden.secret_set('nothing/here', 'x', expected_version => 3);
ROLLBACK TO s;
-- JSON values: a JSON string comes back as the string
SELECT warden.secret_set('db/config', '{"user": "app", "password": "pw"}'::jsonb);
SELECT warden.secret_set('api/token', '"tok_123"'::jsonb);
SELECT warden.secret_get('api/token') AS text, warden.secret_get_jsonb('api/token') AS jsonb,
       warden.secret_get_jsonb('db/config') ->> 'user' AS db_user,
       warden.secret_get_jsonb('stripe/webhook') AS text_as_json;
-- the catalog: states and fingerprints (equal values, equal fingerprints), never a value
SELECT warden.secret_set('copy/of/token', '"tok_123"'::jsonb);
SELECT name, version, state, length(fingerprint) AS fingerprint_hex_digits, description, created_by
  FROM warden.secret_catalog ORDER BY name, version;
SELECT count(DISTINCT fingerprint) FROM warden.secret_catalog WHERE name IN ('api/token', 'copy/of/token');
-- delete the latest version: get falls back to the older live one
SELECT warden.secret_delete('stripe/webhook', 2);
SELECT warden.secret_get('stripe/webhook');
SAVEPOINT s;
SELECT warden.secret_get('stripe/webhook', 2);
ROLLBACK TO s;
SELECT warden.secret_undelete('stripe/webhook');
SELECT warden.secret_get('stripe/webhook');
-- destroying is for warden_admin
SAVEPOINT s;
SELECT warden.secret_destroy('stripe/webhook', 1);
ROLLBACK TO s;
-- webhooks: sign at a fixed time (stripe: t=<unix>,v1=<hex>), and verify what was signed now
SELECT warden.webhook_sign('stripe/webhook', convert_to('{"id": 1}', 'UTF8'), 'stripe',
                           sent_at => '2023-11-14 22:13:20+00');
SELECT warden.webhook_verify('stripe/webhook', convert_to('{"id": 1}', 'UTF8'),
         warden.webhook_sign('stripe/webhook', convert_to('{"id": 1}', 'UTF8'), 'stripe'), 'stripe') AS fresh,
       warden.webhook_verify('stripe/webhook', convert_to('{"id": 2}', 'UTF8'),
         warden.webhook_sign('stripe/webhook', convert_to('{"id": 1}', 'UTF8'), 'stripe'), 'stripe') AS tampered,
       warden.webhook_verify('stripe/webhook', convert_to('{"id": 1}', 'UTF8'),
         warden.webhook_sign('stripe/webhook', convert_to('{"id": 1}', 'UTF8'), 'stripe',
                             sent_at => now() - interval '10 minutes'), 'stripe') AS stale,
       warden.webhook_verify('stripe/webhook', convert_to('{"id": 1}', 'UTF8'), 't=1,v1=zz', 'stripe') AS malformed;
-- a sender still on the first version (rotated within the overlap) is accepted
SELECT warden.webhook_verify('stripe/webhook', convert_to('{"id": 1}', 'UTF8'),
         't=' || extract(epoch FROM date_trunc('second', now()))::bigint || ',v1=' ||
         encode(warden.hmac_sha256('whsec_test_secret',
                convert_to(extract(epoch FROM date_trunc('second', now()))::bigint || '.{"id": 1}', 'UTF8')), 'hex'),
         'stripe') AS first_version_during_overlap;
-- bad input: an invalid name (not echoed), too large, an unknown scheme,
-- a standard-webhooks message without its id, no such secret
SAVEPOINT s;
SELECT warden.secret_set('bad name; drop table x', 'v');
ROLLBACK TO s;
SELECT warden.secret_set('big', repeat('x', 70000));
ROLLBACK TO s;
SELECT warden.webhook_sign('stripe/webhook', '\x00', 'svix');
ROLLBACK TO s;
SELECT warden.webhook_sign('stripe/webhook', '\x00', 'standard-webhooks');
ROLLBACK TO s;
SELECT warden.secret_get('no/such/secret');
ROLLBACK TO s;
COMMIT;
-- the tables are pg_warden's alone
SELECT count(*) FROM warden.secrets;
SELECT count(*) FROM warden.secret_names;
-- another tenant sees nothing of acme's
BEGIN;
SELECT warden.set_tenant('globex');
SELECT count(*) FROM warden.secret_catalog;
SELECT warden.secret_get('stripe/webhook');
ROLLBACK;
RESET ROLE;
-- an operator destroys the first version for good
SET ROLE regress_secrets_admin;
BEGIN;
SELECT warden.set_tenant('acme');
SELECT warden.secret_destroy('stripe/webhook', 1);
SELECT version, state, fingerprint IS NOT NULL AS fingerprint_kept FROM warden.secret_catalog
 WHERE name = 'stripe/webhook' ORDER BY version;
SELECT warden.secret_get('stripe/webhook', 1);
ROLLBACK;
RESET ROLE;
-- (the destroy above rolled back; its access event did not)
SELECT pg_temp.wait_chained();
SELECT event_type, fields->>'outcome' AS outcome, fields->>'name' AS name, fields->>'version' AS version
  FROM warden.audit_log
 WHERE tenant = 'acme' AND (event_type LIKE 'secret.%' OR event_type LIKE 'webhook.%')
 ORDER BY seq;
-- no value and no webhook secret in any event
SELECT count(*) AS leaked FROM warden.audit_log
 WHERE fields::text ~ '(whsec_|tok_123|"pw")';
