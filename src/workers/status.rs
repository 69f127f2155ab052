//! `warden.worker_status`: one row per (database, task) from shared
//! memory, so an operator sees each worker, its database, its tasks, when
//! they last ran, how far behind they are and their last error.

use pgrx::prelude::*;

use crate::preload;

use std::sync::atomic::Ordering;

use super::shmem::{DatabaseSlot, SlotState, TaskSlot, SHARED};

fn ts(us: i64) -> Option<TimestampWithTimeZone> {
    if us == 0 {
        None
    } else {
        TimestampWithTimeZone::try_from(us).ok()
    }
}

fn state_name(slot: &DatabaseSlot) -> &'static str {
    match (slot.state(), slot.pid != 0) {
        (SlotState::Probe, _) => "checking",
        (SlotState::Wanted, true) => "running",
        (SlotState::Wanted, false) => "restarting",
        (SlotState::Absent, _) => "not_installed",
        (SlotState::Excluded, _) => "excluded",
        (SlotState::Free, _) => "free",
    }
}

/// `warden.worker_status_snapshot()`: the workers' state in shared
/// memory now. Another database's errors name its tables and data: only
/// superusers see them.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_restricted)]
fn worker_status_snapshot() -> TableIterator<
    'static,
    (
        name!(datid, pg_sys::Oid),
        name!(state, &'static str),
        name!(pid, Option<i32>),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(starts, i64),
        name!(wake_requests, i64),
        name!(task, Option<String>),
        name!(runs, Option<i64>),
        name!(failures, Option<i64>),
        name!(last_run_at, Option<TimestampWithTimeZone>),
        name!(last_success_at, Option<TimestampWithTimeZone>),
        name!(last_error_at, Option<TimestampWithTimeZone>),
        name!(last_error, Option<String>),
        name!(backlog, Option<i64>),
        name!(next_run_at, Option<TimestampWithTimeZone>),
    ),
> {
    preload::require("warden.worker_status");
    // copied out under the lock, so no row is built while holding it
    struct Seen {
        dboid: u32,
        state: &'static str,
        running: bool,
        pid: i32,
        started_at: i64,
        starts: u32,
        wake_requests: u64,
        tasks: Vec<TaskSlot>,
    }
    let slots: Vec<Seen> = {
        let shared = SHARED.share();
        (0..shared.slots.len())
            .filter(|&i| shared.slots[i].state() != SlotState::Free)
            .map(|i| {
                let slot = &shared.slots[i];
                Seen {
                    dboid: slot.dboid,
                    state: state_name(slot),
                    running: slot.state() == SlotState::Wanted && slot.task_count > 0,
                    pid: slot.pid,
                    started_at: slot.started_at,
                    starts: slot.starts,
                    wake_requests: super::shmem::wake_state(i).requests.load(Ordering::Relaxed),
                    tasks: shared.tasks(i).to_vec(),
                }
            })
            .collect()
    };
    // SAFETY: reads the current user and database.
    let (superuser, here) = unsafe { (pg_sys::superuser(), pg_sys::MyDatabaseId) };
    let mut rows = Vec::new();
    for slot in &slots {
        let errors_visible = superuser || pg_sys::Oid::from(slot.dboid) == here;
        let base = (
            pg_sys::Oid::from(slot.dboid),
            slot.state,
            (slot.pid != 0).then_some(slot.pid),
            ts(slot.started_at),
            slot.starts as i64,
            slot.wake_requests as i64,
        );
        if !slot.running {
            rows.push((
                base.0, base.1, base.2, base.3, base.4, base.5, None, None, None, None, None, None,
                None, None, None,
            ));
            continue;
        }
        for t in &slot.tasks {
            rows.push((
                base.0,
                base.1,
                base.2,
                base.3,
                base.4,
                base.5,
                Some(t.name().to_string()),
                Some(t.runs as i64),
                Some(t.failures as i64),
                ts(t.last_run_at),
                ts(t.last_success_at),
                ts(t.last_error_at),
                t.last_error()
                    .filter(|_| errors_visible)
                    .map(str::to_string),
                Some(t.backlog),
                ts(t.next_run_at),
            ));
        }
    }
    TableIterator::new(rows)
}

extension_sql!(
    r#"
CREATE VIEW warden.worker_status AS
SELECT s.datid, d.datname, s.state, s.pid, s.started_at, s.starts, s.wake_requests,
       s.task, s.runs, s.failures, s.last_run_at, s.last_success_at,
       s.last_error_at, s.last_error, s.backlog, s.next_run_at
  FROM warden.worker_status_snapshot() s
  LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) s.datid;

COMMENT ON FUNCTION warden.worker_status_snapshot() IS
  'The rows of warden.worker_status, read from shared memory now (other databases'' errors for superusers only).';
COMMENT ON VIEW warden.worker_status IS
  'One row per pg_warden database worker and task: state (checking, running, restarting, not_installed, excluded: no worker may run but durable audit events wait in its ring), pid, starts, commit-time wake-ups, runs, failures, last run, last error (other databases'' errors for superusers only), backlog.';
"#,
    name = "worker_status_view",
    requires = [worker_status_snapshot],
);
