//! SCD2 change detection: the canonical row encoding behind
//! `warden.hash_diff` (versioned, specified in the README) and the
//! normalisations that make equal values encode equally.

mod hash_diff;
mod normalize;

pub use hash_diff::{HashDiff, RowEncoder, HASH_DIFF_DOMAIN};
pub use normalize::{
    interval_linear, normalize_float4, normalize_float8, normalize_numeric_send,
    trim_bpchar_padding, NormalizeError,
};
