//! One dispatcher per kind of Postgres callback, so a subsystem plugs a
//! handler in instead of installing a callback or hook of its own:
//!
//! - `xact`: transaction and subtransaction ends.
//! - `invalidation`: relcache and syscache invalidations.
//! - `utility`: the ProcessUtility hook (before the statement runs).
//!
//! Handlers are plain functions. Transaction and invalidation handlers are
//! subscribed per backend, when a subsystem first has state to keep in
//! step (the Postgres callback is registered then, once); utility handlers
//! are added while the library loads, when the hook is installed.

pub mod invalidation;
pub mod utility;
pub mod xact;
