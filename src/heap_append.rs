//! Appends rows to pg_warden's own tables (the audit inbox and log, the
//! outbox's messages) by heap insert, with one entry in each of their indexes: no SQL, no
//! planner, no executor, so nothing attached to the table runs: the
//! appender refuses a table with an INSERT trigger or rule (and the
//! audit guard refuses them on the audit tables before they exist);
//! row-level security does not apply, so the caller sets every value
//! itself (the tenant is the transaction's). Indexes must be btrees on
//! plain columns, partial only as `WHERE column IS NOT NULL`; anything
//! else is refused rather than left unmaintained. A heap insert checks no
//! constraint: callers write only what the table's constraints allow.

use std::ffi::{CStr, CString};

use pgrx::pg_sys::{self, Datum};

use crate::error::WardenError;

unsafe extern "C-unwind" {
    /// `nextval` without the permission check (commands/sequence.h).
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}

/// The next value of the sequence `sequence` (one of pg_warden's own:
/// the caller needs no rights on it).
pub(crate) fn next_id(sequence: pg_sys::Oid) -> i64 {
    // SAFETY: draws from an existing sequence.
    unsafe { nextval_internal(sequence, false) }
}

/// The relation `warden.<name>` in this database.
pub(crate) fn warden_relation(name: &CStr) -> pg_sys::Oid {
    // SAFETY: catalog lookups by name.
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"warden".as_ptr(), false);
        pg_sys::get_relname_relid(name.as_ptr(), schema)
    }
}

/// A text datum (palloc'd) and its null flag.
pub(crate) fn text_datum(s: Option<&str>) -> (Datum, bool) {
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

/// A bytea datum (palloc'd).
pub(crate) fn bytea_datum(b: &[u8]) -> (Datum, bool) {
    // SAFETY: a fresh varlena of the right size, filled.
    unsafe {
        let v = pg_sys::palloc(pg_sys::VARHDRSZ + b.len()).cast::<pg_sys::varlena>();
        pgrx::set_varsize_4b(v, (pg_sys::VARHDRSZ + b.len()) as i32);
        std::ptr::copy_nonoverlapping(b.as_ptr(), pgrx::vardata_4b(v).cast_mut().cast(), b.len());
        (Datum::from(v), false)
    }
}

/// A table opened for appending, with its index descriptions, looked up
/// once for however many rows. `close` when done; an ERROR in between
/// leaves them to the transaction's abort, as for any relation.
pub(crate) struct HeapAppender {
    rel: pg_sys::Relation,
    indexes: Vec<Index>,
}

struct Index {
    rel: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
    /// A partial index `WHERE <column> IS NOT NULL`: that column (from 0).
    only_not_null: Option<usize>,
}

/// The column a partial index's predicate requires to be not null, when
/// the predicate is exactly that (`None` for any other predicate).
///
/// # Safety
/// `predicate` is an index's implicit-AND predicate list.
unsafe fn not_null_predicate(predicate: *mut pg_sys::List) -> Option<usize> {
    // SAFETY: a list of expression nodes, read by their tags.
    unsafe {
        if (*predicate).length != 1 {
            return None;
        }
        let node = (*(*predicate).elements).ptr_value.cast::<pg_sys::Node>();
        if (*node).type_ != pg_sys::NodeTag::T_NullTest {
            return None;
        }
        let test = node.cast::<pg_sys::NullTest>();
        let arg = (*test).arg.cast::<pg_sys::Node>();
        if (*test).nulltesttype != pg_sys::NullTestType::IS_NOT_NULL
            || (*test).argisrow
            || arg.is_null()
            || (*arg).type_ != pg_sys::NodeTag::T_Var
        {
            return None;
        }
        let att = (*arg.cast::<pg_sys::Var>()).varattno;
        (att > 0).then(|| att as usize - 1)
    }
}

impl HeapAppender {
    /// Opens `warden.<name>`, which must be a heap table of exactly the
    /// column types `types` (rule 3 of docs/security.md: the tuple is
    /// formed from values of those types), with no INSERT trigger or rule,
    /// and only valid btree indexes on plain columns (partial only as
    /// `WHERE column IS NOT NULL`; none backing an exclusion constraint).
    pub(crate) fn open(name: &CStr, types: &[pg_sys::Oid]) -> HeapAppender {
        let oid = warden_relation(name);
        let shown = name.to_string_lossy();
        if oid == pg_sys::InvalidOid {
            WardenError::prerequisite(format!("warden.{shown} is missing")).raise();
        }
        // SAFETY: the table and its indexes are locked and opened here and
        // closed by `close` (or by the transaction's abort).
        unsafe {
            let rel = pg_sys::table_open(oid, pg_sys::RowExclusiveLock as i32);
            let trig = (*rel).trigdesc;
            let insert_triggers = !trig.is_null()
                && ((*trig).trig_insert_before_row
                    || (*trig).trig_insert_after_row
                    || (*trig).trig_insert_instead_row
                    || (*trig).trig_insert_before_statement
                    || (*trig).trig_insert_after_statement
                    || (*trig).trig_insert_new_table);
            let desc = (*rel).rd_att;
            let types_match = (*desc).natts as usize == types.len()
                && types.iter().enumerate().all(|(i, &typ)| {
                    let a = crate::tuple_desc::attribute(desc, i);
                    !a.attisdropped && a.atttypid == typ
                });
            if (*(*rel).rd_rel).relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char
                || (*(*rel).rd_rel).relam != pg_sys::HEAP_TABLE_AM_OID
                || !types_match
                || insert_triggers
                || !(*rel).rd_rules.is_null()
            {
                pg_sys::table_close(rel, pg_sys::NoLock as i32);
                WardenError::prerequisite(format!("warden.{shown} is not as pg_warden made it"))
                    .hint("ALTER EXTENSION pg_warden UPDATE, or reinstall the extension.")
                    .raise();
            }
            let list = pg_sys::RelationGetIndexList(rel);
            let n = if list.is_null() { 0 } else { (*list).length };
            let mut indexes: Vec<Index> = Vec::with_capacity(n as usize);
            for i in 0..n as usize {
                let index_oid = (*(*list).elements.add(i)).oid_value;
                let index = pg_sys::index_open(index_oid, pg_sys::RowExclusiveLock as i32);
                let info = pg_sys::BuildIndexInfo(index);
                let form = (*index).rd_index;
                let only_not_null = if (*info).ii_Predicate.is_null() {
                    None
                } else {
                    not_null_predicate((*info).ii_Predicate)
                };
                // an exclusion constraint's index is a btree too, but
                // `index_insert` does not check the constraint
                if !(*info).ii_Expressions.is_null()
                    || !(*info).ii_ExclusionOps.is_null()
                    || (!(*info).ii_Predicate.is_null() && only_not_null.is_none())
                    || (*(*index).rd_rel).relam != pg_sys::BTREE_AM_OID
                    || !(*form).indisvalid
                    || !(*form).indisready
                {
                    pg_sys::index_close(index, pg_sys::NoLock as i32);
                    for opened in indexes {
                        pg_sys::index_close(opened.rel, pg_sys::NoLock as i32);
                    }
                    pg_sys::table_close(rel, pg_sys::NoLock as i32);
                    WardenError::prerequisite(format!(
                        "warden.{shown} has an index pg_warden did not make"
                    ))
                    .raise();
                }
                indexes.push(Index {
                    rel: index,
                    info,
                    only_not_null,
                });
            }
            HeapAppender { rel, indexes }
        }
    }

    /// Appends one row (values in column order).
    pub(crate) fn append(&mut self, values: &mut [Datum], nulls: &mut [bool]) {
        // SAFETY: the relation and indexes opened by `open`, values of its
        // row type; the tuple is freed after the inserts copied it.
        unsafe {
            let tuple = pg_sys::heap_form_tuple(
                (*self.rel).rd_att,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
            pg_sys::simple_heap_insert(self.rel, tuple);
            for &Index {
                rel: index,
                info,
                only_not_null,
            } in &self.indexes
            {
                if only_not_null.is_some_and(|att| nulls[att]) {
                    continue;
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

    pub(crate) fn close(self) {
        // SAFETY: closes what `open` opened, keeping the locks to the end
        // of the transaction.
        unsafe {
            for index in self.indexes {
                pg_sys::index_close(index.rel, pg_sys::NoLock as i32);
            }
            pg_sys::table_close(self.rel, pg_sys::NoLock as i32);
        }
    }
}
