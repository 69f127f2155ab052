//! Small text helpers shared by subsystems.

/// The longest prefix of `s` that fits in `max_bytes` bytes without splitting
/// a UTF-8 character. Used where text goes into fixed-size shared memory.
pub fn truncate_utf8(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_short_strings() {
        assert_eq!(truncate_utf8("abc", 3), "abc");
        assert_eq!(truncate_utf8("", 0), "");
    }

    #[test]
    fn never_splits_a_character() {
        // "é" is two bytes: a 1-byte budget must drop it entirely.
        assert_eq!(truncate_utf8("é", 1), "");
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aé", 3), "aé");
    }

    proptest! {
        #[test]
        fn result_is_a_valid_prefix_within_budget(s in "\\PC*", max in 0usize..64) {
            let t = truncate_utf8(&s, max);
            prop_assert!(t.len() <= max);
            prop_assert!(s.starts_with(t));
            // maximal: the next character would not have fitted
            if t.len() < s.len() {
                let next = s[t.len()..].chars().next().unwrap();
                prop_assert!(t.len() + next.len_utf8() > max);
            }
        }
    }
}
