//! The durable path's rings in shared memory: one per database slot of
//! the worker runtime (the same index in every process), each under an
//! LWLock of its own, so durable events of one database never wait for
//! another's. Backends push records (`warden_core::audit::ring` is the
//! pure part); the database's sequencer copies them out, commits them and
//! only then frees their space and publishes the last committed id,
//! broadcasting a condition variable that strict callers and callers
//! waiting for room sleep on.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgrx::pg_sys;
use warden_core::audit::ring::{self, PushError, RingState, Taken};

use crate::error::WardenError;
use crate::shared_memory::{lock_exclusive, register_with_locks};
use crate::workers::MAX_DATABASES;

const SEGMENT: &CStr = c"pg_warden audit rings";

/// `PG_WAIT_EXTENSION`: how a waiting backend shows in pg_stat_activity.
const WAIT_EVENT_EXTENSION: u32 = 0x0700_0000;

#[repr(C)]
struct RingHeader {
    /// Under the ring's lock.
    state: RingState,
    /// The database whose events the ring holds (0: none yet); under the
    /// lock.
    dboid: u32,
    /// Id of the last record the sequencer committed; read without the
    /// lock by waiting callers.
    committed_id: AtomicU64,
    /// Records the ring ever took, and pushes that had to wait for room.
    pushed: AtomicU64,
    waited_for_room: AtomicU64,
    /// Most bytes ever in use.
    high_water: AtomicU64,
    /// Broadcast whenever records were committed and their room freed.
    cv: pg_sys::ConditionVariable,
}

/// Bytes of each ring's buffer; set while preloading, inherited by every
/// forked process.
static CAPACITY: AtomicUsize = AtomicUsize::new(0);

fn header_bytes() -> usize {
    std::mem::size_of::<RingHeader>().next_multiple_of(64)
}

fn stride() -> usize {
    header_bytes() + CAPACITY.load(Ordering::Relaxed)
}

/// Registers the rings (preload only), sized from `warden.audit_ring_size`.
pub fn register() {
    CAPACITY.store(crate::guc::audit_ring_bytes(), Ordering::Relaxed);
    register_with_locks(
        SEGMENT,
        MAX_DATABASES * stride(),
        MAX_DATABASES,
        Some(init_rings),
    );
}

fn init_rings(base: *mut u8) {
    for i in 0..MAX_DATABASES {
        // SAFETY: ring i's header lies within the zeroed segment; a
        // condition variable is not valid zeroed.
        unsafe {
            let h = base.add(i * stride()).cast::<RingHeader>();
            pg_sys::ConditionVariableInit(&raw mut (*h).cv);
        }
    }
}

/// Ring `i`: its header and buffer. Mutate the state only under lock `i`.
fn ring_parts(i: usize) -> (*mut RingHeader, *mut u8) {
    assert!(i < MAX_DATABASES);
    let base = crate::shared_memory::address(SEGMENT);
    assert!(!base.is_null(), "the audit rings are not set up");
    // SAFETY: within the segment registered for MAX_DATABASES rings.
    unsafe {
        let h = base.add(i * stride());
        (h.cast(), h.add(header_bytes()))
    }
}

fn header(i: usize) -> &'static RingHeader {
    // SAFETY: shared access to the atomics and the condition variable.
    unsafe { &*ring_parts(i).0 }
}

/// Runs `f` on ring `i`'s state and buffer under its lock.
fn with_ring<R>(i: usize, f: impl FnOnce(&mut RingState, &mut u32, &mut [u8]) -> R) -> R {
    let _lock = lock_exclusive(SEGMENT, i);
    let (h, buf) = ring_parts(i);
    // SAFETY: exclusive under the lock held until the end of the scope.
    unsafe {
        let buf = std::slice::from_raw_parts_mut(buf, CAPACITY.load(Ordering::Relaxed));
        f(&mut (*h).state, &mut (*h).dboid, buf)
    }
}

/// Sleeps on ring `i`'s condition variable until `done()` or `deadline`
/// (then `Err`). Interrupts (cancel, terminate) are served while asleep.
fn wait_until(i: usize, deadline: Instant, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let cv = (&raw const header(i).cv).cast_mut();
    // SAFETY: the documented prepare / sleep / cancel protocol; an ERROR
    // while asleep is cleaned up by the transaction abort.
    unsafe { pg_sys::ConditionVariablePrepareToSleep(cv) };
    let outcome = loop {
        if done() {
            break Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(());
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as std::ffi::c_long;
        // SAFETY: as above.
        unsafe { pg_sys::ConditionVariableTimedSleep(cv, ms, WAIT_EVENT_EXTENSION) };
    };
    // SAFETY: as above.
    unsafe { pg_sys::ConditionVariableCancelSleep() };
    outcome
}

/// Pushes a record into ring `i` for database `dboid`, waiting up to
/// `timeout` for room (waking the sequencer meanwhile with `wake`).
/// Returns the record's id, and whether the ring is now over a quarter
/// full (the sequencer should not wait out its wake gap).
pub fn push(
    i: usize,
    dboid: u32,
    record: &[u8],
    timeout: Duration,
    wake: impl Fn(),
) -> Result<(u64, bool), WardenError> {
    let try_push = || {
        with_ring(i, |state, owner, buf| {
            if *owner != dboid {
                if state.records > 0 {
                    // events of another database (which held this slot
                    // before): wait until its worker takes them, or ours
                    // discards them if it was dropped
                    return Err(PushError::Full);
                }
                *state = RingState {
                    next_id: state.next_id,
                    ..RingState::default()
                };
                *owner = dboid;
            }
            let id = ring::push(state, buf, record)?;
            let used = ring::used(state);
            header(i).high_water.fetch_max(used, Ordering::Relaxed);
            Ok((id, used > buf.len() as u64 / 4))
        })
    };
    let h = header(i);
    let mut result = try_push();
    if result == Err(PushError::Full) {
        h.waited_for_room.fetch_add(1, Ordering::Relaxed);
        wake();
        let deadline = Instant::now() + timeout;
        let _ = wait_until(i, deadline, || {
            result = try_push();
            result != Err(PushError::Full)
        });
    }
    match result {
        Ok(pushed) => {
            h.pushed.fetch_add(1, Ordering::Relaxed);
            Ok(pushed)
        }
        Err(PushError::TooLarge) => Err(WardenError::new(
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "the durable audit event is larger than the ring",
        )
        .detail(format!(
            "The event takes {} bytes; each database's ring holds {} bytes.",
            record.len() + ring::RECORD_HEADER,
            CAPACITY.load(Ordering::Relaxed)
        ))
        .hint("Record less in fields, or raise warden.audit_ring_size (needs a restart).")),
        Err(PushError::Full) => Err(WardenError::new(
            pgrx::PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
            "the durable audit ring stayed full for warden.audit_strict_timeout",
        )
        .detail("The pg_warden worker of this database is not chaining events fast enough, or not running; nothing was recorded.")
        .hint("Check warden.worker_status and warden.audit_status; raise warden.audit_ring_size or warden.audit_strict_timeout.")),
    }
}

/// Waits until the sequencer committed record `id` of ring `i`.
pub fn wait_committed(i: usize, id: u64, timeout: Duration) -> Result<(), ()> {
    let h = header(i);
    wait_until(i, Instant::now() + timeout, || {
        h.committed_id.load(Ordering::Acquire) >= id
    })
}

/// The sequencer's side: copies up to `max` records of every ring that
/// holds events of `dboid` (its own slot's, and any its database left in
/// another slot it held before, say, a `warden.databases` change) without
/// freeing them; `release` frees them once they are committed.
pub fn take(dboid: u32, max: usize) -> (Vec<Vec<u8>>, Vec<(usize, Taken)>) {
    let mut records = Vec::new();
    let mut taken = Vec::new();
    for i in 0..MAX_DATABASES {
        if records.len() >= max {
            break;
        }
        let (r, t) = with_ring(i, |state, owner, buf| {
            if *owner != dboid || state.records == 0 {
                return (Vec::new(), Taken::default());
            }
            ring::peek(state, buf, max - records.len())
        });
        if t.records > 0 {
            records.extend(r.into_iter().map(|(_, r)| r));
            taken.push((i, t));
        }
    }
    (records, taken)
}

/// Whether ring `i` holds events not committed yet (its slot must then
/// stay its database's).
pub fn holds_records(i: usize) -> bool {
    with_ring(i, |state, _, _| state.records > 0)
}

/// The database whose events ring `i` holds, when that is not `dboid`
/// and it holds some.
pub fn foreign_owner(i: usize, dboid: u32) -> Option<u32> {
    with_ring(i, |state, owner, _| {
        (*owner != dboid && *owner != 0 && state.records > 0).then_some(*owner)
    })
}

/// Empties ring `i` if it still holds events of `owner` (a dropped
/// database); returns how many were discarded.
pub fn discard(i: usize, owner: u32) -> u64 {
    let n = with_ring(i, |state, o, _| {
        if *o != owner {
            return 0;
        }
        let n = state.records;
        *state = RingState {
            next_id: state.next_id,
            ..RingState::default()
        };
        n
    });
    // whoever waited for room in it
    // SAFETY: broadcasting a condition variable in shared memory.
    unsafe { pg_sys::ConditionVariableBroadcast((&raw const header(i).cv).cast_mut()) };
    n
}

/// Frees what `take` copied once it is committed, and wakes everybody
/// waiting on those rings.
pub fn release(taken: Vec<(usize, Taken)>) {
    for (i, t) in taken {
        with_ring(i, |state, _, _| ring::release(state, t));
        let h = header(i);
        h.committed_id.fetch_max(t.last_id, Ordering::AcqRel);
        // SAFETY: broadcasting a condition variable in shared memory.
        unsafe { pg_sys::ConditionVariableBroadcast((&raw const h.cv).cast_mut()) };
    }
}

/// What `warden.audit_status` shows of ring `i`.
pub struct RingStats {
    pub records: u64,
    pub used_bytes: u64,
    pub capacity: u64,
    pub high_water: u64,
    pub pushed: u64,
    pub waited_for_room: u64,
}

pub fn stats(i: usize, dboid: u32) -> RingStats {
    let (records, used_bytes) = with_ring(i, |state, owner, _| {
        if *owner == dboid {
            (state.records, ring::used(state))
        } else {
            (0, 0)
        }
    });
    let h = header(i);
    RingStats {
        records,
        used_bytes,
        capacity: CAPACITY.load(Ordering::Relaxed) as u64,
        high_water: h.high_water.load(Ordering::Relaxed),
        pushed: h.pushed.load(Ordering::Relaxed),
        waited_for_room: h.waited_for_room.load(Ordering::Relaxed),
    }
}
