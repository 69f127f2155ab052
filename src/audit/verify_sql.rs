//! `warden.audit_verify(chain, from_seq)`: checks the stored chains with
//! the same code as the offline verifier (`warden_core::audit`), naming
//! the first bad seq of each and why.

use pgrx::prelude::*;
use warden_core::audit::{
    canonical_fields_text, verify_chain, EventHeader, StoredEvent, VerifyFrom,
};

use crate::error::WardenError;
use crate::privileged::as_superuser;

fn hash32(v: Option<Vec<u8>>) -> [u8; 32] {
    v.and_then(|b| b.try_into().ok()).unwrap_or([0xff; 32])
}

/// The rows of `chain` from `from_seq` on, in seq order.
fn stored(chain: &str, from_seq: i64) -> Result<Vec<StoredEvent>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT l.seq, (EXTRACT(epoch FROM l.ts) * 1000000)::bigint, l.event_type, l.tenant,
                        l.actor, l.actor_kind, l.correlation_id, l.txid::text, l.fields::text,
                        l.fields_salt, l.payload_digest, l.prev_hash, l.hash
                   FROM warden.audit_log l
                  WHERE l.chain OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.>=) $2
                  ORDER BY l.seq",
                None,
                &[chain.into(), from_seq.into()],
            )?
            .map(|r| {
                let fields: Option<String> = r.get(9)?;
                Ok(StoredEvent {
                    header: EventHeader {
                        chain: chain.to_string(),
                        seq: r.get(1)?.unwrap_or(0),
                        ts_micros: r.get(2)?.unwrap_or(0),
                        event_type: r.get(3)?.unwrap_or_default(),
                        tenant: r.get(4)?,
                        actor: r.get(5)?,
                        actor_kind: r.get(6)?,
                        correlation_id: r.get(7)?,
                        txid: r.get::<String>(8)?.and_then(|t| t.parse().ok()).unwrap_or(0),
                    },
                    // unparsable text cannot be what was hashed: its
                    // digest will not match
                    canonical_fields: fields
                        .map(|f| canonical_fields_text(&f).unwrap_or_else(|| f.into_bytes())),
                    fields_salt: r.get(10)?,
                    payload_digest: hash32(r.get(11)?),
                    prev_hash: hash32(r.get(12)?),
                    hash: hash32(r.get(13)?),
                })
            })
            .collect()
    })
}

#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn audit_verify(
    chain: default!(Option<&str>, "NULL"),
    from_seq: default!(i64, 1),
) -> TableIterator<
    'static,
    (
        name!(chain, String),
        name!(checked, i64),
        name!(ok, bool),
        name!(first_bad_seq, Option<i64>),
        name!(reason, Option<String>),
    ),
> {
    if from_seq < 1 {
        WardenError::invalid_parameter("from_seq must be 1 or more").raise();
    }
    let rows = as_superuser(|| -> Result<Vec<_>, pgrx::spi::Error> {
        let chains: Vec<String> = match chain {
            Some(c) => vec![c.to_string()],
            None => Spi::connect(|client| {
                client
                    .select("SELECT DISTINCT l.chain FROM warden.audit_log l ORDER BY 1", None, &[])?
                    .map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<_>, _>>()
            })?,
        };
        let mut out = Vec::new();
        for c in chains {
            let from = if from_seq == 1 {
                VerifyFrom::default()
            } else {
                // verified from the (unverified) event before: a check of
                // the tail only
                let prev = Spi::get_one_with_args::<Vec<u8>>(
                    "SELECT l.hash FROM warden.audit_log l WHERE l.chain OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.=) $2",
                    &[c.as_str().into(), (from_seq - 1).into()],
                )
                .ok()
                .flatten();
                VerifyFrom {
                    seq: from_seq,
                    prev_hash: hash32(prev),
                }
            };
            let events = stored(&c, from_seq)?;
            out.push(match verify_chain(&events, from, None) {
                Ok(n) => (c, n as i64, true, None, None),
                Err(f) => (c, 0, false, Some(f.seq), Some(f.reason.as_str().to_string())),
            });
        }
        Ok(out)
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot read the audit log: {e}")).raise());
    TableIterator::new(rows)
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.audit_verify(text, bigint) IS
  'Verifies the audit chains (or one): per chain, how many events were checked, ok, and the first bad seq with its reason (edited, deleted, inserted, reordered).';
"#,
    name = "audit_verify_comments",
    requires = [audit_verify],
);
