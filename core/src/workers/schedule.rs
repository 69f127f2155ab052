//! When each task of a database worker runs next, and how long the worker
//! may sleep on its latch before that. Times are microseconds on one clock
//! (the worker passes Postgres' `GetCurrentTimestamp()`).

/// Per-task timing state kept by the worker loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskClock {
    /// Microseconds between runs when nothing wakes the worker.
    pub interval_us: i64,
    /// When the task is next due; `None` before its first run (due at once).
    pub next_due_us: Option<i64>,
}

impl TaskClock {
    pub fn new(interval_us: i64) -> Self {
        TaskClock {
            interval_us: interval_us.max(0),
            next_due_us: None,
        }
    }

    pub fn is_due(&self, now_us: i64) -> bool {
        self.next_due_us.is_none_or(|due| due <= now_us)
    }

    /// Records a run that finished at `now_us`.
    pub fn ran(&mut self, now_us: i64) {
        self.next_due_us = Some(now_us.saturating_add(self.interval_us));
    }
}

/// How long to wait on the latch: until the earliest due task, at least 0
/// and at most `max_wait_us` (the worker's naptime, so settings reloads and
/// extension checks happen even when every task is idle).
pub fn next_wait(now_us: i64, clocks: &[TaskClock], max_wait_us: i64) -> i64 {
    clocks
        .iter()
        .map(|c| c.next_due_us.map_or(0, |due| due.saturating_sub(now_us)))
        .fold(max_wait_us, i64::min)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn new_task_is_due_at_once() {
        let c = TaskClock::new(10);
        assert!(c.is_due(0));
        assert_eq!(next_wait(0, &[c], 1_000), 0);
    }

    #[test]
    fn waits_for_earliest_task_capped_by_naptime() {
        let mut a = TaskClock::new(500);
        let mut b = TaskClock::new(200);
        a.ran(1_000);
        b.ran(1_000);
        assert!(!a.is_due(1_100));
        assert_eq!(next_wait(1_100, &[a, b], 10_000), 100);
        assert_eq!(next_wait(1_100, &[a, b], 50), 50);
        assert_eq!(next_wait(1_100, &[], 50), 50);
        assert!(b.is_due(1_200));
        assert_eq!(next_wait(5_000, &[a, b], 50), 0);
    }

    proptest! {
        #[test]
        fn wait_is_within_bounds(now in 0i64..1_000_000, dues in proptest::collection::vec(0i64..2_000_000, 0..6), cap in 0i64..1_000_000) {
            let clocks: Vec<TaskClock> = dues.iter().map(|d| TaskClock { interval_us: 1, next_due_us: Some(*d) }).collect();
            let w = next_wait(now, &clocks, cap);
            prop_assert!(w >= 0 && w <= cap);
            // never sleeps past a due task
            for c in &clocks {
                prop_assert!(now + w <= c.next_due_us.unwrap().max(now));
            }
        }
    }
}
