//! The key check task: at worker start (and hourly) compares the root key
//! with this database's stored key check values, so a wrong or missing
//! root key shows in the log and in `warden.worker_status` at once.

use std::time::Duration;

use crate::error::WardenError;
use crate::workers::{register_task, Task, TaskContext, TaskReport, TaskSpec};

struct KeyCheck;

impl Task for KeyCheck {
    fn interval(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn run(&mut self, _ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        super::worker_key_check().map(|()| TaskReport::default())
    }
}

pub fn register() {
    register_task(TaskSpec {
        name: "key_check",
        runs_on_any_wakeup: false,
        make: || Box::new(KeyCheck),
        holds_slot: None,
    });
}
