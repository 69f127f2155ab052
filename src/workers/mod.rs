//! Worker runtime: a launcher started by the postmaster, and one dynamic
//! worker per database that has the extension, running the tasks the
//! subsystems registered. The runtime names no subsystem.
//!
//! - `registry`: the tasks subsystems register from their own folders.
//! - `task`: the trait every background job implements, and its runner.
//! - `shmem`: the shared state (one slot per database, task state sized
//!   from the registry, lock-free wake-up state).
//! - `launcher`: scans pg_database, starts, restarts and stops workers.
//! - `worker`: the per-database latch loop that runs tasks.
//! - `heartbeat`: the runtime's own task, proving the worker works.
//! - `wakeup`: commit-time wake-ups of a worker or of one task.
//! - `status`: `warden.worker_status`.
//! - `database_ddl`: steps the worker aside for DROP/CREATE/ALTER DATABASE.
//! - `fault`: fault injection for recovery tests.

mod catalog;
mod database_ddl;
mod fault;
mod heartbeat;
mod launcher;
mod registry;
mod shmem;
mod status;
mod task;
mod wakeup;
mod worker;

#[allow(unused_imports)]
pub use registry::{register_task, TaskId, TaskSpec};
pub use task::{now as now_us, Task, TaskContext, TaskReport};
// The Rust API subsystems (outbox, audit) call inside a transaction.
pub use shmem::MAX_DATABASES;
#[allow(unused_imports)]
pub use wakeup::{
    my_database_slot, wake_task_now, wake_task_on_commit, wake_task_soon, wake_worker_on_commit,
};

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use std::time::Duration;

/// Registers shared memory and the launcher. Only called while preloading.
/// Call after every subsystem registered its tasks: shared memory is
/// sized from the registry here.
pub fn init() {
    heartbeat::register();
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

/// Whether this process is a background worker (pg_warden's, or any
/// other's): what must never wait on pg_warden's own worker.
pub fn in_background_worker() -> bool {
    // SAFETY: reads this process's type.
    unsafe { pgrx::pg_sys::MyBackendType == pgrx::pg_sys::BackendType::B_BG_WORKER }
}
