//! The tamper-evident audit chain (DESIGN §5): per-tenant hash chains
//! sequenced by the worker, no writer lock, format v1 in `warden_core`.
//!
//! - `log_table`: `warden.audit_log` (append-only), `warden.audit_inbox`.
//! - `context`: `warden.set_actor`, `warden.set_correlation_id`.
//! - `emit`: `warden.audit_emit`, the transactional path.
//! - `durable`: the durable path and its Rust API (`record_durable`).
//! - `ring`: the durable path's rings in shared memory.
//! - `header_row`: an event's header columns, read the same way by both.
//! - `sequencer_task`: the worker task that chains inbox rows.
//! - `verify_sql`: `warden.audit_verify`.
//! - `checkpoints`: `warden.audit_checkpoints`, signed by the sequencer.
//! - `evidence`: public key, digest, digest verification, export.
//! - `status`: `warden.audit_status`, `warden.audit_chains`.
//!
//! Still to come (issue 13): table capture, prune, redact, self-auditing,
//! break-glass, the utility guard.

mod checkpoints;
mod context;
mod durable;
mod emit;
mod evidence;
mod header_row;
mod log_table;
mod ring;
mod sequencer_task;
mod status;
mod verify_sql;

#[allow(unused_imports)]
pub use durable::record_durable;

/// Registers the sequencer task and the durable rings (preload only).
pub fn init(preloading: bool) {
    if preloading {
        sequencer_task::register();
    }
}
