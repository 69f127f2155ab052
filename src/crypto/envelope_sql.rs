//! `warden.encrypt`, `decrypt`, `decrypt_text`, `decrypt_jsonb`,
//! `reencrypt`: envelopes under the current tenant's active `data` key.
//! Every way decryption can fail gives the same error.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use warden_core::crypto::{open, parse_envelope, seal, Purpose, ENVELOPE_OVERHEAD};

use crate::error::WardenError;
use crate::guc;
use crate::tenant_context::tenant_or_raise;

use super::key_cache::{active_key, key_by_id};

/// The one decryption error: same SQLSTATE and text whatever went wrong.
fn decryption_failed() -> ! {
    WardenError::new(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "decryption failed")
        .hint("The value was changed, was encrypted for another tenant or aad, or its key was shredded.")
        .raise()
}

fn check_size(len: usize) {
    let cap = guc::max_plaintext_bytes();
    if len > cap {
        WardenError::new(PgSqlErrorCode::ERRCODE_STRING_DATA_RIGHT_TRUNCATION, "plaintext is too large to encrypt")
            .detail(format!("It is {len} bytes; warden.max_plaintext_bytes is {cap}."))
            .hint("Keep large values outside the database, or ask a superuser to raise warden.max_plaintext_bytes.")
            .raise();
    }
}

pub(super) fn encrypt_bytes(plaintext: &[u8], aad: &str) -> Vec<u8> {
    check_size(plaintext.len());
    let tenant = tenant_or_raise();
    let key = active_key(tenant, Purpose::Data);
    let mut out = vec![0u8; plaintext.len() + ENVELOPE_OVERHEAD];
    if seal(
        &key.aead,
        key.key_id,
        tenant,
        aad.as_bytes(),
        plaintext,
        &mut out,
    )
    .is_err()
    {
        WardenError::random_source_failed().raise();
    }
    out
}

pub(super) fn decrypt_bytes(ciphertext: &[u8], aad: &str) -> Vec<u8> {
    let tenant = tenant_or_raise();
    let Ok(header) = parse_envelope(ciphertext) else {
        decryption_failed()
    };
    let Some(key) = key_by_id(header.key_id, tenant, Purpose::Data) else {
        decryption_failed()
    };
    let mut out = vec![0u8; ciphertext.len() - ENVELOPE_OVERHEAD];
    if open(&key.aead, tenant, aad.as_bytes(), ciphertext, &mut out).is_err() {
        decryption_failed();
    }
    out
}

/// `plaintext` sealed for `tenant` under its active data key with `aad`,
/// and the key (for its id and root version). For other subsystems'
/// stored values (secrets); raises only when no random bytes are to be
/// had.
pub(crate) fn seal_for(
    tenant: &str,
    plaintext: &[u8],
    aad: &[u8],
) -> (Vec<u8>, std::rc::Rc<super::key_cache::CachedKey>) {
    let key = active_key(tenant, Purpose::Data);
    let mut out = vec![0u8; plaintext.len() + ENVELOPE_OVERHEAD];
    if seal(&key.aead, key.key_id, tenant, aad, plaintext, &mut out).is_err() {
        WardenError::random_source_failed().raise();
    }
    (out, key)
}

/// Opens what `seal_for` sealed; None whatever went wrong (tampered,
/// another tenant's or aad's, its key shredded).
pub(crate) fn open_for(
    tenant: &str,
    ciphertext: &[u8],
    aad: &[u8],
) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let header = parse_envelope(ciphertext).ok()?;
    let key = key_by_id(header.key_id, tenant, Purpose::Data)?;
    let mut out = zeroize::Zeroizing::new(vec![0u8; ciphertext.len() - ENVELOPE_OVERHEAD]);
    open(&key.aead, tenant, aad, ciphertext, &mut out).ok()?;
    Some(out)
}

/// The root key version data key `key_id` of `tenant` is wrapped under
/// (None: unknown or shredded).
pub(crate) fn root_version_of(key_id: u32, tenant: &str) -> Option<i32> {
    key_by_id(key_id, tenant, Purpose::Data).map(|k| k.root_version as i32)
}

/// A NULL value stays NULL (a NULL column encrypts to NULL), but a NULL
/// aad is a mistake, not "no context": refused instead of answering NULL.
fn aad_or_raise(aad: Option<&str>) -> &str {
    let aad = aad.unwrap_or_else(|| {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "aad must not be NULL",
        )
        .hint("Pass '' for no context, or the same context string used to encrypt.")
        .raise()
    });
    // pg_warden's own envelopes (the secrets store's) open only through
    // their functions, which record each access
    if aad.starts_with(RESERVED_AAD_PREFIX) {
        WardenError::invalid_parameter(format!(
            "aad values beginning with \"{RESERVED_AAD_PREFIX}\" are reserved for pg_warden"
        ))
        .hint("Choose another context string; read secrets with warden.secret_get.")
        .raise();
    }
    aad
}

/// The associated data of envelopes pg_warden makes for itself begins
/// with this (`warden_core::secrets::secret_aad`).
const RESERVED_AAD_PREFIX: &str = "pg_warden ";

/// Encrypts bytes for the current tenant; `aad` binds the ciphertext to a
/// context (e.g. 'users.email:42') that decryption must repeat.
#[pg_extern(volatile, parallel_unsafe, name = "encrypt")]
fn encrypt_bytea(plaintext: Option<&[u8]>, aad: default!(Option<&str>, "''")) -> Option<Vec<u8>> {
    let aad = aad_or_raise(aad);
    plaintext.map(|p| encrypt_bytes(p, aad))
}

#[pg_extern(volatile, parallel_unsafe, name = "encrypt")]
fn encrypt_text(plaintext: Option<&str>, aad: default!(Option<&str>, "''")) -> Option<Vec<u8>> {
    let aad = aad_or_raise(aad);
    plaintext.map(|p| encrypt_bytes(p.as_bytes(), aad))
}

#[pg_extern(stable, parallel_restricted)]
fn decrypt(ciphertext: Option<&[u8]>, aad: default!(Option<&str>, "''")) -> Option<Vec<u8>> {
    let aad = aad_or_raise(aad);
    ciphertext.map(|c| decrypt_bytes(c, aad))
}

#[pg_extern(stable, parallel_restricted)]
fn decrypt_text(ciphertext: Option<&[u8]>, aad: default!(Option<&str>, "''")) -> Option<String> {
    let aad = aad_or_raise(aad);
    let bytes = decrypt_bytes(ciphertext?, aad);
    match String::from_utf8(bytes) {
        Ok(s) if !s.contains('\0') => Some(s),
        _ => WardenError::new(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            "the decrypted value is not text",
        )
        .hint("It was encrypted from bytea; use warden.decrypt().")
        .raise(),
    }
}

/// Decrypts and encrypts again under the tenant's active data key (after
/// `warden.rotate_data_key`), keeping the aad.
#[pg_extern(volatile, parallel_unsafe)]
fn reencrypt(ciphertext: Option<&[u8]>, aad: default!(Option<&str>, "''")) -> Option<Vec<u8>> {
    let aad = aad_or_raise(aad);
    let plaintext = zeroize::Zeroizing::new(decrypt_bytes(ciphertext?, aad));
    Some(encrypt_bytes(&plaintext, aad))
}

extension_sql!(
    r#"
CREATE FUNCTION warden.encrypt(plaintext jsonb, aad text DEFAULT '') RETURNS bytea
LANGUAGE sql VOLATILE PARALLEL UNSAFE
RETURN warden.encrypt(plaintext::pg_catalog.text, aad);

CREATE FUNCTION warden.decrypt_jsonb(ciphertext bytea, aad text DEFAULT '') RETURNS jsonb
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN warden.decrypt_text(ciphertext, aad)::pg_catalog.jsonb;

COMMENT ON FUNCTION warden.encrypt(bytea, text) IS
  'Encrypts with AES-256-GCM under the current tenant''s data key; aad binds the ciphertext to a context. Returns a self-describing envelope.';
COMMENT ON FUNCTION warden.encrypt(text, text) IS
  'Encrypts text (UTF-8) with AES-256-GCM under the current tenant''s data key; decrypt with warden.decrypt_text.';
COMMENT ON FUNCTION warden.encrypt(jsonb, text) IS
  'Encrypts jsonb (as its text form) under the current tenant''s data key; decrypt with warden.decrypt_jsonb.';
COMMENT ON FUNCTION warden.decrypt(bytea, text) IS
  'Decrypts an envelope of the current tenant with the same aad; any failure is the one error "decryption failed" (SQLSTATE 22000).';
COMMENT ON FUNCTION warden.decrypt_text(bytea, text) IS
  'warden.decrypt returning text.';
COMMENT ON FUNCTION warden.decrypt_jsonb(bytea, text) IS
  'warden.decrypt returning jsonb.';
COMMENT ON FUNCTION warden.reencrypt(bytea, text) IS
  'Decrypts and encrypts again under the tenant''s active data key (after warden.rotate_data_key), with the same aad.';
"#,
    name = "envelope_sql",
    requires = [
        encrypt_text,
        decrypt_text,
        encrypt_bytea,
        decrypt,
        reencrypt
    ],
);
