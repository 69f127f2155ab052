//! The task registry. Each subsystem registers its background tasks from
//! its own folder, in its `init()` while the library is preloaded; the
//! runtime sizes its shared memory from the registry and every database
//! worker runs what is registered. The runtime names no subsystem.
//!
//! Registration happens in the postmaster before any fork, so every
//! process sees the same tasks at the same indexes: a `TaskId` taken at
//! registration names the task in any backend (to wake it at commit).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

use super::task::Task;

/// Tasks one database worker can run: the width of a wake-up bitmask.
pub const MAX_TASKS: usize = 64;

pub struct TaskSpec {
    /// Stable name shown in `warden.worker_status` and `pg_stat_activity`.
    pub name: &'static str,
    /// Whether a plain commit-time wake-up of the worker
    /// (`wake_worker_on_commit`) runs this task at once; a wake-up of the
    /// task itself (`wake_task_on_commit`) always does.
    pub runs_on_any_wakeup: bool,
    /// Makes the task's state for one worker.
    pub make: fn() -> Box<dyn Task>,
    /// Whether the task keeps work in shared memory under database slot
    /// `index` (the audit ring): a slot whose database has no worker
    /// (left out by `warden.databases`, or not taking connections) is
    /// kept for it while this says so, and freed otherwise.
    pub holds_slot: Option<fn(usize) -> bool>,
}

/// Whether any task keeps work under database slot `index`.
pub fn slot_held(index: usize) -> bool {
    tasks()
        .iter()
        .filter_map(|t| t.holds_slot)
        .any(|held| held(index))
}

/// A registered task, by position (below MAX_TASKS: only the registry
/// makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskId(usize);

impl TaskId {
    /// The task's wake-up bit.
    pub fn bit(self) -> u64 {
        1 << self.0
    }
}

struct Registry(UnsafeCell<Vec<TaskSpec>>);
// SAFETY: written only while preloading, before other processes exist.
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry(UnsafeCell::new(Vec::new()));
/// Set once shared memory was sized from the registry.
static CLOSED: AtomicBool = AtomicBool::new(false);

fn registry() -> &'static mut Vec<TaskSpec> {
    // SAFETY: see Registry.
    unsafe { &mut *REGISTRY.0.get() }
}

/// Registers a task; only while preloading, before the runtime's own
/// `init` sizes shared memory. A name registered twice or more than
/// MAX_TASKS tasks stop the server from starting with a clear message
/// rather than a task silently not running.
pub fn register_task(spec: TaskSpec) -> TaskId {
    assert!(
        crate::preload::is_preloaded(),
        "pg_warden: tasks are registered only while preloading"
    );
    assert!(
        !CLOSED.load(Ordering::Relaxed),
        "pg_warden: task {} registered after shared memory was sized",
        spec.name
    );
    assert!(
        !registry().iter().any(|t| t.name == spec.name),
        "pg_warden: task {} registered twice",
        spec.name
    );
    assert!(
        registry().len() < MAX_TASKS,
        "pg_warden: more than {MAX_TASKS} background tasks registered"
    );
    registry().push(spec);
    TaskId(registry().len() - 1)
}

/// Closes the registry (shared memory is sized from it now); returns how
/// many tasks it holds.
pub fn close() -> usize {
    CLOSED.store(true, Ordering::Relaxed);
    tasks().len()
}

/// Every registered task, in registration order.
pub fn tasks() -> &'static [TaskSpec] {
    registry()
}

/// The task registered as `name`.
pub fn task_id(name: &str) -> Option<TaskId> {
    tasks().iter().position(|t| t.name == name).map(TaskId)
}

/// The wake-up bits of the tasks a plain wake-up runs.
pub fn any_wakeup_mask() -> u64 {
    tasks()
        .iter()
        .enumerate()
        .filter(|(_, t)| t.runs_on_any_wakeup)
        .fold(0, |mask, (i, _)| mask | 1 << i)
}
