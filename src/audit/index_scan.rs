//! Scans one of pg_warden's audit tables by its primary key without SQL
//! (no planner, no executor, no SPI copy), under a given snapshot: what
//! the sequencer's read of the inbox and `audit_verify`'s read of the log
//! share. Columns are found by name, so their order in the table does not
//! matter.

use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum};

use crate::error::WardenError;
use crate::heap_append::warden_relation;

/// One row of the scan, while the scan holds it.
pub(super) struct ScannedRow<'a> {
    values: &'a [Datum],
    nulls: &'a [bool],
    attnums: &'a [usize],
    /// Where the row is.
    pub tid: pg_sys::ItemPointerData,
}

impl ScannedRow<'_> {
    /// The `i`th column asked for: its datum (valid while the row is
    /// held) and whether it is null.
    pub fn col(&self, i: usize) -> (Datum, bool) {
        let at = self.attnums[i] - 1;
        (self.values[at], self.nulls[at])
    }
}

fn relation(name: &CStr) -> pg_sys::Oid {
    let oid = warden_relation(name);
    if oid == pg_sys::InvalidOid {
        WardenError::prerequisite(format!("warden.{} is missing", name.to_string_lossy())).raise();
    }
    oid
}

/// Scans `warden.<table>` through its primary key `warden.<index>` (of
/// `index_columns` columns) with the scan keys `keys` builds from the
/// open index, in index order under `snapshot`, handing each row to
/// `row` until it returns false.
///
/// # Safety
/// `snapshot` is registered (or active) for the whole call; `keys` are
/// valid scan keys of the index.
pub(super) unsafe fn scan_by_primary_key(
    table: &CStr,
    index: &CStr,
    index_columns: i16,
    columns: &[&CStr],
    keys: impl FnOnce(pg_sys::Relation) -> Vec<pg_sys::ScanKeyData>,
    snapshot: pg_sys::Snapshot,
    mut row: impl FnMut(&ScannedRow) -> bool,
) {
    let table_oid = relation(table);
    let index_oid = relation(index);
    // SAFETY: the table and its index are opened, scanned and closed here.
    unsafe {
        let rel = pg_sys::table_open(table_oid, pg_sys::AccessShareLock as i32);
        let index = pg_sys::index_open(index_oid, pg_sys::AccessShareLock as i32);
        let desc = (*rel).rd_att;
        let attnums: Vec<usize> = columns
            .iter()
            .map(|c| pg_sys::get_attnum(table_oid, c.as_ptr()) as usize)
            .collect();
        if attnums.contains(&0) || (*(*index).rd_index).indnatts != index_columns {
            pg_sys::index_close(index, pg_sys::NoLock as i32);
            pg_sys::table_close(rel, pg_sys::NoLock as i32);
            WardenError::prerequisite(format!(
                "warden.{} is not as pg_warden made it",
                table.to_string_lossy()
            ))
            .raise();
        }
        let mut keys = keys(index);
        let n = keys.len() as i32;
        #[cfg(not(feature = "pg18"))]
        let scan = pg_sys::index_beginscan(rel, index, snapshot, n, 0);
        #[cfg(feature = "pg18")]
        let scan = pg_sys::index_beginscan(rel, index, snapshot, std::ptr::null_mut(), n, 0);
        pg_sys::index_rescan(scan, keys.as_mut_ptr(), n, std::ptr::null_mut(), 0);
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        while pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            pg_sys::slot_getallattrs(slot);
            let natts = (*desc).natts as usize;
            let scanned = ScannedRow {
                values: std::slice::from_raw_parts((*slot).tts_values, natts),
                nulls: std::slice::from_raw_parts((*slot).tts_isnull, natts),
                attnums: &attnums,
                tid: (*slot).tts_tid,
            };
            if !row(&scanned) {
                break;
            }
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(scan);
        pg_sys::index_close(index, pg_sys::NoLock as i32);
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
    }
}

/// A scan key on column `attno` of an index (`ScanKeyInit`).
pub(super) fn scan_key(
    attno: i16,
    strategy: u32,
    procedure: u32,
    argument: Datum,
) -> pg_sys::ScanKeyData {
    // SAFETY: a ScanKeyData is plain data, initialised by ScanKeyInit.
    unsafe {
        let mut key = std::mem::zeroed::<pg_sys::ScanKeyData>();
        pg_sys::ScanKeyInit(
            &mut key,
            attno,
            strategy as u16,
            pg_sys::Oid::from(procedure),
            argument,
        );
        key
    }
}
