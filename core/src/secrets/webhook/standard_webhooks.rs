//! Standard Webhooks (standardwebhooks.com): `webhook-signature` is a
//! space-separated list of `<version>,<base64>`. `v1` is HMAC-SHA256 of
//! `<webhook-id>.<webhook-timestamp>.<payload>` keyed with the
//! base64-decoded part of the secret after `whsec_`; `v1a` is an Ed25519
//! signature of the same content, checked when the stored secret is a
//! `whpk_` public key. Other versions are skipped.

use ring::signature::{UnparsedPublicKey, ED25519};

use super::{
    base64_bytes, base64_text, matches_base64, Delivery, Received, SignError, MAX_ENTRIES,
};
use crate::secrets::hmac_sha256;

enum Key {
    Symmetric(Vec<u8>),
    Public(Vec<u8>),
}

fn key(secret: &[u8]) -> Option<Key> {
    let text = std::str::from_utf8(secret).ok()?;
    if let Some(public) = text.strip_prefix("whpk_") {
        return base64_bytes(public)
            .filter(|k| k.len() == 32)
            .map(Key::Public);
    }
    // the libraries accept the secret with or without its prefix
    let body = text.strip_prefix("whsec_").unwrap_or(text);
    base64_bytes(body)
        .filter(|k| !k.is_empty())
        .map(Key::Symmetric)
}

fn content(msg_id: &str, timestamp: i64, payload: &[u8]) -> Vec<u8> {
    let mut s = format!("{msg_id}.{timestamp}.").into_bytes();
    s.extend_from_slice(payload);
    s
}

pub(super) fn sign(secret: &[u8], d: &Delivery) -> Result<String, SignError> {
    let msg_id = d.msg_id.ok_or(SignError::MsgIdRequired)?;
    let ts = d.timestamp.ok_or(SignError::TimestampRequired)?;
    match key(secret) {
        Some(Key::Symmetric(k)) => Ok(format!(
            "v1,{}",
            base64_text(&hmac_sha256(&k, &content(msg_id, ts, d.payload)))
        )),
        Some(Key::Public(_)) => Err(SignError::PublicKeyCannotSign),
        None => Err(SignError::SecretFormat(
            "whsec_ followed by base64 (or whpk_ and a base64 Ed25519 public key, to verify)",
        )),
    }
}

pub(super) fn verify(secret: &[u8], r: &Received) -> bool {
    let (Some(msg_id), Some(ts)) = (r.msg_id, r.sent_at) else {
        return false;
    };
    if !super::fresh(ts, r.now, r.tolerance) {
        return false;
    }
    let Some(key) = key(secret) else { return false };
    let signed = content(msg_id, ts, r.payload);
    let mac = match &key {
        Key::Symmetric(k) => Some(hmac_sha256(k, &signed)),
        Key::Public(_) => None,
    };
    let mut any = false;
    for entry in r
        .signature
        .split(' ')
        .filter(|e| !e.is_empty())
        .take(MAX_ENTRIES)
    {
        let Some((version, sig)) = entry.split_once(',') else {
            continue;
        };
        any |= match (version, &key, &mac) {
            ("v1", Key::Symmetric(_), Some(mac)) => matches_base64(mac, sig),
            ("v1a", Key::Public(pk), _) => base64_bytes(sig).is_some_and(|s| {
                UnparsedPublicKey::new(&ED25519, pk)
                    .verify(&signed, &s)
                    .is_ok()
            }),
            _ => false,
        };
    }
    any
}
