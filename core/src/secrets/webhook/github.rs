//! GitHub's `X-Hub-Signature-256: sha256=<hex>`: HMAC-SHA256 of the body
//! under the webhook secret. GitHub signs no timestamp.

use super::{matches_hex, Delivery, Received};
use crate::secrets::hmac_sha256;

pub(super) fn sign(secret: &[u8], d: &Delivery) -> String {
    format!(
        "sha256={}",
        crate::audit::to_hex(&hmac_sha256(secret, d.payload))
    )
}

pub(super) fn verify(secret: &[u8], r: &Received) -> bool {
    if !super::fresh_if_given(r) {
        return false;
    }
    let Some(hex) = r.signature.strip_prefix("sha256=") else {
        return false;
    };
    matches_hex(&hmac_sha256(secret, r.payload), hex)
}
