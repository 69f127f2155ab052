//! The outbox's administration views (warden_admin): per subscription
//! what waits, what is leased, what failed; and which keys of ordered
//! subscriptions wait on a retry. Both are security_invoker: an operator
//! counts what row-level security lets them see (every tenant's with
//! BYPASSRLS, the current tenant's otherwise), as `warden.key_catalog`.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE VIEW warden.outbox_stats WITH (security_invoker = true) AS
SELECT s.name AS subscription,
       s.topic_pattern,
       CASE WHEN s.handler IS NULL THEN 'pull' ELSE 'push' END AS kind,
       s.handler,
       s.paused,
       COALESCE(d.pending, 0) AS pending,
       COALESCE(d.in_flight, 0) AS in_flight,
       d.oldest_pending_age,
       COALESCE(d.retrying, 0) AS retrying,
       COALESCE(d.failed, 0) AS failed,
       COALESCE(l.dead, 0) AS dead,
       COALESCE(l.unannounced, 0) AS dead_unannounced,
       COALESCE(d.last_error, l.last_error) AS last_error,
       s.last_delivered_at
  FROM warden.outbox_subscriptions s
  LEFT JOIN LATERAL (
       SELECT pg_catalog.count(*) FILTER (WHERE d.failed_at IS NULL
                AND (d.lease IS NULL OR d.lease_until <= pg_catalog.now())) AS pending,
              pg_catalog.count(*) FILTER (WHERE d.failed_at IS NULL
                AND d.lease IS NOT NULL AND d.lease_until > pg_catalog.now()) AS in_flight,
              pg_catalog.now() - pg_catalog.min(m.published_at) FILTER (WHERE d.failed_at IS NULL) AS oldest_pending_age,
              pg_catalog.count(*) FILTER (WHERE d.failed_at IS NULL AND d.attempts > 0) AS retrying,
              pg_catalog.count(*) FILTER (WHERE d.failed_at IS NOT NULL) AS failed,
              (pg_catalog.array_agg(d.last_error ORDER BY d.last_attempt_at DESC)
                 FILTER (WHERE d.last_error IS NOT NULL))[1] AS last_error
         FROM warden.outbox_deliveries d
         JOIN warden.outbox_messages m ON m.id = d.message_id
        WHERE d.subscription_id = s.id) d ON true
  LEFT JOIN LATERAL (
       SELECT pg_catalog.count(*) AS dead,
              pg_catalog.count(*) FILTER (WHERE l.notice_id IS NULL) AS unannounced,
              (pg_catalog.array_agg(l.last_error ORDER BY l.dead_letter_id DESC))[1] AS last_error
         FROM warden.dead_letters l
        WHERE l.subscription = s.name) l ON true;
COMMENT ON VIEW warden.outbox_stats IS
  'Per subscription: deliveries pending (due or waiting to be retried), in flight (leased by a pull consumer), the age of the oldest, those retrying, dead-letter deliveries failed for good, dead letters (and those whose warden.dead_letter message is still to be published), the last error, and when a message was last handled.';

CREATE VIEW warden.outbox_blocked_keys WITH (security_invoker = true) AS
SELECT s.name AS subscription,
       d.ordered_key AS key,
       d.message_id AS head_message_id,
       d.attempts,
       d.next_at AS retry_at,
       d.last_error,
       (SELECT pg_catalog.count(*) FROM warden.outbox_deliveries w
         WHERE w.subscription_id = d.subscription_id AND w.ordered_key = d.ordered_key
           AND w.failed_at IS NULL AND w.id > d.id) AS waiting
  FROM warden.outbox_deliveries d
  JOIN warden.outbox_subscriptions s ON s.id = d.subscription_id
 WHERE d.ordered_key IS NOT NULL AND d.failed_at IS NULL AND d.attempts > 0
   AND NOT EXISTS (SELECT FROM warden.outbox_deliveries e
                    WHERE e.subscription_id = d.subscription_id AND e.ordered_key = d.ordered_key
                      AND e.id < d.id AND e.failed_at IS NULL);
COMMENT ON VIEW warden.outbox_blocked_keys IS
  'Keys of ordered subscriptions whose oldest message failed and waits for its retry, holding back the messages behind it (waiting). A head that runs out of attempts becomes a dead letter and the key moves on.';
"#,
    name = "outbox_stats",
    requires = ["outbox_tables"],
);
