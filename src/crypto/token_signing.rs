//! Tenant tokens signed and verified under the tenant's `token` data key:
//! the key stays here, callers (tenancy's `tenant_token` and
//! `set_tenant_token`) get a token or a verdict, never key bytes.

use warden_core::crypto::Purpose;
use warden_core::tenancy::{mint_token, TenantClaims, TokenError, UnverifiedToken};

use super::key_cache::{active_key, existing_active_key};

/// A token for `tenant` valid from `now` for `ttl_seconds` (the tenant's
/// token key is made if it has none yet).
pub fn sign_tenant_token(tenant: &str, now: i64, ttl_seconds: i64) -> String {
    let key = active_key(tenant, Purpose::Token);
    mint_token(&key.raw[..], tenant, now, ttl_seconds)
}

/// Verifies `token` under `tenant`'s token key; None when the tenant has
/// none (no token of it can be valid).
pub fn verify_tenant_token(
    token: &UnverifiedToken,
    tenant: &str,
    now: i64,
) -> Option<Result<TenantClaims, TokenError>> {
    let key = existing_active_key(tenant, Purpose::Token)?;
    Some(token.verify(&key.raw[..], now))
}
