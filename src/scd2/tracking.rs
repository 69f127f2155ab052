//! The public SCD2 entry points `warden.scd2_track`, `warden.scd2_untrack`
//! and `warden.scd2_flush`.
//!
//! Each checks its caller, runs what needs only the caller's rights as the
//! caller (the PL/pgSQL `_scd2_track_tables`: checks, the history and
//! queue tables, the initial load; the DROPs of untracking), and does
//! pg_warden's part here: the registry row, the triggers and the apply.
//! The internal helpers are reached through the function manager
//! (`fmgr::call_internal`) and granted to nobody (docs/security.md,
//! rule 8). The triggers are attached with the extension owner's rights,
//! as their functions are executable by nobody else; `CREATE TRIGGER`
//! evaluates no user code, and a trigger runs as whoever fires it.

use pgrx::pg_sys::Oid;
use pgrx::prelude::*;
use pgrx::IntoDatum;

use super::registry;
use crate::error::{not_null, WardenError};
use crate::fmgr::call_internal;
use crate::names::{qualified_relation, quote_ident, regclass_text};
use crate::privileged::as_superuser;

/// The history and queue of a tracked source, read with pg_warden's
/// rights (the registry is pg_warden's table).
fn registered(src: Oid) -> Option<(Oid, Option<Oid>)> {
    as_superuser(|| {
        crate::spi_read::read_two::<Oid, Oid>(
            "SELECT r.history::pg_catalog.oid, r.queue::pg_catalog.oid FROM warden.scd2_registry r
              WHERE r.source OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
            &[src.into()],
        )
    })
    .ok()
    .and_then(|(hist, queue)| hist.map(|h| (h, queue)))
}

fn not_tracked(src: Oid) -> ! {
    WardenError::prerequisite(format!(
        "{} is not tracked by warden.scd2_track",
        regclass_text(src)
    ))
    .hint("See warden.scd2_tables.")
    .raise()
}

fn relation(rel: Oid) -> String {
    qualified_relation(rel).unwrap_or_else(|| {
        WardenError::prerequisite(format!("relation {rel} does not exist")).raise()
    })
}

/// Every business key column needs its type's default btree equality:
/// the statements that find a key's versions compare with it.
fn require_key_equality(src: Oid, business_key: &[String]) {
    let types = Spi::connect(|client| {
        client
            .select(
                "SELECT u.c, a.atttypid FROM pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY u(c, n)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) $1
                                                 AND a.attname OPERATOR(pg_catalog.=) u.c
                  ORDER BY u.n",
                None,
                &[src.into(), business_key.to_vec().into()],
            )?
            .map(|row| Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<Oid>(2)?)))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot read the business key: {e}")).raise());
    for (col, typ) in types {
        if call_internal(
            c"warden._scd2_equality(pg_catalog.regtype)",
            &[typ.into_datum()],
        )
        .is_none()
        {
            WardenError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
                format!(
                    "business key column {} has no default btree equality",
                    quote_ident(&col)
                ),
            )
            .raise();
        }
    }
}

/// Attaches what the source lacks of the row trigger that keeps the
/// history and the statement trigger that refuses TRUNCATE (both, when
/// tracking starts; the missing one when `scd2_track` is called again on
/// a tracked source, say after a restore by a role that could not create
/// them, or after one was dropped).
fn attach_triggers(src: Oid) {
    let table = relation(src);
    for (name, definition) in [
        (
            "warden_scd2",
            "AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION warden._scd2_trigger()",
        ),
        (
            "warden_scd2_truncate",
            "BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION warden._scd2_refuse_truncate()",
        ),
    ] {
        let present = crate::spi_read::read_one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                             WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND t.tgname OPERATOR(pg_catalog.=) $2)",
            &[src.into(), name.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false);
        if present {
            continue;
        }
        let sql = format!("CREATE TRIGGER {name} {}", definition.replace("{table}", &table));
        as_superuser(|| Spi::run(&sql)).unwrap_or_else(|e| {
            WardenError::prerequisite(format!("cannot attach the SCD2 trigger {name}: {e}")).raise()
        });
    }
}

/// `warden.scd2_track(source, business_key, tracked, deferred)`.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn scd2_track(
    source: Option<Oid>,
    business_key: Option<Vec<Option<String>>>,
    tracked: Option<Vec<Option<String>>>,
    deferred: Option<bool>,
) -> Option<Oid> {
    let source = not_null(source, "source");
    let made = call_internal(
        c"warden._scd2_track_tables(pg_catalog.regclass,pg_catalog.text[],pg_catalog.text[],pg_catalog.bool)",
        &[
            source.into_datum(),
            business_key.clone().into_datum(),
            tracked.into_datum(),
            deferred.into_datum(),
        ],
    )
    .expect("_scd2_track_tables returns a row");
    // SAFETY: the composite (OUT parameters) the call just returned.
    let made = unsafe { PgHeapTuple::from_composite_datum(made) };
    let field_error = |e| -> ! { WardenError::prerequisite(format!("scd2_track: {e}")).raise() };
    let hist = made
        .get_by_name::<Oid>("made_history")
        .unwrap_or_else(|e| field_error(e));
    let queue = made
        .get_by_name::<Oid>("made_queue")
        .unwrap_or_else(|e| field_error(e));
    let tenant_column = made
        .get_by_name::<String>("made_tenant_column")
        .unwrap_or_else(|e| field_error(e));
    let Some(tracked) = made
        .get_by_name::<pgrx::Array<String>>("made_tracked")
        .unwrap_or_else(|e| field_error(e))
        .map(|a| a.iter().flatten().collect::<Vec<String>>())
    else {
        // tracked that way already: only what is missing of the triggers
        registry::require_owner(source, "source");
        attach_triggers(source);
        return hist;
    };
    let hist = hist.expect("a history was made");
    // the body refused NULLs in the key
    let business_key: Vec<String> = business_key
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    require_key_equality(source, &business_key);
    registry::register(source, hist, business_key, tracked, queue);
    attach_triggers(source);
    if let Some(col) = tenant_column {
        crate::tenancy::isolate_table(hist, &col, true);
        if let Some(queue) = queue {
            // a queue keeps its primary key as its only index
            crate::tenancy::isolate_table(queue, &col, false);
        }
    }
    Some(hist)
}

/// `warden.scd2_untrack(source, drop_history)`.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn scd2_untrack(source: Option<Oid>, drop_history: Option<bool>) {
    let source = not_null(source, "source");
    if registered(source).is_none() {
        not_tracked(source);
    }
    registry::require_owner(source, "source");
    let table = relation(source);
    // as the caller: dropping the triggers waits for the source's writers
    // (and for a transaction that untracked and tracked it again)
    Spi::run(&format!("DROP TRIGGER IF EXISTS warden_scd2 ON {table}"))
        .and_then(|()| {
            Spi::run(&format!(
                "DROP TRIGGER IF EXISTS warden_scd2_truncate ON {table}"
            ))
        })
        .unwrap_or_else(|e| {
            WardenError::prerequisite(format!("cannot drop the SCD2 triggers: {e}")).raise()
        });
    // the registration as it is now that no writer is left, queued
    // changes applied before the queue goes
    let Some((_, queue)) = registered(source) else {
        not_tracked(source)
    };
    if queue.is_some() {
        apply(source);
    }
    // forgotten first: the drop event trigger refuses dropping a queue or
    // history whose source is still tracked
    let Some((hist, queue)) = registry::unregister(source) else {
        not_tracked(source)
    };
    for rel in queue
        .into_iter()
        .chain(drop_history.unwrap_or(false).then_some(hist))
    {
        let name = relation(rel);
        Spi::run(&format!("DROP TABLE {name}")).unwrap_or_else(|e| {
            WardenError::prerequisite(format!("cannot drop {name}: {e}")).raise()
        });
    }
}

/// The apply of a deferred source, through its SQL declaration (which
/// carries the planner settings the apply statement needs).
fn apply(source: Oid) -> i64 {
    call_internal(
        c"warden._scd2_apply(pg_catalog.regclass)",
        &[source.into_datum()],
    )
    // SAFETY: _scd2_apply returns a bigint.
    .map(|d| unsafe { i64::from_datum(d, false) }.unwrap_or(0))
    .unwrap_or(0)
}

/// `warden.scd2_flush(source)`.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn scd2_flush(source: Option<Oid>) -> i64 {
    let source = not_null(source, "source");
    if registered(source).is_none() {
        not_tracked(source);
    }
    if !registry::caller_owns(source) {
        WardenError::privilege(format!("must be owner of table {}", regclass_text(source)))
            .hint("Run warden.scd2_flush() as the table's owner; the pg_warden worker applies the queue anyway.")
            .raise();
    }
    apply(source)
}

extension_sql!(
    r#"
CREATE FUNCTION warden.scd2_track(source regclass, business_key text[], tracked text[] DEFAULT NULL, deferred boolean DEFAULT false)
RETURNS regclass VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scd2_track_wrapper';
CREATE FUNCTION warden.scd2_untrack(source regclass, drop_history boolean DEFAULT false)
RETURNS void VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scd2_untrack_wrapper';
CREATE FUNCTION warden.scd2_flush(source regclass)
RETURNS bigint VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scd2_flush_wrapper';
COMMENT ON FUNCTION warden.scd2_track(regclass, text[], text[], boolean) IS
  'Creates <source>_history (business key, tracked columns, hash_diff, valid_from, valid_to, is_current, op, txid), loads the current rows and keeps it by trigger: a version per real change, none for no-op updates, deletes closed with a tombstone. deferred => true: the trigger only queues the change in <source>_history_queue and the pg_warden worker writes the versions (same versions, a naptime later). Caller must own the source.';
COMMENT ON FUNCTION warden.scd2_untrack(regclass, boolean) IS
  'Stops SCD2 tracking of a source (its queued changes applied first); keeps the history unless drop_history.';
COMMENT ON FUNCTION warden.scd2_flush(regclass) IS
  'Applies the changes queued for a source tracked with deferred => true now, instead of at the worker''s next run; returns how many. 0 for a synchronously tracked source. Caller must own the source.';
"#,
    name = "scd2_tracking",
    requires = ["scd2_track", "scd2_deferred"],
);
