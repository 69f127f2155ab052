//! Pull consumers: `warden.claim`, `ack`, `nack` and `extend` on a
//! subscription without a handler (warden_app).
//!
//! A claim leases each message it returns until `visibility` runs out,
//! under a token that is fresh for every claim (`warden_core::outbox::
//! lease_token`): once a lease lapses the message goes to the next
//! claimer, and the old token's ack, nack or extend changes nothing (0 or
//! false). Concurrent claims never return the same message (SKIP
//! LOCKED). A lapsed lease counts as a failed attempt, so a message that
//! kills every consumer ends as a dead letter rather than circling.
//!
//! Tenants: a consumer sees the messages of its current tenant (or, with
//! no tenant set, the messages published without one); a warden_admin
//! member with no tenant set sees all. A lease of another tenant's
//! message matches nothing.

use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::Uuid;

use warden_core::outbox::{lease_token, parse_lease};

use crate::error::{not_null, WardenError};
use crate::privileged::as_superuser;

use super::delivery_state::{record_failure, spi_error, Failure, Recorded};

/// Most messages one claim returns.
const MAX_BATCH: i32 = 1_000;
/// Longest lease: a day.
const MAX_VISIBILITY_US: i128 = 86_400 * 1_000_000;
/// Longest retry_after of a nack: a week, as the longest backoff.
const MAX_RETRY_AFTER_US: i128 = 7 * 86_400 * 1_000_000;

/// Which deliveries the caller may see: all of them, or those of one
/// tenant (None: those without a tenant).
struct Scope {
    all: bool,
    tenant: Option<String>,
}

/// The current user.
fn me() -> pgrx::pg_sys::Oid {
    // SAFETY: reads the current user.
    unsafe { pgrx::pg_sys::GetUserId() }
}

/// Most leases one ack takes.
const MAX_ACK: usize = 10_000;

fn scope() -> Scope {
    let tenant = crate::guc::tenant().map(str::to_owned);
    Scope {
        all: tenant.is_none() && crate::tenant_context::is_warden_admin(),
        tenant,
    }
}

fn visibility_us(v: Option<Interval>, what: &str) -> i64 {
    let us = not_null(v, what).as_micros();
    if us <= 0 || us > MAX_VISIBILITY_US {
        WardenError::invalid_parameter(format!("{what} must be positive and at most 1 day"))
            .hint("For example '30 seconds'; extend a lease with warden.extend while you work.")
            .raise();
    }
    us as i64
}

/// The pull subscription `name` (its id and max_attempts), or None when
/// it is paused.
fn pull_subscription(name: &str) -> Option<(i32, i32)> {
    // before the switch to pg_warden's rights
    let caller = me();
    // one row, NULLs when there is no such subscription
    let (found, kind, max_attempts) = as_superuser(|| {
        pgrx::Spi::connect(|client| {
            let rows = crate::kept_plans::select(
                client,
                "SELECT s.id,
                        CASE WHEN s.id IS NULL THEN NULL
                             WHEN s.handler IS NOT NULL THEN 'push'
                             WHEN s.consumer IS NOT NULL AND NOT pg_catalog.pg_has_role($2, s.consumer, 'USAGE') THEN 'denied'
                             WHEN s.paused THEN 'paused' ELSE 'pull' END,
                        s.max_attempts
                   FROM (SELECT) one LEFT JOIN warden.outbox_subscriptions s ON s.name = $1",
                Some(1),
                &[name.into(), caller.into()],
            )?;
            let row = rows.first();
            Ok::<_, pgrx::spi::Error>((row.get::<i32>(1)?, row.get::<String>(2)?, row.get::<i32>(3)?))
        })
    })
    .unwrap_or_else(|e| spi_error(e).raise());
    match kind.as_deref() {
        None => WardenError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("subscription \"{name}\" does not exist"),
        )
        .hint("warden.subscribe(name, pattern) without a handler makes a pull subscription.")
        .raise(),
        Some("push") => WardenError::invalid_parameter(format!(
            "subscription \"{name}\" has a handler: the worker delivers its messages"
        ))
        .hint("Claim from a subscription made without a handler.")
        .raise(),
        Some("denied") => {
            WardenError::privilege(format!("this role may not consume subscription \"{name}\""))
                .detail("Only members of the subscription's consumer role may claim its messages.")
                .raise()
        }
        Some("paused") => None,
        _ => found.map(|id| (id, max_attempts.unwrap_or(1))),
    }
}

#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn claim(
    subscription: Option<&str>,
    batch: Option<i32>,
    visibility: Option<Interval>,
    ack: Option<Vec<Option<Uuid>>>,
) -> TableIterator<
    'static,
    (
        name!(lease, Uuid),
        name!(msg, pgrx::composite_type!('static, "warden.message")),
    ),
> {
    let name = not_null(subscription, "subscription");
    let batch = not_null(batch, "batch");
    if !(1..=MAX_BATCH).contains(&batch) {
        WardenError::invalid_parameter(format!("batch must be between 1 and {MAX_BATCH}")).raise();
    }
    let visibility = visibility_us(visibility, "visibility");
    // the previous batch's leases first: a consumer loop needs one
    // statement and one commit per batch, as a DELETE ... SKIP LOCKED
    // queue does
    // the subscription first: a claim refused for it acknowledges nothing
    let subscription = pull_subscription(name);
    if let Some(leases) = ack {
        let held = leases
            .iter()
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let acked = ack_leases(&leases);
        if (acked as usize) < held {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_WARNING,
                format!(
                    "{} of {held} leases passed to ack no longer held their message (lapsed, or not yours): the next claimer gets it",
                    held - acked as usize
                ),
            )
            .hint("Handle a message within its visibility, or warden.extend the lease; warden.ack returns how many leases still held their message.")
            .warn();
        }
    }
    let Some((sid, max_attempts)) = subscription else {
        return TableIterator::new(Vec::new());
    };
    let scope = scope();
    super::low_water::note_claim(sid);
    // one nonce per claim: each lease token is (subscription, delivery,
    // nonce), so every claim's tokens are fresh
    let nonce = {
        let mut b = [0u8; 4];
        if warden_core::crypto::fill_random(&mut b).is_err() {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
                "could not draw a lease nonce from the system's random source",
            )
            .raise();
        }
        i32::from_le_bytes(b)
    };
    let mut rows = as_superuser(|| {
        // the subscription's deliveries in id order from its low-water
        // mark, whatever the statistics say: a sort of all of them (the
        // plan stale statistics of a table that grew fast lead to) costs
        // every claim the whole backlog; the rows locked are updated by
        // their ctid (no second index descent: they stay locked, so the
        // ctid is theirs until this transaction ends)
        crate::guc::plan_for_index_order();
        pgrx::Spi::connect_mut(|client| {
            let rows = crate::kept_plans::update(
                client,
                "WITH c AS (
                   SELECT d.ctid AS tid
                     FROM warden.outbox_deliveries d
                    WHERE d.subscription_id = $1 AND d.id >= $6
                      AND d.next_at <= pg_catalog.clock_timestamp() AND d.failed_at IS NULL
                      AND (d.lease IS NULL OR d.lease_until <= pg_catalog.clock_timestamp())
                      AND d.attempts + (d.lease IS NOT NULL)::pg_catalog.int4 < $7
                      AND ($4 OR d.tenant IS NOT DISTINCT FROM $5)
                      AND (d.ordered_key IS NULL OR NOT EXISTS (
                            SELECT FROM warden.outbox_deliveries e
                             WHERE e.subscription_id = d.subscription_id AND e.ordered_key = d.ordered_key
                               AND e.id < d.id AND e.failed_at IS NULL))
                    ORDER BY d.id
                    LIMIT $2
                      FOR UPDATE OF d SKIP LOCKED)
                 UPDATE warden.outbox_deliveries d
                    SET attempts = d.attempts + (d.lease IS NOT NULL)::pg_catalog.int4,
                        last_error = CASE WHEN d.lease IS NOT NULL THEN 'lease lapsed' ELSE d.last_error END,
                        lease = $9,
                        lease_until = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => $3::pg_catalog.float8 / 1000000),
                        first_attempt_at = COALESCE(d.first_attempt_at, pg_catalog.clock_timestamp()),
                        last_attempt_at = pg_catalog.clock_timestamp()
                   FROM c, warden.outbox_messages m
                  WHERE d.ctid = c.tid AND m.id = d.message_id
                 RETURNING d.id, d.lease,
                           ROW(m.id, m.topic, m.key, m.payload, m.headers, m.tenant, m.published_at,
                               d.attempts + 1, $8::pg_catalog.text)::warden.message",
                None,
                &[
                    sid.into(),
                    (batch as i64).into(),
                    visibility.into(),
                    scope.all.into(),
                    scope.tenant.clone().into(),
                    super::low_water::mark(sid).into(),
                    max_attempts.into(),
                    name.into(),
                    nonce.into(),
                ],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let id = row.get::<i64>(1)?.unwrap_or(0);
                let nonce = row.get::<i32>(2)?.unwrap_or(0);
                if let Some(msg) = row.get::<pgrx::composite_type!('static, "warden.message")>(3)? {
                    out.push((id, Uuid::from_bytes(lease_token(sid, id, nonce)), msg));
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })
    .unwrap_or_else(|e| spi_error(e).raise());
    // in the subscription's order
    rows.sort_by_key(|r| r.0);
    TableIterator::new(rows.into_iter().map(|(_, lease, msg)| (lease, msg)))
}

/// The leases as (subscription ids, delivery ids, nonces); NULLs skipped.
fn split_leases(leases: &[Option<Uuid>]) -> (Vec<i32>, Vec<i64>, Vec<i32>) {
    let mut subs = Vec::with_capacity(leases.len());
    let mut ids = Vec::with_capacity(leases.len());
    let mut nonces = Vec::with_capacity(leases.len());
    for lease in leases.iter().flatten() {
        let (s, i, n) = parse_lease(lease.as_bytes());
        subs.push(s);
        ids.push(i);
        nonces.push(n);
    }
    (subs, ids, nonces)
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn ack(leases: Option<Vec<Option<Uuid>>>) -> i32 {
    ack_leases(&not_null(leases, "leases"))
}

/// Deletes the deliveries these leases still hold; how many.
fn ack_leases(leases: &[Option<Uuid>]) -> i32 {
    if leases.len() > MAX_ACK {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("at most {MAX_ACK} leases per ack"),
        )
        .hint("Acknowledge in batches.")
        .raise();
    }
    let (subs, ids, nonces) = split_leases(leases);
    if ids.is_empty() {
        return 0;
    }
    let scope = scope();
    let caller = me();
    let (count, acked_subs) = as_superuser(|| {
        pgrx::Spi::connect_mut(|client| {
            let rows = crate::kept_plans::update(
                client,
                "WITH a AS (
                   DELETE FROM warden.outbox_deliveries d
                    USING ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]), pg_catalog.unnest($2::pg_catalog.int8[]),
                                     pg_catalog.unnest($3::pg_catalog.int4[])) l(sid, id, nonce)
                    WHERE d.subscription_id = l.sid AND d.id = l.id AND d.lease = l.nonce
                      AND d.lease_until > pg_catalog.clock_timestamp()
                      AND ($4 OR d.tenant IS NOT DISTINCT FROM $5)
                      AND d.subscription_id = ANY (ARRAY(
                            SELECT c.id FROM warden.outbox_subscriptions c
                             WHERE c.id = ANY ($1) AND c.handler IS NULL
                               AND (c.consumer IS NULL OR pg_catalog.pg_has_role($6, c.consumer, 'USAGE'))))
                   RETURNING d.subscription_id)
                 SELECT pg_catalog.count(*)::pg_catalog.int4, pg_catalog.array_agg(DISTINCT a.subscription_id) FROM a",
                Some(1),
                &[
                    subs.into(),
                    ids.into(),
                    nonces.into(),
                    scope.all.into(),
                    scope.tenant.into(),
                    caller.into(),
                ],
            )?;
            let row = rows.first();
            Ok::<_, pgrx::spi::Error>((
                row.get::<i32>(1)?.unwrap_or(0),
                row.get::<Vec<i32>>(2)?.unwrap_or_default(),
            ))
        })
    })
    .unwrap_or_else(|e| spi_error(e).raise());
    if !acked_subs.is_empty() {
        as_superuser(|| super::mark_delivered(&acked_subs)).unwrap_or_else(|e| e.raise());
    }
    count
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn nack(lease: Option<Uuid>, error: Option<&str>, retry_after: Option<Interval>) -> bool {
    let lease = not_null(lease, "lease");
    let retry_after_us = retry_after.map(|r| {
        let us = r.as_micros();
        if !(0..=MAX_RETRY_AFTER_US).contains(&us) {
            WardenError::invalid_parameter("retry_after must be between 0 and 7 days")
                .hint("NULL retries after the subscription's backoff.")
                .raise();
        }
        us as i64
    });
    let (sid, id, nonce) = parse_lease(lease.as_bytes());
    let scope = scope();
    let caller = me();
    let error = error.unwrap_or("nacked by the consumer");
    as_superuser(|| -> Result<bool, WardenError> {
        let held = pgrx::Spi::connect_mut(|client| {
            let rows = client.update(
                "SELECT d.attempts, s.max_attempts, m.topic = 'warden.dead_letter',
                        s.backoff, s.max_backoff
                   FROM warden.outbox_deliveries d
                   JOIN warden.outbox_subscriptions s ON s.id = d.subscription_id
                   JOIN warden.outbox_messages m ON m.id = d.message_id
                  WHERE d.subscription_id = $1 AND d.id = $2 AND d.lease = $3
                    AND d.lease_until > pg_catalog.clock_timestamp()
                    AND ($4 OR d.tenant IS NOT DISTINCT FROM $5)
                    AND EXISTS (SELECT FROM warden.outbox_subscriptions c
                                   WHERE c.id = d.subscription_id AND c.handler IS NULL
                                     AND (c.consumer IS NULL OR pg_catalog.pg_has_role($6, c.consumer, 'USAGE')))
                    FOR UPDATE OF d",
                Some(1),
                &[
                    sid.into(),
                    id.into(),
                    nonce.into(),
                    scope.all.into(),
                    scope.tenant.clone().into(),
                    caller.into(),
                ],
            )?;
            if rows.is_empty() {
                return Ok::<_, pgrx::spi::Error>(None);
            }
            let row = rows.first();
            Ok(Some((
                row.get::<i32>(1)?.unwrap_or(0),
                row.get::<i32>(2)?.unwrap_or(1),
                row.get::<bool>(3)?.unwrap_or(false),
                super::micros(row.get::<Interval>(4)?),
                super::micros(row.get::<Interval>(5)?),
            )))
        })
        .map_err(spi_error)?;
        let Some((attempts, max_attempts, is_dead_letter, backoff_us, max_backoff_us)) = held
        else {
            return Ok(false);
        };
        record_failure(&Failure {
            subscription_id: sid,
            id,
            failures: attempts + 1,
            max_attempts,
            topic_is_dead_letter: is_dead_letter,
            backoff_us,
            max_backoff_us,
            error,
            retry_after_us,
        })?;
        Ok(true)
    })
    .unwrap_or_else(|e| e.raise())
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn extend(lease: Option<Uuid>, visibility: Option<Interval>) -> bool {
    let lease = not_null(lease, "lease");
    let visibility = visibility_us(visibility, "visibility");
    let (sid, id, nonce) = parse_lease(lease.as_bytes());
    let scope = scope();
    let caller = me();
    as_superuser(|| {
        super::write_one::<bool>(
            "UPDATE warden.outbox_deliveries d
                SET lease_until = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => $4::pg_catalog.float8 / 1000000)
              WHERE d.subscription_id = $1 AND d.id = $2 AND d.lease = $3
                AND d.lease_until > pg_catalog.clock_timestamp()
                AND ($5 OR d.tenant IS NOT DISTINCT FROM $6)
                AND EXISTS (SELECT FROM warden.outbox_subscriptions c
                                   WHERE c.id = d.subscription_id AND c.handler IS NULL
                                     AND (c.consumer IS NULL OR pg_catalog.pg_has_role($7, c.consumer, 'USAGE')))
              RETURNING true",
            &[
                sid.into(),
                id.into(),
                nonce.into(),
                visibility.into(),
                scope.all.into(),
                scope.tenant.into(),
                caller.into(),
            ],
        )
    })
    .unwrap_or_else(|e| spi_error(e).raise())
    .unwrap_or(false)
}

/// How many deliveries of each pull subscription one sweep looks at.
const SWEEP_WINDOW: i64 = 50_000;

/// Dead-letters (or fails) pull deliveries whose lease lapsed on their
/// last allowed attempt: no claim takes them again. Run by the worker
/// every few seconds. Each sweep reads a window of SWEEP_WINDOW
/// deliveries per pull subscription (an index range, not the whole
/// backlog), starting where `from` says (the low-water mark, or where the
/// last sweep's window ended); returns where the next one starts: after
/// a full window, its end; after the last, nothing (back to the mark).
/// Every delivery is looked at within backlog / SWEEP_WINDOW sweeps.
pub(super) fn dead_letter_lapsed_leases(
    from: &[(i32, i64)],
) -> Result<Vec<(i32, i64)>, WardenError> {
    crate::guc::plan_for_index_order();
    let sids: Vec<i32> = from.iter().map(|m| m.0).collect();
    let starts: Vec<i64> = from.iter().map(|m| m.1).collect();
    let windows = pgrx::Spi::connect(|client| {
        crate::kept_plans::select(
            client,
            "SELECT s.id, b.lo, w.hi, w.n
               FROM warden.outbox_subscriptions s
              CROSS JOIN LATERAL (
                    SELECT COALESCE((SELECT w.start FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]),
                                                                    pg_catalog.unnest($2::pg_catalog.int8[])) w(sid, start)
                                      WHERE w.sid OPERATOR(pg_catalog.=) s.id), 0) AS lo) b
              CROSS JOIN LATERAL (
                    SELECT pg_catalog.max(e.id) AS hi, pg_catalog.count(*) AS n
                      FROM (SELECT e.id FROM warden.outbox_deliveries e
                             WHERE e.subscription_id OPERATOR(pg_catalog.=) s.id
                               AND e.id OPERATOR(pg_catalog.>=) b.lo
                             ORDER BY e.id LIMIT $3) e) w
              WHERE s.handler IS NULL AND w.n OPERATOR(pg_catalog.>) 0",
            None,
            &[sids.into(), starts.into(), SWEEP_WINDOW.into()],
        )?
        .map(|row| {
            Ok((
                row.get::<i32>(1)?.unwrap_or(0),
                row.get::<i64>(2)?.unwrap_or(0),
                row.get::<i64>(3)?.unwrap_or(0),
                row.get::<i64>(4)?.unwrap_or(0),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)?;
    let next: Vec<(i32, i64)> = windows
        .iter()
        .filter(|w| w.3 >= SWEEP_WINDOW)
        .map(|w| (w.0, w.2 + 1))
        .collect();
    let sids: Vec<i32> = windows.iter().map(|w| w.0).collect();
    let los: Vec<i64> = windows.iter().map(|w| w.1).collect();
    let his: Vec<i64> = windows.iter().map(|w| w.2).collect();
    let lapsed = pgrx::Spi::connect_mut(|client| {
        crate::kept_plans::update(
            client,
            "SELECT d.subscription_id, d.id, d.attempts, s.max_attempts,
                    m.topic OPERATOR(pg_catalog.=) 'warden.dead_letter'
               FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]), pg_catalog.unnest($2::pg_catalog.int8[]),
                               pg_catalog.unnest($3::pg_catalog.int8[])) w(sid, lo, hi)
               JOIN warden.outbox_subscriptions s ON s.id OPERATOR(pg_catalog.=) w.sid
               JOIN warden.outbox_deliveries d
                 ON d.subscription_id OPERATOR(pg_catalog.=) w.sid
                AND d.id OPERATOR(pg_catalog.>=) w.lo AND d.id OPERATOR(pg_catalog.<=) w.hi
               JOIN warden.outbox_messages m ON m.id OPERATOR(pg_catalog.=) d.message_id
              WHERE s.handler IS NULL AND d.lease IS NOT NULL AND d.failed_at IS NULL
                AND d.lease_until OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()
                AND d.attempts OPERATOR(pg_catalog.+) 1 OPERATOR(pg_catalog.>=) s.max_attempts
              LIMIT 100
                FOR UPDATE OF d SKIP LOCKED",
            None,
            &[sids.into(), los.into(), his.into()],
        )?
            .map(|row| {
                Ok((
                    row.get::<i32>(1)?.unwrap_or(0),
                    row.get::<i64>(2)?.unwrap_or(0),
                    row.get::<i32>(3)?.unwrap_or(0),
                    row.get::<i32>(4)?.unwrap_or(1),
                    row.get::<bool>(5)?.unwrap_or(false),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)?;
    // a full batch may have left some in these windows: look again there
    let next = if lapsed.len() >= 100 {
        from.to_vec()
    } else {
        next
    };
    for (sid, id, attempts, max_attempts, is_dead_letter) in lapsed {
        let recorded = record_failure(&Failure {
            subscription_id: sid,
            id,
            failures: attempts + 1,
            max_attempts,
            topic_is_dead_letter: is_dead_letter,
            backoff_us: 0,
            max_backoff_us: 0,
            error: "lease lapsed",
            retry_after_us: None,
        })?;
        debug_assert!(!matches!(recorded, Recorded::Retry(_)));
    }
    Ok(next)
}

extension_sql!(
    r#"
CREATE FUNCTION warden.claim(subscription text, batch integer DEFAULT 10, visibility interval DEFAULT '30 seconds',
                             ack uuid[] DEFAULT NULL)
  RETURNS TABLE(lease uuid, msg warden.message)
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'claim_wrapper';
CREATE FUNCTION warden.ack(leases uuid[]) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ack_wrapper';
CREATE FUNCTION warden.nack(lease uuid, error text, retry_after interval DEFAULT NULL) RETURNS boolean
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'nack_wrapper';
CREATE FUNCTION warden.extend(lease uuid, visibility interval) RETURNS boolean
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'extend_wrapper';
COMMENT ON FUNCTION warden.claim(text, integer, interval, uuid[]) IS
  'Leases up to batch due messages of a pull subscription (of the current tenant) until visibility runs out; each comes with a fresh lease token for ack, nack and extend. With ack, first acknowledges those leases as warden.ack does (a warning when some no longer held their message), so a consumer loop needs one statement per batch.';
COMMENT ON FUNCTION warden.ack(uuid[]) IS
  'Marks the messages of these leases handled; returns how many leases still held their message (a lapsed lease counts 0: the message went to another claimer).';
COMMENT ON FUNCTION warden.nack(uuid, text, interval) IS
  'Gives a leased message back as failed: retried after retry_after or the backoff, a dead letter after max_attempts. False when the lease had lapsed.';
COMMENT ON FUNCTION warden.extend(uuid, interval) IS
  'Keeps a lease for visibility more from now. False when it had lapsed.';
"#,
    name = "outbox_pull",
    requires = ["outbox_tables"],
);
