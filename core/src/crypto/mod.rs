//! Keyring and envelope encryption: the byte formats and the cryptography,
//! with no Postgres in sight. AES-256-GCM and HMAC-SHA256 come from `ring`
//! (AES-NI/VAES and CLMUL code paths on x86-64).
//!
//! - `root_key`: the root key file format and key check values.
//! - `purpose`: what a data key is for.
//! - `wrap`: data keys wrapped under a root key.
//! - `envelope`: the ciphertext format callers store.
//! - `blind_index`: keyed hashes for equality search on encrypted columns.
//! - `random`: the OS random source.

mod blind_index;
mod encoding;
mod envelope;
mod purpose;
mod random;
mod root_key;
mod wrap;

pub use blind_index::blind_index;
pub use envelope::{
    open, parse_envelope, seal, DataKey, DecryptError, EnvelopeHeader, ENVELOPE_OVERHEAD,
    FORMAT_VERSION, MAGIC,
};
pub use purpose::Purpose;
pub use random::{fill_random, SealError};
pub use root_key::{check_value, parse_root_keys, KeyFileError, RootKeyring, KEY_BYTES};
pub use wrap::{unwrap_data_key, wrap_data_key, WrapContext};
