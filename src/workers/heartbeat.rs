//! The heartbeat task: one SPI round trip per interval, proving that the
//! worker is connected, can run transactions and is scheduled.

use std::time::Duration;

use crate::error::WardenError;
use crate::guc;

use super::fault;
use super::registry::{register_task, TaskSpec};
use super::task::{Task, TaskContext, TaskReport};

struct Heartbeat;

pub fn register() {
    register_task(TaskSpec {
        name: "heartbeat",
        runs_on_any_wakeup: true,
        make: || Box::new(Heartbeat),
        holds_slot: None,
    });
}

impl Task for Heartbeat {
    fn interval(&self) -> Duration {
        guc::heartbeat_interval()
    }

    fn run(&mut self, ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        fault::task_fault_point(ctx.dboid);
        crate::spi_read::read_one::<i32>("SELECT 1", &[])
            .map_err(|e| WardenError::prerequisite(format!("heartbeat query failed: {e}")))?;
        Ok(TaskReport::default())
    }
}
