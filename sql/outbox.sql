-- The outbox as a psql user sees it (publishing, subscriptions, delivery,
-- dead letters and replay, pull consumers):
-- subscriptions with and without a handler, patterns, a handler whose
-- signature is wrong, a superuser refused as a handler's role; publish
-- inside a transaction (a rollback leaves nothing), a batch, a dedupe key
-- returning the first id, a delayed message; bad input refused; an
-- application role that may publish but not subscribe or read the tables.
CREATE ROLE regress_outbox_admin;
GRANT warden_admin TO regress_outbox_admin;
CREATE ROLE regress_outbox_app LOGIN;
GRANT warden_app TO regress_outbox_app;
CREATE TABLE outbox_mail (id bigint PRIMARY KEY, body jsonb);
GRANT INSERT ON outbox_mail TO regress_outbox_admin;
-- a handler runs with search_path = pg_catalog, pg_temp: it names its
-- tables with their schema (or sets its own search_path)
CREATE FUNCTION outbox_send_mail(msg warden.message) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO public.outbox_mail VALUES (msg.id, msg.payload) $$;
-- waits until a condition holds
CREATE FUNCTION pg_temp.wait_for(condition text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE ok boolean;
BEGIN
  FOR i IN 1..600 LOOP
    EXECUTE 'SELECT ' || condition INTO ok;
    IF ok THEN RETURN 'done'; END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RETURN 'timed out waiting for ' || condition;
END
$$;
-- waits until the worker's fan-out has seen every message
CREATE FUNCTION pg_temp.wait_fanned_out() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..600 LOOP
    IF (SELECT coalesce((SELECT f.upto >= coalesce((SELECT max(id) FROM warden.outbox_messages), 0)
                                AND cardinality(f.pending_lo) = 0
                           FROM warden.outbox_fanout f ORDER BY f.id DESC LIMIT 1), false)) THEN
      RETURN 'fanned out';
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RETURN 'the fan-out did not catch up';
END
$$;
CREATE FUNCTION outbox_wrong_shape(msg jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
-- a handler's owner can change what it does: it must be the subscriber
ALTER FUNCTION outbox_send_mail(warden.message) OWNER TO regress_outbox_admin;
CREATE FUNCTION outbox_app_handler(msg warden.message) RETURNS void LANGUAGE sql AS $$ SELECT $$;
ALTER FUNCTION outbox_app_handler(warden.message) OWNER TO regress_outbox_app;

SELECT warden.subscribe('dead_watch', 'warden.dead_letter');
-- a handler never runs as a superuser: subscribe as the role it runs as
SELECT warden.subscribe('mailer', 'orders.*', 'outbox_send_mail(warden.message)');
SET ROLE regress_outbox_admin;
SELECT warden.subscribe('mailer', 'orders.*', 'outbox_send_mail(warden.message)');
-- held until the walk-through below delivers
SELECT warden.pause('mailer');
SELECT warden.subscribe('mailer', 'orders.#');
SELECT warden.subscribe('wrong', 'orders.*', 'outbox_wrong_shape(jsonb)');
SELECT warden.subscribe('borrowed', 'orders.*', 'outbox_app_handler(warden.message)');
-- another role's subscription is not this role's to change
SELECT warden.pause('dead_watch');
RESET ROLE;
SELECT warden.subscribe('audit_feed', 'orders.#', max_attempts => 3, ordered => true);
SELECT warden.subscribe('eu_only', '*.created', filter => '{"region": "eu"}');
SELECT name, topic_pattern, handler, owner, max_attempts, backoff, max_backoff, ordered,
       handler_timeout, filter, paused
  FROM warden.outbox_subscriptions ORDER BY name;
SELECT warden.pause('audit_feed');
SELECT name, paused FROM warden.outbox_subscriptions WHERE name = 'audit_feed';
SELECT warden.resume('audit_feed');
SELECT warden.unsubscribe('eu_only');
SELECT warden.unsubscribe('eu_only');
-- bad subscriptions
SELECT warden.subscribe('bad name!', 'orders.*');
SELECT warden.subscribe('p1', 'orders.#.x');
SELECT warden.subscribe('p2', 'ord*');
SELECT warden.subscribe('p3', 'orders..created');
SELECT warden.subscribe('p4', 'orders.*', max_attempts => 0);
SELECT warden.subscribe('p5', 'orders.*', backoff => '0 seconds');
SELECT warden.subscribe('p6', 'orders.*', backoff => '1 minute', max_backoff => '1 second');
SELECT warden.subscribe('p7', 'orders.*', handler_timeout => '2 days');
SELECT warden.subscribe('p8', 'orders.*', filter => '[1]');
SELECT warden.subscribe('p8', 'orders.*', max_backoff => '30 days');
SELECT warden.subscribe('p9', NULL);
SELECT warden.pause(NULL);

-- publishing: inside the caller's transaction
BEGIN;
SELECT warden.set_tenant('shop1');
SELECT warden.publish('orders.created', '{"order": 1}', key => 'cust-9') > 0 AS published;
ROLLBACK;
SELECT count(*) AS after_rollback FROM warden.outbox_messages;
BEGIN;
SELECT warden.set_tenant('shop1');
SELECT warden.publish('orders.created', '{"order": 2}', key => 'cust-9',
                      headers => '{"trace": "t-1"}', dedupe_key => 'order-2') AS first \gset
SELECT warden.publish('orders.created', '{"order": 2}', dedupe_key => 'order-2') = :first AS deduped;
SELECT array_length(warden.publish_batch('orders.shipped', ARRAY['{"order": 3}', '{"order": 4}']::jsonb[],
                                         ARRAY['cust-9', NULL]), 1) AS batch;
SELECT warden.publish('orders.reminder', '"call back"', deliver_after => '1 hour') > :first AS delayed;
COMMIT;
-- another tenant's dedupe keys are its own
BEGIN;
SELECT warden.set_tenant('shop2');
SELECT warden.publish('orders.created', '{"order": 2}', dedupe_key => 'order-2') <> :first AS own_key;
COMMIT;
SELECT topic, key, payload, headers, tenant, deliver_after IS NOT NULL AS delayed,
       deliver_after - published_at AS delay, txid IS NOT NULL AS has_txid
  FROM warden.outbox_messages ORDER BY id;
-- the worker fans each message out to the matching subscriptions, in
-- the order they became visible (the rolled-back one never)
SELECT pg_temp.wait_fanned_out();
SELECT s.name, m.topic, m.payload, d.ordered_key, d.tenant, d.attempts,
       d.next_at > m.published_at AS delayed
  FROM warden.outbox_deliveries d
  JOIN warden.outbox_subscriptions s ON s.id = d.subscription_id
  JOIN warden.outbox_messages m ON m.id = d.message_id
 ORDER BY s.name, d.id;
-- bad messages
SELECT warden.publish('warden.dead_letter', '{}');
SELECT warden.publish('orders created', '{}');
SELECT warden.publish('', '{}');
SELECT warden.publish('orders.created', NULL);
SELECT warden.publish('orders.created', '{}', headers => '[]');
SELECT warden.publish('orders.created', '{}', key => repeat('k', 256));
SELECT warden.publish('orders.created', '{}', deliver_after => '-1 minute');
SELECT warden.publish('orders.created', '{}', deliver_after => '20 years');
SELECT warden.publish('orders.created', (repeat('[', 65) || repeat(']', 65))::jsonb);
SELECT warden.publish_batch('orders.created', ARRAY[['{}', '{}'], ['{}', '{}']]::jsonb[]);
BEGIN READ ONLY;
SELECT warden.publish('orders.created', '{}');
ROLLBACK;
SELECT warden.publish_batch('orders.created', ARRAY['{}', NULL]::jsonb[]);
SELECT warden.publish_batch('orders.created', ARRAY['{}', '{}']::jsonb[], ARRAY['a']);
SELECT count(*) AS nothing_more FROM warden.outbox_messages;

-- an application publishes; it cannot subscribe or read the outbox
SET ROLE regress_outbox_app;
SELECT warden.publish('orders.created', '{"order": 5}') > 0 AS app_published;
SELECT warden.subscribe('sneaky', '#');
SELECT count(*) FROM warden.outbox_messages;
SELECT count(*) FROM warden.outbox_subscriptions;
RESET ROLE;

-- delivery: the worker calls the handler once per message, as the role
-- that subscribed, in the transaction that removes the delivery
SET ROLE regress_outbox_admin;
SELECT warden.resume('mailer');
RESET ROLE;
SELECT pg_temp.wait_for($$(SELECT count(*) FROM outbox_mail) = 5$$);
SELECT body FROM outbox_mail ORDER BY id;
-- the reminder waits for its deliver_after
SELECT subscription, pending, last_delivered_at IS NOT NULL AS delivered FROM warden.outbox_stats WHERE subscription = 'mailer';

-- a failing handler: each failure rolls back what it did and is retried
-- after a backoff; after max_attempts the delivery is a dead letter, and
-- a message on warden.dead_letter announces it
CREATE TABLE outbox_invoices (invoice int PRIMARY KEY);
GRANT INSERT ON outbox_invoices TO regress_outbox_admin;
CREATE FUNCTION outbox_bill(msg warden.message) RETURNS void LANGUAGE plpgsql
  SET search_path = public AS $$
BEGIN
  INSERT INTO outbox_invoices VALUES ((msg.payload->>'invoice')::int);
  RAISE EXCEPTION 'payment provider down (attempt %)', msg.attempt;
END $$;
ALTER FUNCTION outbox_bill(warden.message) OWNER TO regress_outbox_admin;
SET ROLE regress_outbox_admin;
SELECT warden.subscribe('biller', 'billing.#', 'outbox_bill(warden.message)', max_attempts => 2, backoff => '10 ms');
RESET ROLE;
BEGIN;
SELECT warden.set_tenant('shop1');
SELECT warden.publish('billing.due', '{"invoice": 7}', key => 'cust-9') > 0 AS published;
COMMIT;
SELECT pg_temp.wait_for($$EXISTS (SELECT FROM warden.dead_letters WHERE notice_id IS NOT NULL)$$);
SELECT count(*) AS invoices_kept FROM outbox_invoices;
SELECT subscription, topic, key, payload, tenant, attempts, last_error,
       first_attempt_at <= last_attempt_at AS timed
  FROM warden.dead_letters;
SELECT pg_temp.wait_fanned_out();
SELECT subscription, kind, pending, in_flight, retrying, failed, dead, dead_unannounced, last_error
  FROM warden.outbox_stats ORDER BY subscription;
-- dead_watch, a pull subscription on warden.dead_letter, gets the notice
BEGIN;
SELECT warden.set_tenant('shop1');
SELECT (msg).topic, (msg).key, (msg).tenant, (msg).attempt,
       (msg).payload->>'subscription' AS subscription, (msg).payload->'message'->'payload' AS payload,
       (msg).payload->>'attempts' AS attempts, (msg).payload->>'last_error' AS last_error, lease
  FROM warden.claim('dead_watch') \gset
SELECT :'topic' AS topic, :'subscription' AS subscription, :'payload' AS payload, :'attempts' AS attempts;
SELECT warden.ack(ARRAY[:'lease'::uuid]) AS acked;
SELECT warden.ack(ARRAY[:'lease'::uuid]) AS acked_again;
COMMIT;
-- replay: the provider is back
CREATE OR REPLACE FUNCTION outbox_bill(msg warden.message) RETURNS void LANGUAGE plpgsql
  SET search_path = public AS $$
BEGIN
  INSERT INTO outbox_invoices VALUES ((msg.payload->>'invoice')::int);
END $$;
SELECT warden.replay_dead_letters(array_agg(dead_letter_id)) AS replayed FROM warden.dead_letters;
SELECT pg_temp.wait_for($$EXISTS (SELECT FROM outbox_invoices)$$);
SELECT invoice FROM outbox_invoices;
SELECT count(*) AS dead_letters_left FROM warden.dead_letters;
SELECT warden.replay_dead_letters(ARRAY[12345]) AS replayed_unknown;
SELECT warden.purge_dead_letters(now()) AS purged;
SELECT warden.replay_dead_letters(NULL);
SELECT warden.purge_dead_letters(NULL);

-- ordered: a key's messages one at a time; a failing head holds its key
CREATE FUNCTION outbox_ledger(msg warden.message) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF msg.payload @> '{"bad": true}' THEN RAISE EXCEPTION 'cannot post entry'; END IF;
END $$;
ALTER FUNCTION outbox_ledger(warden.message) OWNER TO regress_outbox_admin;
SET ROLE regress_outbox_admin;
SELECT warden.subscribe('ledger', 'ledger.#', 'outbox_ledger(warden.message)', ordered => true,
                        backoff => '1 hour', max_backoff => '1 hour');
RESET ROLE;
BEGIN;
SELECT warden.set_tenant('shop1');
SELECT warden.publish_batch('ledger.entry', ARRAY['{"bad": true}', '{"n": 2}', '{"n": 3}']::jsonb[],
                            ARRAY['acct-1', 'acct-1', 'acct-2']) IS NOT NULL AS published;
COMMIT;
SELECT pg_temp.wait_for($$EXISTS (SELECT FROM warden.outbox_blocked_keys)$$);
SELECT pg_temp.wait_for($$(SELECT pending FROM warden.outbox_stats WHERE subscription = 'ledger') = 2$$);
SELECT subscription, key, attempts, last_error, waiting, retry_at > now() AS retry_later
  FROM warden.outbox_blocked_keys;
SELECT item, split_part(detail, ':', 1) AS detail FROM warden.outbox_health()
 WHERE item IN ('dead_tuples', 'pending_deliveries') ORDER BY 1, 2;

-- pull: an application claims, acknowledges, and gives back what failed
SELECT warden.subscribe('exports', 'exports.#', max_attempts => 2);
BEGIN;
SELECT warden.set_tenant('shop1');
SELECT warden.publish_batch('exports.ready', ARRAY['{"file": "a"}', '{"file": "b"}']::jsonb[]) IS NOT NULL AS published;
COMMIT;
BEGIN;
SELECT warden.set_tenant('shop2');
SELECT warden.publish('exports.ready', '{"file": "shop2 only"}') > 0 AS published;
COMMIT;
BEGIN;
SELECT warden.set_tenant('shop3');
SELECT warden.publish_batch('exports.ready', ARRAY['{"file": "c"}', '{"file": "d"}', '{"file": "e"}']::jsonb[]) IS NOT NULL AS published;
COMMIT;
SELECT pg_temp.wait_fanned_out();
SET ROLE regress_outbox_app;
-- a consumer loop needs one statement per batch: claim first acknowledges
-- the leases of the batch before
BEGIN;
SELECT warden.set_tenant('shop3');
CREATE TEMP TABLE batch1 AS SELECT * FROM warden.claim('exports', 2);
SELECT (msg).payload FROM batch1 ORDER BY (msg).id;
CREATE TEMP TABLE batch2 AS SELECT * FROM warden.claim('exports', 2, ack => (SELECT array_agg(lease) FROM batch1));
SELECT (msg).payload FROM batch2 ORDER BY (msg).id;
-- a lease that no longer holds its message is not acknowledged, with a warning
SELECT count(*) AS claimed FROM warden.claim('exports', 2,
  ack => (SELECT array_agg(lease) FROM batch2) || '00000000-0000-0000-0000-000000000000'::uuid);
SELECT warden.ack(array_agg(lease)) AS acked_again FROM batch1;
COMMIT;
DROP TABLE batch1, batch2;
-- no tenant set: an application sees only messages without one
SELECT count(*) AS without_tenant FROM warden.claim('exports');
BEGIN;
SELECT warden.set_tenant('shop1');
CREATE TEMP TABLE claimed AS SELECT * FROM warden.claim('exports', 10, '1 minute');
SELECT (msg).payload, (msg).attempt, (msg).subscription FROM claimed ORDER BY (msg).id;
-- claimed messages are leased: a second claim gets none of them
SELECT count(*) AS claimed_again FROM warden.claim('exports');
SELECT warden.extend(lease, '2 minutes') AS extended FROM claimed ORDER BY (msg).id LIMIT 1;
SELECT warden.nack(lease, 'file locked', retry_after => '0 seconds') AS nacked FROM claimed ORDER BY (msg).id LIMIT 1;
SELECT warden.ack(array_agg(lease)) AS acked FROM claimed;
SELECT (msg).payload, (msg).attempt FROM warden.claim('exports');
COMMIT;
DROP TABLE claimed;
-- bad pull calls
SELECT warden.claim('mailer');
SELECT warden.claim('nope');
SELECT warden.claim('exports', 0);
SELECT warden.claim('exports', 10, '0 seconds');
SELECT warden.nack('00000000-0000-0000-0000-000000000000', 'x', '-1 second');
SELECT warden.ack(NULL);
SELECT warden.ack(ARRAY['00000000-0000-0000-0000-000000000000'::uuid]) AS acked_unknown;
-- an application cannot administer dead letters or read the stats
SELECT warden.replay_dead_letters(ARRAY[1]);
SELECT count(*) FROM warden.outbox_stats;
RESET ROLE;

SELECT warden.unsubscribe(name) FROM warden.outbox_subscriptions;
SELECT count(*) AS deliveries_left FROM warden.outbox_deliveries;
DROP FUNCTION outbox_send_mail(warden.message), outbox_wrong_shape(jsonb), outbox_app_handler(warden.message),
  outbox_bill(warden.message), outbox_ledger(warden.message);
DROP TABLE outbox_invoices;
DROP TABLE outbox_mail;
DROP ROLE regress_outbox_app;
DROP ROLE regress_outbox_admin;
