//! The tamper-evident audit chain (DESIGN §5): per-tenant hash chains
//! sequenced by the worker, no writer lock, format v1 in `warden_core`.
//!
//! - `log_table`: `warden.audit_log` (append-only), `warden.audit_inbox`.
//! - `emit`: `warden.audit_emit`, the transactional path.
//! - `header_row`: an event's header columns, read the same way by both.
//! - `sequencer_task`: the worker task that chains inbox rows.
//! - `verify_sql`: `warden.audit_verify`.
//!
//! Still to come (issue 13): the durable ring and strict mode, actor and
//! correlation context, table capture, signed checkpoints in SQL, digest,
//! export, prune, redact, status, break-glass, the utility guard.

mod emit;
mod header_row;
mod log_table;
mod sequencer_task;
mod verify_sql;

/// Registers the sequencer task (preload only).
pub fn init(preloading: bool) {
    if preloading {
        sequencer_task::register();
    }
}
