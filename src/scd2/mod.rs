//! SCD2: a canonical, type-stable hash_diff for change detection, Data
//! Vault 2.0 compatible hashes, and history tables kept by a trigger
//! (or, deferred, by the worker).

mod apply_task;
mod deferred;
mod dv2;
mod hash_diff;
mod merge;
mod registry;
mod track;
mod tracking;
mod trigger;
mod type_encoding;

/// Registers the apply task of deferred tracking (preload only).
pub fn init(preloading: bool) {
    if preloading {
        apply_task::register();
    }
}
