//! Deferred tracking (`warden.scd2_track(..., deferred => true)`): the
//! trigger only appends each change to `<source>_history_queue`, one heap
//! insert into an unindexed table; the database's pg_warden worker (or
//! `warden.scd2_flush`) later turns the queued changes into the versions
//! the synchronous trigger would have written.
//!
//! An apply takes every committed change at once (`DELETE ... RETURNING`),
//! keeps each transaction's last change of each key, orders a key's
//! transactions by WAL position (a transaction can change a key only after
//! the previous one committed) and writes in one statement: the closing of
//! each key's current version, and every version and tombstone the batch
//! produced, already closed except the last. The rules are the trigger's:
//! a transaction whose end state equals the key's current version writes
//! nothing, a delete writes a zero-length tombstone, a key deleted and
//! inserted again in one transaction gets a tombstone and an 'I' version,
//! and version times are transaction times clamped so that a key's
//! versions never overlap.

use std::ffi::CString;

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

use warden_core::tenancy::validate_tenant_id;

use crate::error::WardenError;
use crate::privileged::{as_owner, as_superuser};

/// Applies the queues of every deferred source in this database; returns
/// the changes still queued for sources whose apply failed.
pub fn apply_all() -> Result<i64, WardenError> {
    Spi::get_one::<i64>("SELECT warden._scd2_apply_all()")
        .map(|left| left.unwrap_or(0))
        .map_err(|e| WardenError::prerequisite(format!("cannot apply SCD2 queues: {e}")))
}

/// A deferred source as pg_warden's registry and the catalogs know it.
struct Registration {
    history: Oid,
    queue: Oid,
    /// the history's owner
    owner: Oid,
    queue_owner: Oid,
    tenant_column: Option<String>,
}

fn registration(src: Oid) -> Option<Registration> {
    // pg_warden's registry and the catalogs only: no user code runs here
    as_superuser(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT r.history::pg_catalog.oid, r.queue::pg_catalog.oid, h.relowner, q.relowner,
                        t.tenant_column::pg_catalog.text
                   FROM warden.scd2_registry r
                   JOIN pg_catalog.pg_class h ON h.oid OPERATOR(pg_catalog.=) r.history
                   JOIN pg_catalog.pg_class q ON q.oid OPERATOR(pg_catalog.=) r.queue
                   LEFT JOIN warden.tenant_tables t ON t.table_name OPERATOR(pg_catalog.=) r.history
                  WHERE r.source OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
                None,
                &[src.into()],
            )?;
            let Some(row) = rows.into_iter().next() else {
                return Ok(None);
            };
            Ok::<_, pgrx::spi::Error>(Some(Registration {
                history: row.get::<Oid>(1)?.expect("history"),
                queue: row.get::<Oid>(2)?.expect("queue"),
                owner: row.get::<Oid>(3)?.expect("owner"),
                queue_owner: row.get::<Oid>(4)?.expect("owner"),
                tenant_column: row.get::<String>(5)?,
            }))
        })
    })
    .unwrap_or_else(|e| {
        WardenError::prerequisite(format!("cannot read warden.scd2_registry: {e}")).raise()
    })
}

/// The statements that apply a source's queue: the whole queue, at most
/// `$1` source transactions of it, and whether it holds more than `$1`
/// changes. Built from the registry and the catalogs (superuser: the
/// registry is pg_warden's), run as the owner.
fn apply_statements(src: Oid, queue: Oid) -> (String, String, String) {
    let built = as_superuser(|| {
        crate::spi_read::read_two::<Vec<String>, String>(
            "SELECT warden._scd2_apply_statements($1::pg_catalog.regclass),
                    pg_catalog.format('SELECT pg_catalog.count(*) OPERATOR(pg_catalog.>) $1 FROM (SELECT FROM ONLY %s LIMIT $1 OPERATOR(pg_catalog.+) 1) x',
                                      $2::pg_catalog.regclass)",
            &[src.into(), queue.into()],
        )
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot build the SCD2 apply statement: {e}")).raise());
    let (Some(mut statements), Some(over_batch)) = built else {
        WardenError::prerequisite("cannot build the SCD2 apply statement").raise()
    };
    let batched = statements.pop().expect("two statements");
    let whole = statements.pop().expect("two statements");
    (whole, batched, over_batch)
}

/// What `scan_queue` reads: how many rows, and the distinct values of
/// one column as text.
struct QueueScan {
    rows: i64,
    values: std::collections::BTreeSet<String>,
}

/// Reads a queue with pg_warden's rights (a FORCE RLS queue hides other
/// tenants from its owner) by a heap scan: no planner and no executor, so
/// nothing the owner attached to the queue (index predicates and
/// expressions, statistics, constraints, rules, policies) is evaluated,
/// and no user code runs. Only a plain heap table of this session's kind
/// is read (another session's temporary table is out of reach), under a
/// lock taken without waiting, and only a column of a built-in tenant
/// type, printed by that type's built-in output function. `None` when the
/// queue is locked by someone else or is not such a table.
fn scan_queue(queue: Oid, column: Option<&str>) -> Option<QueueScan> {
    // SAFETY: the relation is locked before it is opened and closed at the
    // end; tuples come from a heap scan of it under the active snapshot.
    unsafe {
        // the caller (the worker's error handler, the tenant list) must
        // never wait on a user's lock
        if !pg_sys::ConditionalLockRelationOid(queue, pg_sys::AccessShareLock as i32) {
            return None;
        }
        if pg_sys::get_rel_relkind(queue) != pg_sys::RELKIND_RELATION as std::ffi::c_char
            || pg_sys::get_rel_persistence(queue) == pg_sys::RELPERSISTENCE_TEMP as std::ffi::c_char
        {
            return None;
        }
        let rel = pg_sys::table_open(queue, pg_sys::NoLock as i32);
        if (*(*rel).rd_rel).relam != pg_sys::HEAP_TABLE_AM_OID {
            pg_sys::table_close(rel, pg_sys::NoLock as i32);
            return None;
        }
        let desc = (*rel).rd_att;
        let mut read = None;
        if let Some(column) = column {
            let name = CString::new(column).ok()?;
            let attnum = pg_sys::get_attnum(queue, name.as_ptr());
            let typ = pg_sys::get_atttype(queue, attnum);
            let tenant_type = [
                pg_sys::TEXTOID,
                pg_sys::VARCHAROID,
                pg_sys::UUIDOID,
                pg_sys::INT4OID,
                pg_sys::INT8OID,
            ]
            .contains(&typ);
            if attnum <= 0 || !tenant_type {
                pg_sys::table_close(rel, pg_sys::NoLock as i32);
                return None;
            }
            let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
            pg_sys::getTypeOutputInfo(typ, &mut output, &mut varlena);
            read = Some((attnum as i32, output));
        }
        let snapshot = if pg_sys::ActiveSnapshotSet() {
            pg_sys::GetActiveSnapshot()
        } else {
            pg_sys::GetTransactionSnapshot()
        };
        let scan = pg_sys::table_beginscan(rel, snapshot, 0, std::ptr::null_mut());
        let mut result = QueueScan {
            rows: 0,
            values: Default::default(),
        };
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            result.rows += 1;
            if let Some((attnum, output)) = read {
                let mut isnull = false;
                let value = pg_sys::heap_getattr(tuple, attnum, desc, &mut isnull);
                if !isnull {
                    let text = pg_sys::OidOutputFunctionCall(output, value);
                    result.values.insert(
                        std::ffi::CStr::from_ptr(text)
                            .to_string_lossy()
                            .into_owned(),
                    );
                    pg_sys::pfree(text.cast());
                }
            }
        }
        pg_sys::heap_endscan(scan);
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
        Some(result)
    }
}

/// Applies the queued changes of a deferred source as its history's
/// owner (docs/security.md, rule 1): the history and queue are the
/// owner's tables, so their triggers, rules, constraints and index
/// expressions run with the owner's rights only. A tenant-isolated
/// history (FORCE RLS) is applied one tenant at a time, with that tenant
/// set. Returns how many queued changes it took.
fn apply_source(src: Oid) -> i64 {
    let Some(r) = registration(src) else {
        return 0;
    };
    // the apply runs the queue's triggers and rules as the history's
    // owner: a queue handed to another role would run that role's code
    // with the history owner's rights
    if r.queue_owner != r.owner {
        WardenError::privilege("an SCD2 queue and its history must have the same owner")
            .hint("ALTER TABLE the queue OWNER TO the history's owner, or untrack and track the table again.")
            .raise();
    }
    // one applier at a time (the worker, scd2_flush, scd2_merge)
    // SAFETY: takes a lock to transaction end; runs no code.
    unsafe { pg_sys::LockRelationOid(r.history, pg_sys::ShareRowExclusiveLock as i32) };
    // The whole queue in one statement when it holds at most a batch (the
    // usual case, and no more work than before batches existed);
    // otherwise batches of whole transactions until what is left fits.
    let batch = crate::guc::scd2_apply_batch();
    let failed = |e: pgrx::spi::Error| -> ! {
        WardenError::prerequisite(format!("cannot apply SCD2 changes: {e}")).raise()
    };
    let (whole, batched, over_batch) = apply_statements(src, r.queue);
    let run = || {
        let mut taken = 0;
        while Spi::get_one_with_args::<bool>(&over_batch, &[batch.into()])
            .unwrap_or_else(|e| failed(e))
            .unwrap_or(false)
        {
            taken += Spi::get_one_with_args::<i64>(&batched, &[batch.into()])
                .unwrap_or_else(|e| failed(e))
                .unwrap_or(0);
        }
        taken
            + Spi::get_one::<i64>(&whole)
                .unwrap_or_else(|e| failed(e))
                .unwrap_or(0)
    };
    let Some(column) = &r.tenant_column else {
        return as_owner(r.owner, run);
    };
    // wait (within lock_timeout) for the queue here, where the apply
    // would wait anyway, not inside the tenant listing
    // SAFETY: takes a lock to transaction end; runs no code.
    unsafe { pg_sys::LockRelationOid(r.queue, pg_sys::RowExclusiveLock as i32) };
    let tenants = scan_queue(r.queue, Some(column))
        .unwrap_or_else(|| {
            WardenError::prerequisite(
                "an SCD2 queue is not a plain table with a tenant column of a tenant type",
            )
            .hint("Call warden.scd2_untrack() and warden.scd2_track() again.")
            .raise()
        })
        .values;
    let mut taken = 0;
    for tenant in tenants {
        if validate_tenant_id(&tenant).is_err() {
            pgrx::warning!("pg_warden: SCD2 changes queued for an invalid tenant id stay queued");
            continue;
        }
        taken += as_owner(r.owner, || {
            crate::tenant_context::set_tenant_setting(&tenant);
            run()
        });
    }
    taken
}

/// `warden._scd2_apply(regclass)`: for the worker and the drop event
/// trigger (superuser) and the owner's own functions (`scd2_flush`).
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn _scd2_apply(src: Oid) -> i64 {
    // SAFETY: reads the current user.
    if !unsafe { pg_sys::superuser() } {
        super::registry::require_owner(src, "source");
    }
    apply_source(src)
}

/// `warden._scd2_queue_length(regclass)`: the changes queued for a
/// deferred source, NULL when its queue cannot be read safely.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn _scd2_queue_length(src: Oid) -> Option<i64> {
    let r = registration(src)?;
    scan_queue(r.queue, None).map(|scan| scan.rows)
}

extension_sql!(
    r#"
-- The apply statement of a deferred source. Queue columns are renamed to
-- _k<n> (business key) and _v<n> (tracked) so that no user column name can
-- clash with the statement's own.
CREATE FUNCTION warden._scd2_apply_statements(src regclass) RETURNS text[]
STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r warden.scd2_registry;
    args text[];
    apply text;
    take text;
    keys text;
    cur_match text;
    prior_match text;
    cur_vals text;
    prev_vals text;
    tomb_vals text;
    cols text;
    key_out text;
    val_out text;
    tomb_out text;
BEGIN
    SELECT * INTO r FROM warden.scd2_registry g WHERE g.source = src;
    SELECT string_agg(format('q.%I AS _k%s', u.c, u.n), ', ' ORDER BY u.n),
           string_agg(format('_k%s', u.n), ', ' ORDER BY u.n),
           string_agg(format('c.%I %s f._k%s', u.c, e.op, u.n), ' AND ' ORDER BY u.n),
           string_agg(format('p.%I %s f._k%s', u.c, e.op, u.n), ' AND ' ORDER BY u.n),
           string_agg(format('x._k%s', u.n), ', ' ORDER BY u.n)
      INTO take, keys, cur_match, prior_match, key_out
      FROM unnest(r.business_key) WITH ORDINALITY u(c, n)
      JOIN pg_attribute a ON a.attrelid = r.history AND a.attname = u.c
      CROSS JOIN LATERAL (SELECT warden._scd2_equality(a.atttypid) AS op) e;
    SELECT take || ', ' || string_agg(format('q.%I AS _v%s', u.c, u.n), ', ' ORDER BY u.n),
           string_agg(format('c.%I AS _cv%s', u.c, u.n), ', ' ORDER BY u.n),
           string_agg(format('lag(e._v%s) OVER wt AS _pv%s', u.n, u.n), ', ' ORDER BY u.n),
           string_agg(format('CASE WHEN e._first THEN e._cv%s ELSE e._pv%s END AS _tv%s', u.n, u.n, u.n), ', ' ORDER BY u.n),
           string_agg(format('x._v%s', u.n), ', ' ORDER BY u.n),
           string_agg(format('x._tv%s', u.n), ', ' ORDER BY u.n)
      INTO take, cur_vals, prev_vals, tomb_vals, val_out, tomb_out
      FROM unnest(r.tracked) WITH ORDINALITY u(c, n);
    SELECT string_agg(format('%I', u.c), ', ' ORDER BY u.n) INTO cols
      FROM unnest(r.business_key || r.tracked) WITH ORDINALITY u(c, n);
    apply := $sql$
WITH taken AS MATERIALIZED (
    DELETE FROM %1$s q %14$s
    RETURNING %3$s, q.hash_diff AS _h, q.op AS _op, q.txid AS _txid, q.changed_at AS _at, q.change_lsn AS _lsn, q.ctid AS _ctid),
-- per transaction and key, in change order: the number of changes,
-- whether the transaction deleted the key, its first change
marked AS (
    SELECT t.*,
           row_number() OVER w AS _rn,
           count(*) OVER wa AS _n,
           bool_or(_op = 'D') OVER wa AS _deleted,
           first_value(_op) OVER w AS _first_op
      FROM taken t
    WINDOW w AS (PARTITION BY %4$s, _txid ORDER BY _lsn, _ctid),
           wa AS (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
-- each transaction's last change, in key order, after the state the
-- transaction before left (a key's transactions never interleave)
chained AS (
    SELECT m.*,
           lag(_op <> 'D') OVER wk AS _prev_present,
           lag(_h) OVER wk AS _prev_hash,
           row_number() OVER wk AS _nth
      FROM marked m
     WHERE _rn = _n
    WINDOW wk AS (PARTITION BY %4$s ORDER BY _lsn, _ctid)),
-- the first transaction of a key in this batch starts from the current
-- version, or (a key deleted before) from the end of the last version
chain AS (
    SELECT f.*, c.ctid AS _cur, %5$s, c.hash_diff AS _cph,
           COALESCE(f._prev_present, c.ctid IS NOT NULL) AS _p_exists,
           COALESCE(f._prev_hash, c.hash_diff) AS _p_hash,
           CASE WHEN f._nth = 1 THEN
             COALESCE(c.valid_from, (SELECT max(p.valid_to) FROM %2$s p WHERE %7$s AND NOT p.is_current), '-infinity')
           END AS _seed
      FROM chained f LEFT JOIN %2$s c ON %6$s AND c.is_current),
seeded AS (
    SELECT ch.*, first_value(ch._seed) OVER (PARTITION BY %4$s ORDER BY ch._lsn, ch._ctid) AS _seed_all FROM chain ch),
-- the transactions that change the history, with their clamped times (a
-- version never starts before the one it replaces) and the values of the
-- version each one closes (its tombstone repeats them)
effective AS (
    SELECT e.*,
           GREATEST(e._seed_all, max(e._at) OVER wt) AS _t,
           GREATEST(e._seed_all, max(e._at) OVER wt, lead(e._at) OVER wt) AS _t_next,
           lead(e._at) OVER wt IS NULL AS _last,
           row_number() OVER wt = 1 AS _first,
           lag(e._h) OVER wt AS _ph, %13$s
      FROM seeded e
     WHERE CASE WHEN e._p_exists THEN e._op = 'D' OR e._deleted OR e._h <> e._p_hash ELSE e._op <> 'D' END
    WINDOW wt AS (PARTITION BY %4$s ORDER BY e._lsn, e._ctid)),
timed AS (
    SELECT e.*, %12$s, CASE WHEN e._first THEN e._cph ELSE e._ph END AS _th FROM effective e),
closed AS (
    UPDATE %2$s h SET valid_to = x._t, is_current = false
      FROM timed x
     WHERE x._first AND x._p_exists AND h.ctid = x._cur
    RETURNING 1),
closed_count AS (SELECT count(*) AS n FROM closed),
-- opened only after the closes returned, so the unique index never sees
-- two current versions of a key
opened AS (
    INSERT INTO %2$s (%8$s, hash_diff, valid_from, valid_to, is_current, op, txid)
    SELECT %9$s, w.*
      FROM timed x CROSS JOIN LATERAL (
             SELECT %11$s, x._th, x._t, x._t, false, 'D', x._txid
              WHERE x._p_exists AND (x._op = 'D' OR x._deleted)
             UNION ALL
             SELECT %10$s, x._h, x._t, CASE WHEN x._last THEN 'infinity'::timestamptz ELSE x._t_next END, x._last,
                    CASE WHEN x._deleted THEN 'I' WHEN x._p_exists THEN 'U' ELSE x._first_op END, x._txid
              WHERE x._op <> 'D') w
     WHERE (SELECT c.n FROM closed_count c) IS NOT NULL)
SELECT count(*) FROM taken
$sql$;
    args := ARRAY[r.queue::text, r.history::text, take, keys, cur_vals, cur_match, prior_match, cols,
                  key_out, val_out, tomb_out, tomb_vals, prev_vals];
    -- the whole queue, and at most $1 source transactions, those that
    -- ended first (a key's later transaction always ends after its
    -- earlier one, so a batch never takes a key's change without the ones
    -- before it)
    RETURN ARRAY[format(apply, VARIADIC args || ''::text),
                 format(apply, VARIADIC args || format(
                     'USING (SELECT b.txid FROM %s b GROUP BY b.txid ORDER BY max(b.change_lsn) LIMIT $1) t WHERE q.txid = t.txid',
                     r.queue))];
END
$fn$;

-- Runs as the history's owner (see apply_source); not SECURITY DEFINER.
CREATE FUNCTION warden._scd2_apply(src regclass) RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
-- Queue estimates are meaningless (the table is emptied every apply):
-- never JIT-compile, and look each key up in the current-version index
-- rather than hash or sort the whole history.
SET jit = off SET enable_hashjoin = off SET enable_mergejoin = off
AS 'MODULE_PATHNAME', '_scd2_apply_wrapper';

CREATE FUNCTION warden._scd2_queue_length(src regclass) RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', '_scd2_queue_length_wrapper';

-- The worker's task. A lock held on a history or queue makes that source
-- wait for the next round instead of stalling every other one.
CREATE FUNCTION warden._scd2_apply_all() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $fn$
DECLARE
    r record;
    waiting bigint;
    left_over bigint := 0;
BEGIN
    -- another session's temporary tables are out of reach
    FOR r IN SELECT g.source, g.queue FROM warden.scd2_registry g JOIN pg_class c ON c.oid = g.queue
              WHERE c.relpersistence <> 't' ORDER BY g.source::oid LOOP
        -- one failing source (say, a column dropped under it) must not
        -- hold up the others
        BEGIN
            PERFORM warden._scd2_apply(r.source);
        EXCEPTION WHEN OTHERS THEN
            waiting := COALESCE(warden._scd2_queue_length(r.source), 0);
            left_over := left_over + waiting;
            RAISE WARNING 'pg_warden: cannot apply the % queued SCD2 changes of %: %', waiting, r.source, SQLERRM;
        END;
    END LOOP;
    RETURN left_over;
END
$fn$;

COMMENT ON FUNCTION warden._scd2_apply_statements(regclass) IS
  'Internal: the statements that apply the queue of a deferred SCD2 source to its history: the whole queue, and at most $1 source transactions of it.';
COMMENT ON FUNCTION warden._scd2_apply(regclass) IS
  'Internal: applies the queued changes of a deferred SCD2 source as its history''s owner (security-restricted, one tenant at a time when isolated); returns how many it took.';
COMMENT ON FUNCTION warden._scd2_queue_length(regclass) IS
  'Internal: the changes queued for a deferred SCD2 source (NULL when its queue is not a plain table of this session).';
COMMENT ON FUNCTION warden._scd2_apply_all() IS
  'Internal: the worker''s task; applies every deferred SCD2 queue of the database, returns the changes left in queues that failed.';
"#,
    name = "scd2_deferred",
    requires = ["scd2_track"],
);
