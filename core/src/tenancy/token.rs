//! Tenant tokens: compact JWS (JWT) with HMAC-SHA256, claims `tid`
//! (tenant id), `iat`, `nbf` and `exp` (seconds since the Unix epoch).
//!
//! The header is fixed to `{"alg":"HS256","typ":"JWT"}` when minting, and
//! verification accepts only `alg` = `HS256`: `none`, `HS512`, `RS256` and
//! every other algorithm are refused before any key is used. The signature
//! is checked in constant time (ring's `hmac::verify`) before the claims
//! are trusted.

use ring::hmac;
use serde_json::{json, Value};

use super::tenant_id::validate_tenant_id;

/// Why a token was refused. Callers show one generic message; the reason
/// is for tests and, after the signature checked out, for the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    BadTenant,
}

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantClaims {
    pub tenant: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Clock skew tolerated on `nbf`/`iat` (tokens minted by another server).
pub const LEEWAY_SECONDS: i64 = 30;

const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"HS256","typ":"JWT"}

fn b64url_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = s.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        for i in 0..produced {
            out.push((n >> (16 - 8 * i)) as u8);
        }
        // canonical encoding only: unused low bits must be zero
        let used_bits = produced * 8;
        let total_bits = chunk.len() * 6;
        if total_bits > used_bits
            && n & ((1 << (24 - used_bits)) - 1) & !((1u32 << (24 - total_bits)) - 1) != 0
        {
            return None;
        }
    }
    Some(out)
}

/// Mints a token for `tenant` valid from `now` for `ttl_seconds`.
pub fn mint_token(key: &[u8], tenant: &str, now: i64, ttl_seconds: i64) -> String {
    let claims =
        json!({ "tid": tenant, "iat": now, "nbf": now, "exp": now.saturating_add(ttl_seconds) });
    let signing_input = format!(
        "{HEADER_B64}.{}",
        b64url_encode(claims.to_string().as_bytes())
    );
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        signing_input.as_bytes(),
    );
    format!("{signing_input}.{}", b64url_encode(tag.as_ref()))
}

/// A token split and decoded, not yet verified: nothing in it may be
/// trusted before [`UnverifiedToken::verify`] succeeds. Decoding once lets
/// a caller pick the key by the claimed tenant without parsing twice.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    signing_input: &'a str,
    signature: Vec<u8>,
    claims: Value,
}

/// Splits and decodes `token`; refuses any algorithm but HS256 before
/// anything else is looked at.
pub fn parse_token(token: &str) -> Result<UnverifiedToken<'_>, TokenError> {
    let (header_b64, payload_b64, signature_b64) = split(token)?;
    // the header this module mints needs no parsing
    if header_b64 != HEADER_B64 {
        let header = parse_json(header_b64)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(TokenError::Algorithm);
        }
        if header.get("crit").is_some() {
            return Err(TokenError::Malformed);
        }
    }
    let signature = b64url_decode(signature_b64).ok_or(TokenError::Malformed)?;
    let claims = parse_json(payload_b64)?;
    Ok(UnverifiedToken {
        signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
        signature,
        claims,
    })
}

impl UnverifiedToken<'_> {
    /// The tenant the token claims, to pick the key to verify with.
    pub fn claimed_tenant(&self) -> Option<&str> {
        self.claims.get("tid").and_then(Value::as_str)
    }

    /// Verifies the signature (constant time), then expiry and not-before.
    pub fn verify(&self, key: &[u8], now: i64) -> Result<TenantClaims, TokenError> {
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, key),
            self.signing_input.as_bytes(),
            &self.signature,
        )
        .map_err(|_| TokenError::Signature)?;
        let number = |name: &str| self.claims.get(name).and_then(Value::as_i64);
        let tenant = self.claimed_tenant().ok_or(TokenError::Malformed)?;
        validate_tenant_id(tenant).map_err(|_| TokenError::BadTenant)?;
        let exp = number("exp").ok_or(TokenError::Malformed)?;
        if now >= exp {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = number("nbf") {
            if now + LEEWAY_SECONDS < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        let iat = number("iat").unwrap_or(0);
        if now + LEEWAY_SECONDS < iat {
            return Err(TokenError::NotYetValid);
        }
        Ok(TenantClaims {
            tenant: tenant.to_string(),
            issued_at: iat,
            expires_at: exp,
        })
    }
}

/// Reads the claimed tenant without verifying anything.
pub fn claimed_tenant(token: &str) -> Result<String, TokenError> {
    parse_token(token)?
        .claimed_tenant()
        .map(str::to_string)
        .ok_or(TokenError::Malformed)
}

fn split(token: &str) -> Result<(&str, &str, &str), TokenError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => Ok((h, p, s)),
        _ => Err(TokenError::Malformed),
    }
}

fn parse_json(part: &str) -> Result<Value, TokenError> {
    let bytes = b64url_decode(part).ok_or(TokenError::Malformed)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    value
        .is_object()
        .then_some(value)
        .ok_or(TokenError::Malformed)
}

/// Verifies algorithm, signature, expiry and not-before, in that order.
pub fn verify_token(key: &[u8], token: &str, now: i64) -> Result<TenantClaims, TokenError> {
    parse_token(token)?.verify(key, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = &[7u8; 32];

    fn forge(header: &str, payload: &str, key: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            b64url_encode(header.as_bytes()),
            b64url_encode(payload.as_bytes())
        );
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), input.as_bytes());
        format!("{input}.{}", b64url_encode(tag.as_ref()))
    }

    #[test]
    fn header_constant_is_the_documented_json() {
        assert_eq!(
            b64url_decode(HEADER_B64).unwrap(),
            br#"{"alg":"HS256","typ":"JWT"}"#
        );
    }

    #[test]
    fn known_answer_from_rfc7515_style_inputs() {
        // HMAC-SHA256 over the ASCII signing input, base64url without padding
        let t = forge(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"tid":"acme","exp":2000}"#,
            KEY,
        );
        assert_eq!(verify_token(KEY, &t, 1000).unwrap().tenant, "acme");
        assert!(!t.contains('='));
    }

    #[test]
    fn minted_tokens_verify_until_they_expire() {
        let t = mint_token(KEY, "acme", 1_000, 60);
        let c = verify_token(KEY, &t, 1_030).unwrap();
        assert_eq!(
            c,
            TenantClaims {
                tenant: "acme".into(),
                issued_at: 1_000,
                expires_at: 1_060
            }
        );
        assert_eq!(verify_token(KEY, &t, 1_060), Err(TokenError::Expired));
        assert_eq!(claimed_tenant(&t).unwrap(), "acme");
    }

    #[test]
    fn refuses_other_algorithms_before_looking_at_signatures() {
        let payload = r#"{"tid":"acme","exp":9999999999}"#;
        for alg in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{}"#,
        ] {
            let t = forge(alg, payload, KEY);
            assert_eq!(
                verify_token(KEY, &t, 0),
                Err(TokenError::Algorithm),
                "{alg}"
            );
        }
        // alg:none with an empty signature
        let none = format!(
            "{}.{}.",
            b64url_encode(br#"{"alg":"none"}"#),
            b64url_encode(payload.as_bytes())
        );
        assert_eq!(verify_token(KEY, &none, 0), Err(TokenError::Algorithm));
    }

    #[test]
    fn refuses_forged_tampered_and_malformed_tokens() {
        let t = mint_token(KEY, "acme", 1_000, 60);
        assert_eq!(
            verify_token(&[8u8; 32], &t, 1_001),
            Err(TokenError::Signature)
        );
        // swap the payload for another tenant's, keep the signature
        let other = mint_token(KEY, "globex", 1_000, 60);
        let parts: Vec<&str> = t.split('.').collect();
        let other_parts: Vec<&str> = other.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
        assert_eq!(
            verify_token(KEY, &spliced, 1_001),
            Err(TokenError::Signature)
        );
        for bad in ["", "a", "a.b", "a.b.c.d", "..", "!!.b.c"] {
            assert!(verify_token(KEY, bad, 0).is_err(), "{bad}");
        }
        let not_yet = mint_token(KEY, "acme", 10_000, 60);
        assert_eq!(
            verify_token(KEY, &not_yet, 10_000 - LEEWAY_SECONDS - 1),
            Err(TokenError::NotYetValid)
        );
        assert!(verify_token(KEY, &not_yet, 10_000 - LEEWAY_SECONDS).is_ok());
        let bad_tenant = forge(
            r#"{"alg":"HS256"}"#,
            r#"{"tid":"a b","exp":9999999999}"#,
            KEY,
        );
        assert_eq!(
            verify_token(KEY, &bad_tenant, 0),
            Err(TokenError::BadTenant)
        );
        let no_exp = forge(r#"{"alg":"HS256"}"#, r#"{"tid":"acme"}"#, KEY);
        assert_eq!(verify_token(KEY, &no_exp, 0), Err(TokenError::Malformed));
    }

    proptest! {
        #[test]
        fn base64url_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(b64url_decode(&b64url_encode(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn verify_never_panics(s in "\\PC{0,200}") {
            let _ = verify_token(KEY, &s, 0);
            let _ = claimed_tenant(&s);
        }

        #[test]
        fn any_single_character_change_is_refused(pos in any::<prop::sample::Index>(), c in "[A-Za-z0-9_.-]") {
            let t = mint_token(KEY, "acme", 1_000, 60);
            let i = pos.index(t.len());
            let mut bytes = t.clone().into_bytes();
            bytes[i] = c.as_bytes()[0];
            let changed = String::from_utf8(bytes).unwrap();
            if changed != t {
                prop_assert!(verify_token(KEY, &changed, 1_001).is_err());
            }
        }
    }
}
