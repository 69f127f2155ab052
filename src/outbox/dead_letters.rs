//! `warden.replay_dead_letters` and `warden.purge_dead_letters`
//! (warden_admin). The dead letters themselves are written by
//! `delivery_state` when a delivery runs out of attempts.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::error::not_null;
use crate::privileged::as_superuser;

use super::delivery_state::spi_error;

/// Delivers these dead letters again to the subscriptions that failed
/// them, attempts reset, and removes them from the dead letters (a new
/// failure makes a new one). Only dead letters of subscriptions whose
/// owner's rights the caller has; those whose subscription was dropped
/// stay. Returns how many were replayed.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn replay_dead_letters(ids: Option<Vec<Option<i64>>>) -> i32 {
    let ids: Vec<i64> = not_null(ids, "ids").into_iter().flatten().collect();
    // SAFETY: reads the current user.
    let me = unsafe { pgrx::pg_sys::GetUserId() };
    let replayed = as_superuser(|| {
        super::write_one::<i32>(
            "WITH l AS (
               DELETE FROM warden.dead_letters l
                USING warden.outbox_subscriptions s
                WHERE l.dead_letter_id = ANY ($1) AND s.id = l.subscription_id
                  AND pg_catalog.pg_has_role($2, l.owner, 'USAGE')
                  AND EXISTS (SELECT FROM warden.outbox_messages m WHERE m.id = l.message_id)
               RETURNING l.message_id, l.key, l.tenant, s.id AS sid, s.ordered),
             d AS (
               INSERT INTO warden.outbox_deliveries (subscription_id, id, message_id, ordered_key, tenant, next_at)
               SELECT l.sid, pg_catalog.nextval('warden.outbox_deliveries_id_seq'::pg_catalog.regclass),
                      l.message_id, CASE WHEN l.ordered THEN l.key END, l.tenant, pg_catalog.clock_timestamp()
                 FROM l ORDER BY l.message_id
               RETURNING 1)
             SELECT pg_catalog.count(*)::pg_catalog.int4 FROM d",
            &[ids.into(), me.into()],
        )
    })
    .unwrap_or_else(|e| spi_error(e).raise())
    .unwrap_or(0);
    if replayed > 0 {
        super::dispatch_task::wake_at_commit();
    }
    replayed
}

/// Removes the dead letters that died before `before`, of subscriptions
/// whose owner's rights the caller has; returns how many.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn purge_dead_letters(before: Option<TimestampWithTimeZone>) -> i64 {
    let before = not_null(before, "before");
    // SAFETY: reads the current user.
    let me = unsafe { pgrx::pg_sys::GetUserId() };
    as_superuser(|| {
        super::write_one::<i64>(
            "WITH p AS (DELETE FROM warden.dead_letters l
                         WHERE l.dead_at < $1 AND pg_catalog.pg_has_role($2, l.owner, 'USAGE')
                        RETURNING 1)
             SELECT pg_catalog.count(*) FROM p",
            &[before.into(), me.into()],
        )
    })
    .unwrap_or_else(|e| spi_error(e).raise())
    .unwrap_or(0)
}

extension_sql!(
    r#"
CREATE FUNCTION warden.replay_dead_letters(ids bigint[]) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'replay_dead_letters_wrapper';
CREATE FUNCTION warden.purge_dead_letters(before timestamptz) RETURNS bigint
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'purge_dead_letters_wrapper';
COMMENT ON FUNCTION warden.replay_dead_letters(bigint[]) IS
  'Delivers these dead letters again to the subscriptions that failed them, attempts reset (they leave warden.dead_letters; a new failure makes a new one). Only those of subscriptions whose owner''s rights the caller has. Returns how many were replayed.';
COMMENT ON FUNCTION warden.purge_dead_letters(timestamptz) IS
  'Removes the dead letters that died before the given time, of subscriptions whose owner''s rights the caller has; returns how many.';
"#,
    name = "outbox_dead_letters",
    requires = ["outbox_tables"],
);
