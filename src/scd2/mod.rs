//! SCD2: a canonical, type-stable hash_diff for change detection, Data
//! Vault 2.0 compatible hashes, and history tables kept by a trigger
//! (or, deferred, by the worker).

pub use deferred::apply_all as apply_deferred;

mod deferred;
mod dv2;
mod hash_diff;
mod merge;
mod registry;
mod track;
mod tracking;
mod trigger;
mod type_encoding;
