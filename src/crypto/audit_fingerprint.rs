//! Keyed fingerprints of values the audit chain must not hold (columns
//! `audit_table` redacts): HMAC-SHA256 under the tenant's `audit` key with
//! a context of its own, so the same value gives the same fingerprint for
//! one tenant and an unrelated one for another, and nobody without the
//! key can test a guess against it. The key stays here.

use warden_core::crypto::{blind_index, Purpose};

use super::key_cache::active_key;

const CONTEXT: &[u8] = b"pg_warden audit fingerprint v1";

/// The fingerprint of `value` (canonical bytes) for `tenant` ('' for rows
/// without one); makes the tenant's audit key on first use.
pub fn audit_fingerprint(tenant: &str, value: &[u8]) -> [u8; 32] {
    let key = active_key(tenant, Purpose::Audit);
    blind_index(&key.raw, CONTEXT, value)
}

const SECRET_CONTEXT: &[u8] = b"pg_warden secret fingerprint v1";

/// The fingerprint of a secret's value for `tenant` (same key, another
/// context: a redacted audit column's writer cannot test guesses against
/// secrets' fingerprints, nor the reverse).
pub fn secret_fingerprint(tenant: &str, value: &[u8]) -> [u8; 32] {
    let key = active_key(tenant, Purpose::Audit);
    blind_index(&key.raw, SECRET_CONTEXT, value)
}
