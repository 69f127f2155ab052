//! Tenancy: the rules for tenant identifiers and tenant tokens.

mod canonical;
mod tenant_id;
mod token;

pub use canonical::{canonical_int, canonical_uuid};
pub use tenant_id::{
    validate_tenant_id, validate_tenant_id_bytes, TenantIdError, MAX_TENANT_ID_BYTES,
};
pub use token::{
    claimed_tenant, mint_token, parse_token, verify_token, TenantClaims, TokenError,
    UnverifiedToken, LEEWAY_SECONDS,
};
