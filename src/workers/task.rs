//! The trait every background job implements, and the runner that makes a
//! failing job harmless to the others: each run gets its own transaction,
//! and an ERROR or a Rust panic inside it is caught, logged, recorded in
//! shared memory and rolled back, leaving the worker running.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::PgTryBuilder;

use crate::error::WardenError;

use super::shmem::SHARED;

/// What a run reports back.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskReport {
    /// Items still waiting after this run (how far behind the task is).
    pub backlog: i64,
}

/// A background job a subsystem registers (`registry::register_task`).
pub trait Task {
    /// Time between runs when nothing wakes the worker.
    fn interval(&self) -> Duration;
    /// Shortest time from the start of a run to the start of a run a
    /// wake-up asks for; wake-ups within it are served together when it
    /// ends (a task woken by every commit then runs at most once per gap,
    /// not once per commit; back to back when a run takes longer).
    fn wake_gap(&self) -> Duration {
        Duration::ZERO
    }
    /// Start-up recovery: runs once when the worker starts, in its own
    /// transaction, before the first run (say, to take back work a
    /// crashed worker left half done).
    fn start(&mut self, _ctx: &TaskContext) -> Result<(), WardenError> {
        Ok(())
    }
    /// Does one batch of work inside the transaction the runner opened.
    fn run(&mut self, ctx: &TaskContext) -> Result<TaskReport, WardenError>;
    /// Runs after `run`'s transaction committed, outside any transaction
    /// (to free what is now safely stored, or wake who waits for it). Not
    /// run when `run` failed.
    fn committed(&mut self, _ctx: &TaskContext) {}
}

/// What the runner tells a task about where it runs.
pub struct TaskContext {
    pub dboid: u32,
    /// The database's slot in shared memory.
    pub slot_index: usize,
    /// The task's position in the registry.
    pub task_index: usize,
    pub name: &'static str,
}

/// Runs `f` in a transaction of its own, shown in `pg_stat_activity` as
/// "pg_warden: <task> <what>"; an ERROR or a Rust panic is caught,
/// logged and rolled back. Never raises.
fn in_task_transaction<R>(
    ctx: &TaskContext,
    what: &str,
    f: impl FnOnce() -> Result<R, WardenError>,
) -> Result<R, String> {
    let activity =
        std::ffi::CString::new(format!("pg_warden: {} {what}", ctx.name)).unwrap_or_default();
    let outcome: Result<R, String> = PgTryBuilder::new(AssertUnwindSafe(|| {
        // SAFETY: the standard transaction bracket of a background worker.
        unsafe {
            pg_sys::SetCurrentStatementStartTimestamp();
            pg_sys::StartTransactionCommand();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, activity.as_ptr());
        }
        match f() {
            Ok(r) => {
                unsafe {
                    pg_sys::PopActiveSnapshot();
                    pg_sys::CommitTransactionCommand();
                    // as a backend does when idle: the run's table
                    // statistics reach the cumulative stats (autovacuum
                    // decides on them; unflushed, a table only the
                    // worker changes would never be vacuumed)
                    pg_sys::pgstat_report_stat(false);
                }
                Ok(r)
            }
            Err(e) => Err(e.message),
        }
    }))
    .catch_others(|caught| Err(caught_message(&caught)))
    .execute();

    if outcome.is_err() {
        // SAFETY: abort whatever the failed run left open (a no-op when
        // the failure came after commit or before start).
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    // SAFETY: reports the worker idle again.
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null()) };
    if let Err(message) = &outcome {
        pgrx::warning!(
            "pg_warden worker: task \"{}\" failed ({what}): {}",
            ctx.name,
            message
        );
    }
    outcome
}

/// The task's start-up recovery; a failure is recorded like a failed run
/// and the worker goes on.
pub fn start_task(task: &mut dyn Task, ctx: &TaskContext) {
    if let Err(message) = in_task_transaction(ctx, "start-up", || task.start(ctx)) {
        record(ctx, now(), Err(message));
    }
}

/// Runs one task in its own transaction and records the outcome in the
/// database's slot. Never raises.
pub fn run_task(task: &mut dyn Task, ctx: &TaskContext) {
    let started = now();
    let outcome = in_task_transaction(ctx, "run", || task.run(ctx));
    if outcome.is_ok() {
        task.committed(ctx);
    }
    record(ctx, started, outcome);
}

fn record(ctx: &TaskContext, started: i64, outcome: Result<TaskReport, String>) {
    let finished = now();
    let mut shared = SHARED.exclusive();
    if shared.slots[ctx.slot_index].dboid != ctx.dboid {
        return; // the slot was taken from us (database dropped)
    }
    let t = &mut shared.tasks_mut(ctx.slot_index)[ctx.task_index];
    t.runs += 1;
    t.last_run_at = started;
    match outcome {
        Ok(report) => {
            t.last_success_at = finished;
            t.backlog = report.backlog;
        }
        Err(message) => {
            t.failures += 1;
            t.last_error_at = finished;
            t.set_last_error(&message);
        }
    }
}

fn caught_message(caught: &CaughtError) -> String {
    crate::subtransaction::failed(caught).message
}

pub fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}
