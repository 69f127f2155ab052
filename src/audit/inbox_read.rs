//! The sequencer's read of the inbox: the next rows in id order by a
//! direct scan of the inbox's primary key under the run's snapshot, with
//! their header, their fields as the stored jsonb (no text) and where
//! they are, so the sequencer can delete exactly what it chained.

use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum};
use warden_core::audit::EventHeader;

use super::datum_read::{bytes, text};
use super::heap_append::warden_relation;
use crate::error::WardenError;

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

/// The inbox rows after id `after`, in id order, within `limits`.
pub(super) fn read_after(after: i64, limits: &Limits) -> Vec<InboxRow> {
    let inbox = warden_relation(c"audit_inbox");
    let pkey = warden_relation(c"audit_inbox_pkey");
    if inbox == pg_sys::InvalidOid || pkey == pg_sys::InvalidOid {
        WardenError::prerequisite("warden.audit_inbox is missing").raise();
    }
    let mut out = Vec::new();
    // SAFETY: the inbox and its primary key are opened, scanned under the
    // active snapshot and closed here; the scan key is the index's only
    // column.
    unsafe {
        let rel = pg_sys::table_open(inbox, pg_sys::AccessShareLock as i32);
        let index = pg_sys::index_open(pkey, pg_sys::AccessShareLock as i32);
        let desc = (*rel).rd_att;
        let attnums: Vec<usize> = COLUMNS
            .iter()
            .map(|c| pg_sys::get_attnum(inbox, c.as_ptr()) as usize)
            .collect();
        if attnums.contains(&0) || (*(*index).rd_index).indnatts != 1 {
            pg_sys::index_close(index, pg_sys::NoLock as i32);
            pg_sys::table_close(rel, pg_sys::NoLock as i32);
            WardenError::prerequisite("warden.audit_inbox is not as pg_warden made it").raise();
        }
        let mut key = std::mem::zeroed::<pg_sys::ScanKeyData>();
        pg_sys::ScanKeyInit(
            &mut key,
            1,
            pg_sys::BTGreaterStrategyNumber as u16,
            pg_sys::Oid::from(pg_sys::F_INT8GT),
            Datum::from(after),
        );
        let snapshot = pg_sys::GetActiveSnapshot();
        #[cfg(not(feature = "pg18"))]
        let scan = pg_sys::index_beginscan(rel, index, snapshot, 1, 0);
        #[cfg(feature = "pg18")]
        let scan = pg_sys::index_beginscan(rel, index, snapshot, std::ptr::null_mut(), 1, 0);
        pg_sys::index_rescan(scan, &mut key, 1, std::ptr::null_mut(), 0);
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        let (mut events, mut bytes_read) = (0i64, 0usize);
        while out.len() < limits.rows
            && pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot)
        {
            pg_sys::slot_getallattrs(slot);
            let values = std::slice::from_raw_parts((*slot).tts_values, (*desc).natts as usize);
            let nulls = std::slice::from_raw_parts((*slot).tts_isnull, (*desc).natts as usize);
            let col = |i: usize| (values[attnums[i] - 1], nulls[attnums[i] - 1]);
            let text_col = |i: usize| {
                let (d, null) = col(i);
                text(d, null)
            };
            let (fields, fields_null) = col(8);
            // a copy that outlives the buffer the slot pins
            let fields = if fields_null {
                pgrx::IntoDatum::into_datum(pgrx::JsonB(serde_json::json!({})))
                    .expect("jsonb is a datum")
            } else {
                Datum::from(pg_sys::pg_detoast_datum_copy(fields.cast_mut_ptr()))
            };
            let size = bytes(fields).len();
            let n = {
                let (d, null) = col(9);
                (!null).then(|| d.value() as i32)
            };
            if !out.is_empty()
                && (bytes_read + size > limits.bytes
                    || events + i64::from(n.unwrap_or(1)) > limits.events)
            {
                break;
            }
            bytes_read += size;
            events += i64::from(n.unwrap_or(1));
            let ts = col(1).0.value() as i64;
            out.push(InboxRow {
                id: col(0).0.value() as i64,
                tid: Some((*slot).tts_tid),
                header: EventHeader {
                    chain: String::new(),
                    seq: 0,
                    ts_micros: ts.saturating_add(super::durable::POSTGRES_EPOCH_MICROS),
                    event_type: text_col(2).unwrap_or_default(),
                    tenant: text_col(3),
                    actor: text_col(4),
                    actor_kind: text_col(5),
                    correlation_id: text_col(6),
                    txid: col(7).0.value() as u64,
                },
                ts,
                fields,
                events: n,
            });
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(scan);
        pg_sys::index_close(index, pg_sys::NoLock as i32);
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
    }
    out
}
