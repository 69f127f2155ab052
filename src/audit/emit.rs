//! `warden.audit_emit(event_type, fields, durable, strict)`. The
//! transactional path (the default): the event joins the inbox inside the
//! caller's transaction (gone if it rolls back) and the sequencer is woken
//! when it commits. `durable => true` takes the durable path
//! (`durable.rs`). The tenant, actor and correlation id are the
//! transaction's, never the caller's say.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::error::{not_null, WardenError};

/// Event type prefixes only pg_warden itself writes (its own operations,
/// table capture): an application cannot forge them.
const RESERVED_PREFIXES: [&str; 6] = ["audit.", "admin.", "keys.", "tenancy.", "row.", "table."];

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

#[pg_extern(volatile, parallel_unsafe)]
fn audit_emit(
    event_type: Option<&str>,
    fields: default!(Option<JsonB>, "'{}'"),
    durable: default!(Option<bool>, false),
    strict: default!(Option<bool>, false),
) {
    crate::preload::require("warden.audit_emit (the sequencer is a pg_warden worker task)");
    let durable = not_null(durable, "durable");
    let strict = not_null(strict, "strict");
    let event_type = not_null(event_type, "event_type");
    if !valid_event_type(event_type) {
        WardenError::invalid_parameter("event_type must be dot-separated lower-case words")
            .hint("For example 'secret.read' or 'row.insert' (a-z, 0-9, _; at most 100 bytes).")
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
    if !fields.0.is_object() {
        WardenError::invalid_parameter("fields must be a JSON object")
            .hint("Pass '{}'::jsonb or an object such as '{\"id\": 42}'.")
            .raise();
    }
    check_fields_size(&fields.0);
    if durable {
        super::durable::record_durable(event_type, &fields.0.to_string(), strict);
        return;
    }
    if strict {
        WardenError::invalid_parameter("strict applies to durable events only")
            .detail("A transactional event is written by the caller's own transaction: it exists exactly when that commits.")
            .hint("Pass durable => true as well, or leave strict out.")
            .raise();
    }
    let tenant = crate::guc::tenant().map(str::to_string);
    insert_into_inbox(event_type, tenant.as_deref(), fields);
}

/// Refuses fields nested deeper than MAX_DEPTH or larger than
/// MAX_FIELDS_BYTES (54000): an event the sequencer could not chain would
/// stop the chain for everyone.
fn check_fields_size(fields: &serde_json::Value) {
    if warden_core::audit::json_depth(fields) > MAX_DEPTH {
        WardenError::new(
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("fields nest deeper than {MAX_DEPTH} levels"),
        )
        .raise();
    }
    if fields.to_string().len() > MAX_FIELDS_BYTES {
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
pub(super) fn insert_into_inbox(event_type: &str, tenant: Option<&str>, fields: JsonB) {
    let (actor, actor_kind, correlation_id) = crate::guc::audit_context();
    super::inbox_write::append(
        event_type,
        tenant,
        actor.as_deref(),
        actor_kind.as_deref(),
        correlation_id.as_deref(),
        fields,
    );
    if crate::preload::is_preloaded() {
        super::sequencer_task::wake_at_commit();
    }
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.audit_emit(text, jsonb, boolean, boolean) IS
  'Records an audit event in the tenant''s chain (global without a tenant): in the current transaction (gone if it rolls back), or with durable => true whether or not it commits; strict => true (or warden.audit_strict) returns only once the event is committed.';
"#,
    name = "audit_emit_comments",
    requires = [audit_emit],
);
