//! `warden.audit_redact(chain, seq, reason)`: erasure of one event's
//! payload (GDPR): `fields` and `fields_salt` are cleared and
//! `redacted_at` set; the digest stays, so the chain still verifies, and
//! without the salt it gives nothing to guess the value from. Recorded
//! (durably) in the chain, with the reason.

use pgrx::prelude::*;

use super::append_only::with_maintenance;
use crate::error::{not_null, WardenError};
use crate::privileged::as_superuser;

#[pg_extern(volatile, parallel_unsafe)]
fn audit_redact(chain: Option<&str>, seq: Option<i64>, reason: Option<&str>) {
    crate::preload::require("warden.audit_redact (it records itself in the chain)");
    let chain = not_null(chain, "chain");
    let seq = not_null(seq, "seq");
    let reason = not_null(reason, "reason");
    if reason.trim().is_empty() || reason.len() > 1000 {
        WardenError::invalid_parameter("reason must be 1 to 1000 bytes of text")
            .hint("Say why the payload is erased, e.g. 'GDPR erasure request 2026-118'.")
            .raise();
    }
    let state = as_superuser(|| {
        with_maintenance(|| {
            Spi::get_one_with_args::<String>(
                "WITH r AS (UPDATE warden.audit_log l
                               SET fields = NULL, fields_salt = NULL, redacted_at = pg_catalog.clock_timestamp()
                             WHERE l.chain OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.=) $2
                               AND l.redacted_at IS NULL
                            RETURNING 1)
                 SELECT CASE WHEN EXISTS (SELECT FROM r) THEN 'redacted'
                             WHEN EXISTS (SELECT FROM warden.audit_log l
                                           WHERE l.chain OPERATOR(pg_catalog.=) $1
                                             AND l.seq OPERATOR(pg_catalog.=) $2) THEN 'already'
                             ELSE 'missing' END",
                &[chain.into(), seq.into()],
            )
        })
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("audit redact: {e}")).raise());
    match state.as_deref() {
        Some("redacted") => {}
        Some("already") => WardenError::prerequisite(format!(
            "event {seq} of chain \"{chain}\" is already redacted"
        ))
        .raise(),
        _ => WardenError::new(
            pgrx::PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!("chain \"{chain}\" has no event {seq}"),
        )
        .hint("warden.audit_chains lists the chains and their last seq.")
        .raise(),
    }
    let mut fields = serde_json::Map::new();
    fields.insert("chain".into(), chain.into());
    fields.insert("seq".into(), seq.into());
    fields.insert("reason".into(), reason.into());
    super::durable::record_admin_event("audit.redact", super::prune::chain_tenant(chain), fields);
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.audit_redact(text, bigint, text) IS
  'Erases one event''s payload (fields and salt; the digest stays, so the chain still verifies); the row reads as redacted; recorded in the chain with the reason.';
"#,
    name = "audit_redact_comments",
    requires = [audit_redact],
);
