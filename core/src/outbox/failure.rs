//! What becomes of a delivery whose attempt failed (a handler's error, a
//! pull consumer's nack or a lapsed lease).

use super::retry_delay_us;

/// The next state of a delivery after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Tried again after this many microseconds.
    Retry { delay_us: i64 },
    /// Out of attempts: moved to the dead letters, and a dead-letter
    /// message is published.
    DeadLetter,
    /// Out of attempts on a dead-letter message itself: kept as failed,
    /// never dead-lettered again (a failing dead-letter handler would
    /// otherwise feed itself for ever).
    Failed,
}

/// After `failures` failed attempts (this one included) of a delivery
/// allowed `max_attempts`: retry with backoff and full jitter, or give up.
pub fn after_failure(
    failures: i32,
    max_attempts: i32,
    is_dead_letter: bool,
    backoff_us: i64,
    max_backoff_us: i64,
    random: u64,
) -> AfterFailure {
    if failures >= max_attempts {
        if is_dead_letter {
            AfterFailure::Failed
        } else {
            AfterFailure::DeadLetter
        }
    } else {
        AfterFailure::Retry {
            delay_us: retry_delay_us(backoff_us, max_backoff_us, failures.max(1) as u32, random),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gives_up_after_max_attempts() {
        let f = |n, dl| after_failure(n, 3, dl, 1_000_000, 60_000_000, 7);
        assert!(matches!(f(1, false), AfterFailure::Retry { .. }));
        assert!(matches!(f(2, false), AfterFailure::Retry { .. }));
        assert_eq!(f(3, false), AfterFailure::DeadLetter);
        assert_eq!(f(4, false), AfterFailure::DeadLetter);
        assert_eq!(f(3, true), AfterFailure::Failed);
        assert!(matches!(f(2, true), AfterFailure::Retry { .. }));
        // one attempt allowed: the first failure gives up
        assert_eq!(
            after_failure(1, 1, false, 1, 1, 0),
            AfterFailure::DeadLetter
        );
    }

    proptest! {
        #[test]
        fn retries_wait_within_the_capped_exponential(n in 1i32..40, max in 1i32..50, r in any::<u64>()) {
            match after_failure(n, max, false, 1_000_000, 600_000_000, r) {
                AfterFailure::Retry { delay_us } => {
                    prop_assert!(n < max);
                    let cap = 1_000_000i64.checked_shl((n - 1) as u32).filter(|c| c >> (n - 1) == 1_000_000).unwrap_or(i64::MAX).min(600_000_000);
                    prop_assert!((0..=cap).contains(&delay_us));
                }
                AfterFailure::DeadLetter => prop_assert!(n >= max),
                AfterFailure::Failed => prop_assert!(false, "not a dead letter"),
            }
        }
    }
}
