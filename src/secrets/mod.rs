//! The encrypted secrets store (DESIGN §4).
//!
//! - `tables`: `warden.secret_names`, `warden.secrets`, the catalog view.
//! - `write`: `warden.secret_set` (text and jsonb), check-and-set.
//! - `read`: `warden.secret_get`, `warden.secret_get_jsonb`.
//! - `lifecycle`: `warden.secret_delete`, `secret_undelete`, `secret_destroy`.
//! - `access_audit`: every access as a durable audit event.
//! - `webhook_sql`: `warden.webhook_sign`, `warden.webhook_verify`.
//! - `plaintext_cache`: decrypted secrets per backend (`secret_get`'s latest
//!   version, `webhook_verify`'s candidates), dropped when the table or
//!   the keys change.
//! - `retention_task`: the worker task destroying expired and surplus
//!   versions.
//! - `digest_functions`: `warden.hmac_sha256`, `warden.timing_safe_equal`,
//!   `warden.hash_prefix`.
//!
//! The logic that needs no database lives in `warden_core::secrets`.

mod access_audit;
mod digest_functions;
mod lifecycle;
mod plaintext_cache;
mod read;
mod retention_task;
mod tables;
mod webhook_sql;
mod write;

use pgrx::prelude::*;

/// Registers the retention task (preload only).
pub fn init(preloading: bool) {
    if preloading {
        retention_task::register();
    }
}

/// A failed statement on the store's tables.
fn spi_error(e: pgrx::spi::Error) -> crate::error::WardenError {
    crate::error::WardenError::prerequisite(format!("secrets store: {e}"))
}

/// The text of a jsonb argument.
fn json_text(value: &pgrx::AnyElement) -> String {
    if value.oid() != pg_sys::JSONBOID {
        crate::error::WardenError::invalid_parameter("value must be text or jsonb").raise();
    }
    // SAFETY: jsonb's output function on a jsonb datum: a palloc'd C
    // string, copied at once.
    unsafe {
        pgrx::direct_function_call::<&std::ffi::CStr>(pg_sys::jsonb_out, &[Some(value.datum())])
    }
    .map(|c| c.to_string_lossy().into_owned())
    .unwrap_or_default()
}

/// A jsonb value from JSON text.
fn jsonb_from_text(text: &str) -> pgrx::AnyElement {
    let c = std::ffi::CString::new(text).unwrap_or_default();
    // SAFETY: jsonb's input function on a valid C string; the result is
    // a jsonb datum.
    unsafe {
        let datum = pgrx::direct_function_call_as_datum(
            pg_sys::jsonb_in,
            &[Some(pg_sys::Datum::from(c.as_ptr()))],
        )
        .expect("jsonb_in returns a value");
        <pgrx::AnyElement as pgrx::FromDatum>::from_polymorphic_datum(
            datum,
            false,
            pg_sys::JSONBOID,
        )
        .expect("a datum")
    }
}

extension_sql!(
    r#"
CREATE FUNCTION warden.secret_set(name text, value text, expected_version integer DEFAULT NULL,
                                  expires_at timestamptz DEFAULT NULL, description text DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_set_wrapper';
CREATE FUNCTION warden.secret_set(name text, value jsonb, expected_version integer DEFAULT NULL,
                                  expires_at timestamptz DEFAULT NULL, description text DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_set_jsonb_wrapper';
CREATE FUNCTION warden.secret_get(name text, version integer DEFAULT NULL) RETURNS text
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_get_wrapper';
CREATE FUNCTION warden.secret_get_jsonb(name text, version integer DEFAULT NULL) RETURNS jsonb
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_get_jsonb_wrapper';
CREATE FUNCTION warden.secret_delete(name text, version integer DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_delete_wrapper';
CREATE FUNCTION warden.secret_undelete(name text, version integer DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_undelete_wrapper';
CREATE FUNCTION warden.secret_destroy(name text, version integer DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_destroy_wrapper';
CREATE FUNCTION warden.webhook_sign(secret_name text, payload bytea, scheme text, msg_id text DEFAULT NULL,
                                    sent_at timestamptz DEFAULT pg_catalog.now()) RETURNS text
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'webhook_sign_wrapper';
CREATE FUNCTION warden.webhook_verify(secret_name text, payload bytea, signature text, scheme text,
                                      tolerance interval DEFAULT '5 minutes', msg_id text DEFAULT NULL,
                                      sent_at timestamptz DEFAULT NULL) RETURNS boolean
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'webhook_verify_wrapper';
COMMENT ON FUNCTION warden.secret_set(text, text, integer, timestamptz, text) IS
  'Writes a new version of a secret of the current tenant, encrypted before it is stored, and returns its number; expected_version checks the current one (0: must not exist; a mismatch is SQLSTATE 40001).';
COMMENT ON FUNCTION warden.secret_set(text, jsonb, integer, timestamptz, text) IS
  'warden.secret_set for a jsonb value (secret_get returns a JSON string as the string itself).';
COMMENT ON FUNCTION warden.secret_get(text, integer) IS
  'The latest live version of a secret of the current tenant (or the version given) as text; recorded in the audit chain first (committed first under warden.audit_strict). Deleted, destroyed and expired versions are refused.';
COMMENT ON FUNCTION warden.secret_get_jsonb(text, integer) IS
  'warden.secret_get as jsonb (a text secret comes back as a JSON string).';
COMMENT ON FUNCTION warden.secret_delete(text, integer) IS
  'Hides a version of a secret (all versions when NULL) until warden.secret_undelete; returns how many versions it changed.';
COMMENT ON FUNCTION warden.secret_undelete(text, integer) IS
  'Restores deleted versions of a secret (all when NULL); returns how many.';
COMMENT ON FUNCTION warden.secret_destroy(text, integer) IS
  'warden_admin: removes the encrypted value of a version of a secret (all when NULL) for good; returns how many versions it changed.';
COMMENT ON FUNCTION warden.webhook_sign(text, bytea, text, text, timestamptz) IS
  'The signature header value for payload under a webhook secret of the current tenant, in a scheme: hmac-sha256, github, stripe, standard-webhooks, slack or shopify.';
COMMENT ON FUNCTION warden.webhook_verify(text, bytea, text, text, interval, text, timestamptz) IS
  'Whether signature (a header value) is right for payload under a webhook secret (its latest live version, and versions younger than warden.webhook_secret_overlap); false for a malformed header or a timestamp outside the tolerance. Constant-time comparison.';
"#,
    name = "secrets_functions",
    requires = ["secrets_tables"],
);
