//! The transactional path's write: one heap insert into
//! `warden.audit_inbox` and one entry in each of its indexes, no SQL, no
//! planner, no executor; a captured statement's rows go in batches, one
//! inbox row per batch of events (the way the SCD2 deferred trigger queues a
//! change). The inbox is pg_warden's own table: no trigger, rule or
//! policy of anyone's runs, so the caller needs no rights on it and
//! nothing runs with more rights than the caller's. Its indexes are
//! plain columns (the identity key and the tenant); anything else is
//! refused rather than left unmaintained.

use std::ffi::CString;

use pgrx::pg_sys::{self, Datum};

use crate::error::WardenError;

unsafe extern "C-unwind" {
    /// `nextval` without the permission check (commands/sequence.h).
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}

/// The inbox and its id sequence in this database.
fn inbox_oids() -> (pg_sys::Oid, pg_sys::Oid) {
    // SAFETY: catalog lookups by name.
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"warden".as_ptr(), false);
        (
            pg_sys::get_relname_relid(c"audit_inbox".as_ptr(), schema),
            pg_sys::get_relname_relid(c"audit_inbox_id_seq".as_ptr(), schema),
        )
    }
}

fn text_datum(s: Option<&str>) -> (Datum, bool) {
    match s {
        None => (Datum::from(0usize), true),
        Some(s) => {
            let c = CString::new(s).unwrap_or_default();
            // SAFETY: copies the string into a palloc'd text.
            (
                Datum::from(unsafe { pg_sys::cstring_to_text(c.as_ptr()) }),
                false,
            )
        }
    }
}

/// One event, or a batch of events that share their header, on its way
/// into the inbox.
pub(super) struct InboxEvent<'a> {
    pub event_type: &'a str,
    pub tenant: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub actor_kind: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    /// When, and in which top-level transaction, it was emitted: a
    /// Postgres TimestampTz and a full transaction id. None: now, in the
    /// current transaction (which gets an id if it has none).
    pub emitted: Option<(pg_sys::TimestampTz, u64)>,
    /// A jsonb object, or with `events` a jsonb array of that many
    /// objects (one per event).
    pub fields: Datum,
    /// None: one event; Some(n): `fields` holds n events' fields.
    pub events: Option<i32>,
}

/// The inbox opened for appending: relation, id sequence and the index
/// descriptions, looked up once for however many rows a caller appends
/// (a captured bulk load appends many). `close` when done; an ERROR in
/// between leaves them to the transaction's abort, as for any relation.
pub(super) struct InboxWriter {
    rel: pg_sys::Relation,
    sequence: pg_sys::Oid,
    indexes: Vec<(pg_sys::Relation, *mut pg_sys::IndexInfo)>,
}

/// Columns of the inbox, in table order: id, ts, event_type, tenant,
/// actor, actor_kind, correlation_id, txid, fields, events.
const INBOX_COLUMNS: i32 = 10;

impl InboxWriter {
    pub(super) fn open() -> InboxWriter {
        let (inbox, sequence) = inbox_oids();
        if inbox == pg_sys::InvalidOid || sequence == pg_sys::InvalidOid {
            WardenError::prerequisite("warden.audit_inbox is missing").raise();
        }
        // SAFETY: the inbox and its indexes are locked and opened here and
        // closed by `close` (or by the transaction's abort).
        unsafe {
            let rel = pg_sys::table_open(inbox, pg_sys::RowExclusiveLock as i32);
            let desc = (*rel).rd_att;
            if (*desc).natts != INBOX_COLUMNS
                || !(*rel).trigdesc.is_null()
                || !(*rel).rd_rules.is_null()
            {
                pg_sys::table_close(rel, pg_sys::NoLock as i32);
                WardenError::prerequisite("warden.audit_inbox is not as pg_warden made it")
                    .hint("ALTER EXTENSION pg_warden UPDATE, or reinstall the extension.")
                    .raise();
            }
            let list = pg_sys::RelationGetIndexList(rel);
            let n = if list.is_null() { 0 } else { (*list).length };
            let mut indexes = Vec::with_capacity(n as usize);
            for i in 0..n as usize {
                let oid = (*(*list).elements.add(i)).oid_value;
                let index = pg_sys::index_open(oid, pg_sys::RowExclusiveLock as i32);
                let info = pg_sys::BuildIndexInfo(index);
                if !(*info).ii_Expressions.is_null() || !(*info).ii_Predicate.is_null() {
                    pg_sys::index_close(index, pg_sys::NoLock as i32);
                    for (opened, _) in indexes {
                        pg_sys::index_close(opened, pg_sys::NoLock as i32);
                    }
                    pg_sys::table_close(rel, pg_sys::NoLock as i32);
                    WardenError::prerequisite(
                        "warden.audit_inbox has an index pg_warden did not make",
                    )
                    .raise();
                }
                indexes.push((index, info));
            }
            InboxWriter {
                rel,
                sequence,
                indexes,
            }
        }
    }

    /// Appends one row.
    pub(super) fn append(&mut self, e: &InboxEvent) {
        // SAFETY: the relation and indexes opened by `open`; the tuple is
        // formed from datums that live to the end of the call and freed
        // after the inserts copied it.
        unsafe {
            let id = nextval_internal(self.sequence, false);
            let (ts, txid) = e.emitted.unwrap_or_else(|| {
                (
                    pg_sys::GetCurrentTimestamp(),
                    pg_sys::GetTopFullTransactionId().value,
                )
            });
            let cells = [
                (Datum::from(id), false),
                (Datum::from(ts), false),
                text_datum(Some(e.event_type)),
                text_datum(e.tenant),
                text_datum(e.actor),
                text_datum(e.actor_kind),
                text_datum(e.correlation_id),
                (Datum::from(txid), false),
                (e.fields, false),
                (Datum::from(e.events.unwrap_or(0)), e.events.is_none()),
            ];
            let mut values: Vec<Datum> = cells.iter().map(|c| c.0).collect();
            let mut nulls: Vec<bool> = cells.iter().map(|c| c.1).collect();
            let tuple = pg_sys::heap_form_tuple(
                (*self.rel).rd_att,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
            pg_sys::simple_heap_insert(self.rel, tuple);
            for &(index, info) in &self.indexes {
                let keys = (*info).ii_NumIndexAttrs as usize;
                let mut key_values = Vec::with_capacity(keys);
                let mut key_nulls = Vec::with_capacity(keys);
                for k in 0..keys {
                    let att = (*info).ii_IndexAttrNumbers[k] as usize;
                    key_values.push(values[att - 1]);
                    key_nulls.push(nulls[att - 1]);
                }
                pg_sys::index_insert(
                    index,
                    key_values.as_mut_ptr(),
                    key_nulls.as_mut_ptr(),
                    &mut (*tuple).t_self,
                    self.rel,
                    if (*info).ii_Unique {
                        pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
                    } else {
                        pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
                    },
                    false,
                    info,
                );
            }
            pg_sys::heap_freetuple(tuple);
        }
    }

    pub(super) fn close(self) {
        // SAFETY: closes what `open` opened, keeping the locks to the end
        // of the transaction.
        unsafe {
            for (index, _) in self.indexes {
                pg_sys::index_close(index, pg_sys::NoLock as i32);
            }
            pg_sys::table_close(self.rel, pg_sys::NoLock as i32);
        }
    }
}

/// Appends one row to the inbox.
pub(super) fn append(e: &InboxEvent) {
    let mut writer = InboxWriter::open();
    writer.append(e);
    writer.close();
}
