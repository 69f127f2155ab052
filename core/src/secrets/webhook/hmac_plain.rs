//! `hmac-sha256`: HMAC-SHA256 of the payload under the secret's bytes,
//! sent as hex; a received one may be hex or base64.

use super::{matches_base64, matches_hex, Delivery, Received};
use crate::secrets::hmac_sha256;

pub(super) fn sign(secret: &[u8], d: &Delivery) -> String {
    crate::audit::to_hex(&hmac_sha256(secret, d.payload))
}

pub(super) fn verify(secret: &[u8], r: &Received) -> bool {
    if !super::fresh_if_given(r) {
        return false;
    }
    let mac = hmac_sha256(secret, r.payload);
    let given = r.signature.trim();
    // 64 hex digits is never valid base64 of 32 bytes (that is 44 long)
    if given.len() == 64 {
        matches_hex(&mac, given)
    } else {
        matches_base64(&mac, given)
    }
}
