//! Webhook signatures: what a sender puts in its signature header, and
//! whether a received header is right, in six schemes, each exactly as
//! its reference libraries compute it (`github`, `stripe`,
//! `standard_webhooks`, `slack`, `shopify`, and a plain `hmac_sha256`).
//!
//! Verification never fails loudly: a malformed header, an unknown
//! entry, a wrong length or a bad secret is simply not a match (`false`),
//! so a caller learns nothing about which part was wrong. MACs are
//! compared in constant time (`timing_safe_equal`). Timestamps outside
//! the tolerance fail in either direction (a future one too: a captured
//! signature with a forged clock is no better than a replayed one).
//! Several secrets (versions of a secret being rotated) are each tried.

mod github;
mod hmac_plain;
mod shopify;
mod slack;
mod standard_webhooks;
mod stripe;
#[cfg(test)]
mod tests;

/// Entries of one header looked at, at most (each may cost a MAC
/// comparison or an Ed25519 verification).
pub const MAX_ENTRIES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HMAC-SHA256 of the payload, hex (base64 accepted when verifying).
    HmacSha256,
    /// `sha256=<hex>` (X-Hub-Signature-256).
    Github,
    /// `t=<unix>,v1=<hex>` over `t.payload`, keyed with the whole
    /// `whsec_...` string.
    Stripe,
    /// `v1,<base64>` (space-separated list) over `msg_id.timestamp.payload`,
    /// keyed with the base64 after `whsec_`; `v1a,<base64>` Ed25519 with a
    /// `whpk_` public key.
    StandardWebhooks,
    /// `v0=<hex>` over `v0:timestamp:payload`.
    Slack,
    /// base64 HMAC-SHA256 of the payload (X-Shopify-Hmac-Sha256).
    Shopify,
}

impl Scheme {
    pub const NAMES: [&'static str; 6] = [
        "hmac-sha256",
        "github",
        "stripe",
        "standard-webhooks",
        "slack",
        "shopify",
    ];

    pub fn parse(name: &str) -> Option<Scheme> {
        Some(match name {
            "hmac-sha256" => Scheme::HmacSha256,
            "github" => Scheme::Github,
            "stripe" => Scheme::Stripe,
            "standard-webhooks" => Scheme::StandardWebhooks,
            "slack" => Scheme::Slack,
            "shopify" => Scheme::Shopify,
            _ => return None,
        })
    }
}

/// What is signed.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub payload: &'a [u8],
    /// The message id (standard-webhooks' `webhook-id`).
    pub msg_id: Option<&'a str>,
    /// Unix seconds of sending (stripe, standard-webhooks, slack).
    pub timestamp: Option<i64>,
}

/// Why a signature could not be made (a caller's mistake, never input
/// from outside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignError {
    MsgIdRequired,
    TimestampRequired,
    /// The secret is not in the scheme's format (what is expected).
    SecretFormat(&'static str),
    /// A `whpk_` public key verifies; it cannot sign.
    PublicKeyCannotSign,
}

/// A received signature to check.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub payload: &'a [u8],
    /// The header value.
    pub signature: &'a str,
    pub msg_id: Option<&'a str>,
    /// Unix seconds from the timestamp header (standard-webhooks, slack;
    /// stripe's is inside its signature header).
    pub sent_at: Option<i64>,
    /// Unix seconds now.
    pub now: i64,
    /// Largest accepted distance between the timestamp and now, seconds.
    pub tolerance: i64,
}

/// The header value a sender puts on `d`, signed with `secret`.
pub fn sign(scheme: Scheme, secret: &[u8], d: &Delivery) -> Result<String, SignError> {
    if scheme != Scheme::StandardWebhooks && is_public_key(secret) {
        return Err(SignError::PublicKeyCannotSign);
    }
    match scheme {
        Scheme::HmacSha256 => Ok(hmac_plain::sign(secret, d)),
        Scheme::Github => Ok(github::sign(secret, d)),
        Scheme::Stripe => stripe::sign(secret, d),
        Scheme::StandardWebhooks => standard_webhooks::sign(secret, d),
        Scheme::Slack => slack::sign(secret, d),
        Scheme::Shopify => Ok(shopify::sign(secret, d)),
    }
}

/// Whether `r` carries a right signature under any of `secrets`.
pub fn verify(scheme: Scheme, secrets: &[&[u8]], r: &Received) -> bool {
    verify_which(scheme, secrets, r).is_some()
}

/// As `verify`: the index of the first of `secrets` (the newest, when
/// they come newest first) that the header matches.
pub fn verify_which(scheme: Scheme, secrets: &[&[u8]], r: &Received) -> Option<usize> {
    if r.signature.len() > 16 * 1024 {
        return None;
    }
    // every secret is tried (no early exit telling which one matched)
    let mut matched = None;
    for (i, secret) in secrets.iter().enumerate() {
        // a public key is public: as an HMAC key it would let anyone sign
        if scheme != Scheme::StandardWebhooks && is_public_key(secret) {
            continue;
        }
        let ok = match scheme {
            Scheme::HmacSha256 => hmac_plain::verify(secret, r),
            Scheme::Github => github::verify(secret, r),
            Scheme::Stripe => stripe::verify(secret, r),
            Scheme::StandardWebhooks => standard_webhooks::verify(secret, r),
            Scheme::Slack => slack::verify(secret, r),
            Scheme::Shopify => shopify::verify(secret, r),
        };
        if ok && matched.is_none() {
            matched = Some(i);
        }
    }
    matched
}

/// A Standard Webhooks public key (`whpk_...`), usable only to verify
/// `v1a` signatures.
fn is_public_key(secret: &[u8]) -> bool {
    secret.starts_with(b"whpk_")
}

/// Whether `timestamp` is within `tolerance` seconds of `now`, either way.
fn fresh(timestamp: i64, now: i64, tolerance: i64) -> bool {
    now.checked_sub(timestamp)
        .is_some_and(|age| age.checked_abs().is_some_and(|a| a <= tolerance.max(0)))
}

/// For schemes that do not sign a timestamp: `sent_at` is fresh when
/// the caller gave one.
fn fresh_if_given(r: &Received) -> bool {
    r.sent_at.is_none_or(|at| fresh(at, r.now, r.tolerance))
}

/// A timestamp header: ASCII digits only (no sign, no spaces, no leading
/// zero), as the libraries send it.
fn parse_unix(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // canonical only: the signed text is rebuilt from the number
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    crate::audit::from_hex(&s.to_ascii_lowercase())
}

fn base64_bytes(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

fn base64_text(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Whether the hex in `given` is `mac`.
fn matches_hex(mac: &[u8], given: &str) -> bool {
    hex_bytes(given).is_some_and(|g| crate::secrets::timing_safe_equal(mac, &g))
}

/// Whether the base64 in `given` is `mac`.
fn matches_base64(mac: &[u8], given: &str) -> bool {
    base64_bytes(given).is_some_and(|g| crate::secrets::timing_safe_equal(mac, &g))
}
