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
//! Where a lease lives: a claim on an unordered subscription moves the
//! deliveries it takes out of `warden.outbox_deliveries` into one row of
//! `warden.outbox_leases` (per tenant), and an ack deletes that row: a
//! message costs one row removal and a claim's share of one insert and
//! one delete, as a `DELETE ... SKIP LOCKED` queue's message costs one
//! removal; and what other consumers hold is no longer in the way of the
//! next claim (nor holds the low-water mark back). A lapsed or nacked
//! delivery goes back to the table under a fresh id; extend gives it a
//! lease row of its own. An ordered subscription's claim leases the
//! deliveries in their rows: a key's next delivery waits while one is
//! held, which needs the held one in the table.
//!
//! Tenants: a consumer sees the messages of its current tenant (or, with
//! no tenant set, the messages published without one); a warden_admin
//! member with no tenant set sees all. A lease of another tenant's
//! message matches nothing.

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::pg_sys;
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

/// A pull subscription as a claim needs it.
struct PullSubscription {
    id: i32,
    max_attempts: i32,
    /// Ordered: a claim leases deliveries in their rows (a key's next
    /// waits for the one held); otherwise it moves them to a lease row.
    ordered: bool,
}

/// The pull subscription `name`, or None when it is paused.
fn pull_subscription(name: &str) -> Option<PullSubscription> {
    // before the switch to pg_warden's rights
    let caller = me();
    // one row, NULLs when there is no such subscription
    let (found, kind, max_attempts, ordered) = as_superuser(|| {
        pgrx::Spi::connect(|client| {
            let rows = crate::kept_plans::select(
                client,
                "SELECT s.id,
                        CASE WHEN s.id IS NULL THEN NULL
                             WHEN s.handler IS NOT NULL THEN 'push'
                             WHEN s.consumer IS NOT NULL AND NOT pg_catalog.pg_has_role($2, s.consumer, 'USAGE') THEN 'denied'
                             WHEN s.paused THEN 'paused' ELSE 'pull' END,
                        s.max_attempts, s.ordered
                   FROM (SELECT) one LEFT JOIN warden.outbox_subscriptions s ON s.name = $1",
                Some(1),
                &[name.into(), caller.into()],
            )?;
            let row = rows.first();
            Ok::<_, pgrx::spi::Error>((
                row.get::<i32>(1)?,
                row.get::<String>(2)?,
                row.get::<i32>(3)?,
                row.get::<bool>(4)?,
            ))
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
        _ => found.map(|id| PullSubscription {
            id,
            max_attempts: max_attempts.unwrap_or(1),
            ordered: ordered.unwrap_or(false),
        }),
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
    let Some(PullSubscription {
        id: sid,
        max_attempts,
        ordered,
    }) = subscription
    else {
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
    let mut mark = super::low_water::mark(sid);
    if !ordered {
        // leases of this subscription that lapsed go back to the table
        // first, so that this claim can take them
        let now = crate::workers::now_us();
        if let Some((from, seen)) = super::low_water::lapsed_leases_from(sid, now) {
            match as_superuser(|| return_lapsed_leases(sid, from, max_attempts))
                .unwrap_or_else(|e| e.raise())
            {
                Some(lowest) => mark = mark.min(lowest),
                None => super::low_water::probed(sid, seen, now),
            }
        }
    }
    let args = [
        sid.into(),
        (batch as i64).into(),
        visibility.into(),
        scope.all.into(),
        scope.tenant.clone().into(),
        mark.into(),
        max_attempts.into(),
        name.into(),
        nonce.into(),
    ];
    let (mut rows, until) = as_superuser(|| {
        // the subscription's deliveries in id order from its low-water
        // mark, whatever the statistics say: a sort of all of them (the
        // plan stale statistics of a table that grew fast lead to) costs
        // every claim the whole backlog
        crate::guc::plan_for_index_order();
        pgrx::Spi::connect_mut(|client| {
            if ordered {
                claim_in_rows(client, sid, nonce, &args)
            } else {
                claim_to_lease_rows(
                    client,
                    sid,
                    nonce,
                    batch as usize,
                    (visibility, name),
                    &args,
                )
            }
        })
    })
    .unwrap_or_else(|e| spi_error(e).raise());
    if let Some(until) = until {
        super::low_water::note_lease(sid, pg_sys::TimestampTz::from(until));
    }
    // in the subscription's order
    rows.sort_by_key(|r| r.0);
    TableIterator::new(rows.into_iter().map(|(_, lease, msg)| (lease, msg)))
}

type Message = pgrx::composite_type!('static, "warden.message");

/// What a claim took: (place in the subscription's order, lease token,
/// message), and the earliest end of its leases.
type Claimed = (Vec<(i64, Uuid, Message)>, Option<TimestampWithTimeZone>);

/// An ordered subscription's claim (`CLAIM_IN_ROW`).
fn claim_in_rows(
    client: &mut pgrx::spi::SpiClient,
    sid: i32,
    nonce: i32,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Claimed, pgrx::spi::Error> {
    let rows = crate::kept_plans::update(client, CLAIM_IN_ROW, None, args)?;
    leased(rows, sid, nonce)
}

/// A claim statement's rows (lease id, place in the subscription's
/// order, message, when the leases end) as what the claim took.
fn leased(
    rows: pgrx::spi::SpiTupleTable,
    sid: i32,
    nonce: i32,
) -> Result<Claimed, pgrx::spi::Error> {
    let mut out = Vec::with_capacity(rows.len());
    let mut until = None;
    for row in rows {
        let id = row.get::<i64>(1)?.unwrap_or(0);
        let place = row.get::<i64>(2)?.unwrap_or(0);
        if let Some(msg) = row.get::<Message>(3)? {
            out.push((place, Uuid::from_bytes(lease_token(sid, id, nonce)), msg));
        }
        until = until.or(row.get::<TimestampWithTimeZone>(4)?);
    }
    Ok((out, until))
}

/// A delivery row an unordered claim locked.
struct Locked {
    id: i64,
    message_id: i64,
    /// A group's messages; empty for a single row.
    group: Vec<i64>,
    tenant: Option<String>,
    attempts: i32,
    first_attempt_at: Option<TimestampWithTimeZone>,
}

/// Any other subscription's claim: locks the deliveries it takes, a few
/// rows at a time, until it has `batch` messages (a group row holds up to
/// a hundred: locking `batch` rows at once would hold other consumers off
/// groups this claim does not need), then moves them out of the table
/// into one lease row per tenant (`TAKE_TO_LEASE_ROWS`). A group's
/// messages go into the lease under their negated message ids; a group
/// taken in part keeps the rest.
fn claim_to_lease_rows(
    client: &mut pgrx::spi::SpiClient,
    sid: i32,
    nonce: i32,
    batch: usize,
    (visibility, name): (i64, &str),
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Claimed, pgrx::spi::Error> {
    let mut locked: Vec<Locked> = Vec::new();
    let mut messages = 0usize;
    {
        let mut cursor = crate::kept_plans::open_cursor(client, CLAIMABLE_ROWS, args)?;
        let mut fetch = 1;
        while messages < batch {
            let rows = cursor.fetch(fetch)?;
            if rows.is_empty() {
                break;
            }
            let mut last_was_group = false;
            for row in rows {
                let group = row.get::<Vec<i64>>(3)?.unwrap_or_default();
                messages += group.len().max(1);
                last_was_group = !group.is_empty();
                locked.push(Locked {
                    id: row.get::<i64>(1)?.unwrap_or(0),
                    message_id: row.get::<i64>(2)?.unwrap_or(0),
                    group,
                    tenant: row.get::<String>(4)?,
                    attempts: row.get::<i32>(5)?.unwrap_or(0),
                    first_attempt_at: row.get::<TimestampWithTimeZone>(6)?,
                });
            }
            // after a group one row at a time; after single rows twice as
            // many as last time, up to what is still needed: a fetch
            // locks no more groups than the single rows before it
            fetch = if last_was_group {
                1
            } else {
                (fetch * 2).min(batch.saturating_sub(messages).max(1) as libc::c_long)
            };
        }
    }
    if locked.is_empty() {
        return Ok((Vec::new(), None));
    }
    // what the claim takes, in the subscription's order
    let mut whole: Vec<i64> = Vec::new();
    let (mut part, mut rest, mut rest_lowest) = (0i64, Vec::<i64>::new(), 0i64);
    let mut taken_ids: Vec<i64> = Vec::new();
    let mut taken_messages: Vec<i64> = Vec::new();
    let mut taken_tenants: Vec<Option<String>> = Vec::new();
    let mut taken_attempts: Vec<i32> = Vec::new();
    let mut taken_first: Vec<Option<TimestampWithTimeZone>> = Vec::new();
    let mut taken_rows: Vec<i64> = Vec::new();
    for row in &locked {
        let room = batch - taken_ids.len();
        if room == 0 {
            // fetched beyond the batch: stays locked, untouched, until
            // this transaction ends
            break;
        }
        let members: Vec<(i64, i64)> = if row.group.is_empty() {
            vec![(row.id, row.message_id)]
        } else {
            row.group.iter().map(|&m| (-m, m)).collect()
        };
        let take = members.len().min(room);
        if take == members.len() {
            whole.push(row.id);
        } else {
            part = row.id;
            rest = members[take..].iter().map(|&(_, m)| m).collect();
            rest_lowest = rest.iter().copied().min().unwrap_or(0);
        }
        for &(id, message) in &members[..take] {
            taken_ids.push(id);
            taken_messages.push(message);
            taken_tenants.push(row.tenant.clone());
            taken_attempts.push(row.attempts);
            taken_first.push(row.first_attempt_at);
            taken_rows.push(row.id);
        }
    }
    let rest_group = (rest.len() > 1).then_some(rest);
    let rows = crate::kept_plans::update(
        client,
        TAKE_TO_LEASE_ROWS,
        None,
        &[
            sid.into(),
            whole.into(),
            part.into(),
            rest_group.into(),
            rest_lowest.into(),
            taken_ids.into(),
            taken_messages.into(),
            taken_tenants.into(),
            taken_attempts.into(),
            taken_first.into(),
            taken_rows.into(),
            visibility.into(),
            name.into(),
            nonce.into(),
        ],
    )?;
    leased(rows, sid, nonce)
}

/// The deliveries a claim may take: due, not failed for good, not held
/// by a live lease, with attempts left (a lapsed in-row lease counts as
/// one), of the caller's tenant, from the subscription's low-water mark
/// in id order. An ordered claim then changes the rows locked by their
/// ctid (no second index descent: they stay locked, so the ctid is theirs until
/// this transaction ends).
macro_rules! claimable {
    ($columns:literal, $ordered_check:literal) => {
        concat!(
            "SELECT ",
            $columns,
            "
               FROM warden.outbox_deliveries d
              WHERE d.subscription_id = $1 AND d.id >= $6
                AND d.next_at <= pg_catalog.clock_timestamp() AND d.failed_at IS NULL
                AND (d.lease IS NULL OR d.lease_until <= pg_catalog.clock_timestamp())
                AND d.attempts + (d.lease IS NOT NULL)::pg_catalog.int4 < $7
                AND ($4 OR d.tenant IS NOT DISTINCT FROM $5)",
            $ordered_check,
            "
              ORDER BY d.id
              LIMIT $2
                FOR UPDATE OF d SKIP LOCKED"
        )
    };
}

/// An ordered subscription's claim: leases each delivery in its row (a
/// key's next delivery waits while one is held). The look for an earlier
/// delivery of the key starts at the mark too: below it lie only the
/// entries of handled deliveries, which a held xmin horizon keeps.
const CLAIM_IN_ROW: &str = concat!(
    "WITH c AS (",
    claimable!(
        "d.ctid AS tid",
        "
                AND (d.ordered_key IS NULL OR NOT EXISTS (
                      SELECT FROM warden.outbox_deliveries e
                       WHERE e.subscription_id = d.subscription_id AND e.ordered_key = d.ordered_key
                         AND e.id >= $6 AND e.id < d.id AND e.failed_at IS NULL))"
    ),
    ")
     UPDATE warden.outbox_deliveries d
        SET attempts = d.attempts + (d.lease IS NOT NULL)::pg_catalog.int4,
            last_error = CASE WHEN d.lease IS NOT NULL THEN 'lease lapsed' ELSE d.last_error END,
            lease = $9,
            lease_until = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => $3::pg_catalog.float8 / 1000000),
            first_attempt_at = COALESCE(d.first_attempt_at, pg_catalog.clock_timestamp()),
            last_attempt_at = pg_catalog.clock_timestamp()
       FROM c, warden.outbox_messages m
      WHERE d.ctid = c.tid AND m.id = d.message_id
     RETURNING d.id, d.id,
               ROW(m.id, m.topic, m.key, m.payload, m.headers, m.tenant, m.published_at,
                   d.attempts + 1, $8::pg_catalog.text)::warden.message,
               NULL::pg_catalog.timestamptz"
);

/// The rows an unordered claim may take (`claim_to_lease_rows` fetches
/// them one by one): each delivery's or group's id, lowest message,
/// group, tenant, failed attempts (a lapsed in-row lease counts as one)
/// and first attempt.
const CLAIMABLE_ROWS: &str = claimable!(
    "d.id, d.message_id, d.message_ids, d.tenant,
            d.attempts + (d.lease IS NOT NULL)::pg_catalog.int4,
            COALESCE(d.first_attempt_at, pg_catalog.clock_timestamp())",
    ""
);

/// Moves what an unordered claim took out of the deliveries into one
/// lease row per tenant, so that an ack deletes one row, not one per
/// message, and the deliveries other consumers hold are not in the way of
/// the next claim: deletes the rows taken whole ($2), keeps the rest of
/// the group taken in part ($3: its id, or 0; $4 the rest, NULL for a
/// single message left, $5 its lowest), and leases the messages taken
/// (ids, messages, tenants, attempts, first attempts and their rows, $6
/// to $11) whose row the delete or update did change (the rows are
/// locked, so all of them). Returns each message with its lease id and
/// place in the claim, and when the leases end.
const TAKE_TO_LEASE_ROWS: &str = "
     WITH whole AS (
       DELETE FROM warden.outbox_deliveries d
        WHERE d.subscription_id = $1 AND d.id = ANY ($2::pg_catalog.int8[])
       RETURNING d.id),
     part AS (
       UPDATE warden.outbox_deliveries d
          SET message_ids = $4::pg_catalog.int8[], message_id = $5
        WHERE d.subscription_id = $1 AND d.id = $3
       RETURNING d.id),
     t AS (
       SELECT u.id, u.message_id, u.tenant, u.attempts, u.first_attempt_at, u.place
         FROM ROWS FROM (pg_catalog.unnest($6::pg_catalog.int8[]), pg_catalog.unnest($7::pg_catalog.int8[]),
                         pg_catalog.unnest($8::pg_catalog.text[]), pg_catalog.unnest($9::pg_catalog.int4[]),
                         pg_catalog.unnest($10::pg_catalog.timestamptz[]), pg_catalog.unnest($11::pg_catalog.int8[]))
              WITH ORDINALITY u(id, message_id, tenant, attempts, first_attempt_at, row_id, place)
        WHERE u.row_id IN (SELECT whole.id FROM whole UNION ALL SELECT part.id FROM part)),
     h AS (
       INSERT INTO warden.outbox_leases
              (subscription_id, nonce, tenant, lease_until, claimed_at, delivery_ids, message_ids, attempts, first_attempt_at)
       SELECT $1, $14, t.tenant,
              pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => $12::pg_catalog.float8 / 1000000),
              pg_catalog.clock_timestamp(),
              pg_catalog.array_agg(t.id ORDER BY t.place), pg_catalog.array_agg(t.message_id ORDER BY t.place),
              pg_catalog.array_agg(t.attempts ORDER BY t.place), pg_catalog.array_agg(t.first_attempt_at ORDER BY t.place)
         FROM t GROUP BY t.tenant
       RETURNING lease_until)
     SELECT t.id, t.place,
            ROW(m.id, m.topic, m.key, m.payload, m.headers, m.tenant, m.published_at,
                t.attempts + 1, $13::pg_catalog.text)::warden.message,
            (SELECT pg_catalog.min(h.lease_until) FROM h)
       FROM t JOIN warden.outbox_messages m ON m.id = t.message_id";

/// Gives the deliveries of `sid`'s lapsed lease rows (ending at or after
/// `from_us`, a hundred rows at most) back to the table under fresh ids,
/// the lapse counted as a failed attempt; those on their last attempt
/// become dead letters (or, for dead-letter messages, fail for good).
/// Concurrent callers skip each other's rows. The subscription is held
/// (`FOR KEY SHARE`) so that an `unsubscribe` cannot miss the deliveries
/// given back; one that is in progress is not waited for (nothing is given
/// back then). Returns the lowest id given out, after the subscription's
/// low-water mark was lowered to it. As pg_warden.
pub(super) fn return_lapsed_leases(
    sid: i32,
    from_us: i64,
    max_attempts: i32,
) -> Result<Option<i64>, WardenError> {
    if !hold_subscription(sid, true)? {
        return Ok(None);
    }
    let from = TimestampWithTimeZone::try_from(from_us.max(0)).ok();
    // a bound the index scan stops at (clock_timestamp() is volatile,
    // so only a filter: the scan would read every lease ending later,
    // and under a held xmin horizon every acknowledged one)
    let now = TimestampWithTimeZone::try_from(crate::workers::now_us()).ok();
    let rows = pgrx::Spi::connect_mut(|client| {
        crate::kept_plans::update(
            client,
            "WITH x AS (
               DELETE FROM warden.outbox_leases h
                WHERE h.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(
                      SELECT l.ctid FROM warden.outbox_leases l
                       WHERE l.subscription_id OPERATOR(pg_catalog.=) $1
                         AND l.lease_until OPERATOR(pg_catalog.>=) $2
                         AND l.lease_until OPERATOR(pg_catalog.<=) $4
                       ORDER BY l.lease_until LIMIT 100
                         FOR UPDATE SKIP LOCKED))
               RETURNING h.*),
             e AS (
               SELECT x.subscription_id, pg_catalog.nextval('warden.outbox_deliveries_id_seq'::pg_catalog.regclass) AS id,
                      u.message_id, x.tenant, u.attempts, x.lease_until, u.first_attempt_at, x.claimed_at,
                      u.attempts OPERATOR(pg_catalog.+) 1 OPERATOR(pg_catalog.>=) $3 AS last
                 FROM x, ROWS FROM (pg_catalog.unnest(x.delivery_ids), pg_catalog.unnest(x.message_ids),
                                    pg_catalog.unnest(x.attempts), pg_catalog.unnest(x.first_attempt_at))
                         WITH ORDINALITY u(id, message_id, attempts, first_attempt_at, place)
                ORDER BY x.lease_until, u.place),
             i AS (
               INSERT INTO warden.outbox_deliveries
                      (subscription_id, id, message_id, tenant, attempts, next_at, first_attempt_at,
                       last_attempt_at, last_error)
               SELECT e.subscription_id, e.id, e.message_id, e.tenant,
                      e.attempts OPERATOR(pg_catalog.+) CASE WHEN e.last THEN 0 ELSE 1 END,
                      e.lease_until, e.first_attempt_at, e.claimed_at, 'lease lapsed'
                 FROM e)
             SELECT e.id, e.attempts, m.topic OPERATOR(pg_catalog.=) 'warden.dead_letter', e.last
               FROM e JOIN warden.outbox_messages m ON m.id OPERATOR(pg_catalog.=) e.message_id
              WHERE e.last OR e.id OPERATOR(pg_catalog.=) (SELECT pg_catalog.min(f.id) FROM e f)",
            None,
            &[sid.into(), from.into(), max_attempts.into(), now.into()],
        )?
        .map(|row| {
            Ok((
                row.get::<i64>(1)?.unwrap_or(0),
                row.get::<i32>(2)?.unwrap_or(0),
                row.get::<bool>(3)?.unwrap_or(false),
                row.get::<bool>(4)?.unwrap_or(false),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)?;
    let lowest = rows.iter().map(|r| r.0).min();
    if let Some(id) = lowest {
        super::low_water::lower_mark(sid, id);
    }
    for &(id, attempts, is_dead_letter, _) in rows.iter().filter(|r| r.3) {
        record_failure(&Failure {
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
    }
    Ok(lowest)
}

/// Holds subscription `sid` (`FOR KEY SHARE`) until the transaction ends,
/// so that an `unsubscribe` waits for what this transaction gives back to
/// its deliveries; false when it is gone (or, with `skip`, being removed).
fn hold_subscription(sid: i32, skip: bool) -> Result<bool, WardenError> {
    let query = if skip {
        "SELECT true FROM warden.outbox_subscriptions s WHERE s.id OPERATOR(pg_catalog.=) $1 FOR KEY SHARE SKIP LOCKED"
    } else {
        "SELECT true FROM warden.outbox_subscriptions s WHERE s.id OPERATOR(pg_catalog.=) $1 FOR KEY SHARE"
    };
    pgrx::Spi::connect_mut(|client| {
        let rows = crate::kept_plans::update(client, query, Some(1), &[sid.into()])?;
        Ok::<_, pgrx::spi::Error>(!rows.is_empty())
    })
    .map_err(spi_error)
}

/// How far ahead the worker looks at lease ends: claims need not look
/// for lapsed leases before the first live one it saw in that window (or
/// its end), and the worker looks again well before then.
pub(super) const LEASE_LOOK_AHEAD_US: i64 = 1_000_000;
/// A claim's lease can commit after the worker looked where it ends: the
/// next look starts this far back.
const LEASE_COMMIT_LAG_US: i64 = 1_000_000;

/// The worker's look at the pull subscriptions' lease rows: for each, the
/// first lease ending between where the last look started (`from`;
/// missing: the start) and a second from now. Lapsed ones are given back
/// to the table here (a subscription nobody claims from still
/// dead-letters its last attempts); claims are told to look for lapsed
/// leases themselves from the first live end on. Each look reads the
/// index entries of the leases ending in its window only: under a held
/// xmin horizon, those of acknowledged leases stay, and a look from the
/// start would read them all. Returns where the next look starts, and
/// whether lapsed leases were left for the next look (it gives back a
/// thousand lease rows per subscription at most).
///
/// A look "from the start" (an empty `from`, now and then) is for a lease
/// row whose claim committed after a look had passed the time it ends
/// at. Such a claim was running at the previous look from the start or
/// began after it, and a lease ends after its claim's transaction began
/// (a claim writes, so it has an id): the look starts at `full_from`,
/// when the oldest transaction with an id then running began (None: at
/// the first entry of the index). From the first entry, under a held
/// horizon, it read every lease acknowledged since, half a million
/// entries after two minutes, once a minute.
pub(super) fn look_after_leases(
    from: &[(i32, i64)],
    full_from: Option<i64>,
) -> Result<(Vec<(i32, i64)>, bool), WardenError> {
    let now = crate::workers::now_us();
    let ahead = TimestampWithTimeZone::try_from(now + LEASE_LOOK_AHEAD_US).ok();
    // where a subscription with no entry in `from` starts: in a look from
    // the start, `full_from`; otherwise it is new since the last look,
    // and its whole range is read
    let start_us = if from.is_empty() { full_from } else { None };
    let start = start_us.and_then(|us| TimestampWithTimeZone::try_from(us).ok());
    // before the look: a claim that takes a lease meanwhile lowers it
    let seen = super::low_water::all_lapse_at();
    let subs: Vec<(i32, i32, Option<i64>)> = pgrx::Spi::connect(|client| {
        crate::kept_plans::select(
            client,
            "SELECT s.id, s.max_attempts,
                    (SELECT h.lease_until FROM warden.outbox_leases h
                      WHERE h.subscription_id OPERATOR(pg_catalog.=) s.id
                        AND h.lease_until OPERATOR(pg_catalog.>=) COALESCE(w.from_at, $4, '-infinity')
                        AND h.lease_until OPERATOR(pg_catalog.<=) $3
                      ORDER BY h.lease_until LIMIT 1)
               FROM warden.outbox_subscriptions s
               LEFT JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]), pg_catalog.unnest($2::pg_catalog.timestamptz[])) w(sid, from_at)
                 ON w.sid OPERATOR(pg_catalog.=) s.id
              WHERE s.handler IS NULL",
            None,
            &[
                from.iter().map(|f| f.0).collect::<Vec<i32>>().into(),
                from.iter()
                    .map(|f| TimestampWithTimeZone::try_from(f.1.max(0)).ok())
                    .collect::<Vec<_>>()
                    .into(),
                ahead.into(),
                start.into(),
            ],
        )?
        .map(|row| {
            Ok((
                row.get::<i32>(1)?.unwrap_or(0),
                row.get::<i32>(2)?.unwrap_or(1),
                row.get::<TimestampWithTimeZone>(3)?.map(pg_sys::TimestampTz::from),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)?;
    let mut next = Vec::with_capacity(subs.len());
    let mut left = false;
    for (sid, max_attempts, first) in subs {
        let start = from
            .iter()
            .find(|f| f.0 == sid)
            .map_or(start_us.unwrap_or(0).max(0), |f| f.1);
        if first.is_some_and(|at| at <= now) {
            let mut rounds = 0;
            while return_lapsed_leases(sid, start, max_attempts)?.is_some() {
                rounds += 1;
                if rounds == 10 {
                    left = true;
                    break;
                }
            }
        }
        let scan_from = first.unwrap_or(i64::MAX).min(now - LEASE_COMMIT_LAG_US);
        // a subscription with no entry yet gets one with lapse_at 0
        // (claims look) from the marks
        if let Some(&(_, was)) = seen.iter().find(|s| s.0 == sid) {
            let lapse_at = first.unwrap_or(now + LEASE_LOOK_AHEAD_US);
            super::low_water::set_lapse(sid, was, lapse_at, scan_from);
        }
        next.push((sid, scan_from));
    }
    Ok((next, left))
}

/// A delivery taken out of a live lease row.
struct Taken {
    message_id: i64,
    tenant: Option<String>,
    /// Failed attempts before the claim.
    attempts: i32,
    first_attempt_at: Option<TimestampWithTimeZone>,
    claimed_at: Option<TimestampWithTimeZone>,
}

/// Takes delivery `id` out of the live lease row of claim `nonce` of
/// subscription `sid` (the row goes when it was its last), if the caller
/// may use the lease; None when no live lease holds it. As pg_warden.
fn take_from_lease_row(
    sid: i32,
    id: i64,
    nonce: i32,
    scope: &Scope,
    caller: pg_sys::Oid,
) -> Result<Option<Taken>, WardenError> {
    // what is taken out goes back to the table or to a row of its own:
    // an unsubscribe must wait for it
    if !hold_subscription(sid, false)? {
        return Ok(None);
    }
    // the row by the primary key (see delete_whole_lease_rows)
    crate::guc::plan_for_index_order();
    pgrx::Spi::connect_mut(|client| {
        let rows = client.update(
            "SELECT p.ord, pg_catalog.cardinality(h.delivery_ids), h.message_ids[p.ord], h.tenant,
                    h.attempts[p.ord], h.first_attempt_at[p.ord], h.claimed_at, h.ctid::pg_catalog.text
               FROM warden.outbox_leases h
              CROSS JOIN LATERAL (SELECT pg_catalog.array_position(h.delivery_ids, $2) AS ord) p
              WHERE h.subscription_id = $1 AND h.nonce = $3 AND p.ord IS NOT NULL
                AND h.lease_until > pg_catalog.clock_timestamp()
                AND ($4 OR h.tenant IS NOT DISTINCT FROM $5)
                AND EXISTS (SELECT FROM warden.outbox_subscriptions c
                             WHERE c.id = h.subscription_id AND c.handler IS NULL
                               AND (c.consumer IS NULL OR pg_catalog.pg_has_role($6, c.consumer, 'USAGE')))
              ORDER BY h.id
                FOR UPDATE OF h",
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
            return Ok(None);
        }
        let row = rows.first();
        let ord = row.get::<i32>(1)?.unwrap_or(1);
        let last = row.get::<i32>(2)?.unwrap_or(1) <= 1;
        let taken = Taken {
            message_id: row.get::<i64>(3)?.unwrap_or(0),
            tenant: row.get::<String>(4)?,
            attempts: row.get::<i32>(5)?.unwrap_or(0),
            first_attempt_at: row.get::<TimestampWithTimeZone>(6)?,
            claimed_at: row.get::<TimestampWithTimeZone>(7)?,
        };
        // the row is locked by this transaction, so its ctid stays; the
        // key is checked too, so that a ctid could only ever miss (and a
        // miss takes nothing: no delivery goes back twice)
        let args = [
            row.get::<String>(8)?.unwrap_or_default().into(),
            sid.into(),
            nonce.into(),
            id.into(),
            ord.into(),
        ];
        let changed = if last {
            client.update(
                "DELETE FROM warden.outbox_leases h
                  WHERE h.ctid = $1::pg_catalog.tid
                    AND h.subscription_id = $2 AND h.nonce = $3 AND $4 = ANY (h.delivery_ids)
                  RETURNING true",
                None,
                &args[..4],
            )?
        } else {
            client.update(
                "UPDATE warden.outbox_leases h
                    SET delivery_ids = h.delivery_ids[:$5 - 1] || h.delivery_ids[$5 + 1:],
                        message_ids = h.message_ids[:$5 - 1] || h.message_ids[$5 + 1:],
                        attempts = h.attempts[:$5 - 1] || h.attempts[$5 + 1:],
                        first_attempt_at = h.first_attempt_at[:$5 - 1] || h.first_attempt_at[$5 + 1:]
                  WHERE h.ctid = $1::pg_catalog.tid
                    AND h.subscription_id = $2 AND h.nonce = $3 AND $4 = ANY (h.delivery_ids)
                  RETURNING true",
                None,
                &args,
            )?
        }
        .len();
        Ok::<_, pgrx::spi::Error>((changed == 1).then_some(taken))
    })
    .map_err(spi_error)
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
    // each lease once
    let mut given: Vec<(i32, i64, i32)> = leases
        .iter()
        .flatten()
        .map(|l| parse_lease(l.as_bytes()))
        .collect();
    given.sort_unstable();
    given.dedup();
    if given.is_empty() {
        return 0;
    }
    let scope = scope();
    let caller = me();
    let (count, acked_subs) = as_superuser(|| -> Result<(i32, Vec<i32>), WardenError> {
        // lease rows by their primary key, deliveries by theirs, whatever
        // the statistics of these fast-changing tables say
        crate::guc::plan_for_index_order();
        let mut count = 0;
        let mut acked_subs = Vec::new();
        // whole claims first (a consumer acknowledges what it claimed):
        // one lease row each
        let whole = delete_whole_lease_rows(&given, &scope, caller)?;
        if !whole.is_empty() {
            let covered: std::collections::HashSet<(i32, i64, i32)> = whole
                .iter()
                .flat_map(|(sid, nonce, ids)| ids.iter().map(move |id| (*sid, *id, *nonce)))
                .collect();
            count += covered.len() as i32;
            acked_subs.extend(whole.iter().map(|w| w.0));
            given.retain(|l| !covered.contains(l));
        }
        if given.is_empty() {
            return Ok((count, acked_subs));
        }
        // leases in delivery rows (ordered subscriptions)
        let in_row = delete_in_row_leases(&given, &scope, caller)?;
        count += in_row.len() as i32;
        acked_subs.extend(in_row.iter().map(|l| l.0));
        given.retain(|l| !in_row.contains(l));
        // part of a claim's leases: each taken out of its row
        for &(sid, id, nonce) in &given {
            if take_from_lease_row(sid, id, nonce, &scope, caller)?.is_some() {
                count += 1;
                acked_subs.push(sid);
            }
        }
        Ok((count, acked_subs))
    })
    .unwrap_or_else(|e| e.raise());
    if !acked_subs.is_empty() {
        let mut subs = acked_subs;
        subs.sort_unstable();
        subs.dedup();
        as_superuser(|| super::mark_delivered(&subs)).unwrap_or_else(|e| e.raise());
    }
    count
}

/// Columns of leases (subscription, delivery, nonce) for SQL.
fn lease_columns(leases: &[(i32, i64, i32)]) -> (Vec<i32>, Vec<i64>, Vec<i32>) {
    (
        leases.iter().map(|l| l.0).collect(),
        leases.iter().map(|l| l.1).collect(),
        leases.iter().map(|l| l.2).collect(),
    )
}

/// Deletes the live lease rows all of whose deliveries are in `leases`
/// and the caller may use; returns them (subscription, nonce, delivery
/// ids). Each claim's rows are found by their key (the lateral join,
/// kept apart by `OFFSET 0` so the planner cannot flatten and turn it
/// around): a join turned around read every lease row of the
/// subscription on every ack, which under a held xmin horizon are all
/// the acknowledged ones too. The same holds for a scan of the lapse
/// index (subscription, lease_until), which the planner picks when the
/// primary key (random nonces, so split pages) looks larger per live row:
/// it took acks from 0.2 to 10 ms within 90 s of a held horizon. `ORDER
/// BY l.id` leaves only the primary key without a sort (sorts are off).
/// A row changed meanwhile (a sibling lease extended or nacked) is left
/// to the caller's one-by-one path.
#[allow(clippy::type_complexity)]
fn delete_whole_lease_rows(
    leases: &[(i32, i64, i32)],
    scope: &Scope,
    caller: pg_sys::Oid,
) -> Result<Vec<(i32, i32, Vec<i64>)>, WardenError> {
    let (subs, ids, nonces) = lease_columns(leases);
    pgrx::Spi::connect_mut(|client| {
        crate::kept_plans::update(
            client,
            "WITH g AS (
               SELECT l.sid, l.nonce, pg_catalog.array_agg(l.id) AS ids
                 FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]), pg_catalog.unnest($2::pg_catalog.int8[]),
                                 pg_catalog.unnest($3::pg_catalog.int4[])) l(sid, id, nonce)
                GROUP BY l.sid, l.nonce)
             DELETE FROM warden.outbox_leases h
              WHERE h.ctid = ANY (ARRAY(
                      SELECT x.ctid FROM g CROSS JOIN LATERAL (
                             SELECT l.ctid FROM warden.outbox_leases l
                              WHERE l.subscription_id = g.sid AND l.nonce = g.nonce
                                AND l.delivery_ids <@ g.ids
                                AND l.lease_until > pg_catalog.clock_timestamp()
                                AND ($4 OR l.tenant IS NOT DISTINCT FROM $5)
                              ORDER BY l.id OFFSET 0) x
                       WHERE g.sid = ANY (ARRAY(
                             SELECT c.id FROM warden.outbox_subscriptions c
                              WHERE c.id = ANY ($1) AND c.handler IS NULL
                                AND (c.consumer IS NULL OR pg_catalog.pg_has_role($6, c.consumer, 'USAGE'))))))
                AND h.lease_until > pg_catalog.clock_timestamp()
             RETURNING h.subscription_id, h.nonce, h.delivery_ids",
            None,
            &[
                subs.into(),
                ids.into(),
                nonces.into(),
                scope.all.into(),
                scope.tenant.clone().into(),
                caller.into(),
            ],
        )?
        .map(|row| {
            Ok((
                row.get::<i32>(1)?.unwrap_or(0),
                row.get::<i32>(2)?.unwrap_or(0),
                row.get::<Vec<i64>>(3)?.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)
}

/// Deletes the deliveries that hold one of `leases` in their row (an
/// ordered subscription's) and the caller may use; returns those leases.
fn delete_in_row_leases(
    leases: &[(i32, i64, i32)],
    scope: &Scope,
    caller: pg_sys::Oid,
) -> Result<Vec<(i32, i64, i32)>, WardenError> {
    let (subs, ids, nonces) = lease_columns(leases);
    pgrx::Spi::connect_mut(|client| {
        crate::kept_plans::update(
            client,
            "DELETE FROM warden.outbox_deliveries d
              USING ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]), pg_catalog.unnest($2::pg_catalog.int8[]),
                               pg_catalog.unnest($3::pg_catalog.int4[])) l(sid, id, nonce)
              WHERE d.subscription_id = l.sid AND d.id = l.id AND d.lease = l.nonce
                AND d.lease_until > pg_catalog.clock_timestamp()
                AND ($4 OR d.tenant IS NOT DISTINCT FROM $5)
                AND d.subscription_id = ANY (ARRAY(
                      SELECT c.id FROM warden.outbox_subscriptions c
                       WHERE c.id = ANY ($1) AND c.handler IS NULL
                         AND (c.consumer IS NULL OR pg_catalog.pg_has_role($6, c.consumer, 'USAGE'))))
             RETURNING d.subscription_id, d.id, d.lease",
            None,
            &[
                subs.into(),
                ids.into(),
                nonces.into(),
                scope.all.into(),
                scope.tenant.clone().into(),
                caller.into(),
            ],
        )?
        .map(|row| {
            Ok((
                row.get::<i32>(1)?.unwrap_or(0),
                row.get::<i64>(2)?.unwrap_or(0),
                row.get::<i32>(3)?.unwrap_or(0),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)
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
            Ok(Some(Nacked {
                id,
                attempts: row.get::<i32>(1)?.unwrap_or(0),
                max_attempts: row.get::<i32>(2)?.unwrap_or(1),
                is_dead_letter: row.get::<bool>(3)?.unwrap_or(false),
                backoff_us: super::micros(row.get::<Interval>(4)?),
                max_backoff_us: super::micros(row.get::<Interval>(5)?),
            }))
        })
        .map_err(spi_error)?;
        let n = match held {
            Some(held) => held,
            // a delivery a lease row holds goes back to the table, under a
            // fresh id (the token is spent), to be retried
            None => match take_from_lease_row(sid, id, nonce, &scope, caller)? {
                Some(taken) => return_nacked(sid, &taken)?,
                None => return Ok(false),
            },
        };
        record_failure(&Failure {
            subscription_id: sid,
            id: n.id,
            failures: n.attempts + 1,
            max_attempts: n.max_attempts,
            topic_is_dead_letter: n.is_dead_letter,
            backoff_us: n.backoff_us,
            max_backoff_us: n.max_backoff_us,
            error,
            retry_after_us,
        })?;
        Ok(true)
    })
    .unwrap_or_else(|e| e.raise())
}

/// A nacked delivery, with what `record_failure` needs.
struct Nacked {
    id: i64,
    /// Failed attempts before this one.
    attempts: i32,
    max_attempts: i32,
    is_dead_letter: bool,
    backoff_us: i64,
    max_backoff_us: i64,
}

/// Puts a delivery taken out of its lease row back into the table under
/// a fresh id, as it was before the claim.
fn return_nacked(sid: i32, t: &Taken) -> Result<Nacked, WardenError> {
    pgrx::Spi::connect_mut(|client| {
        let rows = client.update(
            "WITH i AS (
               INSERT INTO warden.outbox_deliveries
                      (subscription_id, id, message_id, tenant, attempts, next_at, first_attempt_at, last_attempt_at)
               VALUES ($1, pg_catalog.nextval('warden.outbox_deliveries_id_seq'::pg_catalog.regclass), $2, $3, $4,
                       pg_catalog.clock_timestamp(), $5, $6)
               RETURNING id)
             SELECT i.id, s.max_attempts, m.topic = 'warden.dead_letter', s.backoff, s.max_backoff
               FROM i, warden.outbox_subscriptions s, warden.outbox_messages m
              WHERE s.id = $1 AND m.id = $2",
            Some(1),
            &[
                sid.into(),
                t.message_id.into(),
                t.tenant.clone().into(),
                t.attempts.into(),
                t.first_attempt_at.into(),
                t.claimed_at.into(),
            ],
        )?;
        let row = rows.first();
        Ok::<_, pgrx::spi::Error>(Nacked {
            id: row.get::<i64>(1)?.unwrap_or(0),
            attempts: t.attempts,
            max_attempts: row.get::<i32>(2)?.unwrap_or(1),
            is_dead_letter: row.get::<bool>(3)?.unwrap_or(false),
            backoff_us: super::micros(row.get::<Interval>(4)?),
            max_backoff_us: super::micros(row.get::<Interval>(5)?),
        })
    })
    .map_err(spi_error)
    .inspect(|n| super::low_water::lower_mark(sid, n.id))
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn extend(lease: Option<Uuid>, visibility: Option<Interval>) -> bool {
    let lease = not_null(lease, "lease");
    let visibility = visibility_us(visibility, "visibility");
    let (sid, id, nonce) = parse_lease(lease.as_bytes());
    let scope = scope();
    let caller = me();
    let in_row = as_superuser(|| {
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
                scope.tenant.clone().into(),
                caller.into(),
            ],
        )
    })
    .unwrap_or_else(|e| spi_error(e).raise())
    .unwrap_or(false);
    if in_row {
        return true;
    }
    // a delivery a lease row holds gets a row of its own, with the same
    // nonce (its token stays valid) and the new end
    let until = as_superuser(|| -> Result<Option<TimestampWithTimeZone>, WardenError> {
        let Some(t) = take_from_lease_row(sid, id, nonce, &scope, caller)? else {
            return Ok(None);
        };
        super::write_one::<TimestampWithTimeZone>(
            "INSERT INTO warden.outbox_leases
                    (subscription_id, nonce, tenant, lease_until, claimed_at, delivery_ids, message_ids, attempts, first_attempt_at)
             VALUES ($1, $2, $3, pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => $4::pg_catalog.float8 / 1000000),
                     $5, ARRAY[$6::pg_catalog.int8], ARRAY[$7::pg_catalog.int8], ARRAY[$8::pg_catalog.int4],
                     ARRAY[$9::pg_catalog.timestamptz])
             RETURNING lease_until",
            &[
                sid.into(),
                nonce.into(),
                t.tenant.clone().into(),
                visibility.into(),
                t.claimed_at.into(),
                id.into(),
                t.message_id.into(),
                t.attempts.into(),
                t.first_attempt_at.into(),
            ],
        )
        .map_err(spi_error)
    })
    .unwrap_or_else(|e| e.raise());
    match until {
        Some(until) => {
            super::low_water::note_lease(sid, pg_sys::TimestampTz::from(until));
            true
        }
        None => false,
    }
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
