//! `warden.audit_emit(event_type, fields, durable, strict)`. The
//! transactional path (the default): the event joins the inbox inside the
//! caller's transaction (gone if it rolls back) and the sequencer is woken
//! when it commits. `durable => true` takes the durable path
//! (`durable.rs`). The tenant, actor and correlation id are the
//! transaction's, never the caller's say.

use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;

use crate::error::{not_null, WardenError};

/// Event type prefixes only pg_warden itself writes (its own operations,
/// table capture): an application cannot forge them.
const RESERVED_PREFIXES: [&str; 8] = [
    "audit.", "admin.", "keys.", "tenancy.", "row.", "table.", "secret.", "webhook.",
];

/// Deepest nesting of `fields` an event may have (the chain's encoders
/// and verifiers recurse; serde_json stops at 128).
pub(super) const MAX_DEPTH: usize = 64;
/// Largest `fields` of an emitted event, as JSON text.
const MAX_FIELDS_BYTES: usize = 1 << 20;

/// Event types: dot-separated lower-case words, at most 100 bytes.
fn valid_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 100
        && t.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// `fields` arrives as the jsonb datum itself (declared `jsonb` in SQL
/// below): the transactional path stores it as it came, with no trip
/// through text and serde.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn audit_emit(
    event_type: Option<&str>,
    fields: Option<pgrx::AnyElement>,
    durable: Option<bool>,
    strict: Option<bool>,
) {
    crate::preload::require("warden.audit_emit (the sequencer is a pg_warden worker task)");
    let durable = not_null(durable, "durable");
    let strict = not_null(strict, "strict");
    let event_type = not_null(event_type, "event_type");
    if !valid_event_type(event_type) {
        WardenError::invalid_parameter("event_type must be dot-separated lower-case words")
            .hint("For example 'config.read' or 'row.insert' (a-z, 0-9, _; at most 100 bytes).")
            .raise();
    }
    if RESERVED_PREFIXES.iter().any(|p| event_type.starts_with(p)) {
        WardenError::invalid_parameter(format!(
            "event types starting with {} are pg_warden's own",
            RESERVED_PREFIXES.join(", ")
        ))
        .hint("Name your events after your application, e.g. 'invoice.paid'.")
        .raise();
    }
    let fields = not_null(fields, "fields");
    if fields.oid() != pg_sys::JSONBOID {
        WardenError::invalid_parameter("fields must be jsonb").raise();
    }
    // SAFETY: a jsonb argument, detoasted for the checks and the write.
    let jsonb = unsafe { pg_sys::pg_detoast_datum(fields.datum().cast_mut_ptr()) };
    check_fields(jsonb);
    if durable {
        // SAFETY: the detoasted jsonb's root container, printed as text.
        let text = unsafe {
            let jb = jsonb.cast::<pg_sys::Jsonb>();
            let c = pg_sys::JsonbToCString(
                std::ptr::null_mut(),
                &raw mut (*jb).root,
                pgrx::varsize_any(jsonb) as i32,
            );
            std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned()
        };
        super::durable::record_durable(event_type, &text, strict);
        return;
    }
    if strict {
        WardenError::invalid_parameter("strict applies to durable events only")
            .detail("A transactional event is written by the caller's own transaction: it exists exactly when that commits.")
            .hint("Pass durable => true as well, or leave strict out.")
            .raise();
    }
    insert_into_inbox(event_type, crate::guc::tenant(), Datum::from(jsonb));
}

/// Refuses fields that are not a JSON object (22023), nest deeper than
/// MAX_DEPTH or are larger than MAX_FIELDS_BYTES (54000): an event the
/// sequencer could not chain would stop the chain for everyone. Walks the
/// jsonb in place.
fn check_fields(jsonb: *mut pg_sys::varlena) {
    let crate::jsonb_shape::JsonbShape {
        object,
        size,
        depth,
    } = crate::jsonb_shape::shape(Datum::from(jsonb), MAX_DEPTH);
    if !object {
        WardenError::invalid_parameter("fields must be a JSON object")
            .hint("Pass '{}'::jsonb or an object such as '{\"id\": 42}'.")
            .raise();
    }
    if depth > MAX_DEPTH {
        WardenError::new(
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("fields nest deeper than {MAX_DEPTH} levels"),
        )
        .raise();
    }
    if size > MAX_FIELDS_BYTES {
        WardenError::new(
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("fields are larger than {MAX_FIELDS_BYTES} bytes"),
        )
        .hint("Record a reference (an id, a hash) instead of the document.")
        .raise();
    }
}

/// Appends an event to the inbox in the current transaction, with the
/// transaction's actor and correlation id, and runs the sequencer at
/// commit (when preloaded; otherwise the inbox waits for a worker).
/// An event pg_warden writes about its own work in the current
/// transaction (it exists exactly when that work committed), in
/// `tenant`'s chain: for the worker's own changes, which must never wait
/// on the ring the same worker drains.
pub(crate) fn record_transactional(
    event_type: &str,
    tenant: Option<&str>,
    fields: serde_json::Map<String, serde_json::Value>,
) {
    let fields = pgrx::IntoDatum::into_datum(pgrx::JsonB(fields.into()));
    insert_into_inbox(event_type, tenant, fields.expect("jsonb is a datum"));
}

pub(super) fn insert_into_inbox(event_type: &str, tenant: Option<&str>, fields: Datum) {
    let (actor, actor_kind, correlation_id) = crate::guc::audit_context();
    super::inbox_write::append(&super::inbox_write::InboxEvent {
        event_type,
        tenant,
        actor: actor.as_deref(),
        actor_kind: actor_kind.as_deref(),
        correlation_id: correlation_id.as_deref(),
        fields,
        events: None,
    });
    if crate::preload::is_preloaded() {
        super::sequencer_task::wake_at_commit();
    }
}

extension_sql!(
    r#"
CREATE FUNCTION warden.audit_emit(event_type text, fields jsonb DEFAULT '{}', durable boolean DEFAULT false, strict boolean DEFAULT false) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_emit_wrapper';
COMMENT ON FUNCTION warden.audit_emit(text, jsonb, boolean, boolean) IS
  'Records an audit event in the tenant''s chain (global without a tenant): in the current transaction (gone if it rolls back), or with durable => true whether or not it commits; strict => true (or warden.audit_strict) returns only once the event is committed.';
"#,
    name = "audit_emit_comments",
    requires = ["audit_log_table"],
);
