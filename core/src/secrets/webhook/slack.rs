//! Slack's `X-Slack-Signature: v0=<hex>`: HMAC-SHA256 of
//! `v0:<X-Slack-Request-Timestamp>:<body>` under the signing secret.

use super::{matches_hex, Delivery, Received, SignError};
use crate::secrets::hmac_sha256;

fn base_string(timestamp: i64, payload: &[u8]) -> Vec<u8> {
    let mut s = format!("v0:{timestamp}:").into_bytes();
    s.extend_from_slice(payload);
    s
}

pub(super) fn sign(secret: &[u8], d: &Delivery) -> Result<String, SignError> {
    let ts = d.timestamp.ok_or(SignError::TimestampRequired)?;
    Ok(format!(
        "v0={}",
        crate::audit::to_hex(&hmac_sha256(secret, &base_string(ts, d.payload)))
    ))
}

pub(super) fn verify(secret: &[u8], r: &Received) -> bool {
    let Some(ts) = r.sent_at else { return false };
    if !super::fresh(ts, r.now, r.tolerance) {
        return false;
    }
    let Some(hex) = r.signature.strip_prefix("v0=") else {
        return false;
    };
    matches_hex(&hmac_sha256(secret, &base_string(ts, r.payload)), hex)
}
