//! `warden.audit_prune(chain, before)`: deletes a chain's old events up to
//! the last signed checkpoint before the first event it must keep. That
//! checkpoint stays as the anchor the rest verifies from (the export
//! carries it too), older checkpoints go. Events younger than
//! `warden.audit_min_retention` are never pruned, and the prune itself is
//! recorded (durably) in the chain.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::append_only::with_maintenance;
use crate::error::{not_null, WardenError};
use crate::privileged::as_superuser;

fn spi_error(e: pgrx::spi::Error) -> WardenError {
    WardenError::prerequisite(format!("audit prune: {e}"))
}

#[pg_extern(volatile, parallel_unsafe)]
fn audit_prune(chain: Option<&str>, before: Option<TimestampWithTimeZone>) -> i64 {
    crate::preload::require("warden.audit_prune (it records itself in the chain)");
    let chain = not_null(chain, "chain");
    let before = not_null(before, "before");
    let retention = crate::guc::audit_min_retention();
    let before_micros = super::durable::unix_micros(before)
        .unwrap_or_else(|| WardenError::invalid_parameter("before must be a finite time").raise());
    if before_micros > super::durable::now_micros() - retention.as_micros() as i64 {
        WardenError::invalid_parameter(
            "audit_prune would delete events younger than warden.audit_min_retention",
        )
        .detail(format!(
            "Events are kept at least {} days.",
            retention.as_secs() / 86_400
        ))
        .hint("Pass an earlier time, or lower warden.audit_min_retention in postgresql.conf.")
        .raise();
    }
    let (anchor, deleted) = as_superuser(|| -> Result<(Option<i64>, i64), WardenError> {
        // the first event to keep, and the last checkpoint before it
        let keep_from = crate::spi_read::read_one::<i64>(
            "SELECT pg_catalog.min(l.seq) FROM warden.audit_log l
              WHERE l.chain OPERATOR(pg_catalog.=) $1 AND l.ts OPERATOR(pg_catalog.>=) $2",
            &[chain.into(), before.into()],
        )
        .map_err(spi_error)?
        .unwrap_or(i64::MAX);
        let anchor = crate::spi_read::read_one::<i64>(
            "SELECT pg_catalog.max(c.seq) FROM warden.audit_checkpoints c
              WHERE c.chain OPERATOR(pg_catalog.=) $1 AND c.seq OPERATOR(pg_catalog.<) $2",
            &[chain.into(), keep_from.into()],
        )
        .map_err(spi_error)?;
        let Some(anchor) = anchor else {
            let old = crate::spi_read::read_one::<bool>(
                "SELECT EXISTS (SELECT FROM warden.audit_log l
                                 WHERE l.chain OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.<) $2)",
                &[chain.into(), keep_from.into()],
            )
            .map_err(spi_error)?
            .unwrap_or(false);
            if old {
                return Err(WardenError::prerequisite(
                    "no signed checkpoint to anchor what would remain of the chain",
                )
                .detail("Pruning keeps the checkpoint before the first remaining event, so the rest still verifies.")
                .hint("Configure a root key (warden.key_file): checkpoints are signed with a key wrapped under it."));
            }
            return Ok((None, 0));
        };
        let deleted = with_maintenance(|| -> Result<i64, pgrx::spi::Error> {
            Spi::run_with_args(
                "DELETE FROM warden.audit_checkpoints c
                  WHERE c.chain OPERATOR(pg_catalog.=) $1 AND c.seq OPERATOR(pg_catalog.<) $2",
                &[chain.into(), anchor.into()],
            )?;
            Ok(Spi::get_one_with_args::<i64>(
                "WITH d AS (DELETE FROM warden.audit_log l
                             WHERE l.chain OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.<=) $2
                            RETURNING 1)
                 SELECT pg_catalog.count(*) FROM d",
                &[chain.into(), anchor.into()],
            )?
            .unwrap_or(0))
        })
        .map_err(spi_error)?;
        Ok((Some(anchor), deleted))
    })
    .unwrap_or_else(|e| e.raise());
    let mut fields = serde_json::Map::new();
    fields.insert("chain".into(), chain.into());
    fields.insert("before_us".into(), before_micros.into());
    fields.insert("anchor_seq".into(), anchor.into());
    fields.insert("deleted".into(), deleted.into());
    super::durable::record_admin_event("audit.prune", chain_tenant(chain), fields);
    deleted
}

/// The tenant whose chain `chain` is (None: `global`).
pub(super) fn chain_tenant(chain: &str) -> Option<&str> {
    (chain != "global").then_some(chain)
}

extension_sql!(
    r#"
COMMENT ON FUNCTION warden.audit_prune(text, timestamptz) IS
  'Deletes the chain''s events older than before (never younger than warden.audit_min_retention) up to its last signed checkpoint, which stays as the anchor the rest verifies from; returns how many; recorded in the chain.';
"#,
    name = "audit_prune_comments",
    requires = [audit_prune],
);
