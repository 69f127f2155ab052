//! The tamper-evident audit chain (DESIGN §5): per-tenant hash chains
//! sequenced by the worker, no writer lock, format v1 in `warden_core`.
//!
//! - `log_table`: `warden.audit_log` (append-only), `warden.audit_inbox`.
//! - `context`: `warden.set_actor`, `warden.set_correlation_id`.
//! - `emit`: `warden.audit_emit`, the transactional path.
//! - `inbox_write`: the inbox's write (a batch of events per row for
//!   captured statements).
//! - `jsonb_build`: jsonb datums built from serde values without text.
//! - `durable`: the durable path and its Rust API (`record_durable`).
//! - `ring`: the durable path's rings in shared memory.
//! - `header_row`: an event's header columns as `audit_export` reads them.
//! - `sequencer_task`: the worker task that chains inbox rows.
//! - `inbox_read`: its read of the inbox by a direct index scan.
//! - `index_scan`: the primary-key scan both direct reads share.
//! - `verify_sql`: `warden.audit_verify`.
//! - `datum_read`: stored datums read without SQL; canonical jsonb.
//! - `log_scan`: the log's rows read for verification by a direct index scan.
//! - `checkpoints`: `warden.audit_checkpoints`, signed by the sequencer.
//! - `evidence`: public key, digest, digest verification, export.
//! - `status`: `warden.audit_status`, `warden.audit_chains`.
//! - `guard`: the utility hook refusing DDL that would change the log.
//! - `append_only`: the trigger refusing row changes (but prune's, redact's).
//! - `flag`: the backend-local permission flags only Rust code sets.
//! - `prune`, `redact`: `warden.audit_prune`, `warden.audit_redact`.
//! - `break_glass`: `warden.break_glass`, audited emergency access.
//! - `capture`: `warden.audit_table`/`audit_untable`, `warden.audited_tables`.
//! - `capture_trigger`: the statement trigger that records the changes.

mod append_only;
mod break_glass;
mod capture;
mod capture_trigger;
mod checkpoints;
mod context;
mod datum_read;
mod durable;
mod emit;
mod evidence;
mod flag;
mod guard;
mod header_row;
mod inbox_read;
mod inbox_write;
mod index_scan;
mod jsonb_build;
mod log_scan;
mod log_table;
mod prune;
mod redact;
mod ring;
mod sequencer_task;
mod status;
mod verify_sql;

pub(crate) use durable::record_admin_event;
#[allow(unused_imports)]
pub use durable::record_durable;
pub(crate) use emit::record_transactional;

/// Installs the utility guard; registers the sequencer task and the
/// durable rings (preload only).
pub fn init(preloading: bool) {
    guard::init();
    if preloading {
        sequencer_task::register();
    }
}
