//! When a failed delivery is tried again: exponential backoff with full
//! jitter (a random delay between zero and the capped exponential one),
//! so deliveries that failed together do not all come back together.

/// Microseconds to wait before the next attempt after `failures` failed
/// ones (1 or more): uniform in `[0, min(max_us, base_us * 2^(failures-1))]`,
/// drawn from `random`.
pub fn retry_delay_us(base_us: i64, max_us: i64, failures: u32, random: u64) -> i64 {
    let base = base_us.max(0);
    let cap = max_us.max(0);
    let shift = failures.saturating_sub(1).min(62);
    let ceiling = base
        .checked_shl(shift)
        .filter(|c| c >> shift == base)
        .unwrap_or(i64::MAX)
        .min(cap);
    if ceiling == 0 {
        return 0;
    }
    (random % (ceiling as u64 + 1)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let top = |n| retry_delay_us(1_000_000, 600_000_000, n, u64::MAX - 1);
        // u64::MAX - 1 mod (c + 1) is not c in general: check the bound
        for n in 1..20 {
            assert!(top(n) <= (1_000_000i64 << (n - 1)).min(600_000_000));
        }
        assert_eq!(
            retry_delay_us(1_000_000, 600_000_000, 1, 1_000_000),
            1_000_000
        );
        assert_eq!(
            retry_delay_us(1_000_000, 600_000_000, 3, 4_000_000),
            4_000_000
        );
        assert_eq!(
            retry_delay_us(1_000_000, 600_000_000, 40, 600_000_000),
            600_000_000
        );
        assert_eq!(retry_delay_us(0, 600_000_000, 5, 12345), 0);
        assert_eq!(retry_delay_us(1_000_000, 0, 5, 12345), 0);
    }

    proptest! {
        #[test]
        fn within_zero_and_the_capped_exponential(base in 0i64..10_000_000_000, cap in 0i64..10_000_000_000, n in 1u32..200, r in any::<u64>()) {
            let d = retry_delay_us(base, cap, n, r);
            prop_assert!(d >= 0 && d <= cap);
            let exp = (base as i128) << (n - 1).min(62);
            prop_assert!((d as i128) <= exp);
        }

        #[test]
        fn jitter_spreads_over_the_whole_range(n in 1u32..10) {
            let ceiling = (1_000i64 << (n - 1)).min(1_000_000);
            // every value of the range is reachable, the ends included
            prop_assert_eq!(retry_delay_us(1_000, 1_000_000, n, 0), 0);
            prop_assert_eq!(retry_delay_us(1_000, 1_000_000, n, ceiling as u64), ceiling);
        }
    }
}
