//! Who acts and on whose behalf: `warden.set_actor(actor, kind)` and
//! `warden.set_correlation_id(id)`, recorded with every event of the
//! transaction. Like the tenant, they live in `SUSET` settings written
//! transaction-locally by these functions only, so a pooled connection
//! never hands one client's actor to the next. The actor is what the
//! application asserts (the database role is not a person).

use pgrx::prelude::*;

use crate::error::{not_null, WardenError};
use crate::guc;
use crate::tenant_context::require_transaction_block_for;

/// The kinds of actor an event can name.
pub const ACTOR_KINDS: [&str; 4] = ["user", "admin", "service", "system"];

/// Longest actor or correlation id, in bytes.
const MAX_LEN: usize = 200;

fn check_text(what: &str, value: &str) {
    if value.is_empty() || value.len() > MAX_LEN || value.chars().any(char::is_control) {
        WardenError::invalid_parameter(format!("invalid {what}"))
            .detail(format!(
                "A {what} is 1 to {MAX_LEN} bytes of text without control characters."
            ))
            .raise();
    }
}

#[pg_extern(volatile, parallel_unsafe)]
fn set_actor(actor: Option<&str>, kind: default!(Option<&str>, "'user'")) {
    let actor = not_null(actor, "actor");
    let kind = not_null(kind, "kind");
    check_text("actor", actor);
    if !ACTOR_KINDS.contains(&kind) {
        WardenError::invalid_parameter(format!("unknown actor kind \"{kind}\""))
            .hint(format!("The kinds are {}.", ACTOR_KINDS.join(", ")))
            .raise();
    }
    require_transaction_block_for("warden.set_actor()", "The actor");
    guc::set_local(guc::ACTOR_GUC, actor);
    guc::set_local(guc::ACTOR_KIND_GUC, kind);
}

#[pg_extern(volatile, parallel_unsafe)]
fn set_correlation_id(correlation_id: Option<&str>) {
    let id = not_null(correlation_id, "correlation_id");
    check_text("correlation id", id);
    require_transaction_block_for("warden.set_correlation_id()", "The correlation id");
    guc::set_local(guc::CORRELATION_ID_GUC, id);
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.set_actor(text, text) IS
  'Names who acts (kind user, admin, service or system) for the audit events of the rest of the transaction.';
COMMENT ON FUNCTION warden.set_correlation_id(text) IS
  'Sets the correlation id (say, a request id) recorded with the audit events of the rest of the transaction.';
"#,
    name = "audit_context_comments",
    requires = [set_actor, set_correlation_id],
);
