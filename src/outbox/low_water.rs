//! Each subscription's low-water mark in shared memory: a delivery id no
//! delivery of the subscription lies below. Claims and the dispatcher
//! start their index scans there, not at the subscription's first index
//! entry: while a long transaction holds the xmin horizon, the entries
//! of handled (deleted) deliveries cannot be reclaimed, and a scan from
//! the start would wade through all of them on every claim (what makes a
//! SKIP LOCKED queue slow to a crawl under a held horizon).
//!
//! The worker is the only writer of its database's entries: it moves a
//! mark up from where it was (reading only the entries between the old
//! mark and the first live delivery, once, not once per claim), and
//! recomputes it from scratch now and then, for a delivery whose id was
//! drawn before a mark moved past it but committed after (a replay).
//! Readers only ever see a bound no live delivery lies below, or 0.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, Ordering};

use pgrx::pg_sys;

/// Subscriptions tracked across all databases; beyond that a
/// subscription has no mark (its scans start at the beginning).
const ENTRIES: usize = 512;
const SEGMENT: &std::ffi::CStr = c"pg_warden outbox low-water marks";

#[repr(C)]
struct Entry {
    /// 0: free.
    dboid: AtomicU32,
    /// 0 while being set up (no subscription has id 0).
    subscription: AtomicI32,
    mark: AtomicI64,
    /// A claim scanned from the mark since the worker last moved it.
    claimed: AtomicBool,
    /// When a message of the subscription was last handled or
    /// acknowledged (Postgres microseconds; 0: not since the server
    /// started). Kept here, not in the subscription's row: an update of
    /// that row a second leaves, under a held xmin horizon, a chain of
    /// versions every claim and fan-out reads through.
    delivered_at: AtomicI64,
    /// No lease of the subscription lapses before this (Postgres
    /// microseconds): until then a claim need not look for lapsed leases.
    /// The worker raises it to the first lease it sees live; a claim
    /// lowers it to the end of the lease it takes.
    lapse_at: AtomicI64,
    /// Where a look for lapsed leases starts (Postgres microseconds): no
    /// live lease ends before it. Under a held xmin horizon the index
    /// below it holds only the entries of acknowledged leases.
    lapse_scan_from: AtomicI64,
    /// The latest end of a lease a claim took (Postgres microseconds):
    /// until it is past, the worker looks at the leases now and then.
    lease_end_max: AtomicI64,
}

pub fn init() {
    crate::shared_memory::register(SEGMENT, ENTRIES * std::mem::size_of::<Entry>());
}

fn entries() -> Option<&'static [Entry]> {
    let base = crate::shared_memory::address(SEGMENT);
    if base.is_null() {
        return None;
    }
    // SAFETY: ENTRIES zero-initialised entries (valid zeroed: atomics)
    // mapped at the same address in every process for the server's life.
    Some(unsafe { std::slice::from_raw_parts(base.cast::<Entry>(), ENTRIES) })
}

fn my_database() -> u32 {
    // SAFETY: reads this backend's database.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// The mark of `subscription` in this database (0: none known).
pub fn mark(subscription: i32) -> i64 {
    entry(subscription).map_or(0, |e| e.mark.load(Ordering::Acquire))
}

/// A delivery of `subscription` was put back under id `id`, which a
/// mark the worker computed meanwhile may have passed: lowers the mark to
/// it (the worker's next move starts from there).
pub fn lower_mark(subscription: i32, id: i64) {
    if let Some(e) = entry(subscription) {
        e.mark.fetch_min(id, Ordering::AcqRel);
    }
}

/// This database's entry of `subscription`.
fn entry(subscription: i32) -> Option<&'static Entry> {
    let db = my_database();
    entries()?.iter().find(|e| {
        e.dboid.load(Ordering::Acquire) == db
            && e.subscription.load(Ordering::Acquire) == subscription
    })
}

/// Whether a claim on `subscription` should first give back its lapsed
/// leases: from where to look for them, and the lapse_at it saw (for
/// `probed`).
pub fn lapsed_leases_from(subscription: i32, now_us: i64) -> Option<(i64, i64)> {
    match entry(subscription) {
        None => Some((0, 0)),
        Some(e) => {
            let lapse_at = e.lapse_at.load(Ordering::Acquire);
            (now_us >= lapse_at).then(|| (e.lapse_scan_from.load(Ordering::Acquire), lapse_at))
        }
    }
}

/// How long after a claim looked for lapsed leases and found none the
/// next claim looks again, and how far back it looks.
const PROBE_GAP_US: i64 = 100_000;
const PROBE_LAG_US: i64 = 1_000_000;

/// A claim looked for `subscription`'s lapsed leases up to `now_us` and
/// found none it could take (others may be taking some): the next claims
/// look again in a moment and from a second ago, unless the worker or a
/// claim changed lapse_at since it was `seen`. Without this, claims
/// would look on every call until the worker's next look, each reading
/// further back, and while a long transaction holds the xmin horizon a
/// busy worker's delay makes every claim read more acknowledged leases
/// (which then delays the worker more).
pub fn probed(subscription: i32, seen: i64, now_us: i64) {
    if let Some(e) = entry(subscription) {
        if e.lapse_at
            .compare_exchange(
                seen,
                now_us + PROBE_GAP_US,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            e.lapse_scan_from
                .fetch_max(now_us - PROBE_LAG_US, Ordering::AcqRel);
        }
    }
}

/// A claim took a lease of `subscription` lapsing at `until_us`.
pub fn note_lease(subscription: i32, until_us: i64) {
    if let Some(e) = entry(subscription) {
        e.lapse_at.fetch_min(until_us, Ordering::AcqRel);
        e.lease_end_max.fetch_max(until_us, Ordering::AcqRel);
    }
}

/// Whether a lease of this database may still be live, or lapsed less
/// than `grace_us` ago: the worker keeps looking at the leases meanwhile.
pub fn leases_may_be_live(now_us: i64, grace_us: i64) -> bool {
    let db = my_database();
    entries().is_some_and(|es| {
        es.iter().any(|e| {
            e.dboid.load(Ordering::Acquire) == db
                && e.lease_end_max
                    .load(Ordering::Acquire)
                    .saturating_add(grace_us)
                    >= now_us
        })
    })
}

/// Each subscription's lapse_at in this database, read by the worker
/// before it looks at the leases, for `set_lapse` to compare.
pub fn all_lapse_at() -> Vec<(i32, i64)> {
    let db = my_database();
    entries().map_or_else(Vec::new, |es| {
        es.iter()
            .filter(|e| e.dboid.load(Ordering::Acquire) == db)
            .map(|e| {
                (
                    e.subscription.load(Ordering::Acquire),
                    e.lapse_at.load(Ordering::Acquire),
                )
            })
            .filter(|&(s, _)| s != 0)
            .collect()
    })
}

/// Sets what the worker found: no lease it has not seen lapses before
/// `lapse_at`, and none ends before `scan_from`. A claim that
/// lowered lapse_at since `seen` (read before the look-up) wins: its lease
/// may not have been visible to the look-up.
pub fn set_lapse(subscription: i32, seen: i64, lapse_at: i64, scan_from: i64) {
    if let Some(e) = entry(subscription) {
        e.lapse_scan_from.store(scan_from, Ordering::Release);
        let _ = e
            .lapse_at
            .compare_exchange(seen, lapse_at, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Notes that these subscriptions just handled or acknowledged a message;
/// returns those that have no entry (new since the worker last moved the
/// marks, or past the entries there are), for the caller to write to
/// their rows.
pub fn note_delivered(subscriptions: &[i32]) -> Vec<i32> {
    let now = crate::workers::now_us();
    let mut missing = Vec::new();
    for &s in subscriptions {
        match entry(s) {
            Some(e) => {
                e.delivered_at.fetch_max(now, Ordering::Relaxed);
            }
            None => missing.push(s),
        }
    }
    missing
}

/// When `subscription` last handled or acknowledged a message since the
/// server started (Postgres microseconds), or 0.
pub fn delivered_at(subscription: i32) -> i64 {
    entry(subscription).map_or(0, |e| e.delivered_at.load(Ordering::Relaxed))
}

/// This database's subscriptions that handled or acknowledged a message
/// since the server started, with when (for the worker to persist).
pub fn all_delivered_at() -> Vec<(i32, i64)> {
    let db = my_database();
    entries().map_or_else(Vec::new, |es| {
        es.iter()
            .filter(|e| e.dboid.load(Ordering::Acquire) == db)
            .map(|e| {
                (
                    e.subscription.load(Ordering::Acquire),
                    e.delivered_at.load(Ordering::Relaxed),
                )
            })
            .filter(|&(s, at)| s != 0 && at != 0)
            .collect()
    })
}

/// Notes that a claim scanned `subscription`'s deliveries from its mark:
/// while claims come, the worker moves the marks up often, so that a claim
/// steps over few acknowledged (deleted) deliveries' index entries. The
/// first claim since the marks last moved wakes the worker (when the
/// claim commits) for it.
pub fn note_claim(subscription: i32) {
    match entry(subscription) {
        Some(e) => {
            if !e.claimed.swap(true, Ordering::Relaxed) {
                super::dispatch_task::wake_at_commit();
            }
        }
        // a subscription made since the worker last moved the marks: it
        // makes the entry (an idle worker may sleep for seconds, and the
        // acknowledgements' times would have nowhere to go meanwhile)
        None => super::dispatch_task::wake_at_commit(),
    }
}

/// Whether a claim in this database scanned from a mark since the worker
/// last moved the marks.
pub fn claimed() -> bool {
    let db = my_database();
    entries().is_some_and(|es| {
        es.iter()
            .any(|e| e.dboid.load(Ordering::Acquire) == db && e.claimed.load(Ordering::Relaxed))
    })
}

/// Sets the marks of this database's subscriptions to `marks` (the worker
/// only); entries of subscriptions not in it are freed.
pub fn publish(marks: &[(i32, i64)]) {
    let Some(es) = entries() else { return };
    let db = my_database();
    for e in es {
        if e.dboid.load(Ordering::Acquire) == db {
            let sub = e.subscription.load(Ordering::Acquire);
            if !marks.iter().any(|(s, _)| *s == sub) {
                e.subscription.store(0, Ordering::Release);
                e.dboid.store(0, Ordering::Release);
            }
        }
    }
    for &(sub, m) in marks {
        if let Some(e) = es.iter().find(|e| {
            e.dboid.load(Ordering::Acquire) == db && e.subscription.load(Ordering::Acquire) == sub
        }) {
            e.mark.store(m, Ordering::Release);
            e.claimed.store(false, Ordering::Relaxed);
            continue;
        }
        // a free entry: claimed with its subscription still 0, so no
        // reader matches it before its mark is in place
        if let Some(e) = es.iter().find(|e| {
            e.dboid
                .compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        }) {
            e.mark.store(m, Ordering::Release);
            e.claimed.store(false, Ordering::Relaxed);
            e.delivered_at.store(0, Ordering::Relaxed);
            e.lapse_at.store(0, Ordering::Release);
            e.lapse_scan_from.store(0, Ordering::Release);
            e.lease_end_max.store(0, Ordering::Release);
            e.subscription.store(sub, Ordering::Release);
        }
    }
}
