//! pg_warden's pure logic. Nothing here knows about pgrx or a running
//! Postgres: every function is deterministic and tested with plain
//! `cargo test` (property tests where the input space is large). The
//! extension crate is a thin adapter over these modules.
//!
//! One folder per subsystem, mirroring the extension's `src/`.

pub mod audit;
pub mod crypto;
pub mod outbox;
pub mod redact;
pub mod scd2;
pub mod secrets;
pub mod tenancy;
pub mod text;
pub mod workers;
