//! The audit chain's pure parts (format v1): canonical encodings of an
//! event, its payload digest and hash, and chain verification, shared by
//! the extension's sequencer and verifier and by the offline verifier.

mod canonical;
mod chain;

pub use canonical::{canonical_fields, canonical_header, EventHeader, HEADER_MAGIC};
pub use chain::{
    event_hash, payload_digest, verify_chain, Failure, StoredEvent, Tamper, VerifyFrom, GENESIS,
    HASH_BYTES, SALT_BYTES,
};

#[cfg(test)]
mod tests;
