//! `warden.audit_status` (one row: inbox, ring, lag, signing key, last
//! checkpoint) and `warden.audit_chains` (one row per chain: its head and
//! last checkpoint), for operators.

use pgrx::prelude::*;

use crate::error::WardenError;
use crate::privileged::as_superuser;

#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn audit_status_snapshot() -> TableIterator<
    'static,
    (
        name!(inbox_events, i64),
        name!(
            oldest_unchained_at,
            Option<pgrx::datum::TimestampWithTimeZone>
        ),
        name!(ring_events, i64),
        name!(ring_bytes, i64),
        name!(ring_capacity, i64),
        name!(ring_high_water, i64),
        name!(ring_pushed, i64),
        name!(ring_waits, i64),
        name!(signing_key, bool),
        name!(
            last_checkpoint_at,
            Option<pgrx::datum::TimestampWithTimeZone>
        ),
    ),
> {
    crate::preload::require("warden.audit_status");
    let (inbox, oldest) = as_superuser(|| {
        crate::spi_read::read_two::<i64, pgrx::datum::TimestampWithTimeZone>(
            "SELECT coalesce(pg_catalog.sum(coalesce(i.events, 1)), 0)::pg_catalog.int8,
                    pg_catalog.min(i.ts)
               FROM warden.audit_inbox i",
            &[],
        )
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot read the inbox: {e}")).raise());
    let last_checkpoint = as_superuser(|| {
        crate::spi_read::read_one::<pgrx::datum::TimestampWithTimeZone>(
            "SELECT pg_catalog.max(c.ts) FROM warden.audit_checkpoints c",
            &[],
        )
    })
    .unwrap_or_else(|e| {
        WardenError::prerequisite(format!("cannot read the checkpoints: {e}")).raise()
    });
    // SAFETY: plain read.
    let dboid = unsafe { pgrx::pg_sys::MyDatabaseId }.to_u32();
    let ring = crate::workers::my_database_slot().map(|slot| super::ring::stats(slot, dboid));
    let n = |v: Option<u64>| v.unwrap_or(0) as i64;
    TableIterator::once((
        inbox.unwrap_or(0),
        oldest,
        n(ring.as_ref().map(|r| r.records)),
        n(ring.as_ref().map(|r| r.used_bytes)),
        n(ring.as_ref().map(|r| r.capacity)),
        n(ring.as_ref().map(|r| r.high_water)),
        n(ring.as_ref().map(|r| r.pushed)),
        n(ring.as_ref().map(|r| r.waited_for_room)),
        crate::crypto::audit_public_key().is_some(),
        last_checkpoint,
    ))
}

extension_sql!(
    r#"
CREATE VIEW warden.audit_status AS
SELECT s.inbox_events, s.oldest_unchained_at,
       pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) s.oldest_unchained_at AS lag,
       s.ring_events, s.ring_bytes, s.ring_capacity, s.ring_high_water, s.ring_pushed, s.ring_waits,
       s.signing_key, s.last_checkpoint_at
  FROM warden.audit_status_snapshot() s;

-- one row per chain, found by skipping through the primary key
-- (chain, seq) instead of reading the whole log
CREATE VIEW warden.audit_chains WITH (security_invoker = true) AS
WITH RECURSIVE chains(chain) AS (
    (SELECT l.chain FROM warden.audit_log l ORDER BY l.chain LIMIT 1)
    UNION ALL
    SELECT (SELECT l.chain FROM warden.audit_log l
             WHERE l.chain OPERATOR(pg_catalog.>) c.chain ORDER BY l.chain LIMIT 1)
      FROM chains c WHERE c.chain IS NOT NULL
)
SELECT c.chain, h.tenant, h.seq AS last_seq, h.ts AS last_event_at,
       cp.seq AS last_checkpoint_seq, cp.ts AS last_checkpoint_at
  FROM chains c
  CROSS JOIN LATERAL (SELECT l.tenant, l.seq, l.ts FROM warden.audit_log l
                       WHERE l.chain OPERATOR(pg_catalog.=) c.chain ORDER BY l.seq DESC LIMIT 1) h
  LEFT JOIN LATERAL (SELECT k.seq, k.ts FROM warden.audit_checkpoints k
                      WHERE k.chain OPERATOR(pg_catalog.=) c.chain ORDER BY k.seq DESC LIMIT 1) cp ON true
 WHERE c.chain IS NOT NULL;

COMMENT ON FUNCTION warden.audit_status_snapshot() IS
  'The row of warden.audit_status, read now (the ring from shared memory).';
COMMENT ON VIEW warden.audit_status IS
  'The audit chain''s health: events waiting in the inbox and the oldest one''s age (lag), the durable ring''s depth, capacity, high-water mark and waits, whether a signing key exists, the last checkpoint.';
COMMENT ON VIEW warden.audit_chains IS
  'One row per audit chain the caller may read (row-level security applies): its tenant, last seq and event time, and its last signed checkpoint.';
"#,
    name = "audit_status_view",
    requires = [audit_status_snapshot, "audit_checkpoints_table"],
);
