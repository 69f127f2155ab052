//! `warden.audit_verify(chain, from_seq)`: checks the stored chains with
//! the same code as the offline verifier (`warden_core::audit`), naming
//! the first bad seq of each and why.

use pgrx::prelude::*;
use warden_core::audit::{
    canonical_fields_text, verify_chain, EventHeader, StoredEvent, VerifyFrom,
};

use super::header_row::{header_columns, read_header, HEADER_COLUMN_COUNT};
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
                concat!(
                    "SELECT x.seq, ",
                    header_columns!(),
                    ", x.fields::text, x.fields_salt, x.payload_digest, x.prev_hash, x.hash
                       FROM warden.audit_log x
                      WHERE x.chain OPERATOR(pg_catalog.=) $1 AND x.seq OPERATOR(pg_catalog.>=) $2
                      ORDER BY x.seq"
                ),
                None,
                &[chain.into(), from_seq.into()],
            )?
            .map(|r| {
                // the columns after the header
                let after = 2 + HEADER_COLUMN_COUNT;
                let fields: Option<String> = r.get(after)?;
                Ok(StoredEvent {
                    header: EventHeader {
                        chain: chain.to_string(),
                        seq: r.get(1)?.unwrap_or(0),
                        ..read_header(&r, 2)?
                    },
                    // unparsable text cannot be what was hashed: its
                    // digest will not match
                    canonical_fields: fields
                        .map(|f| canonical_fields_text(&f).unwrap_or_else(|| f.into_bytes())),
                    fields_salt: r.get(after + 1)?,
                    payload_digest: hash32(r.get(after + 2)?),
                    prev_hash: hash32(r.get(after + 3)?),
                    hash: hash32(r.get(after + 4)?),
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
                let prev = crate::spi_read::read_one::<Vec<u8>>(
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
