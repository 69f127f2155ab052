//! `warden.audit_emit(event_type, fields)`: the transactional path. The
//! event joins the inbox inside the caller's transaction (gone if it
//! rolls back) and the sequencer is woken when it commits. The tenant is
//! the transaction's (`warden.current_tenant()`), never the caller's say.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::error::{not_null, WardenError};
use crate::privileged::as_superuser;

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
fn audit_emit(event_type: Option<&str>, fields: default!(Option<JsonB>, "'{}'")) {
    crate::preload::require("warden.audit_emit (the sequencer is a pg_warden worker task)");
    let event_type = not_null(event_type, "event_type");
    if !valid_event_type(event_type) {
        WardenError::invalid_parameter("event_type must be dot-separated lower-case words")
            .hint("For example 'secret.read' or 'row.insert' (a-z, 0-9, _; at most 100 bytes).")
            .raise();
    }
    let fields = not_null(fields, "fields");
    if !fields.0.is_object() {
        WardenError::invalid_parameter("fields must be a JSON object")
            .hint("Pass '{}'::jsonb or an object such as '{\"id\": 42}'.")
            .raise();
    }
    let tenant = crate::guc::tenant().map(str::to_string);
    as_superuser(|| {
        Spi::run_with_args(
            "INSERT INTO warden.audit_inbox (ts, event_type, tenant, txid, fields)
             VALUES (pg_catalog.clock_timestamp(), $1, $2, pg_catalog.pg_current_xact_id(), $3)",
            &[event_type.into(), tenant.into(), fields.into()],
        )
    })
    .unwrap_or_else(|e| {
        WardenError::prerequisite(format!("cannot emit the audit event: {e}")).raise()
    });
    super::sequencer_task::wake_at_commit();
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.audit_emit(text, jsonb) IS
  'Records an audit event in the current transaction (gone if it rolls back); the pg_warden worker chains it after commit, in the tenant''s chain (global without a tenant).';
"#,
    name = "audit_emit_comments",
    requires = [audit_emit],
);
