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
    /// Shortest time from the start of a run to the start of a run a
    /// wake-up asks for: wake-ups that arrive sooner are served together,
    /// at the end of the gap, in one run. A run longer than the gap is
    /// followed at once: under load the task runs back to back.
    pub wake_gap_us: i64,
    /// When the last run started.
    pub last_ran_us: Option<i64>,
    /// A wake-up waits for the end of the gap.
    pub wake_pending: bool,
}

impl TaskClock {
    pub fn new(interval_us: i64) -> Self {
        TaskClock {
            interval_us: interval_us.max(0),
            next_due_us: None,
            wake_gap_us: 0,
            last_ran_us: None,
            wake_pending: false,
        }
    }

    /// A clock whose wake-ups within `wake_gap_us` of the start of the
    /// last run wait for the end of the gap.
    pub fn with_wake_gap(mut self, wake_gap_us: i64) -> Self {
        self.wake_gap_us = wake_gap_us.max(0);
        self
    }

    /// Records a wake-up at `now_us`: the task is due at once, or at the
    /// end of the gap after its last run, whichever is later (and never
    /// later than it already was).
    pub fn woken(&mut self, now_us: i64) {
        let earliest = self
            .last_ran_us
            .map_or(now_us, |at| at.saturating_add(self.wake_gap_us).max(now_us));
        let due = self.next_due_us.map_or(earliest, |due| due.min(earliest));
        self.next_due_us = Some(due);
        self.wake_pending = due > now_us;
    }

    pub fn is_due(&self, now_us: i64) -> bool {
        self.next_due_us.is_none_or(|due| due <= now_us)
    }

    /// Records a wake-up that may not wait for the gap (someone waits for
    /// the run): due at once.
    pub fn woken_now(&mut self, now_us: i64) {
        self.next_due_us = Some(self.next_due_us.map_or(now_us, |due| due.min(now_us)));
        self.wake_pending = false;
    }

    /// Records a run that started at `started_us` and finished at
    /// `finished_us`.
    pub fn ran(&mut self, started_us: i64, finished_us: i64) {
        self.next_due_us = Some(finished_us.saturating_add(self.interval_us));
        self.last_ran_us = Some(started_us);
        self.wake_pending = false;
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

/// `wait_us` as the whole milliseconds a latch wait takes (`WaitLatch`'s
/// unit), rounded up: rounded down, a wait shorter than a millisecond
/// became 0 and the worker spun on its latch until the task was due (a
/// fifth of its CPU while messages were published, its runs 2 ms apart).
pub fn latch_wait_ms(wait_us: i64) -> u64 {
    (wait_us.max(0) as u64).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_wait_under_a_millisecond_is_a_millisecond_not_zero() {
        assert_eq!(latch_wait_ms(0), 0);
        assert_eq!(latch_wait_ms(-5), 0);
        assert_eq!(latch_wait_ms(1), 1);
        assert_eq!(latch_wait_ms(999), 1);
        assert_eq!(latch_wait_ms(1_000), 1);
        assert_eq!(latch_wait_ms(1_001), 2);
        assert_eq!(latch_wait_ms(5_000_000), 5_000);
    }

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
        a.ran(1_000, 1_000);
        b.ran(1_000, 1_000);
        assert!(!a.is_due(1_100));
        assert_eq!(next_wait(1_100, &[a, b], 10_000), 100);
        assert_eq!(next_wait(1_100, &[a, b], 50), 50);
        assert_eq!(next_wait(1_100, &[], 50), 50);
        assert!(b.is_due(1_200));
        assert_eq!(next_wait(5_000, &[a, b], 50), 0);
    }

    #[test]
    fn wake_ups_within_the_gap_wait_for_its_end() {
        let mut c = TaskClock::new(1_000_000).with_wake_gap(10_000);
        // the first wake-up, before any run: due at once
        c.woken(0);
        assert!(c.is_due(0));
        c.ran(500, 1_000);
        // woken 2 ms after the run: due when the gap ends, not before
        c.woken(3_000);
        assert!(!c.is_due(10_499));
        assert!(c.is_due(10_500));
        assert!(c.wake_pending);
        assert_eq!(next_wait(3_000, &[c], 1_000_000), 7_500);
        // a second wake-up in the gap changes nothing
        c.woken(5_000);
        assert_eq!(c.next_due_us, Some(10_500));
        // one that cannot wait is due at once
        let mut urgent = c;
        urgent.woken_now(6_000);
        assert!(urgent.is_due(6_000) && !urgent.wake_pending);
        c.ran(11_000, 11_500);
        assert!(!c.wake_pending);
        // a run longer than the gap: a wake-up at its end is due at once
        c.ran(12_000, 40_000);
        c.woken(40_000);
        assert!(c.is_due(40_000));
        c.ran(40_000, 41_000);
        // woken after the gap: due at once
        c.woken(60_000);
        assert!(c.is_due(60_000));
        assert!(!c.wake_pending);
    }

    #[test]
    fn without_a_gap_a_wake_up_is_due_at_once() {
        let mut c = TaskClock::new(1_000_000);
        c.ran(1_000, 1_000);
        c.woken(1_001);
        assert!(c.is_due(1_001));
    }

    proptest! {
        /// A wake-up never postpones a run already due sooner, and is
        /// served no later than the end of the gap.
        #[test]
        fn a_wake_up_is_served_by_the_end_of_the_gap(ran in 0i64..1_000_000, after in 0i64..100_000, gap in 0i64..50_000, interval in 0i64..2_000_000) {
            let mut c = TaskClock::new(interval).with_wake_gap(gap);
            c.ran(ran, ran);
            let before = c.next_due_us.unwrap();
            let now = ran + after;
            c.woken(now);
            let due = c.next_due_us.unwrap();
            prop_assert!(due <= before);
            prop_assert!(due <= (ran + gap).max(now));
            prop_assert!(due >= now.min(before));
        }

        #[test]
        fn wait_is_within_bounds(now in 0i64..1_000_000, dues in proptest::collection::vec(0i64..2_000_000, 0..6), cap in 0i64..1_000_000) {
            let clocks: Vec<TaskClock> = dues.iter().map(|d| TaskClock { next_due_us: Some(*d), ..TaskClock::new(1) }).collect();
            let w = next_wait(now, &clocks, cap);
            prop_assert!(w >= 0 && w <= cap);
            // never sleeps past a due task
            for c in &clocks {
                prop_assert!(now + w <= c.next_due_us.unwrap().max(now));
            }
        }
    }
}
