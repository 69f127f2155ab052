//! SCD2: a canonical, type-stable hash_diff for change detection, and
//! Data Vault 2.0 compatible hashes for existing warehouses.

mod dv2;
mod hash_diff;
mod type_encoding;
