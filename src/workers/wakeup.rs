//! Commit-time wake-ups. A subsystem that leaves work for the worker
//! calls `wake_task_on_commit(task)` (or `wake_worker_on_commit()` for
//! every task that runs on any wake-up) inside its transaction; when, and
//! only when, that transaction commits, the task's bit is set and the
//! database worker's latch is set, so the work is picked up in
//! milliseconds without polling or NOTIFY (which takes a database-wide
//! lock at commit). The commit takes no lock either: the wake-up state is
//! atomics, found by a lock-free scan of the slots. A transaction whose
//! only requests were made in subtransactions that rolled back wakes
//! nothing (which tasks a rolled-back savepoint asked for is not told
//! apart from the ones that survived: a task woken once too often is
//! harmless). Nothing is woken on PREPARE TRANSACTION: the worker finds
//! prepared work on its next poll.

use std::cell::Cell;
use std::sync::atomic::Ordering;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::preload;

use super::registry::{any_wakeup_mask, TaskId};
use super::shmem::{set_latch, wake_states, SlotState, SHARED};

thread_local! {
    /// Lowest transaction nesting level holding a request; 0 = none.
    static WORKER_LEVEL: Cell<i32> = const { Cell::new(0) };
    /// The tasks requested (their wake-up bits); kept until the
    /// transaction ends (a subtransaction's own requests are not told
    /// apart: waking a task too often is harmless).
    static TASKS: Cell<u64> = const { Cell::new(0) };
    static LAUNCHER_LEVEL: Cell<i32> = const { Cell::new(0) };
}

fn request(level_cell: &'static std::thread::LocalKey<Cell<i32>>) {
    crate::dispatch::xact::subscribe(crate::dispatch::xact::Handler {
        name: "worker wake-ups",
        xact: on_xact,
        subxact: on_subxact,
    });
    // SAFETY: reads transaction state.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    level_cell.with(|c| {
        if c.get() == 0 || level < c.get() {
            c.set(level)
        }
    });
}

/// Runs every task that runs on any wake-up when the current transaction
/// commits.
pub fn wake_worker_on_commit() {
    preload::require("waking the pg_warden worker");
    TASKS.set(TASKS.get() | any_wakeup_mask());
    request(&WORKER_LEVEL);
}

/// Runs `task` at once when the current transaction commits.
pub fn wake_task_on_commit(task: TaskId) {
    preload::require("waking the pg_warden worker");
    TASKS.set(TASKS.get() | task.bit());
    request(&WORKER_LEVEL);
}

/// Runs `task` of this database's worker now, not at commit and not at
/// the end of its wake gap: for work handed over outside any transaction
/// that someone may be waiting for (the durable audit ring). Returns
/// whether a worker was running to be woken.
pub fn wake_task_now(task: TaskId) -> bool {
    wake_task(task, true)
}

/// Runs `task` of this database's worker at the end of its wake gap, not
/// at commit: for work handed over outside any transaction that nobody
/// waits for. Returns whether a worker was running to be woken.
pub fn wake_task_soon(task: TaskId) -> bool {
    wake_task(task, false)
}

fn wake_task(task: TaskId, urgent: bool) -> bool {
    let dboid = my_database();
    match wake_states().find(|w| w.dboid.load(Ordering::Acquire) == dboid) {
        Some(wake) => {
            wake.requests.fetch_add(1, Ordering::Relaxed);
            let bits = if urgent { &wake.urgent } else { &wake.tasks };
            let before = bits.fetch_or(task.bit(), Ordering::AcqRel);
            wake.tasks.fetch_or(task.bit(), Ordering::AcqRel);
            // the worker reads the bits after each reset of its latch: a
            // bit already set has its wake-up on the way (at 17 000 events
            // a second, a signal each had cost a sixth of the machine)
            if before & task.bit() == 0 {
                set_latch(wake.latch());
            }
            true
        }
        None => false,
    }
}

/// The index of this database's slot in the runtime's shared memory,
/// the same in every process while the database has the extension.
/// Claims one (and tells the launcher to start a worker) when the
/// database has none yet, as CREATE EXTENSION does at commit. `None` when
/// every slot is taken.
pub fn my_database_slot() -> Option<usize> {
    let dboid = my_database();
    if let Some(i) = SHARED.share().index_of(dboid) {
        return Some(i);
    }
    let (index, latch) = {
        let mut shared = SHARED.exclusive();
        shared.slot_or_claim(dboid, SlotState::Wanted)?;
        (shared.index_of(dboid), shared.launcher_latch)
    };
    set_latch(latch);
    index
}

/// Tells the launcher, at commit, that this database now has the
/// extension. Called by the install script; a no-op without preload, so
/// CREATE EXTENSION works either way.
fn register_database_on_commit() {
    if preload::is_preloaded() {
        request(&LAUNCHER_LEVEL);
    }
}

fn my_database() -> u32 {
    // SAFETY: plain read.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

fn on_commit() {
    let dboid = my_database();
    let tasks = TASKS.replace(0);
    if WORKER_LEVEL.replace(0) != 0 {
        // (the slot may be given to another database between the match
        // and the stores: that database's worker then runs its tasks once
        // early, which is harmless; the worker we meant has exited)
        if let Some(wake) = wake_states().find(|w| w.dboid.load(Ordering::Acquire) == dboid) {
            wake.requests.fetch_add(1, Ordering::Relaxed);
            // a bit already set is a wake-up the worker has not taken
            // yet, or one it keeps until the task's wake gap ends: our
            // commit is served by that run, the latch need not be set
            let pending = wake.tasks.fetch_or(tasks, Ordering::AcqRel);
            if tasks == 0 || pending & tasks != tasks {
                set_latch(wake.latch());
            }
        }
    }
    if LAUNCHER_LEVEL.replace(0) != 0 {
        let latch = {
            let mut shared = SHARED.exclusive();
            if let Some(slot) = shared.slot_or_claim(dboid, SlotState::Wanted) {
                if !matches!(slot.state(), SlotState::Wanted | SlotState::Excluded) {
                    slot.set_state(SlotState::Wanted);
                    slot.consecutive_failures = 0;
                    slot.next_start_at = 0;
                }
            }
            shared.launcher_latch
        };
        set_latch(latch);
    }
}

fn on_xact(event: crate::dispatch::xact::XactEvent) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT => on_commit(),
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            WORKER_LEVEL.set(0);
            LAUNCHER_LEVEL.set(0);
            TASKS.set(0);
        }
        _ => {}
    }
}

fn on_subxact(event: crate::dispatch::xact::SubXactEvent, level: i32) {
    for cell in [&WORKER_LEVEL, &LAUNCHER_LEVEL] {
        cell.with(|c| match event {
            pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB if c.get() >= level => c.set(0),
            // the request now belongs to the parent
            pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB if c.get() == level => c.set(level - 1),
            _ => {}
        });
    }
}

/// Requests a wake-up of this database's worker at commit (for tests and
/// SQL-level subsystems).
#[pg_extern(volatile, parallel_unsafe)]
fn _worker_wake_on_commit() {
    wake_worker_on_commit();
}

/// Requests, at commit, a run of the named task of this database's
/// worker (for tests, and SQL-level subsystems).
#[pg_extern(volatile, parallel_unsafe)]
fn _worker_wake_task_on_commit(task: &str) {
    preload::require("waking a pg_warden task");
    let Some(id) = super::registry::task_id(task) else {
        crate::error::WardenError::invalid_parameter(format!(
            "no pg_warden task is named \"{task}\""
        ))
        .hint(format!(
            "The tasks are: {}.",
            super::registry::tasks()
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .raise()
    };
    wake_task_on_commit(id);
}

/// Run by the install script: the launcher starts this database's worker
/// as soon as CREATE EXTENSION commits.
#[pg_extern(volatile, parallel_unsafe)]
fn _launcher_register_database() {
    register_database_on_commit();
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden._worker_wake_on_commit() IS
  'Internal: sets this database''s pg_warden worker latch when the current transaction commits (never on rollback).';
COMMENT ON FUNCTION warden._worker_wake_task_on_commit(text) IS
  'Internal: runs the named task of this database''s pg_warden worker when the current transaction commits (never on rollback).';
COMMENT ON FUNCTION warden._launcher_register_database() IS
  'Internal: run by CREATE EXTENSION so the launcher starts this database''s worker at commit.';
"#,
    name = "wakeup_comments",
    requires = [
        _worker_wake_on_commit,
        _worker_wake_task_on_commit,
        _launcher_register_database
    ],
);
