//! The one place subsystems get shared memory from: each registers a
//! named segment while the library is preloaded, with its size computed
//! then (from settings, or from what other subsystems registered, such as
//! the task registry), zeroed at server start, optionally with an LWLock
//! of its own (`Locked`). The request and start-up hooks are installed
//! once, here.
//!
//! Segments are reached by raw pointer: the postmaster maps shared memory
//! before forking, so the address stored at start-up is valid in every
//! process. What lives there must be valid when zeroed, and is read and
//! written with atomics, or under the LWLock a `Locked` segment comes
//! with.

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use pgrx::pg_sys;
use pgrx::prelude::*;

struct Segment {
    name: &'static CStr,
    size: usize,
    /// LWLocks it comes with (a named tranche of that many).
    locks: usize,
    /// Run once on the zeroed segment when it is created, for what is not
    /// valid when zeroed (condition variables).
    init: Option<fn(*mut u8)>,
    address: *mut u8,
    lock: *mut pg_sys::LWLockPadded,
}

/// Filled while `_PG_init` runs in the postmaster (single-threaded, before
/// any fork); read-only afterwards.
struct Segments(UnsafeCell<Vec<Segment>>);
// SAFETY: written only during preload, before other processes exist.
unsafe impl Sync for Segments {}

/// `AddinShmemInitLock` is `&MainLWLockArray[21].lock` (15 through 18).
const ADDIN_SHMEM_INIT_LOCK: usize = 21;

static SEGMENTS: Segments = Segments(UnsafeCell::new(Vec::new()));
static mut PREV_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

fn segments() -> &'static mut Vec<Segment> {
    // SAFETY: see Segments.
    unsafe { &mut *SEGMENTS.0.get() }
}

/// Registers a segment of `size` bytes, zeroed at server start. Only while
/// preloading; the first registration installs the hooks.
pub fn register(name: &'static CStr, size: usize) {
    register_segment(name, size, 0, None);
}

/// Registers a segment of `size` bytes with `locks` LWLocks of its own
/// (`lock(name, i)`), zeroed and then passed to `init` at server start.
pub fn register_with_locks(
    name: &'static CStr,
    size: usize,
    locks: usize,
    init: Option<fn(*mut u8)>,
) {
    register_segment(name, size, locks, init);
}

fn register_segment(name: &'static CStr, size: usize, locks: usize, init: Option<fn(*mut u8)>) {
    assert!(
        crate::preload::is_preloaded(),
        "shared memory is registered only while preloading"
    );
    if segments().is_empty() {
        // SAFETY: hook chaining during preload, before any fork.
        unsafe {
            PREV_REQUEST_HOOK = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(on_shmem_request);
            PREV_STARTUP_HOOK = pg_sys::shmem_startup_hook;
            pg_sys::shmem_startup_hook = Some(on_shmem_startup);
        }
    }
    segments().push(Segment {
        name,
        size: size.max(1),
        locks,
        init,
        address: std::ptr::null_mut(),
        lock: std::ptr::null_mut(),
    });
}

/// The segment registered as `name` (null before start-up or when the
/// library is not preloaded).
pub fn address(name: &CStr) -> *mut u8 {
    segments()
        .iter()
        .find(|s| s.name == name)
        .map_or(std::ptr::null_mut(), |s| s.address)
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_request() {
    // SAFETY: chained hook, then a request in the request hook's window.
    unsafe {
        if let Some(prev) = PREV_REQUEST_HOOK {
            prev();
        }
        for s in segments().iter() {
            pg_sys::RequestAddinShmemSpace(s.size);
            if s.locks > 0 {
                pg_sys::RequestNamedLWLockTranche(s.name.as_ptr(), s.locks as i32);
            }
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_startup() {
    // SAFETY: chained hook; ShmemInitStruct under AddinShmemInitLock, as
    // the documentation for extensions prescribes.
    unsafe {
        if let Some(prev) = PREV_STARTUP_HOOK {
            prev();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(ADDIN_SHMEM_INIT_LOCK)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        for s in segments().iter_mut() {
            let mut found = false;
            let address = pg_sys::ShmemInitStruct(s.name.as_ptr(), s.size, &mut found).cast::<u8>();
            if !found {
                std::ptr::write_bytes(address, 0, s.size);
                if let Some(init) = s.init {
                    init(address);
                }
            }
            s.address = address;
            if s.locks > 0 {
                s.lock = pg_sys::GetNamedLWLockTranche(s.name.as_ptr());
            }
        }
        pg_sys::LWLockRelease(init_lock);
    }
}

/// A `T` in shared memory under an LWLock of its own, zeroed at server
/// start (`T` must be valid when zeroed). Register it while preloading.
pub struct Locked<T: 'static> {
    name: &'static CStr,
    _value: PhantomData<T>,
}

// SAFETY: the value is reached only through the lock's guards.
unsafe impl<T> Sync for Locked<T> {}

impl<T> Locked<T> {
    pub const fn new(name: &'static CStr) -> Self {
        Locked {
            name,
            _value: PhantomData,
        }
    }

    pub fn register(&'static self) {
        register_segment(self.name, std::mem::size_of::<T>(), 1, None);
    }

    fn parts(&self) -> (*mut T, *mut pg_sys::LWLock) {
        let s = segments()
            .iter()
            .find(|s| s.name == self.name)
            .filter(|s| !s.address.is_null())
            .unwrap_or_else(|| {
                panic!(
                    "shared memory {:?} is not set up (not preloaded?)",
                    self.name
                )
            });
        // SAFETY: a tranche of at least one lock
        (s.address.cast(), unsafe { &raw mut (*s.lock).lock })
    }

    /// Shared access, under the lock in shared mode.
    pub fn share(&self) -> Guard<'_, T> {
        let (data, lock) = self.parts();
        // SAFETY: a lock of ours; the guard releases it.
        unsafe { pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_SHARED) };
        Guard {
            data,
            lock,
            _life: PhantomData,
        }
    }

    /// Exclusive access, under the lock in exclusive mode.
    pub fn exclusive(&self) -> GuardMut<'_, T> {
        let (data, lock) = self.parts();
        // SAFETY: as above.
        unsafe { pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        GuardMut {
            data,
            lock,
            _life: PhantomData,
        }
    }
}

/// Lock `i` of the segment registered as `name` with locks, held
/// exclusively until the guard drops.
pub fn lock_exclusive(name: &CStr, i: usize) -> LockGuard {
    let s = segments()
        .iter()
        .find(|s| s.name == name)
        .filter(|s| !s.lock.is_null() && i < s.locks)
        .unwrap_or_else(|| panic!("shared memory lock {name:?}[{i}] is not set up"));
    // SAFETY: i is within the tranche; the guard releases it.
    unsafe {
        let lock = &raw mut (*s.lock.add(i)).lock;
        pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        LockGuard { lock }
    }
}

pub struct LockGuard {
    lock: *mut pg_sys::LWLock,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        release(self.lock);
    }
}

pub struct Guard<'a, T> {
    data: *mut T,
    lock: *mut pg_sys::LWLock,
    _life: PhantomData<&'a T>,
}

pub struct GuardMut<'a, T> {
    data: *mut T,
    lock: *mut pg_sys::LWLock,
    _life: PhantomData<&'a mut T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: held in shared mode for the guard's life.
        unsafe { &*self.data }
    }
}

impl<T> Deref for GuardMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: held in exclusive mode for the guard's life.
        unsafe { &*self.data }
    }
}

impl<T> DerefMut for GuardMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above.
        unsafe { &mut *self.data }
    }
}

/// An ERROR raised inside Postgres resets InterruptHoldoffCount and the
/// abort releases every LWLock: releasing it again there would fail (as
/// pgrx's own guards do, release only when not unwinding from one).
fn release(lock: *mut pg_sys::LWLock) {
    // SAFETY: a lock this process acquired.
    unsafe {
        if pg_sys::InterruptHoldoffCount > 0 {
            pg_sys::LWLockRelease(lock);
        }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        release(self.lock);
    }
}

impl<T> Drop for GuardMut<'_, T> {
    fn drop(&mut self) {
        release(self.lock);
    }
}
