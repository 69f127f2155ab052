//! Whether the library was loaded by `shared_preload_libraries`.
//!
//! Keys, workers and shared memory exist only then. Backends are forked
//! from the postmaster, so a flag set in the postmaster's `_PG_init` is
//! inherited by every backend.

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::pg_sys;

use crate::error::WardenError;

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Called once from `_PG_init`; returns whether this load is the preload.
pub fn record_load() -> bool {
    // SAFETY: a plain global read on the backend's main thread.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    if preloading {
        PRELOADED.store(true, Ordering::Relaxed);
    }
    preloading
}

pub fn is_preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Raises SQLSTATE 55000 naming the setting when `what` needs the preload.
pub fn require(what: &str) {
    if !is_preloaded() {
        WardenError::not_preloaded(what).raise();
    }
}
