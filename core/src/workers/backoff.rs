//! Restart back-off for a database worker that keeps dying.

use std::time::Duration;

/// First restart delay after a failure.
pub const RESTART_BASE: Duration = Duration::from_secs(1);
/// Longest restart delay: a worker that keeps failing is retried at least
/// this often, so it recovers on its own once the cause is fixed.
pub const RESTART_CAP: Duration = Duration::from_secs(60);

/// Delay before starting a worker again after `consecutive_failures`
/// failures in a row: none for the first start, then 1 s, 2 s, 4 s, ...
/// capped at 60 s. A worker that ran cleanly resets the count.
pub fn restart_delay(consecutive_failures: u32) -> Duration {
    if consecutive_failures == 0 {
        return Duration::ZERO;
    }
    let exp = (consecutive_failures - 1).min(16);
    RESTART_BASE
        .checked_mul(1u32 << exp)
        .map_or(RESTART_CAP, |d| d.min(RESTART_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_then_caps() {
        let secs: Vec<u64> = (0..9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(restart_delay(u32::MAX), RESTART_CAP);
    }

    proptest! {
        #[test]
        fn monotonic_and_bounded(n in 0u32..1000) {
            prop_assert!(restart_delay(n) <= restart_delay(n + 1));
            prop_assert!(restart_delay(n) <= RESTART_CAP);
        }
    }
}
