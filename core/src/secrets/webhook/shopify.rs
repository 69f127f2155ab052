//! Shopify's `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the raw body
//! under the app's secret. No timestamp is signed.

use super::{base64_text, matches_base64, Delivery, Received};
use crate::secrets::hmac_sha256;

pub(super) fn sign(secret: &[u8], d: &Delivery) -> String {
    base64_text(&hmac_sha256(secret, d.payload))
}

pub(super) fn verify(secret: &[u8], r: &Received) -> bool {
    if !super::fresh_if_given(r) {
        return false;
    }
    matches_base64(&hmac_sha256(secret, r.payload), r.signature.trim())
}
