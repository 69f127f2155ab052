//! Stripe's `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`:
//! HMAC-SHA256 of `<t>.<payload>` keyed with the UTF-8 bytes of the whole
//! endpoint secret (`whsec_...`, not decoded). As Stripe's libraries do:
//! only `v1` entries count (`v0` and unknown keys are skipped), any right
//! `v1` is enough, and the timestamp is the header's own `t`.

use super::{matches_hex, Delivery, Received, SignError, MAX_ENTRIES};
use crate::secrets::hmac_sha256;

fn signed_payload(t: i64, payload: &[u8]) -> Vec<u8> {
    let mut s = format!("{t}.").into_bytes();
    s.extend_from_slice(payload);
    s
}

pub(super) fn sign(secret: &[u8], d: &Delivery) -> Result<String, SignError> {
    let t = d.timestamp.ok_or(SignError::TimestampRequired)?;
    Ok(format!(
        "t={t},v1={}",
        crate::audit::to_hex(&hmac_sha256(secret, &signed_payload(t, d.payload)))
    ))
}

pub(super) fn verify(secret: &[u8], r: &Received) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for item in r.signature.split(',').take(MAX_ENTRIES) {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => t = super::parse_unix(value.trim()),
            "v1" => v1.push(value.trim()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if v1.is_empty() || !super::fresh(t, r.now, r.tolerance) {
        return false;
    }
    let mac = hmac_sha256(secret, &signed_payload(t, r.payload));
    let mut any = false;
    for given in v1 {
        any |= matches_hex(&mac, given);
    }
    any
}
