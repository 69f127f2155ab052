//! The secrets store's pure parts: constant-time comparison, HMAC and
//! hash prefixes for callers, and webhook signatures in six schemes
//! (`webhook`), each as its reference libraries compute it.
//!
//! - `timing_safe`: byte comparison in time that depends on lengths only.
//! - `digest`: HMAC-SHA256 and the SHA-256 hex prefix.
//! - `webhook`: signing and verifying webhook deliveries.
//! - `store`: names, associated data, JSON values, access event fields.

mod digest;
mod store;
mod timing_safe;
pub mod webhook;

pub use digest::{hash_prefix, hmac_sha256, HASH_PREFIX_MAX, HASH_PREFIX_MIN};
pub use store::{
    access_fields, json_value_as_text, secret_aad, text_as_json, valid_secret_name, Access,
    Outcome, MAX_NAME_CHARS,
};
pub use timing_safe::timing_safe_equal;
