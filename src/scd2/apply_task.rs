//! The SCD2 apply task: turns the changes queued by sources tracked with
//! `deferred => true` into history versions, every
//! `warden.scd2_apply_interval`.

use std::time::Duration;

use crate::error::WardenError;
use crate::guc;
use crate::workers::{register_task, Task, TaskContext, TaskReport, TaskSpec};

struct Scd2Apply;

impl Task for Scd2Apply {
    fn interval(&self) -> Duration {
        guc::scd2_apply_interval()
    }

    fn run(&mut self, _ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        super::deferred::apply_all().map(|backlog| TaskReport { backlog })
    }
}

pub fn register() {
    register_task(TaskSpec {
        name: "scd2_apply",
        // Batches stay large (one statement per source per interval)
        // instead of one apply per commit elsewhere in the database.
        runs_on_any_wakeup: false,
        make: || Box::new(Scd2Apply),
        holds_slot: None,
    });
}
