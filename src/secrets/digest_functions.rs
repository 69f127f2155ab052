//! `warden.hmac_sha256`, `warden.timing_safe_equal`, `warden.hash_prefix`:
//! what application code gets wrong by hand (a MAC compared with `=`,
//! which stops at the first differing byte; a hash of a secret short
//! enough to guess). Pure functions, callable by warden_app.

use pgrx::prelude::*;

#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    warden_core::secrets::hmac_sha256(key, data).to_vec()
}

#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn timing_safe_equal(a: &[u8], b: &[u8]) -> bool {
    warden_core::secrets::timing_safe_equal(a, b)
}

#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn hash_prefix(value: &str, n: i32) -> String {
    warden_core::secrets::hash_prefix(value.as_bytes(), n)
}

extension_sql!(
    r#"
CREATE FUNCTION warden.hmac_sha256(key bytea, data bytea) RETURNS bytea
  IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'hmac_sha256_wrapper';
CREATE FUNCTION warden.timing_safe_equal(a bytea, b bytea) RETURNS boolean
  IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'timing_safe_equal_wrapper';
CREATE FUNCTION warden.hash_prefix(value text, n integer DEFAULT 8) RETURNS text
  IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'hash_prefix_wrapper';
COMMENT ON FUNCTION warden.hmac_sha256(bytea, bytea) IS
  'HMAC-SHA256 of data under key (RFC 2104; a key of any length).';
COMMENT ON FUNCTION warden.timing_safe_equal(bytea, bytea) IS
  'Whether a and b are equal, in time that depends only on the longer one''s length (compare MACs and tokens with this, never with =).';
COMMENT ON FUNCTION warden.hash_prefix(text, integer) IS
  'The first n hex digits (clamped to 4..64) of SHA-256 of value: a recognisable stand-in for a long random value in logs. Unkeyed: never for guessable values.';
"#,
    name = "secrets_digest_functions",
);
