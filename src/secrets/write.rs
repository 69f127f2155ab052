//! `warden.secret_set`: a new version of a secret of the current tenant,
//! encrypted before it is written (the one INSERT that creates the
//! version carries the envelope: no plaintext tuple reaches the heap or
//! the WAL), with check-and-set on the version.
//!
//! Writers of one name queue on its row in `warden.secret_names`, which
//! hands out the next version; `expected_version` is checked against it
//! under that row lock, so concurrent writers with the same expectation
//! get one success and 40001 for the rest.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use warden_core::secrets::{secret_aad, Access, Outcome};

use super::access_audit::{check_name, record, refuse};
use super::spi_error;
use crate::error::{not_null, WardenError};
use crate::privileged::as_superuser;
use crate::tenant_context::tenant_or_raise;

const EVENT: &str = "secret.set";
/// Longest description, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 1_024;

/// The next version of `name`, or when `expected` does not hold the
/// current version (None: the secret does not exist).
fn next_version(tenant: &str, name: &str, expected: Option<i32>) -> Result<i32, Option<i32>> {
    let (version, inserted) = as_superuser(|| {
        Spi::connect_mut(|client| {
            let rows = crate::kept_plans::update(
                client,
                "INSERT INTO warden.secret_names AS h (tenant, name, latest_version) VALUES ($1, $2, 1)
                 ON CONFLICT (tenant, name) DO UPDATE SET latest_version = h.latest_version OPERATOR(pg_catalog.+) 1
                  WHERE $3::pg_catalog.int4 IS NULL OR h.latest_version OPERATOR(pg_catalog.=) $3
                 RETURNING h.latest_version, h.xmax OPERATOR(pg_catalog.=) '0'::pg_catalog.xid",
                Some(1),
                &[tenant.into(), name.into(), expected.into()],
            )?;
            if rows.is_empty() {
                return Ok((None, None));
            }
            let row = rows.first();
            Ok::<_, pgrx::spi::Error>((row.get::<i32>(1)?, row.get::<bool>(2)?))
        })
    })
    .unwrap_or_else(|e| spi_error(e).raise());
    let Some(version) = version else {
        return Err(current_version(tenant, name));
    };
    // a first version where one was expected to exist (the statement's
    // insert goes with the error's rollback)
    if inserted == Some(true) && expected.is_some_and(|e| e != 0) {
        return Err(None);
    }
    Ok(version)
}

fn current_version(tenant: &str, name: &str) -> Option<i32> {
    as_superuser(|| {
        crate::spi_read::read_one::<i32>(
            "SELECT latest_version FROM warden.secret_names
              WHERE tenant OPERATOR(pg_catalog.=) $1 AND name OPERATOR(pg_catalog.=) $2",
            &[tenant.into(), name.into()],
        )
    })
    .unwrap_or_else(|e| spi_error(e).raise())
}

/// Stores `value` as the next version of `name`; returns the version.
fn store(
    name: Option<&str>,
    value: &[u8],
    is_json: bool,
    expected: Option<i32>,
    expires_at: Option<TimestampWithTimeZone>,
    description: Option<&str>,
) -> i32 {
    let tenant = tenant_or_raise().to_string();
    let name = not_null(name, "name");
    check_name(EVENT, name);
    let access = Access {
        name: Some(name),
        ..Default::default()
    };
    let cap = crate::guc::max_secret_bytes();
    if value.len() > cap {
        refuse(
            EVENT,
            Outcome::TooLarge,
            &access,
            WardenError::new(PgSqlErrorCode::ERRCODE_STRING_DATA_RIGHT_TRUNCATION, "secret value is too large")
                .detail(format!("It is {} bytes; warden.max_secret_bytes is {cap}.", value.len()))
                .hint("Keep large values outside the database, or ask a superuser to raise warden.max_secret_bytes."),
        );
    }
    if expected.is_some_and(|e| e < 0) {
        refuse(
            EVENT,
            Outcome::Invalid,
            &access,
            WardenError::invalid_parameter(
                "expected_version must be 0 (the secret must not exist yet) or a version",
            )
            .hint("Pass NULL to write without a check."),
        );
    }
    if description.is_some_and(|d| d.len() > MAX_DESCRIPTION_BYTES) {
        refuse(
            EVENT,
            Outcome::Invalid,
            &access,
            WardenError::invalid_parameter(format!(
                "description is longer than {MAX_DESCRIPTION_BYTES} bytes"
            )),
        );
    }
    // SAFETY: reads the transaction's clock.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    if let Some(at) = expires_at {
        if pg_sys::TimestampTz::from(at) <= now {
            refuse(
                EVENT,
                Outcome::Invalid,
                &access,
                WardenError::invalid_parameter("expires_at is not in the future")
                    .hint("Pass NULL for a secret that does not expire."),
            );
        }
    }
    let version = next_version(&tenant, name, expected).unwrap_or_else(|current| {
        let (message, hint) = match (expected, current) {
            (Some(0), Some(v)) => (
                format!("secret \"{name}\" already exists (version {v})"),
                "expected_version => 0 writes only a secret that does not exist yet; read the current version from warden.secret_catalog.".to_string(),
            ),
            (_, None) => (
                format!("secret \"{name}\" does not exist"),
                "Pass expected_version => 0 (or NULL) to write its first version.".to_string(),
            ),
            (e, Some(v)) => (
                format!("secret \"{name}\" is at version {v}, not {}", e.unwrap_or(0)),
                "Another writer came first: read the secret again, then retry with its current version.".to_string(),
            ),
        };
        refuse(
            EVENT,
            Outcome::Conflict,
            &Access { version: current, ..access.clone() },
            WardenError::new(PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE, message).hint(hint),
        )
    });
    let aad = secret_aad(name, version);
    let (ciphertext, key) = crate::crypto::seal_for(&tenant, value, aad.as_bytes());
    let fingerprint = crate::crypto::secret_fingerprint(&tenant, value);
    let created_by = super::access_audit::current_role_name();
    as_superuser(|| {
        Spi::connect_mut(|client| {
            crate::kept_plans::update(
                client,
                "INSERT INTO warden.secrets (tenant, name, version, ciphertext, is_json, fingerprint, key_id,
                                             description, created_at, created_by, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, pg_catalog.clock_timestamp(), $9, $10)",
                None,
                &[
                    tenant.as_str().into(),
                    name.into(),
                    version.into(),
                    ciphertext.into(),
                    is_json.into(),
                    fingerprint.to_vec().into(),
                    (key.key_id as i32).into(),
                    description.into(),
                    created_by.into(),
                    expires_at.into(),
                ],
            )?;
            Ok::<_, pgrx::spi::Error>(())
        })
    })
    .unwrap_or_else(|e| spi_error(e).raise());
    record(
        EVENT,
        Outcome::Ok,
        &Access {
            version: Some(version),
            key_id: Some(key.key_id),
            root_key_version: Some(key.root_version as i32),
            fingerprint: Some(warden_core::audit::to_hex(&fingerprint)),
            ..access
        },
    );
    version
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn secret_set(
    name: Option<&str>,
    value: Option<&str>,
    expected_version: Option<i32>,
    expires_at: Option<TimestampWithTimeZone>,
    description: Option<&str>,
) -> i32 {
    let value = not_null(value, "value");
    store(
        name,
        value.as_bytes(),
        false,
        expected_version,
        expires_at,
        description,
    )
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn secret_set_jsonb(
    name: Option<&str>,
    value: Option<pgrx::AnyElement>,
    expected_version: Option<i32>,
    expires_at: Option<TimestampWithTimeZone>,
    description: Option<&str>,
) -> i32 {
    let value = not_null(value, "value");
    let text = zeroize::Zeroizing::new(super::json_text(&value));
    store(
        name,
        text.as_bytes(),
        true,
        expected_version,
        expires_at,
        description,
    )
}
