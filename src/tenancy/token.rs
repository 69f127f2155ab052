//! Tenant tokens: `warden.tenant_token(tenant, ttl)` mints an HS256 JWT
//! (claims `tid`, `iat`, `nbf`, `exp`) under the tenant's `token` data key;
//! `warden.set_tenant_token(token)` verifies it (algorithm pinned to HS256,
//! constant-time signature check, expiry, not-before) and sets the tenant.
//!
//! Design: the token key never leaves the database. An auth service mints
//! tokens by calling `warden.tenant_token()` over a connection whose role
//! has `warden_admin` (any language with a Postgres driver can), so there
//! is no exported key to leak, rotate in step, or audit. Each tenant has
//! its own token key, so `warden.rotate_data_key(tenant, 'token')` revokes
//! every outstanding token of that tenant and no other.

use std::time::{SystemTime, UNIX_EPOCH};

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use warden_core::crypto::Purpose;
use warden_core::tenancy::{mint_token, parse_token, validate_tenant_id, TokenError};

use crate::crypto::{active_key, existing_active_key};
use crate::error::WardenError;

use super::context::{require_transaction_block, set_tenant_setting, validate_tenant_or_raise};

/// Longest validity a token may be minted with.
const MAX_TTL_SECONDS: i64 = 30 * 24 * 3600;

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn invalid_token() -> ! {
    WardenError::new(
        PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        "invalid tenant token",
    )
    .hint("Mint a new token with warden.tenant_token(); tokens are HS256 JWTs from this database.")
    .raise()
}

/// Mints a token for `tenant` valid for `ttl` (at most 30 days).
#[pg_extern(volatile, strict, parallel_unsafe)]
fn tenant_token(tenant: &str, ttl: Interval) -> String {
    validate_tenant_or_raise(tenant);
    // months count as 30 days, as Postgres' interval comparisons do
    let ttl_seconds = ttl.as_micros() / 1_000_000;
    if ttl_seconds <= 0 || ttl_seconds > i128::from(MAX_TTL_SECONDS) {
        WardenError::invalid_parameter("token lifetime must be between 1 second and 30 days")
            .hint("Pass an interval such as '15 minutes'.")
            .raise();
    }
    let key = active_key(tenant, Purpose::Token);
    mint_token(&key.raw[..], tenant, now_seconds(), ttl_seconds as i64)
}

/// Verifies `token` and sets its tenant for the rest of the transaction;
/// returns the tenant.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn set_tenant_token(token: &str) -> String {
    require_transaction_block("warden.set_tenant_token()");
    // the claimed tenant only picks the key; nothing is trusted yet
    let Ok(unverified) = parse_token(token) else {
        invalid_token()
    };
    let Some(tenant) = unverified.claimed_tenant() else {
        invalid_token()
    };
    if validate_tenant_id(tenant).is_err() {
        invalid_token();
    }
    let Some(key) = existing_active_key(tenant, Purpose::Token) else {
        invalid_token()
    };
    match unverified.verify(&key.raw[..], now_seconds()) {
        Ok(claims) => {
            set_tenant_setting(&claims.tenant);
            claims.tenant
        }
        Err(TokenError::Expired) => WardenError::new(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            "tenant token has expired",
        )
        .hint("Mint a new token with warden.tenant_token().")
        .raise(),
        Err(TokenError::NotYetValid) => WardenError::new(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            "tenant token is not valid yet",
        )
        .hint("Check the clocks of the servers that mint and verify tokens.")
        .raise(),
        Err(_) => invalid_token(),
    }
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.tenant_token(text, interval) IS
  'Mints an HS256 JWT (claims tid, iat, nbf, exp) for the tenant under its token key, valid for ttl (at most 30 days). Admin only: call it from your auth service.';
COMMENT ON FUNCTION warden.set_tenant_token(text) IS
  'Verifies a token from warden.tenant_token (HS256 only, constant-time, expiry and not-before) and sets its tenant for the rest of the transaction; returns the tenant. SQLSTATE 28000 when invalid.';
"#,
    name = "tenant_token_comments",
    requires = [tenant_token, set_tenant_token],
);
