//! A tenant id compared with a typed tenant column must be that type's
//! canonical text, or it would alias: `+42`, `042` and `42` are one bigint,
//! and a uuid reads the same in upper case or without hyphens, while keys
//! and tokens are bound to the id's exact text. These parse an id only
//! when it is the canonical form (what the type's output function
//! prints), so every non-canonical spelling matches no row.

/// `id` as an integer of `bits` bits (32 or 64) if it is exactly how
/// Postgres prints that integer: optional `-`, no `+`, no leading zeros.
pub fn canonical_int(id: &str, bits: u32) -> Option<i64> {
    let digits = id.strip_prefix('-').unwrap_or(id);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || id == "-0"
    {
        return None;
    }
    let n: i64 = id.parse().ok()?;
    match bits {
        32 => i32::try_from(n).ok().map(i64::from),
        _ => Some(n),
    }
}

/// The 16 bytes of `id` if it is a uuid in Postgres' output form:
/// lower-case hex, 8-4-4-4-12 with hyphens.
pub fn canonical_uuid(id: &str) -> Option<[u8; 16]> {
    let b = id.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        out[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
        nibbles += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers_only_in_canonical_form() {
        assert_eq!(canonical_int("42", 64), Some(42));
        assert_eq!(canonical_int("-42", 64), Some(-42));
        assert_eq!(canonical_int("0", 64), Some(0));
        for bad in [
            "+42", "042", "-0", "00", "", "-", "4 2", " 42", "42 ", "1e3", "0x2a", "４２",
        ] {
            assert_eq!(canonical_int(bad, 64), None, "{bad:?}");
        }
        assert_eq!(canonical_int("9223372036854775807", 64), Some(i64::MAX));
        assert_eq!(canonical_int("9223372036854775808", 64), None);
        assert_eq!(canonical_int("2147483647", 32), Some(2147483647));
        assert_eq!(canonical_int("2147483648", 32), None);
        assert_eq!(canonical_int("-2147483648", 32), Some(-2147483648));
    }

    #[test]
    fn uuids_only_in_canonical_form() {
        let id = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let bytes = canonical_uuid(id).unwrap();
        assert_eq!(bytes[0], 0xa0);
        assert_eq!(bytes[15], 0x11);
        for bad in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
            "a0eebc99+9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            assert_eq!(canonical_uuid(bad), None, "{bad:?}");
        }
    }

    proptest! {
        // the canonical form of every integer is accepted, and nothing
        // else that parses to the same integer is
        #[test]
        fn every_integer_has_exactly_one_accepted_spelling(n in any::<i64>(), pad in 1usize..3) {
            prop_assert_eq!(canonical_int(&n.to_string(), 64), Some(n));
            let padded = if n < 0 { format!("-{}{}", "0".repeat(pad), n.unsigned_abs()) } else { format!("{}{}", "0".repeat(pad), n) };
            prop_assert_eq!(canonical_int(&padded, 64), None);
            if n >= 0 {
                prop_assert_eq!(canonical_int(&format!("+{n}"), 64), None);
            }
        }

        #[test]
        fn uuid_round_trip(bytes in any::<[u8; 16]>()) {
            let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let s = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
            prop_assert_eq!(canonical_uuid(&s), Some(bytes));
            prop_assert_eq!(canonical_uuid(&s.to_uppercase()), if s == s.to_uppercase() { Some(bytes) } else { None });
        }
    }
}
