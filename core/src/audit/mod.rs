//! The audit chain's pure parts (format v1): canonical encodings of an
//! event, its payload digest and hash, chain verification, signed
//! checkpoints and the export format (shared by the extension's sequencer
//! and verifier and by the offline verifier), and the durable path's ring.

mod canonical;
mod capture;
mod chain;
mod checkpoint;
mod export;
mod pending;
pub mod ring;
mod signed;

pub use canonical::{
    canonical_fields, canonical_fields_text, canonical_header, json_depth, CanonicalBuilder,
    EventHeader, HEADER_MAGIC,
};
pub use capture::{capture_event, fingerprint_text, CaptureSpec, CapturedEvent, RowChange};
pub use chain::{
    event_hash, payload_digest, verify_chain, ChainCheck, Failure, StoredEvent, Tamper, VerifyFrom,
    GENESIS, HASH_BYTES, SALT_BYTES,
};
pub use checkpoint::{
    canonical_checkpoint, public_key, sign_checkpoint, verify_checkpoint, Checkpoint,
    CHECKPOINT_MAGIC, PUBLIC_KEY_BYTES, SIGNATURE_BYTES,
};
pub use export::{
    checkpoint_line, event_line, from_hex, parse_checkpoint, to_hex, verify_export, ChainVerdict,
    ExportError,
};
pub use pending::{decode_pending, encode_pending};
pub use signed::{start_signed_check, verify_signed_chain};

#[cfg(test)]
mod tests;
