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

use super::shmem::{MAX_TASKS, SHARED};

/// What a run reports back.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskReport {
    /// Items still waiting after this run (how far behind the task is).
    pub backlog: i64,
}

pub trait Task {
    /// Stable name shown in `warden.worker_status`.
    fn name(&self) -> &'static str;
    /// Time between runs when nothing wakes the worker.
    fn interval(&self) -> Duration;
    /// Whether a commit-time wake-up runs this task at once.
    fn runs_on_wakeup(&self) -> bool {
        true
    }
    /// Does one batch of work inside the transaction the runner opened.
    fn run(&mut self, ctx: &TaskContext) -> Result<TaskReport, WardenError>;
}

/// What the runner tells a task about where it runs.
pub struct TaskContext {
    pub dboid: u32,
    pub task_index: usize,
}

/// Runs one task in its own transaction and records the outcome in the
/// database's slot. Never raises.
pub fn run_task(task: &mut dyn Task, ctx: &TaskContext) {
    let started = now();
    let outcome: Result<TaskReport, String> = PgTryBuilder::new(AssertUnwindSafe(|| {
        // SAFETY: the standard transaction bracket of a background worker.
        unsafe {
            pg_sys::SetCurrentStatementStartTimestamp();
            pg_sys::StartTransactionCommand();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        match task.run(ctx) {
            Ok(report) => {
                unsafe {
                    pg_sys::PopActiveSnapshot();
                    pg_sys::CommitTransactionCommand();
                }
                Ok(report)
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
    if let Err(message) = &outcome {
        pgrx::warning!(
            "pg_warden worker: task \"{}\" failed: {}",
            task.name(),
            message
        );
    }

    let finished = now();
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_mut(ctx.dboid) {
        if ctx.task_index < MAX_TASKS {
            let t = &mut slot.tasks[ctx.task_index];
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
    }
}

fn caught_message(caught: &CaughtError) -> String {
    match caught {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
            report.message().to_string()
        }
        CaughtError::RustPanic { ereport, .. } => format!("panic: {}", ereport.message()),
    }
}

pub fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}
