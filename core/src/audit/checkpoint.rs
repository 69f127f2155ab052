//! Signed checkpoints (format v1): the sequencer signs where each chain
//! stood (seq and hash), with the database's identity, under a
//! per-database Ed25519 key, so an edit that recomputes every later hash,
//! a cut tail or a restored older copy is still caught.
//!
//! ```text
//! signed bytes = "pg_warden checkpoint v1" 0x00 text(chain) i64be(seq) hash(32 bytes)
//!                i64be(ts, microseconds since 1970-01-01 UTC) u64be(system_identifier) u32be(timeline)
//! signature    = Ed25519(signing key, signed bytes)
//! ```

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::chain::HASH_BYTES;

pub const CHECKPOINT_MAGIC: &[u8] = b"pg_warden checkpoint v1\0";
pub const SIGNATURE_BYTES: usize = 64;
pub const PUBLIC_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub chain: String,
    pub seq: i64,
    pub hash: [u8; HASH_BYTES],
    pub ts_micros: i64,
    pub system_identifier: u64,
    pub timeline: u32,
}

/// The bytes a checkpoint's signature covers.
pub fn canonical_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_MAGIC.len() + c.chain.len() + 64);
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&(c.chain.len() as u32).to_be_bytes());
    out.extend_from_slice(c.chain.as_bytes());
    out.extend_from_slice(&c.seq.to_be_bytes());
    out.extend_from_slice(&c.hash);
    out.extend_from_slice(&c.ts_micros.to_be_bytes());
    out.extend_from_slice(&c.system_identifier.to_be_bytes());
    out.extend_from_slice(&c.timeline.to_be_bytes());
    out
}

/// Signs with the Ed25519 key made from a 32-byte seed (kept wrapped
/// under the root key like every other key).
pub fn sign_checkpoint(seed: &[u8; 32], c: &Checkpoint) -> [u8; SIGNATURE_BYTES] {
    let pair =
        Ed25519KeyPair::from_seed_unchecked(seed).expect("a 32-byte seed is a valid Ed25519 key");
    pair.sign(&canonical_checkpoint(c))
        .as_ref()
        .try_into()
        .expect("Ed25519 signatures are 64 bytes")
}

/// The public key of the signing key made from `seed`.
pub fn public_key(seed: &[u8; 32]) -> [u8; PUBLIC_KEY_BYTES] {
    let pair =
        Ed25519KeyPair::from_seed_unchecked(seed).expect("a 32-byte seed is a valid Ed25519 key");
    pair.public_key()
        .as_ref()
        .try_into()
        .expect("Ed25519 public keys are 32 bytes")
}

/// Whether `signature` is a valid signature of `c` under `public_key`.
pub fn verify_checkpoint(public_key: &[u8], c: &Checkpoint, signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&canonical_checkpoint(c), signature)
        .is_ok()
}
