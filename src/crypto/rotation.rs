//! Key lifecycle, for `warden_admin`: `rotate_master_key` (rewrap every
//! data key under the newest root key version; no ciphertext changes),
//! `rotate_data_key` (retire a tenant's active key; new encryptions use a
//! new one, old ciphertexts still decrypt) and `shred_tenant` (destroy a
//! tenant's key material: its ciphertexts become unreadable).

use pgrx::prelude::*;

use warden_core::crypto::{check_value, wrap_data_key, Purpose, WrapContext};

use crate::error::WardenError;
use crate::names::current_role_name;
use crate::privileged::as_superuser;
use crate::tenant_context::validate_tenant_or_raise;

use super::key_cache::{active_key, broadcast_invalidation, key_check, unwrap_raw};
use super::root_key::root;

fn spi_failed(what: &str, e: pgrx::spi::Error) -> ! {
    WardenError::prerequisite(format!("cannot {what}: {e}")).raise()
}

/// Rewraps every data key not yet under the active root key version.
/// Returns how many keys were rewrapped.
#[pg_extern(volatile, parallel_unsafe)]
fn rotate_master_key() -> i64 {
    if let Err(e) = key_check() {
        e.raise();
    }
    let ring = root();
    let (active_version, active_key_bytes) = ring.active();
    let rows: Vec<(i32, String, String, i32, Vec<u8>)> = as_superuser(|| {
        Spi::connect_mut(|client| {
            client
                .update(
                    "SELECT key_id, tenant, purpose, root_version, wrapped FROM warden.keys
                      WHERE wrapped IS NOT NULL AND root_version OPERATOR(pg_catalog.<>) $1
                      ORDER BY key_id FOR UPDATE",
                    None,
                    &[(active_version as i32).into()],
                )?
                .map(|r| {
                    Ok((
                        r.get::<i32>(1)?.unwrap_or(0),
                        r.get::<String>(2)?.unwrap_or_default(),
                        r.get::<String>(3)?.unwrap_or_default(),
                        r.get::<i32>(4)?.unwrap_or(0),
                        r.get::<Vec<u8>>(5)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| spi_failed("read warden.keys", e));

    let mut rewrapped = 0i64;
    for (key_id, tenant, purpose, version, wrapped) in rows {
        let purpose = Purpose::parse(&purpose).expect("checked by the table");
        let raw = unwrap_raw(key_id as u32, &tenant, purpose, version, &wrapped)
            .unwrap_or_else(|e| e.raise());
        let old_ctx = WrapContext {
            tenant: &tenant,
            purpose,
            key_id: key_id as u32,
            root_version: version as u32,
        };
        let new_ctx = WrapContext {
            root_version: active_version,
            ..old_ctx
        };
        let new_wrapped = wrap_data_key(active_key_bytes, &new_ctx, &raw)
            .unwrap_or_else(|_| WardenError::random_source_failed().raise());
        as_superuser(|| {
            Spi::run_with_args(
                "UPDATE warden.keys SET root_version = $2, wrapped = $3 WHERE key_id OPERATOR(pg_catalog.=) $1",
                &[key_id.into(), (active_version as i32).into(), new_wrapped.into()],
            )
        })
        .unwrap_or_else(|e| spi_failed("update warden.keys", e));
        rewrapped += 1;
    }
    as_superuser(|| {
        Spi::run_with_args(
            "INSERT INTO warden.keyring_check (root_version, check_value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[(active_version as i32).into(), check_value(active_key_bytes).to_vec().into()],
        )?;
        // versions no key uses any more may leave the key file
        Spi::run(
            "DELETE FROM warden.keyring_check c
              WHERE NOT EXISTS (SELECT FROM warden.keys k
                                 WHERE k.root_version OPERATOR(pg_catalog.=) c.root_version
                                   AND k.wrapped IS NOT NULL)
                AND c.root_version OPERATOR(pg_catalog.<>) (SELECT pg_catalog.max(root_version) FROM warden.keyring_check)",
        )
    })
    .unwrap_or_else(|e| spi_failed("update warden.keyring_check", e));
    broadcast_invalidation();
    pgrx::log!(
        "pg_warden: rewrapped {rewrapped} data keys under root key version {active_version}"
    );
    let mut fields = serde_json::Map::new();
    fields.insert("root_version".into(), active_version.into());
    fields.insert("rewrapped".into(), rewrapped.into());
    crate::audit::record_admin_event("keys.rotate_master", None, fields);
    rewrapped
}

/// Retires the tenant's active key of `purpose` and creates a new one.
/// Returns the new key id.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn rotate_data_key(tenant: &str, purpose: default!(&str, "'data'")) -> i32 {
    validate_tenant_or_raise(tenant);
    let Some(purpose) = Purpose::parse(purpose) else {
        WardenError::invalid_parameter(format!("unknown key purpose \"{purpose}\""))
            .hint("Use 'data', 'blind_index', 'audit' or 'token'.")
            .raise()
    };
    if purpose == Purpose::AuditSigning {
        WardenError::invalid_parameter("the audit signing key is not a tenant key")
            .detail(
                "Checkpoints signed with it must stay verifiable with warden.audit_public_key().",
            )
            .raise();
    }
    if purpose == Purpose::BlindIndex {
        WardenError::invalid_parameter("blind-index keys cannot be rotated in place")
            .detail("Existing blind indexes would stop matching new ones.")
            .hint("Re-index under a new context string instead.")
            .raise();
    }
    as_superuser(|| {
        Spi::run_with_args(
            "UPDATE warden.keys SET state = 'retired', retired_at = pg_catalog.now()
              WHERE tenant OPERATOR(pg_catalog.=) $1 AND purpose OPERATOR(pg_catalog.=) $2
                AND state OPERATOR(pg_catalog.=) 'active'",
            &[tenant.into(), purpose.as_str().into()],
        )
    })
    .unwrap_or_else(|e| spi_failed("retire the active key", e));
    broadcast_invalidation();
    let key_id = active_key(tenant, purpose).key_id as i32;
    let mut fields = serde_json::Map::new();
    fields.insert("tenant".into(), tenant.into());
    fields.insert("purpose".into(), purpose.as_str().into());
    fields.insert("key_id".into(), key_id.into());
    crate::audit::record_admin_event("keys.rotate_data_key", Some(tenant), fields);
    key_id
}

/// Destroys every key of the tenant (crypto-shredding). Returns how many
/// keys were shredded.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn shred_tenant(tenant: &str) -> i64 {
    validate_tenant_or_raise(tenant);
    let n = as_superuser(|| {
        Spi::get_one_with_args::<i64>(
            "WITH s AS (
               UPDATE warden.keys SET state = 'shredded', wrapped = NULL, shredded_at = pg_catalog.now()
                WHERE tenant OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'shredded'
               RETURNING 1)
             SELECT pg_catalog.count(*) FROM s",
            &[tenant.into()],
        )
    })
    .unwrap_or_else(|e| spi_failed("shred keys", e))
    .unwrap_or(0);
    broadcast_invalidation();
    pgrx::log!(
        "pg_warden: shredded {n} data keys of tenant \"{tenant}\" (by role {})",
        current_role_name()
    );
    let mut fields = serde_json::Map::new();
    fields.insert("tenant".into(), tenant.into());
    fields.insert("shredded".into(), n.into());
    crate::audit::record_admin_event("keys.shred_tenant", Some(tenant), fields);
    n
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.rotate_master_key() IS
  'Rewraps every data key under the newest root key version (no ciphertext changes); returns the number rewrapped. Admin only.';
COMMENT ON FUNCTION warden.rotate_data_key(text, text) IS
  'Retires the tenant''s active data key of the purpose (default data) and creates a new one; old ciphertexts still decrypt. Returns the new key id. Admin only.';
COMMENT ON FUNCTION warden.shred_tenant(text) IS
  'Destroys all of the tenant''s key material: its ciphertexts can never be decrypted again. Returns the number of keys shredded. Admin only.';
"#,
    name = "rotation_comments",
    requires = [rotate_master_key, rotate_data_key, shred_tenant],
);
