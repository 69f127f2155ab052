//! `warden.secret_delete` / `warden.secret_undelete` (soft: the version
//! stays encrypted, and is not returned while deleted) and
//! `warden.secret_destroy` (warden_admin: the ciphertext is removed for
//! good; its keyed fingerprint stays in the catalog). Without a version,
//! every version the change applies to. Each returns how many versions
//! it changed, and is recorded.

use pgrx::prelude::*;

use warden_core::secrets::{Access, Outcome};

use super::access_audit::{check_name, not_found, record, refuse};
use super::spi_error;
use crate::error::{not_null, WardenError};
use crate::privileged::as_superuser;
use crate::tenant_context::tenant_or_raise;

#[derive(Clone, Copy)]
enum Change {
    Delete,
    Undelete,
    Destroy,
}

impl Change {
    fn event(self) -> &'static str {
        match self {
            Change::Delete => "secret.delete",
            Change::Undelete => "secret.undelete",
            Change::Destroy => "secret.destroy",
        }
    }
}

fn apply(change: Change, name: Option<&str>, version: Option<i32>) -> i32 {
    let tenant = tenant_or_raise().to_string();
    let name = not_null(name, "name");
    check_name(change.event(), name);
    if matches!(change, Change::Destroy) && !crate::tenant_context::is_warden_admin() {
        refuse(
            change.event(),
            Outcome::Denied,
            &Access {
                name: Some(name),
                version,
                ..Default::default()
            },
            WardenError::privilege("only warden_admin members may destroy secrets")
                .hint("warden.secret_delete hides a version and can be undone."),
        );
    }
    let changed = as_superuser(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "WITH c AS (
                   UPDATE warden.secrets s
                      SET deleted_at = CASE WHEN $4 OPERATOR(pg_catalog.=) 'delete' THEN pg_catalog.clock_timestamp()
                                            WHEN $4 OPERATOR(pg_catalog.=) 'undelete' THEN NULL ELSE s.deleted_at END,
                          ciphertext = CASE WHEN $4 OPERATOR(pg_catalog.=) 'destroy' THEN NULL ELSE s.ciphertext END,
                          destroyed_at = CASE WHEN $4 OPERATOR(pg_catalog.=) 'destroy' THEN pg_catalog.clock_timestamp() ELSE s.destroyed_at END
                    WHERE s.tenant OPERATOR(pg_catalog.=) $1 AND s.name OPERATOR(pg_catalog.=) $2
                      AND ($3::pg_catalog.int4 IS NULL OR s.version OPERATOR(pg_catalog.=) $3)
                      AND s.destroyed_at IS NULL
                      AND CASE $4 WHEN 'delete' THEN s.deleted_at IS NULL
                                  WHEN 'undelete' THEN s.deleted_at IS NOT NULL
                                  ELSE true END
                   RETURNING s.version, s.key_id, s.fingerprint)
                 SELECT EXISTS (SELECT FROM warden.secrets s
                                 WHERE s.tenant OPERATOR(pg_catalog.=) $1 AND s.name OPERATOR(pg_catalog.=) $2
                                   AND ($3::pg_catalog.int4 IS NULL OR s.version OPERATOR(pg_catalog.=) $3)),
                        (SELECT pg_catalog.count(*)::pg_catalog.int4 FROM c),
                        (SELECT c.key_id FROM c ORDER BY c.version DESC LIMIT 1),
                        (SELECT c.fingerprint FROM c ORDER BY c.version DESC LIMIT 1)",
                Some(1),
                &[
                    tenant.as_str().into(),
                    name.into(),
                    version.into(),
                    match change {
                        Change::Delete => "delete",
                        Change::Undelete => "undelete",
                        Change::Destroy => "destroy",
                    }
                    .into(),
                ],
            )?;
            let row = rows.first();
            Ok::<_, pgrx::spi::Error>((
                row.get::<bool>(1)?.unwrap_or(false),
                row.get::<i32>(2)?.unwrap_or(0),
                row.get::<i32>(3)?,
                row.get::<Vec<u8>>(4)?,
            ))
        })
    })
    .unwrap_or_else(|e| spi_error(e).raise());
    let (exists, changed, key_id, fingerprint) = changed;
    // the newest version changed names the key and the value
    let access = Access {
        name: Some(name),
        version,
        versions: Some(i64::from(changed)),
        key_id: key_id.map(|k| k as u32),
        fingerprint: fingerprint.map(|f| warden_core::audit::to_hex(&f)),
        ..Default::default()
    };
    if !exists {
        refuse(
            change.event(),
            Outcome::NotFound,
            &access,
            not_found(match version {
                Some(v) => format!("secret \"{name}\" has no version {v}"),
                None => format!("secret \"{name}\" does not exist"),
            }),
        );
    }
    record(change.event(), Outcome::Ok, &access);
    changed
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn secret_delete(name: Option<&str>, version: Option<i32>) -> i32 {
    apply(Change::Delete, name, version)
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn secret_undelete(name: Option<&str>, version: Option<i32>) -> i32 {
    apply(Change::Undelete, name, version)
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn secret_destroy(name: Option<&str>, version: Option<i32>) -> i32 {
    apply(Change::Destroy, name, version)
}
