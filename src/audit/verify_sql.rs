//! `warden.audit_verify(chain, from_seq)`: checks the stored chains with
//! the same code as the offline verifier (`warden_core::audit`), naming
//! the first bad seq of each and why.

use pgrx::pg_sys;
use pgrx::prelude::*;
use warden_core::audit::{
    canonical_fields_text, start_signed_check, Checkpoint, EventHeader, Failure, StoredEvent,
    VerifyFrom,
};

use super::header_row::{header_columns, read_header, HEADER_COLUMN_COUNT};
use crate::error::WardenError;
use crate::privileged::as_superuser;

fn hash32(v: Option<Vec<u8>>) -> [u8; 32] {
    v.and_then(|b| b.try_into().ok()).unwrap_or([0xff; 32])
}

/// Seqs `audit_verify` reads and checks at a time: a long chain is never
/// held in memory whole.
const WINDOW: i64 = 10_000;
/// Rows read after a broken link to tell why it broke (a row swapped
/// with one further away than this reads as edited, not reordered).
const RECLASSIFY_ROWS: i64 = 200_000;

/// The rows of `chain` from `from_seq` on, in seq order, with each row's
/// fields as stored (JSON text; None once redacted), for the export.
#[allow(clippy::type_complexity)]
pub(super) fn stored_with_fields(
    chain: &str,
    from_seq: i64,
) -> Result<(Vec<StoredEvent>, Vec<Option<String>>), pgrx::spi::Error> {
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
                let event = StoredEvent {
                    header: EventHeader {
                        chain: chain.to_string(),
                        seq: r.get(1)?.unwrap_or(0),
                        ..read_header(&r, 2)?
                    },
                    // unparsable text cannot be what was hashed: its
                    // digest will not match
                    canonical_fields: fields.as_ref().map(|f| {
                        canonical_fields_text(f).unwrap_or_else(|| f.clone().into_bytes())
                    }),
                    fields_salt: r.get(after + 1)?,
                    payload_digest: hash32(r.get(after + 2)?),
                    prev_hash: hash32(r.get(after + 3)?),
                    hash: hash32(r.get(after + 4)?),
                };
                Ok((event, fields))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|rows| rows.into_iter().unzip())
    })
}

/// Checks `chain` from `from_seq` (with its signed checkpoints, and
/// `kept`, one kept outside, under `public_key`) a window of rows at a
/// time.
pub(super) fn verify_stored_chain(
    chain: &str,
    from_seq: i64,
    from: Option<VerifyFrom>,
    public_key: Option<&[u8]>,
    kept: Option<(Checkpoint, Vec<u8>)>,
) -> Result<Result<u64, Failure>, pgrx::spi::Error> {
    let mut checkpoints = super::checkpoints::read_checkpoints(chain, from_seq - 1)?;
    checkpoints.extend(kept);
    // checkpoints without a key to check them: the key is gone, and with
    // it any proof that they are genuine
    let key = public_key
        .map(<[u8]>::to_vec)
        .or_else(|| (!checkpoints.is_empty()).then(Vec::new));
    // every read below under one snapshot, taken after the checkpoints
    // were read: it holds every event they sign
    // SAFETY: registered here, unregistered below (or by the abort of an
    // ERROR in between).
    let snapshot = unsafe { pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot()) };
    let outcome = check_chain(
        chain,
        from_seq,
        from,
        &checkpoints,
        key.as_deref(),
        snapshot,
    );
    // SAFETY: registered above.
    unsafe { pg_sys::UnregisterSnapshot(snapshot) };
    Ok(outcome)
}

/// The check of `verify_stored_chain` under `snapshot`.
fn check_chain(
    chain: &str,
    from_seq: i64,
    from: Option<VerifyFrom>,
    checkpoints: &[(Checkpoint, Vec<u8>)],
    key: Option<&[u8]>,
    snapshot: pg_sys::Snapshot,
) -> Result<u64, Failure> {
    // SAFETY (the log_scan calls): the snapshot is registered by the caller.
    let first_seq = unsafe { super::log_scan::first_seq_from(chain, from_seq, snapshot) };
    let mut check = start_signed_check(first_seq, checkpoints, key, from)?;
    let mut next = first_seq;
    while let Some(from) = next {
        let last = from.saturating_add(WINDOW - 1);
        let rows = unsafe { super::log_scan::read_window(chain, from, last, snapshot) };
        // a broken link is classified by the rows after it: up to
        // RECLASSIFY_ROWS of them (held as headers and hashes)
        let rest = |seq: i64| {
            Ok::<_, std::convert::Infallible>(unsafe {
                super::log_scan::read_window(
                    chain,
                    seq,
                    seq.saturating_add(RECLASSIFY_ROWS - 1),
                    snapshot,
                )
            })
        };
        let Ok(outcome) = check.feed_window(&rows, rest);
        outcome?;
        // the next window starts at the next stored seq (a forged row far
        // ahead is one window away, not billions)
        next = match last.checked_add(1) {
            Some(after) => unsafe { super::log_scan::first_seq_from(chain, after, snapshot) },
            None => None,
        };
    }
    check.finish()
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
                    .select(
                        "SELECT l.chain FROM warden.audit_log l
                          UNION SELECT c.chain FROM warden.audit_checkpoints c ORDER BY 1",
                        None,
                        &[],
                    )?
                    .map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<_>, _>>()
            })?,
        };
        let mut out = Vec::new();
        let public_key = crate::crypto::audit_public_key();
        for c in chains {
            let from = if from_seq == 1 {
                // from the beginning, or from the signed anchor of a
                // pruned chain
                None
            } else {
                // verified from the (unverified) event before: a check of
                // the tail only
                let prev = crate::spi_read::read_one::<Vec<u8>>(
                    "SELECT l.hash FROM warden.audit_log l WHERE l.chain OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.=) $2",
                    &[c.as_str().into(), (from_seq - 1).into()],
                )
                .ok()
                .flatten();
                Some(VerifyFrom {
                    seq: from_seq,
                    prev_hash: hash32(prev),
                })
            };
            let key = public_key.map(|k| k.to_vec());
            out.push(match verify_stored_chain(&c, from_seq, from, key.as_deref(), None)? {
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
  'Verifies the audit chains (or one): per chain, how many events were checked, ok, and the first bad seq with its reason (edited, deleted, inserted, reordered, truncated, bad_signature).';
"#,
    name = "audit_verify_comments",
    requires = [audit_verify],
);
