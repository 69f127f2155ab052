//! The one place subsystems get shared memory from: each registers a
//! named segment while the library is preloaded, with its size computed
//! then (from settings, or from what other subsystems registered, such as
//! the task registry), and an initialiser for a zeroed segment. The
//! request and start-up hooks are installed once, here.
//!
//! Segments are reached by raw pointer: the postmaster maps shared memory
//! before forking, so the address stored at start-up is valid in every
//! process. What lives there must be valid when zeroed, and is read and
//! written with atomics or under a lock its owner documents.

use std::cell::UnsafeCell;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

struct Segment {
    name: &'static CStr,
    size: usize,
    address: *mut u8,
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
        address: std::ptr::null_mut(),
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
            }
            s.address = address;
        }
        pg_sys::LWLockRelease(init_lock);
    }
}
