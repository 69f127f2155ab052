//! The database's audit checkpoint signing key: an Ed25519 key whose
//! 32-byte seed is a keyring key (purpose `audit_signing`, tenant '',
//! which no tenant id can be), wrapped under the root key like every
//! other key and rewrapped by `rotate_master_key`. The seed stays here:
//! callers get signatures and the public key.

use warden_core::audit::{public_key, sign_checkpoint, Checkpoint, SIGNATURE_BYTES};
use warden_core::crypto::Purpose;

use super::key_cache::{active_key, existing_active_key};

/// The keyring's tenant of database-wide keys.
const DATABASE_KEYS: &str = "";

/// Signs `c`, making the signing key on first use. `None` without a root
/// key (the chain is then protected by its hashes alone).
pub fn sign_audit_checkpoint(c: &Checkpoint) -> Option<[u8; SIGNATURE_BYTES]> {
    super::root_key::loaded()?;
    let key = active_key(DATABASE_KEYS, Purpose::AuditSigning);
    Some(sign_checkpoint(&key.raw, c))
}

/// The public key checkpoints verify under; `None` until the first
/// checkpoint was signed (or without a root key).
pub fn audit_public_key() -> Option<[u8; 32]> {
    super::root_key::loaded()?;
    let key = existing_active_key(DATABASE_KEYS, Purpose::AuditSigning)?;
    Some(public_key(&key.raw))
}
