//! Keyring and envelope encryption (DESIGN §3).
//!
//! - `root_key`: the root key, loaded once in the postmaster.
//! - `keys_table`: `warden.keys`, `warden.keyring_check`, `warden.key_catalog`.
//! - `key_cache`: per-backend cache of unwrapped data keys, key creation,
//!   the key check, and invalidation.
//! - `envelope_sql`: `warden.encrypt` / `decrypt` / `decrypt_text` /
//!   `decrypt_jsonb` / `reencrypt`.
//! - `blind_index`: `warden.blind_index`.
//! - `rotation`: `warden.rotate_master_key`, `rotate_data_key`, `shred_tenant`.
//! - `key_memory`: pages holding key bytes kept out of core dumps and swap.
//! - `key_check_task`: the worker task that checks the root key.
//! - `token_signing`: tenant tokens signed and verified under the tenant's
//!   token key (the key never leaves this folder).
//! - `audit_signing`: the audit checkpoint signing key (likewise).
//! - `audit_fingerprint`: keyed fingerprints of redacted audit values.

mod audit_fingerprint;
mod audit_signing;
mod blind_index;
mod envelope_sql;
mod key_cache;
mod key_check_task;
mod key_memory;
mod keys_table;
mod root_key;
mod rotation;
mod token_signing;

pub(crate) use audit_fingerprint::{audit_fingerprint, secret_fingerprint};
pub(crate) use audit_signing::{audit_public_key, sign_audit_checkpoint};
pub(crate) use envelope_sql::{open_for, root_version_of, seal_for};
pub(crate) use key_cache::generation as key_cache_generation;
pub(crate) use key_memory::protect as protect_secret_memory;
pub(crate) use root_key::loaded as root_loaded;
pub(crate) use token_signing::{sign_tenant_token, verify_tenant_token};

pub fn init(preloading: bool) {
    if preloading {
        root_key::load();
        key_check_task::register();
    }
}

/// The worker's key check: a wrong or missing root key shows up in the
/// server log and in `warden.worker_status` as soon as the worker starts,
/// instead of later as failed decryptions. No root key configured is not a
/// failure here (the postmaster logged it; encryption is optional).
pub fn worker_key_check() -> Result<(), crate::error::WardenError> {
    if root_key::loaded().is_none() {
        return Ok(());
    }
    key_cache::key_check()
}
