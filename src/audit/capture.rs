//! Table change capture: `warden.audit_table(tbl, redact, exclude)`,
//! `warden.audit_untable(tbl)`, the registry `warden.audit_tables` and the
//! view `warden.audited_tables`. A captured table gets statement-level
//! AFTER triggers with transition tables (`capture_trigger.rs`), so a
//! bulk load costs one trigger call per statement, not one per row.
//!
//! The caller must own the table. The registry row and the triggers are
//! pg_warden's part (as the extension owner: the registry is not writable
//! by users, and the trigger function is executable by nobody else;
//! `CREATE TRIGGER` evaluates no user code and a trigger runs as whoever
//! fires it).

use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

use crate::error::{not_null, WardenError};
use crate::names::{qualified_relation, regclass_text};
use crate::privileged::{as_superuser, caller_owns};

extension_sql!(
    r#"
CREATE TABLE warden.audit_tables (
    tbl           regclass PRIMARY KEY,
    key_columns   text[] NOT NULL,
    redact        text[] NOT NULL DEFAULT '{}',
    exclude       text[] NOT NULL DEFAULT '{}',
    tenant_column text,
    since         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('warden.audit_tables', '');
CREATE VIEW warden.audited_tables AS
SELECT t.tbl AS table_name, t.key_columns, t.redact, t.exclude, t.tenant_column, t.since
  FROM warden.audit_tables t;
COMMENT ON TABLE warden.audit_tables IS
  'Tables whose changes become audit events (warden.audit_table). Internal: use warden.audited_tables.';
COMMENT ON INDEX warden.audit_tables_pkey IS 'One capture per table.';
COMMENT ON VIEW warden.audited_tables IS
  'Tables whose INSERT, UPDATE, DELETE and TRUNCATE become audit events: key columns, redacted (fingerprinted) and excluded columns, the tenant column whose value picks each row''s chain, since when.';
"#,
    name = "audit_tables_registry",
);

/// The capture triggers: (name, definition).
const TRIGGERS: [(&str, &str); 4] = [
    (
        "warden_audit_insert",
        "AFTER INSERT ON {table} REFERENCING NEW TABLE AS warden_new FOR EACH STATEMENT EXECUTE FUNCTION warden._audit_capture()",
    ),
    (
        "warden_audit_update",
        "AFTER UPDATE ON {table} REFERENCING OLD TABLE AS warden_old NEW TABLE AS warden_new FOR EACH STATEMENT EXECUTE FUNCTION warden._audit_capture()",
    ),
    (
        "warden_audit_delete",
        "AFTER DELETE ON {table} REFERENCING OLD TABLE AS warden_old FOR EACH STATEMENT EXECUTE FUNCTION warden._audit_capture()",
    ),
    (
        "warden_audit_truncate",
        "AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION warden._audit_capture()",
    ),
];

/// Whether `name` is one of the capture triggers (for the utility guard).
pub(super) fn is_capture_trigger(name: &str) -> bool {
    TRIGGERS.iter().any(|(n, _)| *n == name)
}

fn require_own_table(tbl: Oid) -> String {
    let table = qualified_relation(tbl).unwrap_or_else(|| {
        WardenError::invalid_parameter(format!("relation {tbl} does not exist")).raise()
    });
    if !caller_owns(tbl) {
        WardenError::privilege(format!("must own {table} to change its audit capture"))
            .hint("Run it as the table's owner (or a member of the owning role).")
            .raise();
    }
    table
}

/// The table's columns, in order, and its primary key columns.
fn columns_and_key(tbl: Oid) -> (Vec<String>, Vec<String>, String) {
    let (cols, key, kind) = crate::spi_read::read_three::<Vec<String>, Vec<String>, String>(
        "SELECT (SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY a.attnum)
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.>) 0
                    AND NOT a.attisdropped),
                (SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY k.n)
                   FROM pg_catalog.pg_index i
                   CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                                                AND a.attnum OPERATOR(pg_catalog.=) k.attnum
                  WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisprimary),
                c.relkind::pg_catalog.text
           FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1",
        &[tbl.into()],
    )
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot read the table: {e}")).raise());
    (
        cols.unwrap_or_default(),
        key.unwrap_or_default(),
        kind.unwrap_or_default(),
    )
}

fn names(list: Option<Vec<Option<String>>>, what: &str) -> Vec<String> {
    not_null(list, what)
        .into_iter()
        .map(|c| {
            c.unwrap_or_else(|| {
                WardenError::invalid_parameter(format!("{what} must not contain NULL")).raise()
            })
        })
        .collect()
}

/// Attaches the capture triggers the table lacks. A trigger of the same
/// name that is not pg_warden's (an owner's look-alike that would capture
/// nothing) is refused.
fn attach_triggers(tbl: Oid, table: &str) {
    for (name, definition) in TRIGGERS {
        let present = crate::spi_read::read_one::<bool>(
            "SELECT t.tgfoid OPERATOR(pg_catalog.=) 'warden._audit_capture()'::pg_catalog.regprocedure
                    AND t.tgenabled OPERATOR(pg_catalog.=) 'A'
               FROM pg_catalog.pg_trigger t
              WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND t.tgname OPERATOR(pg_catalog.=) $2",
            &[tbl.into(), name.into()],
        )
        .ok()
        .flatten();
        match present {
            Some(true) => continue,
            Some(false) => WardenError::new(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!(
                    "{table} has a trigger named {name} that is not pg_warden's capture trigger"
                ),
            )
            .hint("Drop or rename it, then call warden.audit_table() again.")
            .raise(),
            None => {}
        }
        // enabled ALWAYS: session_replication_role = replica skips it not
        let sql = format!(
            "CREATE TRIGGER {name} {}; ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}",
            definition.replace("{table}", table)
        );
        as_superuser(|| Spi::run(&sql)).unwrap_or_else(|e| {
            WardenError::prerequisite(format!("cannot attach the audit trigger {name}: {e}"))
                .raise()
        });
    }
}

/// `warden.audit_table(tbl, redact, exclude)`: starts (or changes) the
/// capture of a table's changes.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn audit_table(
    tbl: Option<Oid>,
    redact: Option<Vec<Option<String>>>,
    exclude: Option<Vec<Option<String>>>,
) {
    let tbl = not_null(tbl, "tbl");
    let (redact, exclude) = (names(redact, "redact"), names(exclude, "exclude"));
    let table = require_own_table(tbl);
    let (columns, key, kind) = columns_and_key(tbl);
    // statement triggers of a partitioned or inherited table do not see
    // writes to its partitions or children
    let has_children = crate::spi_read::read_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) $1)",
        &[tbl.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(true);
    if kind != "r" || has_children {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{table} is not a plain table without partitions or children"),
        )
        .detail("Statement triggers of a parent do not see writes made to its partitions or children directly.")
        .hint("Capture each partition (or child) instead.")
        .raise();
    }
    for c in redact.iter().chain(&exclude) {
        if !columns.contains(c) {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("{table} has no column \"{c}\""),
            )
            .raise();
        }
    }
    if let Some(c) = redact.iter().find(|c| exclude.contains(c)) {
        WardenError::invalid_parameter(format!("column \"{c}\" is both redacted and excluded"))
            .hint("Redact it (a keyed fingerprint is recorded) or exclude it (nothing is).")
            .raise();
    }
    if let Some(c) = key.iter().find(|c| exclude.contains(c)) {
        WardenError::invalid_parameter(format!("primary key column \"{c}\" cannot be excluded"))
            .detail("Every event names the row it is about by its primary key.")
            .hint("Redact it instead: its keyed fingerprint still tells rows apart.")
            .raise();
    }
    if !redact.is_empty() && crate::crypto::root_loaded().is_none() {
        WardenError::prerequisite("redacted columns need the pg_warden root key")
            .detail("Their fingerprints are keyed with the tenant's audit key, which is wrapped under the root key.")
            .hint("Set warden.key_file in postgresql.conf and restart the server.")
            .raise();
    }
    let tenant_column = as_superuser(|| {
        crate::spi_read::read_one::<String>(
            "SELECT t.tenant_column::pg_catalog.text FROM warden.tenant_tables t
              WHERE t.table_name OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
            &[tbl.into()],
        )
    })
    .ok()
    .flatten();
    as_superuser(|| {
        Spi::run_with_args(
            "INSERT INTO warden.audit_tables (tbl, key_columns, redact, exclude, tenant_column)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tbl) DO UPDATE SET key_columns = EXCLUDED.key_columns, redact = EXCLUDED.redact,
                                             exclude = EXCLUDED.exclude, tenant_column = EXCLUDED.tenant_column",
            &[
                tbl.into(),
                key.clone().into(),
                redact.clone().into(),
                exclude.clone().into(),
                tenant_column.clone().into(),
            ],
        )
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot register {table}: {e}")).raise());
    attach_triggers(tbl, &table);
    // every backend reads the capture afresh
    // SAFETY: queues an invalidation, sent at commit.
    unsafe { pgrx::pg_sys::CacheInvalidateRelcacheByRelid(tbl) };
    let mut fields = serde_json::Map::new();
    fields.insert("table".into(), table.into());
    fields.insert("redact".into(), redact.into());
    fields.insert("exclude".into(), exclude.into());
    fields.insert("tenant_column".into(), tenant_column.into());
    super::durable::record_admin_event("audit.table", None, fields);
}

/// `warden.audit_untable(tbl)`: ends the capture of a table's changes.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn audit_untable(tbl: Option<Oid>) {
    let tbl = not_null(tbl, "tbl");
    let table = require_own_table(tbl);
    let registered = as_superuser(|| {
        Spi::get_one_with_args::<bool>(
            "WITH d AS (DELETE FROM warden.audit_tables t WHERE t.tbl OPERATOR(pg_catalog.=) $1 RETURNING 1)
             SELECT EXISTS (SELECT FROM d)",
            &[tbl.into()],
        )
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot unregister {table}: {e}")).raise())
    .unwrap_or(false);
    if !registered {
        WardenError::prerequisite(format!(
            "{} is not captured by warden.audit_table",
            regclass_text(tbl)
        ))
        .hint("See warden.audited_tables.")
        .raise();
    }
    super::guard::with_capture_triggers_droppable(|| {
        for (name, _) in TRIGGERS {
            let sql = format!("DROP TRIGGER IF EXISTS {name} ON {table}");
            as_superuser(|| Spi::run(&sql)).unwrap_or_else(|e| {
                WardenError::prerequisite(format!("cannot drop the audit trigger {name}: {e}"))
                    .raise()
            });
        }
    });
    // SAFETY: queues an invalidation, sent at commit.
    unsafe { pgrx::pg_sys::CacheInvalidateRelcacheByRelid(tbl) };
    let mut fields = serde_json::Map::new();
    fields.insert("table".into(), table.into());
    super::durable::record_admin_event("audit.untable", None, fields);
}

extension_sql!(
    r#"
CREATE FUNCTION warden.audit_table(tbl regclass, redact text[] DEFAULT '{}', exclude text[] DEFAULT '{}') RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_table_wrapper';
CREATE FUNCTION warden.audit_untable(tbl regclass) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_untable_wrapper';
COMMENT ON FUNCTION warden.audit_table(regclass, text[], text[]) IS
  'Records the table''s INSERT, UPDATE (changed columns), DELETE and TRUNCATE as audit events (row.insert, ...), with the primary key; redacted columns as keyed fingerprints, excluded columns left out; tenant-isolated tables in each row''s chain. The caller must own the table.';
COMMENT ON FUNCTION warden.audit_untable(regclass) IS
  'Ends warden.audit_table''s capture of the table (recorded as audit.untable). The caller must own the table.';
"#,
    name = "audit_table_comments",
    requires = ["audit_tables_registry"],
);
