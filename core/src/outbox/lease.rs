//! A pull consumer's lease: a token naming the delivery it holds and the
//! claim that gave it. Each claim draws a fresh nonce, so a consumer whose
//! lease lapsed and whose message was claimed again holds a token that no
//! longer matches: its ack, nack or extend changes nothing. The token
//! carries the delivery's key, so acknowledging is a primary-key lookup
//! (no index on the lease, and claims stay narrow updates).

/// The 16 bytes of a lease token (shown as a uuid): the subscription id,
/// the delivery id and the claim's nonce, big-endian.
pub fn lease_token(subscription_id: i32, delivery_id: i64, nonce: i32) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..4].copy_from_slice(&subscription_id.to_be_bytes());
    t[4..12].copy_from_slice(&delivery_id.to_be_bytes());
    t[12..].copy_from_slice(&nonce.to_be_bytes());
    t
}

/// What `lease_token` put in: (subscription id, delivery id, nonce). Any
/// 16 bytes parse; a forged or stale token simply matches no delivery.
pub fn parse_lease(token: &[u8; 16]) -> (i32, i64, i32) {
    let sub = i32::from_be_bytes(token[..4].try_into().expect("4 bytes"));
    let id = i64::from_be_bytes(token[4..12].try_into().expect("8 bytes"));
    let nonce = i32::from_be_bytes(token[12..].try_into().expect("4 bytes"));
    (sub, id, nonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_token() {
        let t = lease_token(7, 0x0102_0304_0506_0708, -2);
        assert_eq!(
            t,
            [0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xfe]
        );
        assert_eq!(parse_lease(&t), (7, 0x0102_0304_0506_0708, -2));
    }

    proptest! {
        #[test]
        fn round_trip(sub in any::<i32>(), id in any::<i64>(), nonce in any::<i32>()) {
            prop_assert_eq!(parse_lease(&lease_token(sub, id, nonce)), (sub, id, nonce));
        }

        #[test]
        fn another_nonce_is_another_token(sub in any::<i32>(), id in any::<i64>(), a in any::<i32>(), b in any::<i32>()) {
            prop_assume!(a != b);
            prop_assert_ne!(lease_token(sub, id, a), lease_token(sub, id, b));
        }
    }
}
