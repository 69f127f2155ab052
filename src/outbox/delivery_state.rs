//! What happens to a delivery after an attempt: handled (gone), failed
//! and tried again later, or out of attempts (a dead letter, or for a
//! dead-letter message itself, failed for good). Shared by the worker's
//! handler calls and the pull consumers' acks, nacks and lapsed leases.
//! Every statement runs as pg_warden on its own tables.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;

use warden_core::outbox::{after_failure, AfterFailure, DEAD_LETTER_TOPIC};

use crate::error::WardenError;
use crate::subtransaction::in_subtransaction;

/// Longest error text kept with a delivery, in bytes.
const MAX_ERROR_BYTES: usize = 2_000;

pub(super) fn spi_error(e: pgrx::spi::Error) -> WardenError {
    WardenError::prerequisite(format!("outbox deliveries: {e}"))
}

/// A delivery whose attempt failed, with what its subscription allows.
pub(super) struct Failure<'a> {
    pub subscription_id: i32,
    pub id: i64,
    /// Failed attempts, this one included.
    pub failures: i32,
    pub max_attempts: i32,
    pub topic_is_dead_letter: bool,
    pub backoff_us: i64,
    pub max_backoff_us: i64,
    pub error: &'a str,
    /// A delay the consumer asked for (nack's retry_after) instead of
    /// the backoff.
    pub retry_after_us: Option<i64>,
}

/// What `record_failure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recorded {
    /// Tried again at this time (microseconds since 2000-01-01, the clock
    /// of `GetCurrentTimestamp`).
    Retry(i64),
    DeadLetter,
    Failed,
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // the jitter needs no secrecy; a failing source only loses the jitter
    let _ = warden_core::crypto::fill_random(&mut b);
    u64::from_le_bytes(b)
}

/// Cuts `error` to MAX_ERROR_BYTES on a character boundary.
fn clip(error: &str) -> &str {
    if error.len() <= MAX_ERROR_BYTES {
        return error;
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

/// Records a failed attempt (as pg_warden).
pub(super) fn record_failure(f: &Failure) -> Result<Recorded, WardenError> {
    let error = clip(f.error);
    let next = after_failure(
        f.failures,
        f.max_attempts,
        f.topic_is_dead_letter,
        f.backoff_us,
        f.max_backoff_us,
        random_u64(),
    );
    match next {
        AfterFailure::Retry { delay_us } => {
            let delay_us = f.retry_after_us.unwrap_or(delay_us).max(0);
            let at = crate::outbox::write_one::<TimestampWithTimeZone>(
                "UPDATE warden.outbox_deliveries d
                    SET attempts = $3, last_error = $4,
                        next_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $5::pg_catalog.float8 OPERATOR(pg_catalog./) 1000000),
                        first_attempt_at = COALESCE(d.first_attempt_at, pg_catalog.clock_timestamp()),
                        last_attempt_at = pg_catalog.clock_timestamp(),
                        lease = NULL, lease_until = NULL
                  WHERE d.subscription_id OPERATOR(pg_catalog.=) $1 AND d.id OPERATOR(pg_catalog.=) $2
                  RETURNING d.next_at",
                &[
                    f.subscription_id.into(),
                    f.id.into(),
                    f.failures.into(),
                    error.into(),
                    delay_us.into(),
                ],
            )
            .map_err(spi_error)?;
            Ok(Recorded::Retry(at.map_or(0, pg_sys::TimestampTz::from)))
        }
        AfterFailure::Failed => {
            crate::outbox::write_one::<i64>(
                "UPDATE warden.outbox_deliveries d
                    SET attempts = $3, last_error = $4, failed_at = pg_catalog.clock_timestamp(),
                        first_attempt_at = COALESCE(d.first_attempt_at, pg_catalog.clock_timestamp()),
                        last_attempt_at = pg_catalog.clock_timestamp(),
                        lease = NULL, lease_until = NULL
                  WHERE d.subscription_id OPERATOR(pg_catalog.=) $1 AND d.id OPERATOR(pg_catalog.=) $2
                  RETURNING d.id",
                &[f.subscription_id.into(), f.id.into(), f.failures.into(), error.into()],
            )
            .map_err(spi_error)?;
            Ok(Recorded::Failed)
        }
        AfterFailure::DeadLetter => {
            let dead = crate::outbox::write_one::<i64>(
                "WITH d AS (
                   DELETE FROM warden.outbox_deliveries d
                    WHERE d.subscription_id OPERATOR(pg_catalog.=) $1 AND d.id OPERATOR(pg_catalog.=) $2
                   RETURNING d.*)
                 INSERT INTO warden.dead_letters
                        (message_id, topic, key, payload, headers, tenant, published_at, subscription,
                         subscription_id, owner, attempts, last_error, first_attempt_at, last_attempt_at)
                 SELECT m.id, m.topic, m.key, m.payload, m.headers, m.tenant, m.published_at, s.name, s.id, s.owner,
                        $3, $4, COALESCE(d.first_attempt_at, pg_catalog.clock_timestamp()), pg_catalog.clock_timestamp()
                   FROM d
                   JOIN warden.outbox_messages m ON m.id OPERATOR(pg_catalog.=) d.message_id
                   JOIN warden.outbox_subscriptions s ON s.id OPERATOR(pg_catalog.=) d.subscription_id
                 RETURNING dead_letter_id",
                &[f.subscription_id.into(), f.id.into(), f.failures.into(), error.into()],
            )
            .map_err(spi_error)?;
            if let Some(dead) = dead {
                announce(dead);
            }
            Ok(Recorded::DeadLetter)
        }
    }
}

/// Publishes the `warden.dead_letter` message of dead letter `id`, in a
/// subtransaction of its own: if it fails, the dead letter stays (with no
/// notice yet) and the worker tries again on its next runs. Returns
/// whether it was published.
pub(super) fn announce(id: i64) -> bool {
    // the transaction takes its xid before the notice draws a message id,
    // as publish's do (the fan-out's settling relies on it); the INSERT
    // below may evaluate the id's default before pg_current_xact_id()
    // SAFETY: assigns the top-level transaction an xid if it has none.
    unsafe { pg_sys::GetTopTransactionId() };
    let outcome = in_subtransaction(|| {
        crate::outbox::write_one::<i64>(
            "WITH n AS (
               INSERT INTO warden.outbox_messages (topic, key, payload, headers, tenant, published_at, txid)
               SELECT $2, l.key,
                      pg_catalog.jsonb_build_object(
                        'dead_letter_id', l.dead_letter_id,
                        'message', pg_catalog.jsonb_build_object(
                           'id', l.message_id, 'topic', l.topic, 'key', l.key, 'payload', l.payload,
                           'headers', l.headers, 'tenant', l.tenant, 'published_at', l.published_at),
                        'subscription', l.subscription, 'attempts', l.attempts, 'last_error', l.last_error,
                        'first_attempt_at', l.first_attempt_at, 'last_attempt_at', l.last_attempt_at),
                      '{}'::pg_catalog.jsonb, l.tenant, pg_catalog.clock_timestamp(), pg_catalog.pg_current_xact_id()
                 FROM warden.dead_letters l
                WHERE l.dead_letter_id OPERATOR(pg_catalog.=) $1 AND l.notice_id IS NULL
               RETURNING id)
             UPDATE warden.dead_letters l SET notice_id = n.id FROM n
              WHERE l.dead_letter_id OPERATOR(pg_catalog.=) $1
              RETURNING l.notice_id",
            &[id.into(), DEAD_LETTER_TOPIC.into()],
        )
        .unwrap_or_else(|e| spi_error(e).raise())
    });
    match outcome {
        Ok(Some(_)) => {
            super::fanout_task::wake_at_commit();
            true
        }
        Ok(None) => false,
        Err(failed) => {
            pgrx::warning!(
                "pg_warden outbox: publishing the warden.dead_letter message of dead letter {id} failed: {} (tried again later)",
                failed.message
            );
            false
        }
    }
}

/// Tries again to publish the notices of dead letters whose publishing
/// failed. Returns how many are still waiting.
pub(super) fn announce_waiting(limit: i64) -> Result<i64, WardenError> {
    let ids: Vec<i64> = pgrx::Spi::connect(|client| {
        client
            .select(
                "SELECT l.dead_letter_id FROM warden.dead_letters l
                  WHERE l.notice_id IS NULL ORDER BY l.dead_letter_id LIMIT $1",
                None,
                &[limit.into()],
            )?
            .map(|row| row.get::<i64>(1))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.into_iter().flatten().collect())
    })
    .map_err(spi_error)?;
    let mut waiting = 0;
    for id in ids {
        if !announce(id) {
            waiting += 1;
        }
    }
    Ok(waiting)
}
