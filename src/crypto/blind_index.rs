//! `warden.blind_index(value, context)`: a keyed hash for equality search
//! on encrypted columns, under the tenant's `blind_index` key.

use pgrx::prelude::*;

use warden_core::crypto::{blind_index as compute, Purpose};

use crate::error::WardenError;
use crate::tenant_context::tenant_or_raise;
use pgrx::PgSqlErrorCode;

use super::key_cache::active_key;

/// STABLE so it can be compared with an indexed column; it may create the
/// tenant's blind-index key on first use.
/// A NULL value has no index (NULL); a NULL context is refused.
#[pg_extern(stable, parallel_unsafe)]
fn blind_index(value: Option<&str>, context: Option<&str>) -> Option<Vec<u8>> {
    let Some(context) = context else {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "context must not be NULL",
        )
        .hint("Pass the same context string for every value of a column, e.g. 'users.email'.")
        .raise()
    };
    let value = value?;
    let tenant = tenant_or_raise();
    let key = active_key(tenant, Purpose::BlindIndex);
    Some(compute(&key.raw, context.as_bytes(), value.as_bytes()).to_vec())
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.blind_index(text, text) IS
  'HMAC-SHA256 of value under the current tenant''s blind-index key, separated by context: store it beside an encrypted column and search with =.';
"#,
    name = "blind_index_comments",
    requires = [blind_index],
);
