//! The outbox's tables. A message is written once, by `warden.publish`
//! in the publisher's transaction, and never updated: what changes as it
//! is delivered lives elsewhere, so a held xmin horizon leaves no dead
//! message versions behind. Application roles have no rights on these
//! tables; they publish, claim and acknowledge through functions.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE TYPE warden.message AS (
    id           bigint,
    topic        text,
    key          text,
    payload      jsonb,
    headers      jsonb,
    tenant       text,
    published_at timestamptz,
    attempt      integer,
    subscription text
);
COMMENT ON TYPE warden.message IS
  'A message as a handler or a pull consumer gets it: attempt counts from 1 (failed attempts before this one, plus one).';

CREATE TABLE warden.outbox_messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         text NOT NULL,
    key           text,
    payload       jsonb NOT NULL,
    headers       jsonb NOT NULL,
    tenant        text,
    published_at  timestamptz NOT NULL,
    deliver_after timestamptz,
    txid          xid8 NOT NULL
);
COMMENT ON TABLE warden.outbox_messages IS
  'Published messages, each written once by warden.publish in the publisher''s transaction and never updated. Internal: read it through the functions and views.';
COMMENT ON COLUMN warden.outbox_messages.deliver_after IS 'Not delivered before this time (NULL: at once).';
COMMENT ON COLUMN warden.outbox_messages.txid IS 'The publishing top-level transaction.';
COMMENT ON INDEX warden.outbox_messages_pkey IS 'Messages in publishing order.';
COMMENT ON SEQUENCE warden.outbox_messages_id_seq IS 'Message ids, in publishing order.';

CREATE TABLE warden.outbox_dedupe (
    scope        text NOT NULL,
    dedupe_key   text NOT NULL,
    message_id   bigint NOT NULL,
    published_at timestamptz NOT NULL,
    PRIMARY KEY (scope, dedupe_key)
);
COMMENT ON TABLE warden.outbox_dedupe IS
  'The last message published with each dedupe_key, per tenant (scope: the tenant, '''' without one). Internal.';
COMMENT ON INDEX warden.outbox_dedupe_pkey IS 'One message per dedupe_key and tenant.';

CREATE TABLE warden.outbox_subscriptions (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    topic_pattern   text NOT NULL,
    handler         text,
    owner           regrole NOT NULL,
    max_attempts    integer NOT NULL CHECK (max_attempts >= 1),
    backoff         interval NOT NULL,
    max_backoff     interval NOT NULL,
    ordered         boolean NOT NULL,
    handler_timeout interval NOT NULL,
    filter          jsonb,
    consumer        regrole,
    paused          boolean NOT NULL DEFAULT false,
    start_after     bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_delivered_at timestamptz
);
COMMENT ON TABLE warden.outbox_subscriptions IS
  'Subscriptions made by warden.subscribe. Internal: change them through warden.subscribe, unsubscribe, pause and resume.';
COMMENT ON COLUMN warden.outbox_subscriptions.handler IS 'The SQL function (msg warden.message) RETURNS void the worker calls, by schema-qualified name (pg_upgrade cannot carry regprocedure columns, and the worker resolves and checks it again at each call); NULL: a pull subscription.';
COMMENT ON COLUMN warden.outbox_subscriptions.owner IS 'The role that subscribed: the handler runs as this role, never as a superuser.';
COMMENT ON COLUMN warden.outbox_subscriptions.filter IS 'Delivers only messages whose payload contains this object (jsonb @>); NULL: all.';
COMMENT ON COLUMN warden.outbox_subscriptions.last_delivered_at IS 'When a message was last handled or acknowledged, written by the worker up to a minute late (the current value is in shared memory, shown by warden.outbox_stats): a write per acknowledgement would queue acknowledgements on this row, and leave a chain of row versions under a held xmin horizon.';
COMMENT ON COLUMN warden.outbox_subscriptions.consumer IS 'A pull subscription''s consumers: members of this role may claim, ack, nack and extend; NULL: every warden_app member (within its tenant).';
COMMENT ON COLUMN warden.outbox_subscriptions.start_after IS 'Delivers messages with a higher id only (those published after it was made).';
COMMENT ON INDEX warden.outbox_subscriptions_pkey IS 'Subscriptions by id.';
COMMENT ON INDEX warden.outbox_subscriptions_name_key IS 'Subscriptions by name.';
COMMENT ON SEQUENCE warden.outbox_subscriptions_id_seq IS 'Subscription ids.';

CREATE TABLE warden.outbox_deliveries (
    subscription_id  integer NOT NULL,
    id               bigint NOT NULL,
    message_id       bigint NOT NULL,
    ordered_key      text,
    tenant           text,
    attempts         integer NOT NULL DEFAULT 0,
    next_at          timestamptz NOT NULL,
    lease            integer,
    lease_until      timestamptz,
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    last_error       text,
    failed_at        timestamptz,
    message_ids      bigint[],
    PRIMARY KEY (subscription_id, id)
) WITH (fillfactor = 50);
CREATE SEQUENCE warden.outbox_deliveries_id_seq;
CREATE INDEX outbox_deliveries_ordered_idx ON warden.outbox_deliveries (subscription_id, ordered_key, id)
  WHERE ordered_key IS NOT NULL;
CREATE INDEX outbox_deliveries_failed_idx ON warden.outbox_deliveries (failed_at)
  WHERE failed_at IS NOT NULL;
COMMENT ON TABLE warden.outbox_deliveries IS
  'What each subscription has still to handle: one narrow row per message and matching subscription (for an unordered pull subscription, one row per fan-out run and tenant holding up to a hundred messages), written by the worker''s fan-out and removed once handled. Half of each page is left free (fillfactor 50) so that a claim or a retry updates a row in place (HOT) rather than adding index entries. Internal.';
COMMENT ON COLUMN warden.outbox_deliveries.id IS 'Fan-out order: a subscription handles its deliveries in this order.';
COMMENT ON COLUMN warden.outbox_deliveries.ordered_key IS 'The message''s key when the subscription is ordered (one delivery per key at a time).';
COMMENT ON COLUMN warden.outbox_deliveries.attempts IS 'Failed attempts so far.';
COMMENT ON COLUMN warden.outbox_deliveries.next_at IS 'Not attempted before this time (deliver_after, then the retry backoff).';
COMMENT ON COLUMN warden.outbox_deliveries.lease IS 'The nonce of the pull claim that holds it (part of the lease token); NULL: not claimed.';
COMMENT ON COLUMN warden.outbox_deliveries.lease_until IS 'When the pull claim lapses and the message goes to the next claimer.';
COMMENT ON COLUMN warden.outbox_deliveries.failed_at IS 'A dead-letter message whose handling ran out of attempts: kept for inspection, never dead-lettered again.';
COMMENT ON COLUMN warden.outbox_deliveries.message_ids IS 'A group: the messages of one fan-out run for an unordered pull subscription and one tenant, in fan-out order, not yet claimed (message_id is the lowest of them); NULL: the row is the delivery of message_id alone.';
COMMENT ON INDEX warden.outbox_deliveries_ordered_idx IS 'The head of each key of an ordered subscription.';
COMMENT ON INDEX warden.outbox_deliveries_failed_idx IS 'Deliveries given up, for retention (a few: without it, retention read the whole table every minute).';
COMMENT ON INDEX warden.outbox_deliveries_pkey IS 'A subscription''s deliveries in fan-out order.';
COMMENT ON SEQUENCE warden.outbox_deliveries_id_seq IS 'Fan-out order of deliveries.';

CREATE TABLE warden.outbox_leases (
    subscription_id  integer NOT NULL,
    nonce            integer NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    tenant           text,
    lease_until      timestamptz NOT NULL,
    claimed_at       timestamptz NOT NULL,
    delivery_ids     bigint[] NOT NULL,
    message_ids      bigint[] NOT NULL,
    attempts         integer[] NOT NULL,
    first_attempt_at timestamptz[] NOT NULL,
    PRIMARY KEY (subscription_id, nonce, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX outbox_leases_until_idx ON warden.outbox_leases (subscription_id, lease_until);
COMMENT ON TABLE warden.outbox_leases IS
  'Deliveries a pull claim holds: one row per claim (and tenant) with the ids, messages, failed attempts and first attempts of the deliveries it took out of warden.outbox_deliveries, which get them back when the lease lapses or is nacked. An ack deletes the row: a claimed message costs one row removal, not an update and then a removal. Rows are compressed only past 8 kB (toast_tuple_target): a claim of 100 is some 3 kB, and compressing it cost the claim more than it saved. Internal.';
COMMENT ON COLUMN warden.outbox_leases.nonce IS 'The claim''s nonce (part of each lease token).';
COMMENT ON COLUMN warden.outbox_leases.lease_until IS 'When the lease lapses: the deliveries go back to the next claimer, with the lapse counted as a failed attempt.';
COMMENT ON COLUMN warden.outbox_leases.id IS 'Tells apart the rows of one claim (one per tenant, and one per lease extended on its own).';
COMMENT ON INDEX warden.outbox_leases_pkey IS 'A claim''s lease rows, for ack, nack and extend.';
COMMENT ON SEQUENCE warden.outbox_leases_id_seq IS 'Lease row ids.';
COMMENT ON INDEX warden.outbox_leases_until_idx IS 'Leases by when they lapse.';

CREATE TABLE warden.outbox_fanout (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    upto       bigint NOT NULL,
    pending_lo bigint[] NOT NULL,
    pending_hi bigint[] NOT NULL,
    settled_at bigint[] NOT NULL,
    at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE warden.outbox_fanout IS
  'How far the fan-out got, written in the transaction of the deliveries it made (only the last row counts): every message id up to upto was fanned out but those in the pending ranges, whose transactions may still commit until a snapshot''s xmin reaches settled_at. Internal.';
COMMENT ON INDEX warden.outbox_fanout_pkey IS 'Progress records, the last one current.';
COMMENT ON SEQUENCE warden.outbox_fanout_id_seq IS 'Progress record ids.';

CREATE TABLE warden.dead_letters (
    dead_letter_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       bigint NOT NULL,
    topic            text NOT NULL,
    key              text,
    payload          jsonb NOT NULL,
    headers          jsonb NOT NULL,
    tenant           text,
    published_at     timestamptz NOT NULL,
    subscription     text NOT NULL,
    subscription_id  integer NOT NULL,
    owner            regrole NOT NULL,
    attempts         integer NOT NULL,
    last_error       text,
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    dead_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    notice_id        bigint
);
CREATE INDEX dead_letters_message_idx ON warden.dead_letters (message_id);
CREATE INDEX dead_letters_unannounced_idx ON warden.dead_letters (dead_letter_id) WHERE notice_id IS NULL;
COMMENT ON TABLE warden.dead_letters IS
  'Deliveries that ran out of attempts, with a copy of their message. Each is announced by a message on topic warden.dead_letter. Replay with warden.replay_dead_letters, remove with warden.purge_dead_letters.';
COMMENT ON COLUMN warden.dead_letters.subscription IS 'The name of the subscription that failed to handle the message.';
COMMENT ON COLUMN warden.dead_letters.subscription_id IS 'That subscription (replay delivers to it again, not to a later one of the same name).';
COMMENT ON COLUMN warden.dead_letters.owner IS 'Its owner: only roles with the owner''s rights replay or purge it.';
COMMENT ON COLUMN warden.dead_letters.attempts IS 'Failed attempts.';
COMMENT ON COLUMN warden.dead_letters.notice_id IS 'The warden.dead_letter message announcing it; NULL while publishing it failed (the worker tries again).';
COMMENT ON INDEX warden.dead_letters_pkey IS 'Dead letters by id.';
COMMENT ON INDEX warden.dead_letters_message_idx IS 'Keeps retention from deleting a message a dead letter may replay.';
COMMENT ON INDEX warden.dead_letters_unannounced_idx IS 'Dead letters whose warden.dead_letter message is still to be published.';
COMMENT ON SEQUENCE warden.dead_letters_dead_letter_id_seq IS 'Dead letter ids.';

SELECT pg_catalog.pg_extension_config_dump('warden.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('warden.dead_letters_dead_letter_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_deliveries_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_leases', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_leases_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_fanout', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_fanout_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_messages', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_dedupe', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_messages_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_subscriptions_id_seq', '');
"#,
    name = "outbox_tables",
    requires = ["audit_log_table"],
);
