//! The outbox's administration views (warden_admin): per subscription
//! what waits, what is leased, what failed; and which keys of ordered
//! subscriptions wait on a retry. Both are security_invoker: an operator
//! counts what row-level security lets them see (every tenant's with
//! BYPASSRLS, the current tenant's otherwise), as `warden.key_catalog`.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// When the subscription last handled or acknowledged a message since the
/// server started (shared memory; the row keeps it a minute behind).
#[pg_extern(volatile, parallel_safe, sql = false)]
fn outbox_last_delivered_at(subscription_id: i32) -> Option<TimestampWithTimeZone> {
    match super::low_water::delivered_at(subscription_id) {
        0 => None,
        us => TimestampWithTimeZone::try_from(us).ok(),
    }
}

extension_sql!(
    r#"
CREATE FUNCTION warden.outbox_last_delivered_at(subscription_id integer) RETURNS timestamptz
  VOLATILE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'outbox_last_delivered_at_wrapper';
COMMENT ON FUNCTION warden.outbox_last_delivered_at(integer) IS
  'When the subscription with this id last handled or acknowledged a message since the server started (kept in shared memory, NULL when none; warden.outbox_stats shows it by name).';
CREATE VIEW warden.outbox_stats WITH (security_invoker = true) AS
SELECT s.name AS subscription,
       s.topic_pattern,
       CASE WHEN s.handler IS NULL THEN 'pull' ELSE 'push' END AS kind,
       s.handler,
       s.paused,
       COALESCE(d.pending, 0) + COALESCE(h.lapsed, 0) AS pending,
       COALESCE(d.in_flight, 0) + COALESCE(h.in_flight, 0) AS in_flight,
       d.oldest_pending_age,
       COALESCE(d.retrying, 0) AS retrying,
       COALESCE(d.failed, 0) AS failed,
       COALESCE(l.dead, 0) AS dead,
       COALESCE(l.unannounced, 0) AS dead_unannounced,
       COALESCE(d.last_error, l.last_error) AS last_error,
       GREATEST(s.last_delivered_at, warden.outbox_last_delivered_at(s.id)) AS last_delivered_at
  FROM warden.outbox_subscriptions s
  LEFT JOIN LATERAL (
       SELECT pg_catalog.sum(COALESCE(pg_catalog.cardinality(d.message_ids), 1)) FILTER (WHERE d.failed_at IS NULL
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
       SELECT pg_catalog.sum(pg_catalog.cardinality(h.delivery_ids)) FILTER (WHERE h.lease_until > pg_catalog.now()) AS in_flight,
              pg_catalog.sum(pg_catalog.cardinality(h.delivery_ids)) FILTER (WHERE h.lease_until <= pg_catalog.now()) AS lapsed
         FROM warden.outbox_leases h
        WHERE h.subscription_id = s.id) h ON true
  LEFT JOIN LATERAL (
       SELECT pg_catalog.count(*) AS dead,
              pg_catalog.count(*) FILTER (WHERE l.notice_id IS NULL) AS unannounced,
              (pg_catalog.array_agg(l.last_error ORDER BY l.dead_letter_id DESC))[1] AS last_error
         FROM warden.dead_letters l
        WHERE l.subscription = s.name) l ON true;
COMMENT ON VIEW warden.outbox_stats IS
  'Per subscription: deliveries pending (due or waiting to be retried), in flight (leased by a pull consumer), the age of the oldest not in flight, those retrying, dead-letter deliveries failed for good, dead letters (and those whose warden.dead_letter message is still to be published), the last error, and when a message was last handled.';

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

CREATE FUNCTION warden.outbox_health()
  RETURNS TABLE(item text, value bigint, detail text)
  LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $health$
(SELECT 'xmin_held_by_backend', age(a.backend_xmin)::bigint,
        format('pid %s (role %s, application %L, %s), transaction open for %s',
               a.pid, a.usename, a.application_name, a.state, date_trunc('second', now() - a.xact_start))
   FROM pg_stat_activity a
  WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid()
  ORDER BY age(a.backend_xmin) DESC LIMIT 1)
UNION ALL
(SELECT 'xmin_held_by_slot', greatest(age(s.xmin), age(s.catalog_xmin))::bigint,
        format('replication slot %I (%s, active: %s)', s.slot_name, s.slot_type, s.active)
   FROM pg_replication_slots s
  WHERE s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL
  ORDER BY 2 DESC LIMIT 1)
UNION ALL
(SELECT 'xmin_held_by_prepared', age(p.transaction)::bigint,
        format('prepared transaction %L (role %s), prepared %s ago', p.gid, p.owner, date_trunc('second', now() - p.prepared))
   FROM pg_prepared_xacts p
  ORDER BY 2 DESC LIMIT 1)
UNION ALL
(SELECT 'dead_tuples', t.n_dead_tup,
        format('%I: %s live, last vacuum %s', t.relname, t.n_live_tup,
               coalesce(greatest(t.last_vacuum, t.last_autovacuum)::text, 'never'))
   FROM pg_stat_all_tables t
  WHERE t.schemaname = 'warden'
    AND t.relname IN ('outbox_messages', 'outbox_deliveries', 'outbox_leases', 'outbox_dedupe', 'outbox_fanout',
                      'outbox_subscriptions', 'dead_letters')
  ORDER BY t.relname)
UNION ALL
(SELECT 'pending_deliveries',
        coalesce(sum(coalesce(cardinality(d.message_ids), 1)), 0)
          + (SELECT coalesce(sum(cardinality(h.delivery_ids)), 0) FROM warden.outbox_leases h),
        'deliveries not yet handled, leased ones included (of the tenants row-level security shows you)'
   FROM warden.outbox_deliveries d WHERE d.failed_at IS NULL)
$health$;
COMMENT ON FUNCTION warden.outbox_health() IS
  'What holds the outbox back: the backend, replication slot or prepared transaction holding the oldest xmin (its age in transactions), dead tuples in each outbox table, and the deliveries pending.';
"#,
    name = "outbox_stats",
    requires = ["outbox_tables"],
);
