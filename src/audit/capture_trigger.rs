//! `warden._audit_capture()`: the statement-level AFTER trigger of a
//! captured table. It reads the transition tables as the writing role
//! (the rows become JSON there, so the column types' output functions run
//! with the writer's rights, never pg_warden's), turns each row into an
//! event (`warden_core::audit::capture_event`: key, changed columns,
//! fingerprints, exclusions), and appends the events to the inbox in
//! chunks, each chunk with one constant INSERT as pg_warden. They commit
//! or roll back with the writer's statement.

use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use serde_json::{Map, Value};
use warden_core::audit::{capture_event, CaptureSpec, RowChange};

use crate::error::WardenError;
use crate::privileged::as_superuser;

/// Rows read and appended per chunk.
const CHUNK: i64 = 5_000;

/// The capture of `rel` as registered, if it is.
fn spec(rel: pg_sys::Oid) -> Option<CaptureSpec> {
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

/// Appends events (type, tenant, fields JSON) to the inbox, as pg_warden.
fn append(events: &[(&'static str, Option<String>, String)]) {
    if events.is_empty() {
        return;
    }
    let (actor, actor_kind, correlation_id) = crate::guc::audit_context();
    let types: Vec<&str> = events.iter().map(|e| e.0).collect();
    let tenants: Vec<Option<String>> = events.iter().map(|e| e.1.clone()).collect();
    let fields: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
    as_superuser(|| {
        Spi::run_with_args(
            "INSERT INTO warden.audit_inbox (ts, event_type, tenant, actor, actor_kind, correlation_id, txid, fields)
             SELECT pg_catalog.clock_timestamp(), r.event_type, r.tenant, $4, $5, $6,
                    pg_catalog.pg_current_xact_id(), r.fields::pg_catalog.jsonb
               -- multi-argument unnest is FROM-clause syntax only when
               -- unqualified (search_path is pg_catalog here)
               FROM unnest($1::pg_catalog.text[], $2::pg_catalog.text[], $3::pg_catalog.text[])
                    WITH ORDINALITY AS r(event_type, tenant, fields, n)
              ORDER BY r.n",
            &[
                types.into(),
                tenants.into(),
                fields.into(),
                actor.into(),
                actor_kind.into(),
                correlation_id.into(),
            ],
        )
    })
    .unwrap_or_else(|e| {
        WardenError::prerequisite(format!("cannot record the captured changes: {e}")).raise()
    });
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

/// Reads the transition tables chunk by chunk (as the writer) and
/// appends each chunk's events.
unsafe fn capture_rows(data: &pg_sys::TriggerData, spec: &CaptureSpec, op: u32) {
    let query = match op {
        pg_sys::TRIGGER_EVENT_INSERT => {
            "SELECT pg_catalog.to_jsonb(n)::pg_catalog.text, NULL FROM warden_new n"
        }
        pg_sys::TRIGGER_EVENT_DELETE => {
            "SELECT pg_catalog.to_jsonb(o)::pg_catalog.text, NULL FROM warden_old o"
        }
        // both transition tables keep the rows in the order they were
        // updated: the n-th old row is the n-th new row's
        _ => {
            "SELECT o.j, n.j
               FROM (SELECT pg_catalog.row_number() OVER () AS rn, pg_catalog.to_jsonb(o)::pg_catalog.text AS j
                       FROM warden_old o) o
               JOIN (SELECT pg_catalog.row_number() OVER () AS rn, pg_catalog.to_jsonb(n)::pg_catalog.text AS j
                       FROM warden_new n) n ON o.rn OPERATOR(pg_catalog.=) n.rn"
        }
    };
    let statement_tenant = crate::guc::tenant().map(str::to_string);
    let result = Spi::connect(|client| -> Result<(), pgrx::spi::Error> {
        // SAFETY: the trigger data of the running trigger, for this
        // SPI connection's queries on the transition tables.
        unsafe {
            pg_sys::SPI_register_trigger_data((data as *const pg_sys::TriggerData).cast_mut())
        };
        let mut cursor = client.open_cursor(query, &[]);
        loop {
            let rows: Vec<(String, Option<String>)> = cursor
                .fetch(CHUNK as _)?
                .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?)))
                .collect::<Result<_, pgrx::spi::Error>>()?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut events = Vec::with_capacity(rows.len());
            for (first, second) in &rows {
                let first = object(first);
                let second = second.as_deref().map(object);
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
                events.push((
                    e.event_type,
                    e.tenant.or_else(|| statement_tenant.clone()),
                    e.fields.to_string(),
                ));
            }
            append(&events);
        }
    });
    result.unwrap_or_else(|e| {
        WardenError::prerequisite(format!("cannot read the changed rows: {e}")).raise()
    });
}

crate::fmgr::function_info_v1!(pg_finfo_audit_capture);

/// # Safety
/// Called by the trigger manager.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn audit_capture(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: the trigger manager passes TriggerData as the context.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            WardenError::prerequisite("warden._audit_capture() must be called as a trigger")
                .hint("warden.audit_table() installs it.")
                .raise();
        }
        let data = &*context.cast::<pg_sys::TriggerData>();
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
            let fields = serde_json::json!({ "table": spec.table }).to_string();
            let tenant = crate::guc::tenant().map(str::to_string);
            append(&[("table.truncate", tenant, fields)]);
        } else {
            capture_rows(data, &spec, op);
        }
        if crate::preload::is_preloaded() {
            super::sequencer_task::wake_at_commit();
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
