//! Worker runtime rules: which databases get a worker, when a dead worker
//! is started again, and how long a worker sleeps between task runs.

mod backoff;
mod database_filter;
mod schedule;

pub use backoff::restart_delay;
pub use database_filter::{DatabaseFilter, DatabaseFilterError};
pub use schedule::{latch_wait_ms, next_wait, TaskClock};
