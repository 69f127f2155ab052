//! The transactional outbox (DESIGN §8): messages published inside the
//! caller's transaction, topic subscriptions, delivery by the worker.
//! Topic and pattern rules live in `warden_core::outbox`.
//!
//! - `tables`: `warden.outbox_messages` (written once), the dedupe keys,
//!   `warden.outbox_subscriptions` and the `warden.message` type.
//! - `publish`: `warden.publish`, `warden.publish_batch`.
//! - `subscribe`: `warden.subscribe`, `unsubscribe`, `pause`, `resume`.
//! - `fanout_task`: the worker task that turns committed messages into
//!   deliveries, one per matching subscription.
//! - `dispatch_task`: the worker task that calls handlers
//!   (`handler_call`), exactly once per message and subscription;
//!   `hard_deadline` ends a handler that outlives its timeout.
//! - `pull`: `warden.claim`, `ack`, `nack`, `extend`.
//! - `delivery_state`: retries, dead letters and their announcement.
//! - `dead_letters`: `warden.replay_dead_letters`, `purge_dead_letters`.
//! - `stats`: `warden.outbox_stats`, `warden.outbox_blocked_keys`,
//!   `warden.outbox_health()`.
//! - `retention_task`: the worker task deleting what is no longer needed.
//! - `low_water`: where each subscription's live deliveries begin, in
//!   shared memory, so scans skip what a held xmin horizon keeps dead.

mod dead_letters;
mod delivery_state;
mod dispatch_task;
mod fanout_task;
mod handler_call;
mod hard_deadline;
mod low_water;
mod publish;
mod pull;
mod retention_task;
mod stats;
mod subscribe;
mod tables;
mod timers;

/// Registers the fan-out and dispatch tasks (preload only).
pub fn init(preloading: bool) {
    if preloading {
        low_water::init();
        hard_deadline::init();
        fanout_task::register();
        dispatch_task::register();
        retention_task::register();
    }
}

/// An interval in microseconds, 0 for NULL (subscriptions' intervals are
/// positive and bounded to days, so no month arithmetic is involved).
fn micros(interval: Option<pgrx::datum::Interval>) -> i64 {
    interval.map_or(0, |i| i64::try_from(i.as_micros()).unwrap_or(i64::MAX))
}

/// Records that these subscriptions just handled or acknowledged a
/// message: in shared memory, or in the row of one that has no entry
/// there yet (a row someone holds locked is skipped, never waited for).
fn mark_delivered(subscription_ids: &[i32]) -> Result<(), crate::error::WardenError> {
    let missing = low_water::note_delivered(subscription_ids);
    if missing.is_empty() {
        return Ok(());
    }
    // the worker makes their entries
    dispatch_task::wake_at_commit();
    Spi::connect_mut(|client| {
        client.update(
            "UPDATE warden.outbox_subscriptions s SET last_delivered_at = pg_catalog.clock_timestamp()
              WHERE s.id IN (SELECT c.id FROM warden.outbox_subscriptions c
                              WHERE c.id OPERATOR(pg_catalog.=) ANY ($1)
                                FOR NO KEY UPDATE SKIP LOCKED)",
            None,
            &[missing.into()],
        )?;
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(delivery_state::spi_error)
}

/// Writes when each subscription last handled or acknowledged a message
/// into its row, where it is more than a minute old (the worker, now and
/// then: the current value lives in shared memory, which a restart
/// clears).
fn persist_delivered_at() -> Result<(), crate::error::WardenError> {
    let (ids, ats): (Vec<i32>, Vec<pgrx::datum::TimestampWithTimeZone>) =
        low_water::all_delivered_at()
            .into_iter()
            .filter_map(|(s, us)| Some((s, pgrx::datum::TimestampWithTimeZone::try_from(us).ok()?)))
            .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    Spi::connect_mut(|client| {
        client.update(
            // a row someone holds locked (an open transaction that paused
            // the subscription) is skipped: the worker never waits on it
            "WITH v AS (
               SELECT s.id, v.at
                 FROM warden.outbox_subscriptions s,
                      ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]), pg_catalog.unnest($2::pg_catalog.timestamptz[])) v(sid, at)
                WHERE s.id OPERATOR(pg_catalog.=) v.sid
                  AND (s.last_delivered_at IS NULL
                       OR s.last_delivered_at OPERATOR(pg_catalog.<) (v.at OPERATOR(pg_catalog.-) '1 minute'::pg_catalog.interval))
                  FOR NO KEY UPDATE OF s SKIP LOCKED)
             UPDATE warden.outbox_subscriptions s SET last_delivered_at = v.at
               FROM v WHERE s.id OPERATOR(pg_catalog.=) v.id",
            None,
            &[ids.into(), ats.into()],
        )?;
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(delivery_state::spi_error)
}

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiResult;
use pgrx::{FromDatum, IntoDatum};

/// The first column of the first row a data-modifying statement on
/// pg_warden's own tables returns (None for no row or SQL NULL).
fn write_one<A: FromDatum + IntoDatum>(query: &str, args: &[DatumWithOid]) -> SpiResult<Option<A>> {
    Spi::connect_mut(|client| {
        let rows = client.update(query, Some(1), args)?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get_one()
    })
}
