//! The hard deadline of a handler call. The statement timeout cancels a
//! handler, but a handler can catch the cancel (`EXCEPTION WHEN
//! query_canceled` in a loop) and go on, holding the worker and every
//! delivery behind it. GRACE after its timeout such a call is ended the
//! way `pg_terminate_backend` ends the worker: a FATAL at its next
//! interrupt check, which no handler can catch. The launcher starts the
//! worker again, and the new dispatcher records the call as a failed
//! attempt (the delivery is remembered in shared memory across the
//! exit), so the handler ends as a dead letter instead of stopping the
//! worker over and over. A crash (`kill -9`) is not counted: shared
//! memory starts afresh, and attempts count failures, not calls a crash
//! interrupted.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, Ordering};

use pgrx::pg_sys;

use super::timers::{disable_timeout, enable_timeout_after, RegisterTimeout, USER_TIMEOUT};

/// Time a handler gets after its statement timeout fired before the
/// worker is ended.
pub const GRACE_MS: i32 = 5_000;

const SEGMENT: &std::ffi::CStr = c"pg_warden outbox hard deadlines";
const ENTRIES: usize = crate::workers::MAX_DATABASES;

/// A delivery whose handler call was ended by the deadline, per database.
#[repr(C)]
struct Entry {
    /// 0: free.
    dboid: AtomicU32,
    subscription: AtomicI32,
    delivery: AtomicI64,
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

// storage/latch.h, called from the timer's signal handler: the C symbol
// itself, not pgrx's wrapper (which is not async-signal-safe).
unsafe extern "C-unwind" {
    #[link_name = "SetLatch"]
    fn set_latch_raw(latch: *mut pg_sys::Latch);
}

/// This process's timer (0: not registered yet).
static TIMER: AtomicI32 = AtomicI32::new(0);
/// The call in flight in this process (delivery 0: none).
static IN_FLIGHT_SUBSCRIPTION: AtomicI32 = AtomicI32::new(0);
static IN_FLIGHT_DELIVERY: AtomicI64 = AtomicI64::new(0);
/// The deadline fired: the exit that follows is the handler's doing.
static FIRED: AtomicBool = AtomicBool::new(false);

/// The timer's handler, in signal context: what `die()` does, with
/// atomic stores only.
unsafe extern "C-unwind" fn on_deadline() {
    FIRED.store(true, Ordering::Relaxed);
    // SAFETY: the flags and latch Postgres' own SIGTERM handler sets;
    // SetLatch is async-signal-safe.
    unsafe {
        pg_sys::ProcDiePending = 1;
        pg_sys::InterruptPending = 1;
        set_latch_raw(pg_sys::MyLatch);
    }
}

/// At exit after the deadline fired: remembers the delivery for the next
/// worker of this database, and says why the worker stopped.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    let delivery = IN_FLIGHT_DELIVERY.load(Ordering::Relaxed);
    if !FIRED.load(Ordering::Relaxed) || delivery == 0 {
        return;
    }
    let subscription = IN_FLIGHT_SUBSCRIPTION.load(Ordering::Relaxed);
    // SAFETY: reads this backend's database.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    if let Some(es) = entries() {
        let entry = es
            .iter()
            .find(|e| e.dboid.load(Ordering::Acquire) == db)
            .or_else(|| {
                es.iter().find(|e| {
                    e.dboid
                        .compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                })
            });
        if let Some(e) = entry {
            e.subscription.store(subscription, Ordering::Release);
            e.delivery.store(delivery, Ordering::Release);
        }
    }
    pgrx::log!(
        "pg_warden outbox: the handler of delivery {delivery} (subscription {subscription}) went on past its timeout and {} s more; the worker stops and the call counts as a failed attempt",
        GRACE_MS / 1000
    );
}

/// Arms the deadline for a call of `timeout_ms` handling delivery `id`
/// of `subscription`.
pub fn arm(subscription: i32, id: i64, timeout_ms: i32) {
    let mut timer = TIMER.load(Ordering::Relaxed);
    if timer == 0 {
        // SAFETY: a user-defined timer of this process, and a callback
        // run once at its exit (before its transaction is aborted).
        unsafe {
            timer = RegisterTimeout(USER_TIMEOUT, on_deadline);
            pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0));
        }
        TIMER.store(timer, Ordering::Relaxed);
    }
    IN_FLIGHT_SUBSCRIPTION.store(subscription, Ordering::Relaxed);
    IN_FLIGHT_DELIVERY.store(id, Ordering::Relaxed);
    // SAFETY: the timer registered above.
    unsafe { enable_timeout_after(timer, timeout_ms.max(1).saturating_add(GRACE_MS)) };
}

/// The call returned (or failed): no deadline.
pub fn disarm() {
    let timer = TIMER.load(Ordering::Relaxed);
    if timer != 0 {
        // SAFETY: the timer registered in `arm`.
        unsafe { disable_timeout(timer, false) };
    }
    IN_FLIGHT_DELIVERY.store(0, Ordering::Relaxed);
}

/// The delivery (subscription, id) whose call ended the previous worker
/// of this database, if any; forgotten once taken.
pub fn take_ended() -> Option<(i32, i64)> {
    // SAFETY: reads this backend's database.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let e = entries()?
        .iter()
        .find(|e| e.dboid.load(Ordering::Acquire) == db)?;
    let delivery = e.delivery.swap(0, Ordering::AcqRel);
    let subscription = e.subscription.load(Ordering::Acquire);
    e.dboid.store(0, Ordering::Release);
    (delivery != 0).then_some((subscription, delivery))
}
