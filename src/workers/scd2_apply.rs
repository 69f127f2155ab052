//! The SCD2 apply task: turns the changes queued by sources tracked with
//! `deferred => true` into history versions, every
//! `warden.scd2_apply_interval`.

use std::time::Duration;

use crate::error::WardenError;
use crate::guc;

use super::task::{Task, TaskContext, TaskReport};

pub struct Scd2Apply;

impl Task for Scd2Apply {
    fn name(&self) -> &'static str {
        "scd2_apply"
    }

    fn interval(&self) -> Duration {
        guc::scd2_apply_interval()
    }

    // Batches stay large (one statement per source per interval) instead
    // of one apply per commit elsewhere in the database.
    fn runs_on_wakeup(&self) -> bool {
        false
    }

    fn run(&mut self, _ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        crate::scd2::apply_deferred().map(|backlog| TaskReport { backlog })
    }
}
