//! `warden._audit_capture()`: the statement-level AFTER trigger of a
//! captured table. It reads the transition tables as the writing role
//! (the rows become JSON there, so the column types' output functions run
//! with the writer's rights, never pg_warden's), turns each row into an
//! event (`warden_core::audit::capture_event`: key, changed columns,
//! fingerprints, exclusions), and appends it to the inbox with a heap
//! insert (`inbox_write`): no SQL per statement once the table's capture
//! is cached. The events commit or roll back with the writer's statement.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use pgrx::{IntoDatum, PgMemoryContexts};
use serde_json::{Map, Value};
use warden_core::audit::{capture_event, CaptureSpec, RowChange};

use crate::error::WardenError;
use crate::privileged::as_superuser;

/// Rows read and appended per chunk.
const CHUNK: i64 = 5_000;

thread_local! {
    /// Each captured table's capture (None: not captured), read once and
    /// dropped when the table's relcache entry is invalidated (audit_table
    /// and audit_untable invalidate it).
    static SPECS: RefCell<HashMap<pg_sys::Oid, Option<Rc<CaptureSpec>>>> = RefCell::new(HashMap::new());
}

fn forget(rel: pg_sys::Oid) {
    SPECS.with(|s| {
        let mut s = s.borrow_mut();
        if rel == pg_sys::InvalidOid {
            s.clear();
        } else {
            s.remove(&rel);
        }
    });
}

/// The capture of `rel` as registered, if it is.
fn spec(rel: pg_sys::Oid) -> Option<Rc<CaptureSpec>> {
    if let Some(cached) = SPECS.with(|s| s.borrow().get(&rel).cloned()) {
        return cached;
    }
    crate::dispatch::invalidation::on_relcache("audit capture", forget);
    let loaded = load_spec(rel).map(Rc::new);
    SPECS.with(|s| s.borrow_mut().insert(rel, loaded.clone()));
    loaded
}

fn load_spec(rel: pg_sys::Oid) -> Option<CaptureSpec> {
    let (key, redact, exclude, tenant_column) = as_superuser(|| {
        Spi::connect(|client| {
            let row = client
                .select(
                    "SELECT t.key_columns, t.redact, t.exclude, t.tenant_column FROM warden.audit_tables t
                      WHERE t.tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
                    Some(1),
                    &[rel.into()],
                )?
                .first();
            if row.is_empty() {
                return Ok::<_, pgrx::spi::Error>(None);
            }
            Ok(Some((
                row.get::<Vec<String>>(1)?.unwrap_or_default(),
                row.get::<Vec<String>>(2)?.unwrap_or_default(),
                row.get::<Vec<String>>(3)?.unwrap_or_default(),
                row.get::<String>(4)?,
            )))
        })
    })
    .unwrap_or_else(|e| {
        WardenError::prerequisite(format!("cannot read the audit capture: {e}")).raise()
    })?;
    Some(CaptureSpec {
        table: crate::names::qualified_relation(rel).unwrap_or_default(),
        key_columns: key,
        redact,
        exclude,
        tenant_column,
    })
}

fn too_deep() -> ! {
    WardenError::new(
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        format!(
            "a changed row nests deeper than {} levels and cannot be audited",
            super::emit::MAX_DEPTH
        ),
    )
    .detail("An event the sequencer could not chain would stop the chain for everyone, so the statement fails.")
    .hint("Redact or exclude such a column (warden.audit_table).")
    .raise()
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => WardenError::prerequisite("a captured row is not a JSON object").raise(),
        // serde_json stops at 128 levels
        Err(_) => too_deep(),
    }
}

/// A transition table read row by row through a read pointer of our own
/// (other triggers of the statement read it too). Each row becomes JSON
/// by `row_to_json`, run here as the writing role: the column types'
/// output functions never run with more rights than the writer's.
struct TransitionRows {
    store: *mut pg_sys::Tuplestorestate,
    slot: *mut pg_sys::TupleTableSlot,
}

impl TransitionRows {
    /// # Safety
    /// `store` is a transition table of the running trigger, of rows of
    /// `desc`.
    unsafe fn new(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Self {
        // SAFETY: per the contract.
        unsafe {
            let pointer = pg_sys::tuplestore_alloc_read_pointer(store, 0);
            pg_sys::tuplestore_select_read_pointer(store, pointer);
            pg_sys::tuplestore_rescan(store);
            TransitionRows {
                store,
                slot: pg_sys::MakeSingleTupleTableSlot(desc, &raw const pg_sys::TTSOpsMinimalTuple),
            }
        }
    }

    /// The next row as JSON text.
    fn next_json(&mut self) -> Option<String> {
        // SAFETY: reads the tuplestore into our slot; the composite datum
        // carries the row type, which row_to_json reads.
        unsafe {
            if !pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot) {
                return None;
            }
            let row = pg_sys::ExecFetchSlotHeapTupleDatum(self.slot);
            let json = pgrx::direct_function_call::<String>(pg_sys::row_to_json, &[Some(row)]);
            json.or_else(|| Some("{}".into()))
        }
    }
}

impl TransitionRows {
    /// Lets go of the row the slot holds: a row read back from a
    /// tuplestore that spilled to disk is palloc'd in the chunk's memory
    /// context, and the slot would free it on the next read, after the
    /// context was reset.
    fn clear(&mut self) {
        // SAFETY: ExecClearTuple (an inline function in PostgreSQL 15).
        unsafe {
            if let Some(clear) = (*(*self.slot).tts_ops).clear {
                clear(self.slot);
            }
            (*self.slot).tts_flags |= pg_sys::TTS_FLAG_EMPTY as u16;
        }
    }
}

impl Drop for TransitionRows {
    fn drop(&mut self) {
        // SAFETY: our slot; the tuplestore is the trigger manager's.
        unsafe { pg_sys::ExecDropSingleTupleTableSlot(self.slot) };
    }
}

/// Events of one chain waiting to be appended as one inbox row.
struct Batch {
    tenant: Option<String>,
    fields: Vec<Value>,
    /// A rough size: the JSON text of the rows they came from.
    bytes: usize,
}

/// Events per inbox row, and a rough bound on its size: a bulk load
/// writes one inbox row per thousand changed rows instead of one each.
const BATCH_EVENTS: usize = 1000;
const BATCH_BYTES: usize = 4 << 20;

/// Where a statement's events go: one inbox row per batch of events of
/// the same chain, in the order the rows changed (events of one chain
/// stay in order; different chains are independent).
struct Batches<'a> {
    writer: super::inbox_write::InboxWriter,
    event_type: &'static str,
    actor: Option<&'a str>,
    actor_kind: Option<&'a str>,
    correlation_id: Option<&'a str>,
    open: Vec<Batch>,
}

impl Batches<'_> {
    fn add(&mut self, tenant: Option<String>, fields: Value, bytes: usize) {
        let i = match self.open.iter().position(|b| b.tenant == tenant) {
            Some(i) => i,
            None => {
                self.open.push(Batch {
                    tenant,
                    fields: Vec::new(),
                    bytes: 0,
                });
                self.open.len() - 1
            }
        };
        let batch = &mut self.open[i];
        batch.fields.push(fields);
        batch.bytes += bytes;
        if batch.fields.len() >= BATCH_EVENTS || batch.bytes >= BATCH_BYTES {
            let full = self.open.swap_remove(i);
            self.write(full);
        }
    }

    fn flush(&mut self) {
        for batch in std::mem::take(&mut self.open) {
            self.write(batch);
        }
    }

    fn write(&mut self, batch: Batch) {
        let (fields, events) = match batch.fields.as_slice() {
            [one] => (super::jsonb_build::jsonb_datum(one), None),
            many => (
                super::jsonb_build::jsonb_array_datum(many),
                Some(many.len() as i32),
            ),
        };
        self.writer.append(&super::inbox_write::InboxEvent {
            event_type: self.event_type,
            tenant: batch.tenant.as_deref(),
            actor: self.actor,
            actor_kind: self.actor_kind,
            correlation_id: self.correlation_id,
            fields,
            events,
        });
    }
}

/// Turns each changed row into an event and appends them to the inbox.
unsafe fn capture_rows(data: &pg_sys::TriggerData, spec: &CaptureSpec, op: u32) {
    // SAFETY: the trigger's relation and transition tables.
    let desc = unsafe { (*data.tg_relation).rd_att };
    let (first, second, event_type) = match op {
        pg_sys::TRIGGER_EVENT_INSERT => (data.tg_newtable, std::ptr::null_mut(), "row.insert"),
        pg_sys::TRIGGER_EVENT_DELETE => (data.tg_oldtable, std::ptr::null_mut(), "row.delete"),
        // both transition tables keep the rows in the order they were
        // updated: the n-th old row is the n-th new row's
        _ => (data.tg_oldtable, data.tg_newtable, "row.update"),
    };
    if first.is_null() {
        return;
    }
    // SAFETY: transition tables of this trigger, of the relation's rows.
    let mut rows = unsafe { TransitionRows::new(first, desc) };
    let mut news = (!second.is_null()).then(|| unsafe { TransitionRows::new(second, desc) });
    let statement_tenant = crate::guc::tenant().map(str::to_string);
    let (actor, actor_kind, correlation_id) = crate::guc::audit_context();
    let mut batches = Batches {
        writer: super::inbox_write::InboxWriter::open(),
        event_type,
        actor: actor.as_deref(),
        actor_kind: actor_kind.as_deref(),
        correlation_id: correlation_id.as_deref(),
        open: Vec::new(),
    };
    // a memory context per chunk: row_to_json's text and the batches'
    // jsonb are palloc'd
    let mut chunk = PgMemoryContexts::new("pg_warden audit capture");
    loop {
        let more = unsafe {
            chunk.switch_to(|_| {
                for _ in 0..CHUNK {
                    let Some(first) = rows.next_json() else {
                        batches.flush();
                        return false;
                    };
                    let mut bytes = first.len();
                    let first = object(&first);
                    let second = news.as_mut().and_then(TransitionRows::next_json).map(|t| {
                        bytes += t.len();
                        object(&t)
                    });
                    let change = match (op, &second) {
                        (pg_sys::TRIGGER_EVENT_INSERT, _) => RowChange::Insert(&first),
                        (pg_sys::TRIGGER_EVENT_DELETE, _) => RowChange::Delete(&first),
                        (_, Some(new)) => RowChange::Update(&first, new),
                        _ => continue,
                    };
                    let e = capture_event(spec, change, |tenant, bytes| {
                        let t = tenant.or(statement_tenant.as_deref()).unwrap_or("");
                        crate::crypto::audit_fingerprint(t, bytes)
                    });
                    if warden_core::audit::json_depth(&e.fields) > super::emit::MAX_DEPTH {
                        too_deep();
                    }
                    let tenant = e.tenant.or_else(|| statement_tenant.clone());
                    batches.add(tenant, e.fields, bytes);
                }
                // this chunk's jsonb goes with its context
                batches.flush();
                true
            })
        };
        rows.clear();
        if let Some(n) = news.as_mut() {
            n.clear();
        }
        chunk.reset();
        if !more {
            break;
        }
    }
    batches.writer.close();
}

crate::fmgr::function_info_v1!(pg_finfo_audit_capture);

/// # Safety
/// Called by the trigger manager.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn audit_capture(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: the trigger manager passes TriggerData as the context.
    unsafe {
        let data = crate::fmgr::trigger_data(
            fcinfo,
            "warden._audit_capture()",
            Some("warden.audit_table() installs it."),
        );
        let event = data.tg_event;
        if event & pg_sys::TRIGGER_EVENT_ROW != 0
            || event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_AFTER
        {
            WardenError::prerequisite(
                "warden._audit_capture() must fire AFTER ... FOR EACH STATEMENT",
            )
            .hint("warden.audit_table() installs it that way.")
            .raise();
        }
        let rel = (*data.tg_relation).rd_id;
        let Some(spec) = spec(rel) else {
            return Datum::from(0usize); // no longer captured
        };
        let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
        if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
            let fields = pgrx::JsonB(serde_json::json!({ "table": spec.table })).into_datum();
            super::emit::insert_into_inbox(
                "table.truncate",
                crate::guc::tenant(),
                fields.expect("jsonb is a datum"),
            );
        } else {
            capture_rows(data, &spec, op);
            if crate::preload::is_preloaded() {
                super::sequencer_task::wake_at_commit();
            }
        }
        Datum::from(0usize)
    }
}

extension_sql!(
    r#"
CREATE FUNCTION warden._audit_capture() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'audit_capture';
COMMENT ON FUNCTION warden._audit_capture() IS
  'Internal: the statement trigger warden.audit_table installs; records the changed rows as audit events.';
"#,
    name = "audit_capture_function",
    requires = ["audit_tables_registry"],
);
