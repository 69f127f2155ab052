//! HMAC-SHA256 and SHA-256 hex prefixes (`ring`).

use ring::{digest, hmac};

/// Shortest and longest `hash_prefix`, in hex digits.
pub const HASH_PREFIX_MIN: i32 = 4;
pub const HASH_PREFIX_MAX: i32 = 64;

/// HMAC-SHA256 of `data` under `key` (any length, as RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The first `n` hex digits of SHA-256 of `value`, `n` clamped to 4..=64
/// (a log line's recognisable stand-in for a value; unkeyed, so only
/// for values too long or random to guess).
pub fn hash_prefix(value: &[u8], n: i32) -> String {
    let n = n.clamp(HASH_PREFIX_MIN, HASH_PREFIX_MAX) as usize;
    let mut hex = crate::audit::to_hex(digest::digest(&digest::SHA256, value).as_ref());
    hex.truncate(n);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::to_hex;

    #[test]
    fn rfc4231_test_cases_1_and_2() {
        assert_eq!(
            to_hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            to_hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rfc4231_test_case_6_key_longer_than_a_block() {
        assert_eq!(
            to_hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn prefixes_of_the_fips_180_abc_vector_clamped() {
        let full = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hash_prefix(b"abc", 8), &full[..8]);
        assert_eq!(hash_prefix(b"abc", 1), &full[..4]);
        assert_eq!(hash_prefix(b"abc", -5), &full[..4]);
        assert_eq!(hash_prefix(b"abc", 64), full);
        assert_eq!(hash_prefix(b"abc", 1000), full);
    }
}
