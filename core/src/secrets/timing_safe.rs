//! Equality of byte strings in time that depends only on the length of
//! the longer one: no early exit at the first differing byte (what `==`
//! and `memcmp` do, and what lets an attacker find a MAC byte by byte),
//! nor at a length mismatch.

use std::hint::black_box;

/// Whether `a` and `b` are equal, reading every byte of the longer.
pub fn timing_safe_equal(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    // lengths are not secret; their difference joins the accumulator so
    // a mismatch costs the same loop as a match
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(black_box(x ^ y));
    }
    black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn equal_unequal_and_prefixes() {
        assert!(timing_safe_equal(b"", b""));
        assert!(timing_safe_equal(b"abc", b"abc"));
        assert!(!timing_safe_equal(b"abc", b"abd"));
        assert!(!timing_safe_equal(b"abc", b"ab"));
        assert!(!timing_safe_equal(b"ab", b"abc"));
        // a zero byte past the shorter input is still a difference
        assert!(!timing_safe_equal(b"ab", b"ab\0"));
        assert!(!timing_safe_equal(b"", b"\0"));
    }

    proptest! {
        #[test]
        fn agrees_with_eq(a in proptest::collection::vec(any::<u8>(), 0..64),
                          b in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(timing_safe_equal(&a, &b), a == b);
            prop_assert!(timing_safe_equal(&a, &a.clone()));
        }
    }
}
