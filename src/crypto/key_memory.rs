//! Keeps the pages that hold key bytes out of core dumps (MADV_DONTDUMP)
//! and, where the memory-lock limit allows, out of swap (mlock). The root
//! keyring is loaded in the postmaster and inherited by every backend
//! through fork, which keeps both flags; data keys are protected where
//! each backend caches them (docs/security.md, rule 9).
//!
//! Whole pages are marked, so a little other heap data around a key is
//! left out of a dump too. Failing to lock is not an error (the default
//! limit is small); failing to exclude from dumps is logged once.

use std::sync::atomic::{AtomicBool, Ordering};

static WARNED: AtomicBool = AtomicBool::new(false);

/// Marks the pages holding `len` bytes at `ptr`.
pub fn protect(ptr: *const u8, len: usize) {
    if ptr.is_null() || len == 0 {
        return;
    }
    // SAFETY: sysconf and madvise/mlock on pages that contain live memory
    // of this process; neither changes the memory's contents.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
        let start = (ptr as usize) & !(page - 1);
        let end = (ptr as usize + len).div_ceil(page) * page;
        let base = start as *mut libc::c_void;
        if libc::madvise(base, end - start, libc::MADV_DONTDUMP) != 0
            && !WARNED.swap(true, Ordering::Relaxed)
        {
            pgrx::log!("pg_warden: cannot exclude key memory from core dumps (madvise failed)");
        }
        let _ = libc::mlock(base, end - start);
    }
}
