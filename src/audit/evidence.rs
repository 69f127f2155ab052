//! Evidence to keep outside the database: `warden.audit_public_key()`,
//! `warden.audit_digest()` (the latest signed checkpoint per chain, as
//! JSON), `warden.audit_verify_digest(digest)` (the log still holds and
//! extends a kept digest) and `warden.audit_export(chain, from_seq)` (JSON
//! lines the offline verifier `warden-verify` reads).

use pgrx::prelude::*;
use pgrx::JsonB;
use warden_core::audit::{
    checkpoint_line, event_line, from_hex, parse_checkpoint, to_hex, verify_checkpoint, Checkpoint,
};

use super::checkpoints::{read_checkpoints, server_identity};
use crate::error::{not_null, WardenError};
use crate::privileged::as_superuser;

fn read_failed(e: pgrx::spi::Error) -> ! {
    WardenError::prerequisite(format!("cannot read the audit log: {e}")).raise()
}

#[pg_extern(volatile, parallel_unsafe)]
fn audit_public_key() -> Option<Vec<u8>> {
    crate::crypto::audit_public_key().map(|k| k.to_vec())
}

/// The latest checkpoint of each chain (or of `chain`).
fn latest_checkpoints(chain: Option<&str>) -> Vec<(Checkpoint, Vec<u8>)> {
    as_superuser(|| -> Result<Vec<_>, pgrx::spi::Error> {
        let chains: Vec<(String, i64)> = Spi::connect(|client| {
            client
                .select(
                    "SELECT c.chain, pg_catalog.max(c.seq) FROM warden.audit_checkpoints c
                      WHERE $1 IS NULL OR c.chain OPERATOR(pg_catalog.=) $1
                      GROUP BY c.chain ORDER BY c.chain",
                    None,
                    &[chain.into()],
                )?
                .map(|r| Ok((r.get(1)?.unwrap_or_default(), r.get(2)?.unwrap_or(0))))
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })?;
        let mut out = Vec::new();
        for (chain, seq) in chains {
            out.extend(read_checkpoints(&chain, seq)?.into_iter().take(1));
        }
        Ok(out)
    })
    .unwrap_or_else(|e| read_failed(e))
}

#[pg_extern(volatile, parallel_unsafe)]
fn audit_digest(chain: default!(Option<&str>, "NULL")) -> JsonB {
    let checkpoints: Vec<serde_json::Value> = latest_checkpoints(chain)
        .iter()
        .map(|(c, sig)| {
            serde_json::from_str(&checkpoint_line(c, sig)).expect("checkpoint_line writes JSON")
        })
        .collect();
    let (system_identifier, timeline) = server_identity();
    JsonB(serde_json::json!({
        "format": "pg_warden audit digest v1",
        "public_key": crate::crypto::audit_public_key().map(|k| to_hex(&k)),
        "system_identifier": system_identifier,
        "timeline": timeline,
        "checkpoints": checkpoints,
    }))
}

#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn audit_verify_digest(
    digest: Option<JsonB>,
) -> TableIterator<
    'static,
    (
        name!(chain, String),
        name!(seq, i64),
        name!(ok, bool),
        name!(reason, Option<String>),
    ),
> {
    let digest = not_null(digest, "digest").0;
    let malformed = || -> ! {
        WardenError::invalid_parameter("not a pg_warden audit digest")
            .hint("Pass what warden.audit_digest() returned, unchanged.")
            .raise()
    };
    if digest.get("format").and_then(|f| f.as_str()) != Some("pg_warden audit digest v1") {
        malformed();
    }
    let kept: Vec<(Checkpoint, Vec<u8>)> = digest
        .get("checkpoints")
        .and_then(|c| c.as_array())
        .unwrap_or_else(|| malformed())
        .iter()
        .map(|c| parse_checkpoint(c).unwrap_or_else(|| malformed()))
        .collect();
    let kept_key = digest
        .get("public_key")
        .and_then(|k| k.as_str())
        .and_then(from_hex);
    let key = crate::crypto::audit_public_key();
    let rows = as_superuser(|| -> Result<Vec<_>, pgrx::spi::Error> {
        let mut out = Vec::new();
        for (kept_cp, sig) in kept {
            let verdict = |reason: Option<&str>| {
                (
                    kept_cp.chain.clone(),
                    kept_cp.seq,
                    reason.is_none(),
                    reason.map(str::to_string),
                )
            };
            // the kept checkpoint must be genuine under the database's
            // key, and that key the one the digest was made under
            let genuine = key.is_some_and(|k| {
                kept_key.as_deref() == Some(&k[..]) && verify_checkpoint(&k, &kept_cp, &sig)
            });
            if !genuine {
                out.push(verdict(Some("bad_signature")));
                continue;
            }
            // the log from its start (or anchor) through its head, with
            // every stored checkpoint and the kept one
            let outcome = super::verify_sql::verify_stored_chain(
                &kept_cp.chain,
                1,
                None,
                key.as_ref().map(|k| &k[..]),
                Some((kept_cp.clone(), sig)),
            )?;
            out.push(verdict(outcome.err().map(|f| f.reason.as_str())));
        }
        Ok(out)
    })
    .unwrap_or_else(|e| read_failed(e));
    TableIterator::new(rows)
}

#[pg_extern(volatile, parallel_unsafe)]
fn audit_export(chain: Option<&str>, from_seq: default!(i64, 1)) -> SetOfIterator<'static, String> {
    let chain = not_null(chain, "chain");
    if from_seq < 1 {
        WardenError::invalid_parameter("from_seq must be 1 or more").raise();
    }
    let lines = as_superuser(|| -> Result<Vec<String>, pgrx::spi::Error> {
        let (events, fields) = super::verify_sql::stored_with_fields(chain, from_seq)?;
        let mut lines: Vec<String> = events
            .iter()
            .zip(&fields)
            .map(|(e, f)| event_line(e, f.as_deref()))
            .collect();
        // from the anchor just before the first exported event on
        lines.extend(
            read_checkpoints(chain, from_seq - 1)?
                .iter()
                .map(|(c, sig)| checkpoint_line(c, sig)),
        );
        Ok(lines)
    })
    .unwrap_or_else(|e| read_failed(e));
    // an export carries a tenant's recorded changes out of the database
    let mut fields = serde_json::Map::new();
    fields.insert("chain".into(), chain.into());
    fields.insert("from_seq".into(), from_seq.into());
    fields.insert("lines".into(), lines.len().into());
    // in the global chain: an admin's act, and the exported chain stays
    // as it was exported
    super::durable::record_admin_event("audit.export", None, fields);
    SetOfIterator::new(lines)
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.audit_public_key() IS
  'The Ed25519 public key the audit checkpoints verify under (NULL until the first checkpoint was signed); keep a copy outside the database.';
COMMENT ON FUNCTION warden.audit_digest(text) IS
  'The latest signed checkpoint of each audit chain (or of one), with the public key and the server identity, as JSON to keep outside the database.';
COMMENT ON FUNCTION warden.audit_verify_digest(jsonb) IS
  'Proves the audit log still holds and extends a digest kept from warden.audit_digest(): per chain, ok or why not (bad_signature, truncated, edited, ...).';
COMMENT ON FUNCTION warden.audit_export(text, bigint) IS
  'One JSON line per event of the chain from from_seq on, and per checkpoint from the anchor before it: everything the offline verifier warden-verify needs.';
"#,
    name = "audit_evidence_comments",
    requires = [
        audit_public_key,
        audit_digest,
        audit_verify_digest,
        audit_export
    ],
);
