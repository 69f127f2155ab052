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

use warden_core::tenancy::{parse_token, validate_tenant_id, TokenError};

use crate::crypto::{sign_tenant_token, verify_tenant_token};
use crate::error::WardenError;
use crate::guc;

use crate::tenant_context::{
    refuse_if_pinned_elsewhere, require_transaction_block, set_tenant_setting,
    validate_tenant_or_raise,
};

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

/// Mints a token for `tenant` valid for `ttl` (at most
/// `warden.tenant_token_max_ttl`).
#[pg_extern(volatile, parallel_unsafe)]
fn tenant_token(tenant: Option<&str>, ttl: Option<Interval>) -> String {
    let (Some(tenant), Some(ttl)) = (tenant, ttl) else {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "tenant and ttl must not be NULL",
        )
        .hint("Pass the tenant id and a lifetime such as '5 minutes'.")
        .raise()
    };
    validate_tenant_or_raise(tenant);
    // months count as 30 days, as Postgres' interval comparisons do
    let ttl_seconds = ttl.as_micros() / 1_000_000;
    let max = guc::tenant_token_max_ttl_seconds();
    if ttl_seconds <= 0 || ttl_seconds > i128::from(max) {
        WardenError::invalid_parameter(format!(
            "token lifetime must be between 1 second and warden.tenant_token_max_ttl ({max} s)"
        ))
        .hint("Pass a shorter interval such as '5 minutes', or raise warden.tenant_token_max_ttl (superuser).")
        .raise();
    }
    let now = now_seconds();
    let token = sign_tenant_token(tenant, now, ttl_seconds as i64);
    // never the token: who minted one, for whom, until when
    let mut fields = serde_json::Map::new();
    fields.insert("tenant".into(), tenant.into());
    fields.insert("expires_at".into(), (now + ttl_seconds as i64).into());
    crate::audit::record_admin_event("tenancy.token_minted", Some(tenant), fields);
    token
}

/// Verifies `token` and sets its tenant for the rest of the transaction;
/// returns the tenant.
#[pg_extern(volatile, parallel_unsafe)]
fn set_tenant_token(token: Option<&str>) -> String {
    // NULL is refused like any other invalid token, not a silent no-op
    let Some(token) = token else { invalid_token() };
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
    let Some(verdict) = verify_tenant_token(&unverified, tenant, now_seconds()) else {
        invalid_token()
    };
    match verdict {
        // minted for longer than is allowed now: refused like an expired one
        Ok(claims)
            if claims.expires_at - claims.issued_at > guc::tenant_token_max_ttl_seconds() =>
        {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                "tenant token lives longer than warden.tenant_token_max_ttl allows",
            )
            .hint("Mint a new token with warden.tenant_token().")
            .raise()
        }
        Ok(claims) => {
            refuse_if_pinned_elsewhere(&claims.tenant);
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
  'Mints an HS256 JWT (claims tid, iat, nbf, exp) for the tenant under its token key, valid for ttl (at most warden.tenant_token_max_ttl, default 15 minutes). Admin only: call it from your auth service.';
COMMENT ON FUNCTION warden.set_tenant_token(text) IS
  'Verifies a token from warden.tenant_token (HS256 only, constant-time, expiry and not-before) and sets its tenant for the rest of the transaction; returns the tenant. SQLSTATE 28000 when invalid.';
"#,
    name = "tenant_token_comments",
    requires = [tenant_token, set_tenant_token],
);
