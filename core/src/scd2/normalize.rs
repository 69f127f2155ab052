//! Send forms that differ for values their type calls equal, made equal.
//!
//! Postgres' `=` says `-0.0 = 0.0`, `'NaN' = 'NaN'`, `1.0 = 1.00`,
//! `'1 day' = '24 hours'` and `'a'::char(3) = 'a  '`; the binary send
//! forms of those pairs differ. hash_diff encodes these types through the
//! functions here so that equal values hash equally.

use std::fmt;

/// A send form that is too short or inconsistent to be the type's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormalizeError(pub &'static str);

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// float8 as 8 big-endian bytes: `-0.0` as `0.0`, every NaN as one NaN.
pub fn normalize_float8(v: f64) -> [u8; 8] {
    if v.is_nan() {
        return 0x7ff8_0000_0000_0000u64.to_be_bytes();
    }
    if v == 0.0 {
        return 0.0f64.to_be_bytes();
    }
    v.to_be_bytes()
}

/// float4 as 4 big-endian bytes, normalised like [`normalize_float8`].
pub fn normalize_float4(v: f32) -> [u8; 4] {
    if v.is_nan() {
        return 0x7fc0_0000u32.to_be_bytes();
    }
    if v == 0.0 {
        return 0.0f32.to_be_bytes();
    }
    v.to_be_bytes()
}

/// numeric's send form (`ndigits, weight, sign, dscale: i16/u16 BE`, then
/// `ndigits` base-10000 digits) with the display scale zeroed: Postgres
/// strips leading and trailing zero digits, so only `dscale` differs
/// between `1.0` and `1.00`.
pub fn normalize_numeric_send(send: &[u8]) -> Result<Vec<u8>, NormalizeError> {
    if send.len() < 8 {
        return Err(NormalizeError("numeric send form shorter than its header"));
    }
    let ndigits = i16::from_be_bytes([send[0], send[1]]);
    if ndigits < 0 || send.len() != 8 + 2 * ndigits as usize {
        return Err(NormalizeError(
            "numeric send form length does not match ndigits",
        ));
    }
    let mut out = send.to_vec();
    out[6] = 0;
    out[7] = 0;
    Ok(out)
}

/// An interval (`time` µs, `day`, `month`, the fields of its send form)
/// as the 16-byte big-endian value interval comparison uses: months of 30
/// days, days of 24 hours.
pub fn interval_linear(time: i64, day: i32, month: i32) -> [u8; 16] {
    const USECS_PER_DAY: i128 = 86_400_000_000;
    let linear = i128::from(time) + (i128::from(day) + i128::from(month) * 30) * USECS_PER_DAY;
    linear.to_be_bytes()
}

/// char(n) without its blank padding, which its equality ignores.
pub fn trim_bpchar_padding(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn floats_equal_by_equality_encode_equally() {
        assert_eq!(normalize_float8(-0.0), normalize_float8(0.0));
        assert_eq!(normalize_float8(f64::NAN), normalize_float8(-f64::NAN));
        assert_eq!(
            normalize_float8(f64::NAN),
            normalize_float8(f64::from_bits(0x7ff0_0000_0000_0001))
        );
        assert_ne!(
            normalize_float8(f64::INFINITY),
            normalize_float8(f64::NEG_INFINITY)
        );
        assert_eq!(normalize_float4(-0.0), normalize_float4(0.0));
        assert_eq!(normalize_float4(f32::NAN), normalize_float4(-f32::NAN));
    }

    #[test]
    fn numeric_scale_is_ignored() {
        // 1.0: ndigits 1, weight 0, sign 0, dscale 1, digit 1
        let one_0 = [0, 1, 0, 0, 0, 0, 0, 1, 0, 1];
        let one_00 = [0, 1, 0, 0, 0, 0, 0, 2, 0, 1];
        assert_eq!(
            normalize_numeric_send(&one_0),
            normalize_numeric_send(&one_00)
        );
        assert!(normalize_numeric_send(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(normalize_numeric_send(&[0, 1]).is_err());
    }

    #[test]
    fn intervals_compare_linearly() {
        let enc = interval_linear;
        assert_eq!(enc(0, 1, 0), enc(86_400_000_000, 0, 0));
        assert_eq!(enc(0, 30, 0), enc(0, 0, 1));
        assert_ne!(enc(1, 0, 0), enc(0, 0, 0));
        assert_eq!(enc(0, -1, 1), enc(0, 29, 0));
    }

    #[test]
    fn bpchar_padding() {
        assert_eq!(trim_bpchar_padding(b"a  "), b"a");
        assert_eq!(trim_bpchar_padding(b"   "), b"");
        assert_eq!(trim_bpchar_padding(b" a"), b" a");
    }

    proptest! {
        #[test]
        fn float8_equal_iff_equal_or_both_nan(a in any::<f64>(), b in any::<f64>()) {
            let same = a == b || (a.is_nan() && b.is_nan());
            prop_assert_eq!(normalize_float8(a) == normalize_float8(b), same);
        }

        #[test]
        fn float4_equal_iff_equal_or_both_nan(a in any::<f32>(), b in any::<f32>()) {
            let same = a == b || (a.is_nan() && b.is_nan());
            prop_assert_eq!(normalize_float4(a) == normalize_float4(b), same);
        }

        #[test]
        fn numeric_normaliser_never_panics(v in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = normalize_numeric_send(&v);
        }

        // i128 holds every interval: no overflow (a panic in debug builds)
        #[test]
        fn interval_linear_never_overflows(time in any::<i64>(), day in any::<i32>(), month in any::<i32>()) {
            let _ = interval_linear(time, day, month);
        }
    }
}
