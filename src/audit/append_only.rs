//! `warden._audit_refuse_change()`: the BEFORE UPDATE/DELETE/TRUNCATE
//! trigger of `warden.audit_log` and `warden.audit_checkpoints`, enabled
//! ALWAYS. It refuses every change, except the ones `audit_prune` and
//! `audit_redact` make while they hold this backend's maintenance flag: a
//! Rust flag no SQL can set, so there is no setting a superuser could
//! flip to get around it (a superuser's catalog edits are found by
//! verification instead).

use std::cell::Cell;

use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;

use crate::error::WardenError;

thread_local! {
    static MAINTENANCE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with row changes of the log allowed (pg_warden's own prune
/// and redact, constant SQL only). The flag is cleared when `f` returns
/// or raises.
pub(super) fn with_maintenance<R>(f: impl FnOnce() -> R) -> R {
    super::flag::with_flag(&MAINTENANCE, f)
}

crate::fmgr::function_info_v1!(pg_finfo_audit_refuse_change);

/// # Safety
/// Called by the trigger manager.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn audit_refuse_change(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: the trigger manager passes TriggerData as the context.
    unsafe {
        let data = crate::fmgr::trigger_data(fcinfo, "warden._audit_refuse_change()", None);
        let event = data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
        let row = data.tg_event & pg_sys::TRIGGER_EVENT_ROW != 0;
        if MAINTENANCE.get() && row {
            let tuple = if event == pg_sys::TRIGGER_EVENT_UPDATE {
                data.tg_newtuple
            } else {
                data.tg_trigtuple
            };
            return Datum::from(tuple);
        }
        let op = match event {
            pg_sys::TRIGGER_EVENT_UPDATE => "UPDATE",
            pg_sys::TRIGGER_EVENT_DELETE => "DELETE",
            pg_sys::TRIGGER_EVENT_TRUNCATE => "TRUNCATE",
            _ => "a change",
        };
        let table = std::ffi::CStr::from_ptr(pg_sys::get_rel_name((*data.tg_relation).rd_id))
            .to_string_lossy()
            .into_owned();
        WardenError::privilege(format!(
            "{op} of warden.{table} is refused: the audit log is append-only"
        ))
        .hint("Erase a payload with warden.audit_redact() and old events with warden.audit_prune(); both are audited.")
        .raise()
    }
}
