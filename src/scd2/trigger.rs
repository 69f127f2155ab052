//! The trigger behind `warden.scd2_track`: keeps `<source>_history`.
//!
//! An UPDATE whose tracked columns hash the same before and after writes
//! nothing and runs no SQL. Real changes close the current version and open
//! a new one; several changes of one key in one transaction keep a single
//! version for that transaction (and a change that reverts within the
//! transaction reopens the version it closed). DELETE closes the current
//! version and writes a zero-length tombstone (op 'D').
//!
//! A source tracked with `deferred => true` runs no SQL: the change (key,
//! tracked values, hash, op, transaction, time, WAL position) is appended
//! to its queue by a direct heap insert, which the worker applies with the
//! same rules (`deferred.rs`).
//!
//! History writes run as the history table's owner, through statements
//! built by `warden._scd2_statements` and prepared once per backend; the
//! partial unique index on the business key (WHERE is_current) makes two
//! current versions of one key impossible, whatever the concurrency.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_char;
use std::rc::Rc;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use warden_core::scd2::RowEncoder;

use super::type_encoding::{column_positions, Fields};
use crate::error::WardenError;
use crate::privileged::{as_owner, as_superuser};
use crate::tuple_desc::attribute;

/// Indexes into `Tracked::plans`, in the order `_scd2_statements` returns.
mod stmt {
    pub const CLOSE_THEN_OPEN: usize = 0;
    pub const CLOSE_THEN_TOMBSTONE: usize = 1;
    pub const REPLACE: usize = 2;
    pub const UNDO: usize = 3;
    pub const DROP_OWN_VERSION: usize = 4;
    pub const TOMBSTONE: usize = 5;
    pub const OPEN_FIRST: usize = 6;
}

struct Tracked {
    history: Oid,
    owner: Oid,
    key: Vec<usize>,
    tracked: Vec<usize>,
    /// The queue of a deferred source (then `plans` is empty).
    queue: Option<Oid>,
    plans: Vec<pg_sys::SPIPlanPtr>,
    /// The queue as last checked (rule 3 of docs/security.md): the
    /// relcache generation it was checked at, its primary key and that
    /// key's IndexInfo (kept in TopMemoryContext). Checked again after a
    /// relcache invalidation of a tracked relation, which every DDL on the
    /// source or the queue sends, instead of on every row.
    queue_checked: std::cell::Cell<Option<(u64, Oid, *mut pg_sys::IndexInfo)>>,
}

thread_local! {
    static TRACKED: RefCell<HashMap<Oid, Rc<Tracked>>> = RefCell::new(HashMap::new());
    /// Counts relcache invalidations of tracked sources, histories and
    /// queues: a queue check made at an older count is made again.
    static RELCACHE_GENERATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn forget(relid: Oid) {
    // Kept plans of forgotten entries stay allocated (freeing them inside
    // an invalidation callback is not safe); entries change only on DDL.
    TRACKED.with(|t| {
        let mut t = t.borrow_mut();
        let ours = relid == pg_sys::InvalidOid
            || t.iter().any(|(source, e)| {
                *source == relid || e.history == relid || e.queue == Some(relid)
            });
        if ours {
            // only invalidations of a tracked source, history or queue
            // count: any role can cause others at will
            RELCACHE_GENERATION.with(|g| g.set(g.get() + 1));
        }
        if relid == pg_sys::InvalidOid {
            t.clear();
        } else {
            t.retain(|source, e| *source != relid && e.history != relid && e.queue != Some(relid));
        }
    });
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some((_, _, info)) = self.queue_checked.get() {
            // SAFETY: built by BuildIndexInfo in TopMemoryContext for this
            // entry only; a plain palloc'd node with no other allocation
            // for a key of two plain columns.
            unsafe { pg_sys::pfree(info.cast()) };
        }
    }
}

/// Looks up (once per backend and DDL) how `source` is tracked and
/// prepares its statements.
unsafe fn tracked(relation: pg_sys::Relation) -> Rc<Tracked> {
    // SAFETY: the trigger's relation is open.
    let source = unsafe { (*relation).rd_id };
    if let Some(t) = TRACKED.with(|t| t.borrow().get(&source).cloned()) {
        return t;
    }
    crate::dispatch::invalidation::on_relcache("SCD2 trigger plans", forget);
    let row = as_superuser(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT r.history::pg_catalog.oid, c.relowner, r.business_key::pg_catalog.text[], r.tracked::pg_catalog.text[],
                        CASE WHEN r.queue IS NULL THEN warden._scd2_statements(r.source) ELSE '{}' END,
                        r.queue::pg_catalog.oid
                   FROM warden.scd2_registry r JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.history
                  WHERE r.source OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
                None,
                &[source.into()],
            )?;
            let Some(row) = rows.into_iter().next() else {
                return Ok(None);
            };
            Ok::<_, pgrx::spi::Error>(Some((
                row.get::<Oid>(1)?.expect("history"),
                row.get::<Oid>(2)?.expect("owner"),
                row.get::<Vec<String>>(3)?.expect("key"),
                row.get::<Vec<String>>(4)?.expect("tracked"),
                row.get::<Vec<String>>(5)?.expect("statements"),
                row.get::<Oid>(6)?,
            )))
        })
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot read warden.scd2_registry: {e}")).raise());
    let Some((history, owner, key_names, tracked_names, statements, queue)) = row else {
        WardenError::prerequisite("this table has a warden_scd2 trigger but is not tracked")
            .hint("DROP TRIGGER warden_scd2 on it, or call warden.scd2_track() again.")
            .raise()
    };
    // SAFETY: the relation's descriptor is valid while it is open.
    let tupdesc = unsafe { (*relation).rd_att };
    let positions = |names: &[String]| {
        // SAFETY: as above.
        unsafe { column_positions(tupdesc, names) }.unwrap_or_else(|name| {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("column \"{name}\" tracked by warden.scd2_track no longer exists"),
            )
            .hint("Call warden.scd2_untrack() and warden.scd2_track() again to track the table as it is now.")
            .raise()
        })
    };
    let key = positions(&key_names);
    let tracked = positions(&tracked_names);
    let mut types: Vec<Oid> = key
        .iter()
        .chain(tracked.iter())
        // SAFETY: positions are below natts.
        .map(|&i| unsafe { attribute(tupdesc, i) }.atttypid)
        .collect();
    types.push(pg_sys::BYTEAOID);
    types.push(pg_sys::TEXTOID);
    let plans = as_owner(owner, || {
        // SAFETY: SPI use bracketed by connect/finish; kept plans outlive it.
        unsafe {
            pg_sys::SPI_connect();
            let mut plans = vec![std::ptr::null_mut(); statements.len()];
            for (plan, sql) in plans.iter_mut().zip(&statements) {
                let text = std::ffi::CString::new(sql.as_str()).expect("no NUL in generated SQL");
                // generic plans: the statements are simple key lookups, and
                // custom plans would be planned again on every row
                let p = pg_sys::SPI_prepare_cursor(
                    text.as_ptr(),
                    types.len() as i32,
                    types.as_mut_ptr(),
                    pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
                );
                if p.is_null() {
                    WardenError::new(
                        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                        "cannot prepare an SCD2 history statement",
                    )
                    .raise();
                }
                pg_sys::SPI_keepplan(p);
                *plan = p;
            }
            pg_sys::SPI_finish();
            plans
        }
    });
    let entry = Rc::new(Tracked {
        history,
        owner,
        key,
        tracked,
        queue,
        plans,
        queue_checked: std::cell::Cell::new(None),
    });
    TRACKED.with(|t| t.borrow_mut().insert(source, entry.clone()));
    entry
}

/// The parameters of every statement: key, tracked columns, hash, op.
struct Params {
    values: Vec<Datum>,
    nulls: Vec<c_char>,
}

impl Params {
    fn new(t: &Tracked, fields: &Fields, hash: &[u8], op: &str) -> Params {
        let mut values = Vec::with_capacity(t.key.len() + t.tracked.len() + 2);
        let mut nulls = Vec::with_capacity(values.capacity());
        for &i in t.key.iter().chain(t.tracked.iter()) {
            values.push(fields.values[i]);
            nulls.push(if fields.nulls[i] {
                b'n' as c_char
            } else {
                b' ' as c_char
            });
        }
        values.push(Datum::from(pgrx::rust_byte_slice_to_bytea(hash).into_pg()));
        nulls.push(b' ' as c_char);
        values.push(op.into_datum().expect("text"));
        nulls.push(b' ' as c_char);
        Params { values, nulls }
    }
}

/// Executes statement `which`; returns the rows it touched or returned.
///
/// Under REPEATABLE READ and SERIALIZABLE the statements read the latest
/// committed history, not the transaction's snapshot, and any history row
/// they would change that the snapshot cannot see raises a serialization
/// failure: what foreign-key checks do. With the snapshot alone, a key
/// deleted and inserted again by transactions that committed after it was
/// taken would get a version starting before their tombstone.
fn run(t: &Tracked, which: usize, params: &Params) -> u64 {
    // SAFETY: a kept plan with as many parameters as `params` holds; called
    // between SPI_connect and SPI_finish.
    unsafe {
        let rc = if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
            pg_sys::CommandCounterIncrement(); // our own earlier writes too
            pg_sys::SPI_execute_snapshot(
                t.plans[which],
                params.values.as_ptr().cast_mut(),
                params.nulls.as_ptr(),
                pg_sys::GetLatestSnapshot(),
                pg_sys::GetTransactionSnapshot(),
                false,
                false,
                0,
            )
        } else {
            pg_sys::SPI_execute_plan(
                t.plans[which],
                params.values.as_ptr().cast_mut(),
                params.nulls.as_ptr(),
                false,
                0,
            )
        };
        if rc < 0 {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("SCD2 history statement failed ({rc})"),
            )
            .raise();
        }
        pg_sys::SPI_processed
    }
}

fn hash_of(t: &Tracked, fields: &Fields) -> [u8; 32] {
    let mut out = RowEncoder::row();
    fields.encode(&mut out, &t.tracked);
    out.finish().0
}

fn key_of(t: &Tracked, fields: &Fields) -> Vec<u8> {
    let mut out = RowEncoder::nested();
    fields.encode(&mut out, &t.key);
    out.into_bytes()
}

/// The types of the queue columns after the key and tracked columns, as
/// `scd2_track` creates them: hash_diff, op, txid, changed_at, change_lsn.
const QUEUE_TAIL: [Oid; 5] = [
    pg_sys::BYTEAOID,
    pg_sys::TEXTOID,
    pg_sys::XID8OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::PG_LSNOID,
];

/// Refuses a queue whose descriptor is not exactly what the tuple formed
/// from the source's columns needs (rule 3 of docs/security.md): the same
/// type, length, by-value, alignment and type modifier in every column,
/// no dropped or extra column, a heap table (its index is checked by
/// `queue_primary_key`). Anything
/// else (the source altered by a migration, the queue altered by its
/// owner) would make `heap_form_tuple` read or write the wrong bytes.
///
/// # Safety
/// `rel` is the open queue, `source` the trigger's open relation.
unsafe fn check_queue(t: &Tracked, rel: pg_sys::Relation, source: pg_sys::TupleDesc) {
    // SAFETY: both relations are open; positions are below their natts.
    unsafe {
        let desc = (*rel).rd_att;
        let name =
            |r: pg_sys::Relation| pgrx::name_data_to_str(&(*(*r).rd_rel).relname).to_string();
        let refuse = |detail: String| -> ! {
            WardenError::prerequisite(format!(
                "SCD2 queue \"{}\" does not match its source",
                name(rel)
            ))
            .detail(detail)
            .hint("Apply the same column change to the queue and the history (ALTER TABLE ... ALTER COLUMN ... TYPE), or call warden.scd2_untrack() and warden.scd2_track() again.")
            .raise()
        };
        let columns = t.key.len() + t.tracked.len();
        if (*(*rel).rd_rel).relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char
            || (*(*rel).rd_rel).relam != pg_sys::HEAP_TABLE_AM_OID
        {
            refuse("A queue must stay a heap table.".into());
        }
        if (*desc).natts as usize != columns + QUEUE_TAIL.len() {
            refuse(format!(
                "The queue has {} columns (dropped ones included); it needs exactly {}.",
                (*desc).natts,
                columns + QUEUE_TAIL.len()
            ));
        }
        let wanted = t
            .key
            .iter()
            .chain(t.tracked.iter())
            .map(|&i| {
                let a = attribute(source, i);
                (a.atttypid, a.atttypmod)
            })
            .chain(QUEUE_TAIL.iter().map(|&typ| (typ, -1)));
        for (i, (typid, typmod)) in wanted.enumerate() {
            let a = attribute(desc, i);
            let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
            pg_sys::get_typlenbyvalalign(typid, &mut len, &mut byval, &mut align);
            if a.attisdropped
                || a.atttypid != typid
                || a.atttypmod != typmod
                || a.attlen != len
                || a.attbyval != byval
                || a.attalign != align
            {
                let column = pgrx::name_data_to_str(&a.attname).to_string();
                let typ = |oid: Oid, m: i32| {
                    std::ffi::CStr::from_ptr(pg_sys::format_type_with_typemod(oid, m))
                        .to_string_lossy()
                        .into_owned()
                };
                refuse(if a.attisdropped {
                    format!("Column {} of the queue was dropped.", i + 1)
                } else {
                    format!(
                        "Column \"{column}\" is {} in the queue but the change to write is {}.",
                        typ(a.atttypid, a.atttypmod),
                        typ(typid, typmod)
                    )
                });
            }
        }
    }
}

/// The queue's only index: its primary key `(txid, change_lsn)`, a plain
/// valid btree on exactly those two columns. Anything else (another
/// index, an expression, a predicate) would not be maintained by the
/// direct insert, so it is refused. Returns the key and its IndexInfo,
/// built in TopMemoryContext for the insert to use until the next check.
///
/// # Safety
/// `rel` is the open queue; `natts` its checked column count.
unsafe fn queue_primary_key(
    rel: pg_sys::Relation,
    natts: usize,
) -> (pg_sys::Oid, *mut pg_sys::IndexInfo) {
    // SAFETY: the relation is open; the index list is the relcache's.
    unsafe {
        let refuse = || -> ! {
            WardenError::prerequisite(format!(
                "SCD2 queue \"{}\" does not match its source",
                pgrx::name_data_to_str(&(*(*rel).rd_rel).relname)
            ))
            .detail("A queue's only index must be its primary key (txid, change_lsn).")
            .hint("Drop the indexes added to it, or call warden.scd2_untrack() and warden.scd2_track() again.")
            .raise()
        };
        let list = pg_sys::RelationGetIndexList(rel);
        if list.is_null() || (*list).length != 1 || (*rel).rd_pkindex == pg_sys::InvalidOid {
            refuse();
        }
        let idx = pg_sys::index_open((*rel).rd_pkindex, pg_sys::RowExclusiveLock as i32);
        let form = &*(*idx).rd_index;
        let keys = std::slice::from_raw_parts(form.indkey.values.as_ptr(), form.indnatts as usize);
        let ok = (*(*idx).rd_rel).relam == pg_sys::BTREE_AM_OID
            && form.indisvalid
            && form.indisready
            && form.indnatts == 2
            && form.indnkeyatts == 2
            && keys == [natts as i16 - 2, natts as i16]
            && pg_sys::RelationGetIndexExpressions(idx).is_null()
            && pg_sys::RelationGetIndexPredicate(idx).is_null();
        if !ok {
            pg_sys::index_close(idx, pg_sys::NoLock as i32);
            refuse();
        }
        let oid = (*idx).rd_id;
        let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        let info = pg_sys::BuildIndexInfo(idx);
        pg_sys::MemoryContextSwitchTo(old);
        pg_sys::index_close(idx, pg_sys::NoLock as i32);
        (oid, info)
    }
}

/// Appends a change to the queue of a deferred source: one heap insert
/// and one insert into its primary key, no executor, no SQL. The queue
/// has no other index, and no constraint, trigger or rule runs; its
/// row-level security is for readers: the row comes from the source row,
/// which the source's own policies have already checked.
///
/// The WAL insert position orders a key's changes: a transaction can change
/// a key only after the previous one's commit record, and within a
/// transaction each queued row advances it.
fn queue(
    t: &Tracked,
    queue: Oid,
    source: pg_sys::TupleDesc,
    fields: &Fields,
    hash: &[u8],
    op: &str,
) {
    // SAFETY: the queue is opened and closed here and checked against the
    // values before the tuple is formed from datums that outlive the call;
    // the tuple is freed after the insert copied it.
    unsafe {
        // opening takes the lock, which applies pending invalidations: the
        // generation read after it is current
        let rel = pg_sys::table_open(queue, pg_sys::RowExclusiveLock as i32);
        let desc = (*rel).rd_att;
        let generation = RELCACHE_GENERATION.with(|g| g.get());
        let (pk, index_info) = match t.queue_checked.get() {
            Some((checked, pk, info)) if checked == generation => (pk, info),
            _ => {
                check_queue(t, rel, source);
                let (pk, info) = queue_primary_key(rel, (*desc).natts as usize);
                if let Some((_, _, stale)) = t.queue_checked.replace(Some((generation, pk, info))) {
                    pg_sys::pfree(stale.cast());
                }
                (pk, info)
            }
        };
        let columns = t.key.len() + t.tracked.len();
        let mut values = Vec::with_capacity(columns + 5);
        let mut nulls = Vec::with_capacity(columns + 5);
        for &i in t.key.iter().chain(t.tracked.iter()) {
            values.push(fields.values[i]);
            nulls.push(fields.nulls[i]);
        }
        values.push(Datum::from(pgrx::rust_byte_slice_to_bytea(hash).into_pg()));
        values.push(op.into_datum().expect("text"));
        values.push(Datum::from(pg_sys::GetTopFullTransactionId().value));
        values.push(Datum::from(pg_sys::GetCurrentTransactionStartTimestamp()));
        values.push(Datum::from(pg_sys::GetXLogInsertRecPtr()));
        nulls.extend([false; 5]);
        let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::simple_heap_insert(rel, tuple);
        // (txid, change_lsn): unique by construction (the WAL insert
        // position advances with every insert of a transaction), checked
        // anyway
        let index = pg_sys::index_open(pk, pg_sys::RowExclusiveLock as i32);
        let mut key = [values[columns + 2], values[columns + 4]];
        let mut key_nulls = [false, false];
        pg_sys::index_insert(
            index,
            key.as_mut_ptr(),
            key_nulls.as_mut_ptr(),
            &mut (*tuple).t_self,
            rel,
            pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES,
            false,
            index_info,
        );
        pg_sys::index_close(index, pg_sys::NoLock as i32);
        pg_sys::heap_freetuple(tuple);
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
    }
}

fn on_insert(t: &Tracked, src: pg_sys::TupleDesc, new: &Fields) {
    if let Some(q) = t.queue {
        return queue(t, q, src, new, &hash_of(t, new), "I");
    }
    run(
        t,
        stmt::OPEN_FIRST,
        &Params::new(t, new, &hash_of(t, new), "I"),
    );
}

fn on_delete(t: &Tracked, src: pg_sys::TupleDesc, old: &Fields) {
    if let Some(q) = t.queue {
        return queue(t, q, src, old, &hash_of(t, old), "D");
    }
    let p = Params::new(t, old, &hash_of(t, old), "D");
    if run(t, stmt::CLOSE_THEN_TOMBSTONE, &p) > 0 {
        // closed a version from an earlier transaction
    } else if run(t, stmt::DROP_OWN_VERSION, &p) > 0 {
        // the key existed before this transaction, which changed and then
        // deleted it: the version it closed ends here
        run(t, stmt::TOMBSTONE, &p);
    }
}

fn on_update(t: &Tracked, src: pg_sys::TupleDesc, old: &Fields, new: &Fields) {
    if key_of(t, old) != key_of(t, new) {
        on_delete(t, src, old);
        on_insert(t, src, new);
        return;
    }
    let hash = hash_of(t, new);
    if hash == hash_of(t, old) {
        return; // nothing tracked changed: no version, no SQL
    }
    if let Some(q) = t.queue {
        return queue(t, q, src, new, &hash, "U");
    }
    let p = Params::new(t, new, &hash, "U");
    if run(t, stmt::CLOSE_THEN_OPEN, &p) > 0 {
        // the usual case: a version from an earlier transaction replaced
    } else if run(t, stmt::UNDO, &p) > 0 {
        // changed back within this transaction: the closed version resumes
    } else if run(t, stmt::REPLACE, &p) == 0 {
        // no history for this key yet
        run(t, stmt::OPEN_FIRST, &p);
    }
}

crate::fmgr::function_info_v1!(pg_finfo_scd2_trigger);

/// `warden._scd2_trigger()`: AFTER INSERT OR UPDATE OR DELETE, FOR EACH ROW.
///
/// # Safety
/// Called by the trigger manager.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn scd2_trigger(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: the trigger manager passes TriggerData as the context.
    unsafe {
        let data = crate::fmgr::trigger_data(
            fcinfo,
            "warden._scd2_trigger()",
            Some("warden.scd2_track() installs it."),
        );
        let event = data.tg_event;
        if event & pg_sys::TRIGGER_EVENT_ROW == 0
            || event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_AFTER
        {
            WardenError::prerequisite("warden._scd2_trigger() must fire AFTER ... FOR EACH ROW")
                .hint("warden.scd2_track() installs it that way.")
                .raise();
        }
        let t = tracked(data.tg_relation);
        let tupdesc = (*data.tg_relation).rd_att;
        let fire = || match event & pg_sys::TRIGGER_EVENT_OPMASK {
            pg_sys::TRIGGER_EVENT_INSERT => {
                on_insert(&t, tupdesc, &Fields::deform(tupdesc, data.tg_trigtuple))
            }
            pg_sys::TRIGGER_EVENT_DELETE => {
                on_delete(&t, tupdesc, &Fields::deform(tupdesc, data.tg_trigtuple))
            }
            pg_sys::TRIGGER_EVENT_UPDATE => on_update(
                &t,
                tupdesc,
                &Fields::deform(tupdesc, data.tg_trigtuple),
                &Fields::deform(tupdesc, data.tg_newtuple),
            ),
            _ => {}
        };
        if t.queue.is_some() {
            fire(); // a heap insert: no SQL to run as the owner
        } else {
            // security-restricted, fixed search_path: the owner's code on
            // the history runs with the owner's rights and none of the
            // writer's settings (rule 1)
            as_owner(t.owner, || {
                pg_sys::SPI_connect();
                fire();
                pg_sys::SPI_finish();
            });
        }
        Datum::from(0)
    }
}

extension_sql!(
    r#"
CREATE FUNCTION warden._scd2_trigger() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'scd2_trigger';
COMMENT ON FUNCTION warden._scd2_trigger() IS
  'Internal: the row trigger warden.scd2_track installs; writes versions to the history as its owner.';
"#,
    name = "scd2_trigger",
);
