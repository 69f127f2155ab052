//! Reads a chain's stored rows for verification straight from the log's
//! primary key index, in seq order: no SQL, no projection, no copy into an
//! SPI result and no JSON text (each row's fields are encoded canonically
//! by walking the stored jsonb, `datum_read::canonical_jsonb`). `audit_verify` checks about twice as many
//! events a second this way as through SPI.

use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum};
use pgrx::PgMemoryContexts;
use warden_core::audit::{payload_digest, EventHeader, StoredEvent};

use super::datum_read::{bytes, canonical_jsonb, hash32, text};
use super::index_scan::{scan_by_primary_key, scan_key, ScannedRow};

/// The log's columns a verifier reads, by name (so their order in the
/// table does not matter).
const COLUMNS: [&CStr; 14] = [
    c"chain",
    c"seq",
    c"ts",
    c"event_type",
    c"tenant",
    c"actor",
    c"actor_kind",
    c"correlation_id",
    c"txid",
    c"fields",
    c"fields_salt",
    c"payload_digest",
    c"prev_hash",
    c"hash",
];

/// A scan of `chain`'s rows with `from_seq <= seq <= last_seq` in seq
/// order under `snapshot`, calling `row` with each row until it returns
/// false.
///
/// # Safety
/// `snapshot` is registered (or active) for the whole call.
unsafe fn scan_log(
    chain: &str,
    from_seq: i64,
    last_seq: i64,
    snapshot: pg_sys::Snapshot,
    row: impl FnMut(&ScannedRow) -> bool,
) {
    let chain_text = pgrx::IntoDatum::into_datum(chain).expect("text is a datum");
    // the scan keys follow the index's (chain, seq) columns, the text one
    // with the index's collation
    let keys = |index: pg_sys::Relation| {
        let mut chain_key = scan_key(
            1,
            pg_sys::BTEqualStrategyNumber,
            pg_sys::F_TEXTEQ,
            chain_text,
        );
        // SAFETY: the open index's collation of its first column.
        chain_key.sk_collation = unsafe { *(*index).rd_indcollation };
        vec![
            chain_key,
            scan_key(
                2,
                pg_sys::BTGreaterEqualStrategyNumber,
                pg_sys::F_INT8GE,
                Datum::from(from_seq),
            ),
            scan_key(
                2,
                pg_sys::BTLessEqualStrategyNumber,
                pg_sys::F_INT8LE,
                Datum::from(last_seq),
            ),
        ]
    };
    // SAFETY: per the contract.
    unsafe {
        scan_by_primary_key(
            c"audit_log",
            c"audit_log_pkey",
            2,
            &COLUMNS,
            keys,
            snapshot,
            row,
        )
    }
}

/// The first seq of `chain` at or after `from_seq` under `snapshot`.
///
/// # Safety
/// As `scan_log`.
pub(super) unsafe fn first_seq_from(
    chain: &str,
    from_seq: i64,
    snapshot: pg_sys::Snapshot,
) -> Option<i64> {
    let mut first = None;
    // SAFETY: per the contract.
    unsafe {
        scan_log(chain, from_seq, i64::MAX, snapshot, |r| {
            first = Some(r.col(1).0.value() as i64);
            false
        })
    };
    first
}

/// The rows of `chain` with `from_seq <= seq <= last_seq`, in seq order,
/// under `snapshot`. A row whose fields match its payload digest comes
/// without them (as an erased payload does: nothing is left to check),
/// so a window holds headers and hashes, whatever size the events are.
///
/// # Safety
/// As `scan_log`.
pub(super) unsafe fn read_window(
    chain: &str,
    from_seq: i64,
    last_seq: i64,
    snapshot: pg_sys::Snapshot,
) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    // what a row detoasts goes with it
    let mut scratch = PgMemoryContexts::new("pg_warden audit_verify row");
    // SAFETY: per the contract; each row's datums are read while the slot
    // holds it, copied into Rust, and the scratch context reset after.
    unsafe {
        scan_log(chain, from_seq, last_seq, snapshot, |r| {
            let col = |i: usize| r.col(i);
            let event = scratch.switch_to(|_| {
                let text_col = |i: usize| {
                    let (d, null) = col(i);
                    text(d, null)
                };
                let bytes_col = |i: usize| {
                    let (d, null) = col(i);
                    (!null).then(|| bytes(d).to_vec())
                };
                let (ts, _) = col(2);
                let (txid, _) = col(8);
                let (fields, fields_null) = col(9);
                let digest = hash32(&bytes_col(11).unwrap_or_default());
                let mut canonical_fields = (!fields_null).then(|| canonical_jsonb(fields));
                let mut fields_salt = bytes_col(10);
                if let (Some(f), Some(salt)) = (&canonical_fields, &fields_salt) {
                    if payload_digest(salt, f) == digest {
                        // checked: the chain check needs only the digest
                        canonical_fields = None;
                        fields_salt = None;
                    }
                }
                StoredEvent {
                    header: EventHeader {
                        chain: chain.to_string(),
                        seq: col(1).0.value() as i64,
                        ts_micros: (ts.value() as i64)
                            .saturating_add(super::durable::POSTGRES_EPOCH_MICROS),
                        event_type: text_col(3).unwrap_or_default(),
                        tenant: text_col(4),
                        actor: text_col(5),
                        actor_kind: text_col(6),
                        correlation_id: text_col(7),
                        txid: txid.value() as u64,
                    },
                    canonical_fields,
                    fields_salt,
                    payload_digest: digest,
                    prev_hash: hash32(&bytes_col(12).unwrap_or_default()),
                    hash: hash32(&bytes_col(13).unwrap_or_default()),
                }
            });
            out.push(event);
            scratch.reset();
            true
        })
    };
    out
}
