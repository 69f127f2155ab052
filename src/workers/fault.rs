//! Fault injection for recovery tests, off unless the postmaster setting
//! `warden.enable_fault_injection` is on, and then for superusers only.
//! A fault is consumed once, by the database's worker.

use pgrx::prelude::*;
use pgrx::spi::Spi;
use pgrx::PgSqlErrorCode;

use crate::error::WardenError;
use crate::{guc, preload};

use super::shmem::{set_latch, SHARED};

const TASK_PANIC: u8 = 1;
const TASK_ERROR: u8 = 2;
const WORKER_PANIC: u8 = 3;

fn take(dboid: u32, kinds: &[u8]) -> Option<u8> {
    let mut shared = SHARED.exclusive();
    let slot = shared.slot_mut(dboid)?;
    if kinds.contains(&slot.fault) {
        let f = slot.fault;
        slot.fault = 0;
        Some(f)
    } else {
        None
    }
}

/// Called by the heartbeat task: a pending task fault fires here.
pub fn task_fault_point(dboid: u32) {
    match take(dboid, &[TASK_PANIC, TASK_ERROR]) {
        Some(TASK_PANIC) => panic!("injected fault: heartbeat task panicked"),
        Some(_) => {
            // a genuine Postgres ERROR raised inside SPI
            let _ = Spi::get_one::<i32>("SELECT 1 / 0 /* injected fault */");
        }
        None => {}
    }
}

/// Called by the worker loop outside any task: the panic escapes to the
/// worker's top level, which exits with status 1.
pub fn worker_fault_point(dboid: u32) {
    if take(dboid, &[WORKER_PANIC]).is_some() {
        panic!("injected fault: worker panicked outside a task");
    }
}

/// Arms a fault in this database's worker: 'task_panic' (a Rust panic in
/// the heartbeat task), 'task_error' (an SQL error in it) or
/// 'worker_panic' (a panic in the worker loop, so the process exits).
#[pg_extern(volatile, parallel_unsafe)]
fn _inject_worker_fault(fault: &str) {
    preload::require("warden._inject_worker_fault()");
    // SAFETY: reads the session's role.
    if !unsafe { pgrx::pg_sys::superuser() } {
        WardenError::privilege("only superusers may inject worker faults").raise();
    }
    if !guc::fault_injection_enabled() {
        WardenError::prerequisite("fault injection is disabled")
            .hint("Set warden.enable_fault_injection = on in postgresql.conf and restart (test clusters only).")
            .raise();
    }
    let code = match fault {
        "task_panic" => TASK_PANIC,
        "task_error" => TASK_ERROR,
        "worker_panic" => WORKER_PANIC,
        _ => WardenError::invalid_parameter(format!("unknown fault \"{fault}\""))
            .hint("Use 'task_panic', 'task_error' or 'worker_panic'.")
            .raise(),
    };
    // SAFETY: reads the backend's database.
    let dboid = unsafe { pgrx::pg_sys::MyDatabaseId }.to_u32();
    let latch = {
        let mut shared = SHARED.exclusive();
        match shared.index_of(dboid) {
            Some(index) if shared.slots[index].pid != 0 => {
                shared.slots[index].fault = code;
                // counts as a wake-up, so the heartbeat runs at once
                let wake = super::shmem::wake_state(index);
                wake.requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                wake.tasks.fetch_or(
                    super::registry::any_wakeup_mask(),
                    std::sync::atomic::Ordering::AcqRel,
                );
                wake.latch()
            }
            _ => WardenError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "no pg_warden worker is running in this database",
            )
            .hint("Wait for warden.worker_status to show a running worker.")
            .raise(),
        }
    };
    set_latch(latch);
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden._inject_worker_fault(text) IS
  'Testing only: arms a fault (task_panic, task_error, worker_panic) in this database''s worker; needs warden.enable_fault_injection and superuser.';
"#,
    name = "fault_comments",
    requires = [_inject_worker_fault],
);
