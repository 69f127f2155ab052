//! Signed checkpoints: where each chain stood (seq and hash), with the
//! database's identity (system identifier, timeline), signed with the
//! database's Ed25519 key (`crypto::sign_audit_checkpoint`). Written by
//! the sequencer in the transaction that chained the events, so a
//! checkpoint never names a hash the log does not hold. An edit that
//! recomputes every later hash no longer matches the signatures; a cut
//! tail ends before the last checkpoint; a restored older copy or a
//! promoted standby shows in system_identifier and timeline.

use std::collections::HashMap;

use pgrx::pg_sys;
use pgrx::prelude::*;
use warden_core::audit::Checkpoint;

use crate::error::WardenError;

extension_sql!(
    r#"
CREATE TABLE warden.audit_checkpoints (
    chain             text NOT NULL,
    seq               bigint NOT NULL CHECK (seq > 0),
    hash              bytea NOT NULL,
    ts                timestamptz NOT NULL,
    system_identifier bigint NOT NULL,
    timeline          integer NOT NULL,
    signature         bytea NOT NULL,
    tenant            text,
    PRIMARY KEY (chain, seq)
);
SELECT pg_catalog.pg_extension_config_dump('warden.audit_checkpoints', '');
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON warden.audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION warden._audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON warden.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION warden._audit_refuse_change();
ALTER TABLE warden.audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_append_only;
ALTER TABLE warden.audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_no_truncate;
COMMENT ON TABLE warden.audit_checkpoints IS
  'Signed checkpoints of the audit chains (Ed25519, format v1 in the README; public key: warden.audit_public_key()). Append-only.';
COMMENT ON INDEX warden.audit_checkpoints_pkey IS 'One checkpoint per (chain, seq).';
COMMENT ON TRIGGER audit_checkpoints_append_only ON warden.audit_checkpoints IS 'Refuses UPDATE and DELETE, also under session_replication_role = replica.';
COMMENT ON TRIGGER audit_checkpoints_no_truncate ON warden.audit_checkpoints IS 'Refuses TRUNCATE, also under session_replication_role = replica.';
"#,
    name = "audit_checkpoints_table",
    requires = ["audit_log_table"],
);

/// This server's identity: (system identifier, timeline).
pub(super) fn server_identity() -> (u64, u32) {
    // SAFETY: plain reads of control data.
    unsafe {
        (
            pg_sys::GetSystemIdentifier(),
            pg_sys::GetWALInsertionTimeLine(),
        )
    }
}

/// Signs and stores a checkpoint for each chain head. Returns false (and
/// writes nothing) without a root key: there is no signing key then.
pub(super) fn write_checkpoints(
    heads: &HashMap<String, (i64, [u8; 32])>,
) -> Result<bool, WardenError> {
    let (system_identifier, timeline) = server_identity();
    let ts_micros = super::durable::now_micros();
    for (chain, (seq, hash)) in heads {
        let c = Checkpoint {
            chain: chain.clone(),
            seq: *seq,
            hash: *hash,
            ts_micros,
            system_identifier,
            timeline,
        };
        let Some(signature) = crate::crypto::sign_audit_checkpoint(&c) else {
            return Ok(false);
        };
        let tenant = (chain != "global").then_some(chain.as_str());
        Spi::run_with_args(
            "INSERT INTO warden.audit_checkpoints (chain, seq, hash, ts, system_identifier, timeline, signature, tenant)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (chain, seq) DO NOTHING",
            &[
                chain.as_str().into(),
                (*seq).into(),
                hash.to_vec().into(),
                super::durable::timestamptz(ts_micros).into(),
                (system_identifier as i64).into(),
                (timeline as i32).into(),
                signature.to_vec().into(),
                tenant.into(),
            ],
        )
        .map_err(|e| WardenError::prerequisite(format!("audit checkpoint: {e}")))?;
    }
    Ok(true)
}

/// The checkpoints of `chain` with seq >= `from_seq`, in seq order, each
/// with its signature.
pub(super) fn read_checkpoints(
    chain: &str,
    from_seq: i64,
) -> Result<Vec<(Checkpoint, Vec<u8>)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT c.seq, c.hash, (EXTRACT(epoch FROM c.ts) * 1000000)::bigint,
                        c.system_identifier, c.timeline, c.signature
                   FROM warden.audit_checkpoints c
                  WHERE c.chain OPERATOR(pg_catalog.=) $1 AND c.seq OPERATOR(pg_catalog.>=) $2
                  ORDER BY c.seq",
                None,
                &[chain.into(), from_seq.into()],
            )?
            .map(|r| {
                Ok((
                    Checkpoint {
                        chain: chain.to_string(),
                        seq: r.get(1)?.unwrap_or(0),
                        hash: r
                            .get::<Vec<u8>>(2)?
                            .and_then(|h| h.try_into().ok())
                            .unwrap_or([0xff; 32]),
                        ts_micros: r.get(3)?.unwrap_or(0),
                        system_identifier: r.get::<i64>(4)?.unwrap_or(0) as u64,
                        timeline: r.get::<i32>(5)?.unwrap_or(0) as u32,
                    },
                    r.get(6)?.unwrap_or_default(),
                ))
            })
            .collect()
    })
}
