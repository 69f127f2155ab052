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

use pgrx::prelude::*;

use crate::error::WardenError;

/// Applies the queues of every deferred source in this database; returns
/// the changes still queued for sources whose apply failed.
pub fn apply_all() -> Result<i64, WardenError> {
    Spi::get_one::<i64>("SELECT warden._scd2_apply_all()")
        .map(|left| left.unwrap_or(0))
        .map_err(|e| WardenError::prerequisite(format!("cannot apply SCD2 queues: {e}")))
}

extension_sql!(
    r#"
-- The apply statement of a deferred source. Queue columns are renamed to
-- _k<n> (business key) and _v<n> (tracked) so that no user column name can
-- clash with the statement's own.
CREATE FUNCTION warden._scd2_apply_statement(src regclass) RETURNS text
STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r warden.scd2_registry;
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
    RETURN format($sql$
WITH taken AS MATERIALIZED (
    DELETE FROM %1$s q
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
$sql$, r.queue, r.history, take, keys, cur_vals, cur_match, prior_match, cols, key_out, val_out, tomb_out, tomb_vals, prev_vals);
END
$fn$;

-- Superuser rights: the worker has them anyway, and a tenant-isolated
-- history (FORCE RLS) would show its owner one tenant only. Applying is
-- what the worker does on its own, so callers gain nothing else by it.
CREATE FUNCTION warden._scd2_apply(src regclass) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Queue estimates are meaningless (the table is emptied every apply):
-- never JIT-compile, and look each key up in the current-version index
-- rather than hash or sort the whole history.
SET jit = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$
DECLARE
    r warden.scd2_registry;
    taken bigint;
BEGIN
    SELECT * INTO r FROM warden.scd2_registry g WHERE g.source = src;
    IF NOT FOUND OR r.queue IS NULL THEN
        RETURN 0;
    END IF;
    -- one applier at a time (the worker, scd2_flush, scd2_merge)
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', r.history);
    EXECUTE warden._scd2_apply_statement(src) INTO taken;
    RETURN taken;
END
$fn$;

CREATE FUNCTION warden._scd2_apply_all() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
    waiting bigint;
    left_over bigint := 0;
BEGIN
    FOR r IN SELECT g.source, g.queue FROM warden.scd2_registry g WHERE g.queue IS NOT NULL ORDER BY g.source::oid LOOP
        -- one failing source (say, a column dropped under it) must not
        -- hold up the others
        BEGIN
            PERFORM warden._scd2_apply(r.source);
        EXCEPTION WHEN OTHERS THEN
            EXECUTE format('SELECT count(*) FROM %s', r.queue) INTO waiting;
            left_over := left_over + waiting;
            RAISE WARNING 'pg_warden: cannot apply the % queued SCD2 changes of %: %', waiting, r.source, SQLERRM;
        END;
    END LOOP;
    RETURN left_over;
END
$fn$;

CREATE FUNCTION warden.scd2_flush(source regclass) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r warden.scd2_registry;
BEGIN
    SELECT * INTO r FROM warden.scd2_registry g WHERE g.source = scd2_flush.source;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('%s is not tracked by warden.scd2_track', source),
            HINT = 'See warden.scd2_tables.';
    END IF;
    IF NOT pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = source), 'USAGE') THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('must be owner of table %s', source),
            HINT = 'Run warden.scd2_flush() as the table''s owner; the pg_warden worker applies the queue anyway.';
    END IF;
    RETURN warden._scd2_apply(source);
END
$fn$;

COMMENT ON FUNCTION warden._scd2_apply_statement(regclass) IS
  'Internal: the statement that applies the queue of a deferred SCD2 source to its history.';
COMMENT ON FUNCTION warden._scd2_apply(regclass) IS
  'Internal: applies the queued changes of a deferred SCD2 source; returns how many it took.';
COMMENT ON FUNCTION warden._scd2_apply_all() IS
  'Internal: the worker''s task; applies every deferred SCD2 queue of the database, returns the changes left in queues that failed.';
COMMENT ON FUNCTION warden.scd2_flush(regclass) IS
  'Applies the changes queued for a source tracked with deferred => true now, instead of at the worker''s next run; returns how many. 0 for a synchronously tracked source. Caller must own the source.';
"#,
    name = "scd2_deferred",
    requires = ["scd2_track"],
);
