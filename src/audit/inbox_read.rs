//! The sequencer's read of the inbox: the next rows in id order by a
//! direct scan of the inbox's primary key under the run's snapshot, with
//! their header, their fields as the stored jsonb (no text) and where
//! they are, so the sequencer can delete exactly what it chained.

use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum};
use warden_core::audit::EventHeader;

use super::datum_read::{bytes, text};
use super::index_scan::{scan_by_primary_key, scan_key};

/// One inbox row.
pub(super) struct InboxRow {
    pub id: i64,
    /// Where the row is (None: an event that is not in the inbox).
    pub tid: Option<pg_sys::ItemPointerData>,
    /// chain and seq not yet given
    pub header: EventHeader,
    /// When it was emitted, as stored (a Postgres TimestampTz).
    pub ts: pg_sys::TimestampTz,
    /// A detoasted jsonb (an object, or with `events` an array of that
    /// many objects) in the caller's memory context.
    pub fields: Datum,
    pub events: Option<i32>,
}

const COLUMNS: [&CStr; 10] = [
    c"id",
    c"ts",
    c"event_type",
    c"tenant",
    c"actor",
    c"actor_kind",
    c"correlation_id",
    c"txid",
    c"fields",
    c"events",
];

/// How much one read takes at most: rows, events and bytes of fields
/// (it takes at least one row).
pub(super) struct Limits {
    pub rows: usize,
    pub events: i64,
    pub bytes: usize,
}

/// The inbox rows after id `after`, in id order, within `limits`, under
/// the run's snapshot.
pub(super) fn read_after(after: i64, limits: &Limits) -> Vec<InboxRow> {
    let mut out = Vec::new();
    let (mut events, mut bytes_read) = (0i64, 0usize);
    let keys = |_: pg_sys::Relation| {
        vec![scan_key(
            1,
            pg_sys::BTGreaterStrategyNumber,
            pg_sys::F_INT8GT,
            Datum::from(after),
        )]
    };
    // SAFETY: the active snapshot of the run's transaction; each row's
    // datums are read (and its fields copied) while the scan holds it.
    unsafe {
        let snapshot = pg_sys::GetActiveSnapshot();
        scan_by_primary_key(
            c"audit_inbox",
            c"audit_inbox_pkey",
            1,
            &COLUMNS,
            keys,
            snapshot,
            |r| {
                let text_col = |i: usize| {
                    let (d, null) = r.col(i);
                    text(d, null)
                };
                let (fields, fields_null) = r.col(8);
                // a copy that outlives the buffer the slot pins
                let fields = if fields_null {
                    pgrx::IntoDatum::into_datum(pgrx::JsonB(serde_json::json!({})))
                        .expect("jsonb is a datum")
                } else {
                    Datum::from(pg_sys::pg_detoast_datum_copy(fields.cast_mut_ptr()))
                };
                let size = bytes(fields).len();
                let n = {
                    let (d, null) = r.col(9);
                    (!null).then(|| d.value() as i32)
                };
                if !out.is_empty()
                    && (bytes_read + size > limits.bytes
                        || events + i64::from(n.unwrap_or(1)) > limits.events)
                {
                    return false;
                }
                bytes_read += size;
                events += i64::from(n.unwrap_or(1));
                let ts = r.col(1).0.value() as i64;
                out.push(InboxRow {
                    id: r.col(0).0.value() as i64,
                    tid: Some(r.tid),
                    header: EventHeader {
                        chain: String::new(),
                        seq: 0,
                        ts_micros: ts.saturating_add(super::durable::POSTGRES_EPOCH_MICROS),
                        event_type: text_col(2).unwrap_or_default(),
                        tenant: text_col(3),
                        actor: text_col(4),
                        actor_kind: text_col(5),
                        correlation_id: text_col(6),
                        txid: r.col(7).0.value() as u64,
                    },
                    ts,
                    fields,
                    events: n,
                });
                out.len() < limits.rows
            },
        );
    }
    out
}
