-- The outbox as a psql user sees it (publishing and subscriptions):
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
CREATE FUNCTION outbox_send_mail(msg warden.message) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO outbox_mail VALUES (msg.id, msg.payload) $$;
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

SELECT warden.unsubscribe(name) FROM warden.outbox_subscriptions;
SELECT count(*) AS deliveries_left FROM warden.outbox_deliveries;
DROP FUNCTION outbox_send_mail(warden.message), outbox_wrong_shape(jsonb), outbox_app_handler(warden.message);
DROP TABLE outbox_mail;
DROP ROLE regress_outbox_app;
DROP ROLE regress_outbox_admin;
