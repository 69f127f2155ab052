//! `warden.secret_get`, `warden.secret_get_jsonb`: the latest live
//! version of a secret of the current tenant, or the version asked for.
//! Deleted, destroyed and expired versions are never returned. The
//! access is recorded before the value is released (and, under
//! `warden.audit_strict`, committed: the value is not returned if the
//! record cannot be).

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use warden_core::secrets::{json_value_as_text, secret_aad, text_as_json, Access, Outcome};

use super::access_audit::{check_name, not_found, record, refuse};
use super::plaintext_cache::{self, Candidates};
use super::spi_error;
use crate::error::{not_null, WardenError};
use crate::privileged::as_superuser;
use crate::tenant_context::tenant_or_raise;

const EVENT: &str = "secret.get";

/// One stored version.
#[derive(Clone)]
pub(super) struct Stored {
    pub version: i32,
    pub ciphertext: Option<Vec<u8>>,
    pub is_json: bool,
    pub fingerprint: Vec<u8>,
    pub key_id: i32,
    pub deleted: bool,
    pub expired: bool,
    /// When it expires (Postgres microseconds).
    pub expires_at_us: Option<i64>,
    /// When the next version was created (Postgres microseconds).
    pub replaced_at_us: Option<i64>,
}

/// Live versions tried while a webhook secret is rotated, at most.
const MAX_CANDIDATES: i64 = 16;

/// Versions of `name` (of `tenant`): `version`, or with None the latest
/// live one; with `overlap_us`, also each older live version whose
/// successor was created within it of now (a rotation still in progress
/// for the senders), newest first.
pub(super) fn versions(
    tenant: &str,
    name: &str,
    version: Option<i32>,
    overlap_us: Option<i64>,
) -> Vec<Stored> {
    let limit: i64 = if overlap_us.is_some() {
        MAX_CANDIDATES
    } else {
        1
    };
    as_superuser(|| {
        Spi::connect(|client| {
            let rows = crate::kept_plans::select(
                client,
                "SELECT v.version, v.ciphertext, v.is_json, v.fingerprint, v.key_id, v.deleted, v.expired, v.replaced_recently,
                        v.expires_at, v.replaced_at
                   FROM (SELECT s.version, s.ciphertext, s.is_json, s.fingerprint, s.key_id,
                                s.deleted_at IS NOT NULL AS deleted, s.expires_at,
                                pg_catalog.lag(s.created_at) OVER (ORDER BY s.version DESC) AS replaced_at,
                                COALESCE(s.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp(), false) AS expired,
                                COALESCE(pg_catalog.lag(s.created_at) OVER (ORDER BY s.version DESC)
                                           OPERATOR(pg_catalog.>=) (pg_catalog.clock_timestamp()
                                           OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => COALESCE($4, 0) OPERATOR(pg_catalog./) 1000000.0)),
                                         false) AS replaced_recently
                           FROM warden.secrets s
                          WHERE s.tenant OPERATOR(pg_catalog.=) $1 AND s.name OPERATOR(pg_catalog.=) $2
                            AND CASE WHEN $3::pg_catalog.int4 IS NOT NULL THEN s.version OPERATOR(pg_catalog.=) $3
                                ELSE s.ciphertext IS NOT NULL AND s.deleted_at IS NULL
                                     AND (s.expires_at IS NULL OR s.expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp())
                                END) v
                  ORDER BY v.version DESC
                  LIMIT $5",
                None,
                &[
                    tenant.into(),
                    name.into(),
                    version.into(),
                    overlap_us.map(|o| o as f64).into(),
                    limit.into(),
                ],
            )?;
            let mut out = Vec::new();
            for row in rows {
                // the newest always; an older one while what replaced it is
                // younger than the overlap
                if !out.is_empty() && !row.get::<bool>(8)?.unwrap_or(false) {
                    break;
                }
                out.push(Stored {
                    version: row.get::<i32>(1)?.unwrap_or(0),
                    ciphertext: row.get::<Vec<u8>>(2)?,
                    is_json: row.get::<bool>(3)?.unwrap_or(false),
                    fingerprint: row.get::<Vec<u8>>(4)?.unwrap_or_default(),
                    key_id: row.get::<i32>(5)?.unwrap_or(0),
                    deleted: row.get::<bool>(6)?.unwrap_or(false),
                    expired: row.get::<bool>(7)?.unwrap_or(false),
                    expires_at_us: row.get::<TimestampWithTimeZone>(9)?.map(i64::from),
                    replaced_at_us: row.get::<TimestampWithTimeZone>(10)?.map(i64::from),
                });
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })
    .unwrap_or_else(|e| spi_error(e).raise())
}

/// The key bytes of a stored version: a jsonb secret's JSON string is the
/// string itself (its quotes are not part of the key).
pub(super) fn secret_bytes(
    s: &Stored,
    plain: zeroize::Zeroizing<Vec<u8>>,
) -> zeroize::Zeroizing<Vec<u8>> {
    if !s.is_json {
        return plain;
    }
    let text = std::str::from_utf8(&plain).unwrap_or_default();
    zeroize::Zeroizing::new(json_value_as_text(text).into_bytes())
}

/// The plaintext of `s` (version of `name`), or None when it does not
/// decrypt.
pub(super) fn decrypt(tenant: &str, name: &str, s: &Stored) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let aad = secret_aad(name, s.version);
    crate::crypto::open_for(tenant, s.ciphertext.as_deref()?, aad.as_bytes())
}

/// The plaintext of `s`, or the refusal of `event` (recorded) when it
/// does not decrypt.
pub(super) fn decrypt_or_refuse(
    event: &str,
    tenant: &str,
    name: &str,
    s: &Stored,
) -> zeroize::Zeroizing<Vec<u8>> {
    decrypt(tenant, name, s).unwrap_or_else(|| refuse_undecryptable(event, name, s))
}

/// The refusal of `event` (recorded) of a version that does not decrypt.
fn refuse_undecryptable(event: &str, name: &str, s: &Stored) -> ! {
    refuse(
        event,
        Outcome::DecryptFailed,
        &access_of(name, s),
        WardenError::new(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "decryption failed")
            .hint("The stored version was changed, or its data key was shredded."),
    )
}

/// The live versions of `name` a webhook is verified with, decrypted,
/// from this backend's cache or looked up (`any_overlap`: for the newest
/// version only, which the overlap does not change).
pub(super) fn cached_candidates(
    tenant: &str,
    name: &str,
    any_overlap: bool,
) -> Option<std::rc::Rc<Candidates>> {
    let overlap_us =
        i64::try_from(crate::guc::webhook_secret_overlap().as_micros()).unwrap_or(i64::MAX);
    plaintext_cache::candidates(tenant, name, overlap_us, any_overlap, || {
        let versions = versions(tenant, name, None, Some(overlap_us));
        let first = versions.first()?;
        let mut newest_plain = None;
        let mut secrets = Vec::with_capacity(versions.len());
        let mut secret_versions = Vec::with_capacity(versions.len());
        for (i, s) in versions.iter().enumerate() {
            let Some(plain) = decrypt(tenant, name, s) else {
                continue;
            };
            if i == 0 {
                newest_plain = Some(plain.clone());
            }
            secrets.push(secret_bytes(s, plain));
            secret_versions.push(Stored {
                ciphertext: None,
                ..s.clone()
            });
        }
        let newest_root_version = newest_plain
            .as_ref()
            .and_then(|_| crate::crypto::root_version_of(first.key_id as u32, tenant));
        let until = plaintext_cache::valid_until(&versions, overlap_us);
        let newest = Stored {
            ciphertext: None,
            ..first.clone()
        };
        Some((
            Candidates {
                newest,
                newest_plain,
                newest_root_version,
                secrets,
                secret_versions,
            },
            until,
        ))
    })
}

/// As `cached_candidates`, recording the refusal of `event` (and raising)
/// when `name` has no live version.
pub(super) fn live_candidates_or_refuse(
    event: &str,
    tenant: &str,
    name: &str,
    access: &Access,
    any_overlap: bool,
) -> std::rc::Rc<Candidates> {
    cached_candidates(tenant, name, any_overlap).unwrap_or_else(|| {
        refuse(
            event,
            Outcome::NotFound,
            access,
            not_found(format!("secret \"{name}\" has no live version")),
        )
    })
}

/// The audit fields of an access to `s`.
pub(super) fn access_of<'a>(name: &'a str, s: &Stored) -> Access<'a> {
    Access {
        name: Some(name),
        version: Some(s.version),
        key_id: Some(s.key_id as u32),
        fingerprint: Some(warden_core::audit::to_hex(&s.fingerprint)),
        ..Default::default()
    }
}

/// The version asked for, checked, decrypted and recorded; raises (after
/// recording why) otherwise.
fn get(name: Option<&str>, version: Option<i32>) -> (Stored, zeroize::Zeroizing<Vec<u8>>) {
    let tenant = tenant_or_raise().to_string();
    let name = not_null(name, "name");
    check_name(EVENT, name);
    let access = Access {
        name: Some(name),
        version,
        ..Default::default()
    };
    let Some(v) = version else {
        // the latest live version: from the cache
        let c = live_candidates_or_refuse(EVENT, &tenant, name, &access, true);
        let Some(plain) = c.newest_plain.clone() else {
            refuse_undecryptable(EVENT, name, &c.newest)
        };
        let mut a = access_of(name, &c.newest);
        a.root_key_version = c.newest_root_version;
        record(EVENT, Outcome::Ok, &a);
        return (c.newest.clone(), plain);
    };
    let Some(s) = versions(&tenant, name, version, None).into_iter().next() else {
        refuse(
            EVENT,
            Outcome::NotFound,
            &access,
            not_found(format!("secret \"{name}\" has no version {v}")),
        )
    };
    let refusal = if s.ciphertext.is_none() {
        Some((
            Outcome::NotFound,
            "was destroyed",
            "A destroyed version is gone for good.",
        ))
    } else if s.deleted {
        Some((
            Outcome::NotFound,
            "is deleted",
            "warden.secret_undelete(name, version) restores it.",
        ))
    } else if s.expired {
        Some((
            Outcome::Expired,
            "has expired",
            "Write a new version with warden.secret_set.",
        ))
    } else {
        None
    };
    if let Some((outcome, what, hint)) = refusal {
        refuse(
            EVENT,
            outcome,
            &access_of(name, &s),
            WardenError::invalid_parameter(format!(
                "version {} of secret \"{name}\" {what}",
                s.version
            ))
            .hint(hint),
        );
    }
    let plain = decrypt_or_refuse(EVENT, &tenant, name, &s);
    // on record (committed, under warden.audit_strict) before the value
    // leaves
    let mut a = access_of(name, &s);
    a.root_key_version = crate::crypto::root_version_of(s.key_id as u32, &tenant);
    record(EVENT, Outcome::Ok, &a);
    (s, plain)
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn secret_get(name: Option<&str>, version: Option<i32>) -> String {
    let (s, plain) = get(name, version);
    let text = std::str::from_utf8(&plain).unwrap_or_default();
    if s.is_json {
        json_value_as_text(text)
    } else {
        text.to_string()
    }
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn secret_get_jsonb(name: Option<&str>, version: Option<i32>) -> pgrx::AnyElement {
    let (s, plain) = get(name, version);
    let text = std::str::from_utf8(&plain).unwrap_or_default();
    if s.is_json {
        super::jsonb_from_text(text)
    } else {
        super::jsonb_from_text(&zeroize::Zeroizing::new(text_as_json(text)))
    }
}
