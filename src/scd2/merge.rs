//! `warden.scd2_merge`: a set-based, idempotent batch load of a history
//! from a staging table; `warden.scd2_as_of`: point-in-time reads.
//!
//! The merge is three statements over the whole batch (close changed
//! versions, open new ones, optionally close missing keys), comparing the
//! stored hash_diff with `warden.hash_diff` of each staging row, so a
//! re-run of the same batch finds every key unchanged and writes nothing.
//! It runs with the caller's rights: on a tenant-isolated history it sees
//! and closes only the current tenant's rows.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE FUNCTION warden.scd2_merge(history regclass, staging regclass, as_of timestamptz DEFAULT now(), close_missing boolean DEFAULT false)
RETURNS TABLE (inserted bigint, closed bigint, unchanged bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r warden.scd2_registry;
    key_match text;
    cols text;
    staged_cols text;
    staged_hash text;
    changed_expr text;
    too_early boolean;
    missing text;
    staged bigint;
    changed bigint := 0;
    vanished bigint := 0;
BEGIN
    SELECT * INTO r FROM warden.scd2_registry g WHERE g.history = scd2_merge.history;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('%s is not a history table made by warden.scd2_track', history),
            HINT = 'Track the dimension table first: SELECT warden.scd2_track(''<table>'', ARRAY[''<key>'']).';
    END IF;
    IF as_of IS NULL OR NOT pg_catalog.isfinite(as_of) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'as_of must be a finite timestamp';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.format('%I', u.c), ', ') INTO missing
      FROM pg_catalog.unnest(r.business_key || r.tracked) u(c)
     WHERE NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = staging AND a.attname = u.c AND a.attnum > 0 AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = pg_catalog.format('staging table %s lacks column(s) %s', staging, missing),
            HINT = 'Staging needs the business key and every tracked column of the history, with the same names.';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.format('h.%I %s s.%I', u.c, warden._scd2_equality(a.atttypid), u.c), ' AND ')
      INTO key_match
      FROM pg_catalog.unnest(r.business_key) u(c)
      JOIN pg_attribute a ON a.attrelid = history AND a.attname = u.c;
    SELECT pg_catalog.string_agg(pg_catalog.format('%I', u.c), ', ' ORDER BY u.n),
           pg_catalog.string_agg(pg_catalog.format('s.%I', u.c), ', ' ORDER BY u.n)
      INTO cols, staged_cols
      FROM pg_catalog.unnest(r.business_key || r.tracked) WITH ORDINALITY u(c, n);
    -- equal to warden.hash_diff(s, tracked), without building each row
    SELECT pg_catalog.format('warden._hash_diff_values(%s)', pg_catalog.string_agg(pg_catalog.format('s.%I', u.c), ', ' ORDER BY u.n))
      INTO staged_hash
      FROM pg_catalog.unnest(r.tracked) WITH ORDINALITY u(c, n);

    -- Which current versions changed. For types whose equality is exactly
    -- hash_diff's (built-in scalars, deterministic collations), a row
    -- differs from its version iff some column IS DISTINCT FROM it, which
    -- is cheaper than hashing every staging row; otherwise compare hashes.
    IF (SELECT pg_catalog.bool_and(
                 COALESCE(NULLIF(t.typbasetype, 0), t.oid) IN (
                   'int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'float4'::regtype, 'float8'::regtype,
                   'numeric'::regtype, 'text'::regtype, 'varchar'::regtype, 'bpchar'::regtype, 'bool'::regtype,
                   'date'::regtype, 'time'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype,
                   'interval'::regtype, 'uuid'::regtype, 'bytea'::regtype)
                 AND sa.atttypid = ha.atttypid
                 AND (ha.attcollation = 0 OR (SELECT k.collisdeterministic FROM pg_collation k WHERE k.oid = ha.attcollation)))
          FROM pg_catalog.unnest(r.tracked) u(c)
          JOIN pg_attribute ha ON ha.attrelid = history AND ha.attname = u.c
          JOIN pg_attribute sa ON sa.attrelid = staging AND sa.attname = u.c AND NOT sa.attisdropped
          JOIN pg_type t ON t.oid = ha.atttypid) THEN
        SELECT pg_catalog.format('ROW(%s) IS DISTINCT FROM ROW(%s)',
                                 pg_catalog.string_agg(pg_catalog.format('h.%I', u.c), ', ' ORDER BY u.n),
                                 pg_catalog.string_agg(pg_catalog.format('s.%I', u.c), ', ' ORDER BY u.n))
          INTO changed_expr
          FROM pg_catalog.unnest(r.tracked) WITH ORDINALITY u(c, n);
    ELSE
        changed_expr := pg_catalog.format('h.hash_diff OPERATOR(pg_catalog.<>) %s', staged_hash);
    END IF;

    -- one batch at a time; the trigger's writes wait too
    EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', history);

    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s', staging) INTO staged;

    BEGIN
        -- 1. close the current version of every key whose values changed
        EXECUTE pg_catalog.format(
            'WITH closed AS (UPDATE %s h SET valid_to = $1, is_current = false FROM %s s '
            'WHERE %s AND h.is_current AND %s RETURNING h.valid_from OPERATOR(pg_catalog.>) $1 AS too_early) '
            'SELECT pg_catalog.count(*), COALESCE(pg_catalog.bool_or(too_early), false) FROM closed',
            history, staging, key_match, changed_expr)
          INTO changed, too_early
          USING as_of;
        IF too_early THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('as_of %s is earlier than the current version of a changed key', as_of),
                HINT = 'Load batches in time order; as_of must not precede the versions it closes.';
        END IF;
        -- 2. open a version for every key without a current one (new keys
        --    and the ones just closed)
        EXECUTE pg_catalog.format(
            'INSERT INTO %s (%s, hash_diff, valid_from, valid_to, is_current, op, txid) '
            'SELECT %s, %s, $1, ''infinity''::pg_catalog.timestamptz, true, '
            'CASE WHEN EXISTS (SELECT FROM %s h WHERE %s) THEN ''U'' ELSE ''I'' END, pg_catalog.pg_current_xact_id() '
            'FROM %s s WHERE NOT EXISTS (SELECT FROM %s h WHERE %s AND h.is_current)',
            history, cols, staged_cols, staged_hash, history, key_match, staging, history, key_match)
          USING as_of;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        -- 3. tombstone the keys the batch no longer has
        IF close_missing THEN
            EXECUTE pg_catalog.format(
                'WITH gone AS (UPDATE %s h SET valid_to = $1, is_current = false '
                'WHERE h.is_current AND NOT EXISTS (SELECT FROM %s s WHERE %s) RETURNING h.*) '
                'INSERT INTO %s (%s, hash_diff, valid_from, valid_to, is_current, op, txid) '
                'SELECT %s, s.hash_diff, $1, $1, false, ''D'', pg_catalog.pg_current_xact_id() FROM gone s',
                history, staging, key_match, history, cols, staged_cols)
              USING as_of;
            GET DIAGNOSTICS vanished = ROW_COUNT;
        END IF;
    EXCEPTION WHEN not_null_violation THEN
        RAISE EXCEPTION USING ERRCODE = 'not_null_violation',
            MESSAGE = pg_catalog.format('staging table %s has rows with a NULL business key', staging),
            HINT = 'Every staging row needs its business key.';
    WHEN unique_violation THEN
        RAISE EXCEPTION USING ERRCODE = 'cardinality_violation',
            MESSAGE = pg_catalog.format('staging table %s has more than one row for a business key', staging),
            HINT = 'Deduplicate first, e.g. SELECT DISTINCT ON (<key>) ... ORDER BY <key>, <loaded_at> DESC.';
    END;
    closed := changed + vanished;
    unchanged := staged - inserted;
    RETURN NEXT;
END
$fn$;

CREATE FUNCTION warden.scd2_as_of(history anyelement, ts timestamptz) RETURNS SETOF anyelement
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    rel regclass;
BEGIN
    SELECT NULLIF(t.typrelid, 0) INTO rel FROM pg_type t WHERE t.oid = pg_catalog.pg_typeof(history);
    IF rel IS NULL OR NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = 'valid_to' AND NOT a.attisdropped) THEN
        RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
            MESSAGE = pg_catalog.format('%s is not the row type of a history table', pg_catalog.pg_typeof(history)),
            HINT = 'Pass NULL cast to the history table''s type: warden.scd2_as_of(NULL::customers_history, ''2026-01-01'').';
    END IF;
    RETURN QUERY EXECUTE pg_catalog.format(
        'SELECT * FROM %s h WHERE h.valid_from OPERATOR(pg_catalog.<=) $1 AND $1 OPERATOR(pg_catalog.<) h.valid_to', rel)
      USING ts;
END
$fn$;

COMMENT ON FUNCTION warden.scd2_merge(regclass, regclass, timestamptz, boolean) IS
  'Loads a batch from a staging table (same column names) into a history made by scd2_track: closes changed versions and opens new ones at as_of; with close_missing, tombstones keys absent from the batch. Idempotent; duplicate keys in the batch are refused (21000).';
COMMENT ON FUNCTION warden.scd2_as_of(anyelement, timestamptz) IS
  'The versions of a history valid at ts: SELECT * FROM warden.scd2_as_of(NULL::customers_history, ts).';
"#,
    name = "scd2_merge",
    requires = ["scd2_track"],
);
