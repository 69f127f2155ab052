//! The key check task: at worker start (and hourly) compares the root key
//! with this database's stored key check values.

use std::time::Duration;

use crate::error::WardenError;

use super::task::{Task, TaskContext, TaskReport};

pub struct KeyCheck;

impl Task for KeyCheck {
    fn name(&self) -> &'static str {
        "key_check"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn runs_on_wakeup(&self) -> bool {
        false
    }

    fn run(&mut self, _ctx: &TaskContext) -> Result<TaskReport, WardenError> {
        crate::crypto::worker_key_check().map(|()| TaskReport::default())
    }
}
