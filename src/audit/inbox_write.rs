//! The transactional path's write: one heap insert into
//! `warden.audit_inbox` and one entry in each of its indexes, no SQL, no
//! planner, no executor (the way the SCD2 deferred trigger queues a
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

/// One event on its way into the inbox.
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
    /// A jsonb object.
    pub fields: Datum,
}

/// Appends one event to the inbox (columns in table order: id, ts,
/// event_type, tenant, actor, actor_kind, correlation_id, txid, fields).
pub(super) fn append(e: &InboxEvent) {
    let (inbox, sequence) = inbox_oids();
    if inbox == pg_sys::InvalidOid || sequence == pg_sys::InvalidOid {
        WardenError::prerequisite("warden.audit_inbox is missing").raise();
    }
    // SAFETY: the inbox is locked and opened here and closed at the end;
    // the tuple is formed from datums that live to the end of the call
    // and freed after the inserts copied it.
    unsafe {
        let rel = pg_sys::table_open(inbox, pg_sys::RowExclusiveLock as i32);
        let desc = (*rel).rd_att;
        if (*desc).natts != 9 || !(*rel).trigdesc.is_null() || !(*rel).rd_rules.is_null() {
            pg_sys::table_close(rel, pg_sys::NoLock as i32);
            WardenError::prerequisite("warden.audit_inbox is not as pg_warden made it")
                .hint("ALTER EXTENSION pg_warden UPDATE, or reinstall the extension.")
                .raise();
        }
        let id = nextval_internal(sequence, false);
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
        ];
        let mut values: Vec<Datum> = cells.iter().map(|c| c.0).collect();
        let mut nulls: Vec<bool> = cells.iter().map(|c| c.1).collect();
        let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::simple_heap_insert(rel, tuple);
        let indexes = pg_sys::RelationGetIndexList(rel);
        let n = if indexes.is_null() {
            0
        } else {
            (*indexes).length
        };
        for i in 0..n as usize {
            let oid = (*(*indexes).elements.add(i)).oid_value;
            let index = pg_sys::index_open(oid, pg_sys::RowExclusiveLock as i32);
            let info = pg_sys::BuildIndexInfo(index);
            if !(*info).ii_Expressions.is_null() || !(*info).ii_Predicate.is_null() {
                pg_sys::index_close(index, pg_sys::NoLock as i32);
                pg_sys::table_close(rel, pg_sys::NoLock as i32);
                WardenError::prerequisite("warden.audit_inbox has an index pg_warden did not make")
                    .raise();
            }
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
                rel,
                if (*info).ii_Unique {
                    pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
                } else {
                    pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
                },
                false,
                info,
            );
            pg_sys::index_close(index, pg_sys::NoLock as i32);
        }
        pg_sys::heap_freetuple(tuple);
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
    }
}
