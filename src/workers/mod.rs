//! Worker runtime: a launcher started by the postmaster, and one dynamic
//! worker per database that has the extension, running tasks.
//!
//! - `shmem`: the shared state (one slot per database) both sides read.
//! - `launcher`: scans pg_database, starts, restarts and stops workers.
//! - `worker`: the per-database latch loop that runs tasks.
//! - `task`: the trait every background job implements, and its runner.
//! - `heartbeat`: the task that proves the runtime works.
//! - `key_check`: the task that reports a wrong or missing root key.
//! - `scd2_apply`: the task that applies deferred SCD2 queues.
//! - `wakeup`: commit-time latch wake-ups for subsystems.
//! - `status`: `warden.worker_status`.
//! - `database_ddl`: steps the worker aside for DROP/CREATE/ALTER DATABASE.
//! - `fault`: fault injection for recovery tests.

mod catalog;
mod database_ddl;
mod fault;
mod heartbeat;
mod key_check;
mod launcher;
mod scd2_apply;
mod shmem;
mod status;
mod task;
mod wakeup;
mod worker;

// The Rust API later subsystems (outbox, audit) call inside a transaction.
#[allow(unused_imports)]
pub use wakeup::wake_worker_on_commit;

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use std::time::Duration;

/// Registers shared memory and the launcher. Only called while preloading.
pub fn init() {
    shmem::init();
    database_ddl::init();
    BackgroundWorkerBuilder::new("pg_warden launcher")
        .set_type("pg_warden launcher")
        .set_library("pg_warden")
        .set_function("warden_launcher_main")
        .enable_shmem_access(None)
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        // The launcher exits 1 on any unexpected stop so the postmaster
        // brings it back; this is how soon.
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}
