//! `warden.scd2_track` / `warden.scd2_untrack` / `warden.scd2_tables`:
//! one call gives a table a `<table>_history` kept by a trigger.
//!
//! DDL over catalog data, so PL/pgSQL: every identifier comes from the
//! catalog and is quoted with `format('%I')` or `regclass` output. The
//! caller must own the source; the history table is created as theirs.
//! Writes to the history go through the trigger (`trigger.rs`), which runs
//! them as the history table's owner, so application roles need no
//! privileges on it and cannot forge versions. The statements the trigger
//! runs are built here, from the catalog, by `warden._scd2_statements`.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE TABLE warden.scd2_registry (
    source regclass PRIMARY KEY,
    history regclass NOT NULL UNIQUE,
    business_key name[] NOT NULL,
    tracked name[] NOT NULL,
    -- deferred tracking: the table the trigger appends changes to
    queue regclass UNIQUE,
    tracked_by name NOT NULL DEFAULT CURRENT_USER,
    tracked_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('warden.scd2_registry', '');
COMMENT ON INDEX warden.scd2_registry_pkey IS 'One registration per tracked source.';
COMMENT ON INDEX warden.scd2_registry_history_key IS 'A history belongs to one source.';
COMMENT ON INDEX warden.scd2_registry_queue_key IS 'A queue belongs to one source.';
COMMENT ON TABLE warden.scd2_registry IS
  'Tables tracked by warden.scd2_track: source, history, business key, tracked columns and, for deferred tracking, the queue. Written only by scd2_track/scd2_untrack.';

-- The default btree equality operator of a type, schema-qualified, for
-- comparisons that must not depend on the caller's search_path.
CREATE FUNCTION warden._scd2_equality(typ regtype) RETURNS text
STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT pg_catalog.format('OPERATOR(%I.%s)', n.nspname, o.oprname)
    FROM pg_opclass c
    JOIN pg_am am ON am.oid = c.opcmethod AND am.amname = 'btree'
    JOIN pg_amop ao ON ao.amopfamily = c.opcfamily AND ao.amopstrategy = 3
                   AND ao.amoplefttype = c.opcintype AND ao.amoprighttype = c.opcintype
    JOIN pg_operator o ON o.oid = ao.amopopr
    JOIN pg_namespace n ON n.oid = o.oprnamespace
   WHERE c.opcdefault
     AND (c.opcintype = typ
          OR c.opcintype = (SELECT t.typbasetype FROM pg_type t WHERE t.oid = typ AND t.typtype = 'd')
          OR EXISTS (SELECT FROM pg_cast k WHERE k.castsource = typ AND k.casttarget = c.opcintype AND k.castmethod = 'b'))
   ORDER BY (c.opcintype = typ) DESC
   LIMIT 1
$fn$;

-- "alias.k1 = $1 AND alias.k2 = $2 ...": the business key of a history
-- row compared with the first statement parameters.
CREATE FUNCTION warden._scd2_key_match(hist regclass, business_key name[], alias text) RETURNS text
STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT pg_catalog.string_agg(pg_catalog.format('%I.%I %s $%s', alias, a.attname, warden._scd2_equality(a.atttypid), u.n), ' AND ' ORDER BY u.n)
    FROM pg_catalog.unnest(business_key) WITH ORDINALITY u(col, n)
    JOIN pg_attribute a ON a.attrelid = hist AND a.attname = u.col
$fn$;

-- The statements the trigger runs for a tracked source, all parameters
-- alike: $1..$k the business key, then the tracked columns, then the
-- hash_diff and the op. (A deferred source runs none: its trigger
-- appends to the queue directly.)
CREATE FUNCTION warden._scd2_statements(src regclass) RETURNS text[]
STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r warden.scd2_registry;
    k int;
    m int;
    cols text;
    params text;
    tracked_cols text;
    tracked_params text;
    h text;
    op text;
    last_end text;
    closed_by_us text;
    closed_cols text;
    close_current text;
    now_ text := 'pg_catalog.now()';
    xid text := 'pg_catalog.pg_current_xact_id()';
BEGIN
    SELECT * INTO r FROM warden.scd2_registry g WHERE g.source = src;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('%s is not tracked by warden.scd2_track', src),
            HINT = 'Drop the leftover trigger warden_scd2 or call warden.scd2_track() again.';
    END IF;
    k := pg_catalog.cardinality(r.business_key);
    m := pg_catalog.cardinality(r.tracked);
    SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ' ORDER BY n),
           pg_catalog.string_agg(pg_catalog.format('$%s', n), ', ' ORDER BY n)
      INTO cols, params
      FROM pg_catalog.unnest(r.business_key || r.tracked) WITH ORDINALITY u(c, n);
    SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ' ORDER BY n),
           pg_catalog.string_agg(pg_catalog.format('$%s', k + n), ', ' ORDER BY n)
      INTO tracked_cols, tracked_params
      FROM pg_catalog.unnest(r.tracked) WITH ORDINALITY u(c, n);
    h := pg_catalog.format('$%s', k + m + 1);
    op := pg_catalog.format('$%s', k + m + 2);
    -- Version times are transaction start times (now()), but transactions
    -- on one key commit in lock order, not start order: a version is never
    -- closed before it began, nor opened before the key's last version
    -- ended, so the versions of a key never overlap.
    -- a new key's first version starts after the key's last version
    -- ended (when it was deleted before)
    last_end := pg_catalog.format(
        'COALESCE((SELECT pg_catalog.max(p.valid_to) FROM %s p WHERE %s AND NOT p.is_current), ''-infinity''::pg_catalog.timestamptz)',
        r.history, warden._scd2_key_match(r.history, r.business_key, 'p'));
    -- close the current version if an earlier transaction opened it; the
    -- statements that use it open the next version (or a tombstone) where
    -- it ends, in the same statement, after the close (so the unique index
    -- never sees two current versions)
    close_current := pg_catalog.format(
        'WITH c AS (UPDATE %s h SET valid_to = GREATEST(%s, h.valid_from), is_current = false '
        'WHERE %s AND h.is_current AND h.txid OPERATOR(pg_catalog.<>) %s RETURNING %%s) ',
        r.history, now_, warden._scd2_key_match(r.history, r.business_key, 'h'), xid);
    -- a tombstone repeats the version it ends (what was last committed,
    -- not what the deleting transaction changed it to first)
    SELECT pg_catalog.string_agg(pg_catalog.format('c.%I', c), ', ' ORDER BY n) INTO closed_cols
      FROM pg_catalog.unnest(r.business_key || r.tracked) WITH ORDINALITY u(c, n);
    -- a version this transaction closed: the UPDATE that closed it made
    -- the row's xmin ours (own versions are replaced, never closed); once
    -- the transaction has deleted the key (written its tombstone), what it
    -- inserts later is a new version, never the closed one reopened, and
    -- a second delete needs no second tombstone
    closed_by_us := pg_catalog.format(
        'NOT c.is_current AND c.op OPERATOR(pg_catalog.<>) ''D'' '
        'AND c.xmin OPERATOR(pg_catalog.=) pg_catalog.xid(pg_catalog.pg_current_xact_id()) '
        'AND NOT EXISTS (SELECT FROM %s t WHERE %s AND t.op OPERATOR(pg_catalog.=) ''D'' AND t.txid OPERATOR(pg_catalog.=) %s)',
        r.history, warden._scd2_key_match(r.history, r.business_key, 't'), xid);
    RETURN ARRAY[
      -- 0 close the current version and open the next one
      pg_catalog.format('%s INSERT INTO %s (%s, hash_diff, valid_from, valid_to, is_current, op, txid) '
                        'SELECT %s, %s, c.valid_to, ''infinity''::pg_catalog.timestamptz, true, %s, %s FROM c',
                        pg_catalog.format(close_current, 'h.valid_to'), r.history, cols, params, h, op, xid),
      -- 1 close the current version and write a tombstone where it ends
      pg_catalog.format('%s INSERT INTO %s (%s, hash_diff, valid_from, valid_to, is_current, op, txid) '
                        'SELECT %s, c.hash_diff, c.valid_to, c.valid_to, false, ''D'', %s FROM c',
                        pg_catalog.format(close_current, 'h.*'), r.history, cols, closed_cols, xid),
      -- 2 replace the version this transaction opened
      pg_catalog.format('UPDATE %s h SET (%s, hash_diff) = ROW(%s, %s) WHERE %s AND h.is_current AND h.txid OPERATOR(pg_catalog.=) %s',
                        r.history, tracked_cols, tracked_params, h, warden._scd2_key_match(r.history, r.business_key, 'h'), xid),
      -- 3 drop the version this transaction opened and reopen the one it
      --   closed, if that one has these values (a change undone)
      pg_catalog.format('WITH own AS (DELETE FROM %s o WHERE %s AND o.is_current AND o.txid OPERATOR(pg_catalog.=) %s '
                        'AND EXISTS (SELECT FROM %s c WHERE %s AND %s AND c.hash_diff OPERATOR(pg_catalog.=) %s) RETURNING 1) '
                        'UPDATE %s c SET valid_to = ''infinity''::pg_catalog.timestamptz, is_current = true '
                        'WHERE %s AND %s AND c.hash_diff OPERATOR(pg_catalog.=) %s AND EXISTS (SELECT FROM own)',
                        r.history, warden._scd2_key_match(r.history, r.business_key, 'o'), xid,
                        r.history, warden._scd2_key_match(r.history, r.business_key, 'c'), closed_by_us, h,
                        r.history, warden._scd2_key_match(r.history, r.business_key, 'c'), closed_by_us, h),
      -- 4 drop the version this transaction opened; returns a row if the
      --   transaction had closed an earlier version (which then needs a
      --   tombstone)
      pg_catalog.format('WITH own AS (DELETE FROM %s o WHERE %s AND o.is_current AND o.txid OPERATOR(pg_catalog.=) %s RETURNING 1) '
                        'SELECT 1 FROM %s c WHERE %s AND %s AND EXISTS (SELECT FROM own)',
                        r.history, warden._scd2_key_match(r.history, r.business_key, 'o'), xid,
                        r.history, warden._scd2_key_match(r.history, r.business_key, 'c'), closed_by_us),
      -- 5 tombstone of the version this transaction closed (and then
      --   dropped the version that replaced it)
      pg_catalog.format('INSERT INTO %s (%s, hash_diff, valid_from, valid_to, is_current, op, txid) '
                        'SELECT %s, c.hash_diff, e.t, e.t, false, ''D'', %s FROM %s c, (SELECT GREATEST(%s, %s) AS t) e WHERE %s AND %s',
                        r.history, cols, closed_cols, xid, r.history, now_, last_end,
                        warden._scd2_key_match(r.history, r.business_key, 'c'), closed_by_us),
      -- 6 open a version, not before the key's last version ended
      pg_catalog.format('INSERT INTO %s (%s, hash_diff, valid_from, valid_to, is_current, op, txid) VALUES (%s, %s, GREATEST(%s, %s), ''infinity''::pg_catalog.timestamptz, true, %s, %s)',
                        r.history, cols, params, h, now_, last_end, op, xid)
    ];
END
$fn$;

-- scd2_track's part that runs as the caller, through the function
-- manager (track.rs): checks, the history and queue tables, the initial
-- load. NULL made_tracked: already tracked that way (made_history is it).
CREATE FUNCTION warden._scd2_track_tables(source regclass, business_key text[], tracked text[], deferred boolean,
                                          OUT made_history oid, OUT made_queue oid, OUT made_tracked text[], OUT made_tenant_column text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    kind "char";
    nsp name;
    rel name;
    hist_name text;
    hist regclass;
    queue_name text;
    queue regclass;
    existing warden.scd2_registry;
    col text;
    bad text;
    tenant_col name;
    forced boolean;
    col_defs text;
    key_list text;
    name_check record;
BEGIN
    SELECT c.relkind, n.nspname, c.relname INTO kind, nsp, rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
    IF kind IS NULL OR kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
            MESSAGE = pg_catalog.format('%s is not a table', source),
            HINT = 'SCD2 tracking needs a table with row triggers.';
    END IF;
    -- Row triggers of a partitioned table fire on its partitions, but its
    -- TRUNCATE trigger does not fire for a TRUNCATE of one partition, so a
    -- partition could be emptied behind the history's back.
    IF kind = 'p' THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('%s is a partitioned table, which warden.scd2_track does not support yet', source),
            HINT = 'Track each partition on its own (each gets its own history).';
    END IF;
    IF NOT pg_catalog.pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = source), 'USAGE') THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format('must be owner of table %s', source),
            HINT = 'Run warden.scd2_track() as the table''s owner.';
    END IF;
    -- the worker cannot reach another session's temporary table
    IF deferred AND (SELECT c.relpersistence FROM pg_class c WHERE c.oid = source) = 't' THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('%s is a temporary table, which deferred tracking does not support', source),
            HINT = 'Track it without deferred => true.';
    END IF;
    -- no write may fall between the initial load and the trigger
    EXECUTE pg_catalog.format('LOCK TABLE ONLY %s IN SHARE ROW EXCLUSIVE MODE', source);
    IF business_key IS NULL OR pg_catalog.cardinality(business_key) = 0 OR pg_catalog.array_position(business_key, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'business_key must name at least one column and no NULLs',
            HINT = 'Pass the columns that identify a row, e.g. ARRAY[''customer_id''].';
    END IF;
    -- default: every column but the key, in declared order
    IF tracked IS NULL THEN
        SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attnum) INTO tracked
          FROM pg_attribute a
         WHERE a.attrelid = source AND a.attnum > 0 AND NOT a.attisdropped AND a.attname::text <> ALL (business_key);
    END IF;
    IF tracked IS NULL OR pg_catalog.cardinality(tracked) = 0 OR pg_catalog.array_position(tracked, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'tracked must name at least one column and no NULLs',
            DETAIL = 'A version history of no columns would never change.',
            HINT = 'Pass the columns whose changes make a new version, or NULL for every column but the key.';
    END IF;
    SELECT c INTO bad FROM pg_catalog.unnest(business_key || tracked) c GROUP BY c HAVING pg_catalog.count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_column',
            MESSAGE = pg_catalog.format('column %I is listed twice', bad),
            HINT = 'A column is either part of the business key or tracked, once.';
    END IF;
    FOREACH col IN ARRAY business_key || tracked LOOP
        IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = source AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_column',
                MESSAGE = pg_catalog.format('column %I does not exist in %s', col, source);
        END IF;
        IF col IN ('hash_diff', 'valid_from', 'valid_to', 'is_current', 'op', 'txid') THEN
            RAISE EXCEPTION USING ERRCODE = 'duplicate_column',
                MESSAGE = pg_catalog.format('column %I clashes with a history column of the same name', col),
                HINT = 'Leave it out of tracked, or rename it.';
        END IF;
    END LOOP;
    FOREACH col IN ARRAY business_key LOOP
        IF NOT (SELECT a.attnotnull FROM pg_attribute a WHERE a.attrelid = source AND a.attname = col) THEN
            RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('business key column %I of %s is nullable', col, source),
                HINT = pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', source, col);
        END IF;
    END LOOP;
    -- the key must identify one row, or versions of two rows would mix
    IF NOT EXISTS (
        SELECT FROM pg_index i
         -- valid and checked per row: a DEFERRABLE key can be duplicated
         -- mid-transaction, which the history's trigger would see
         WHERE i.indrelid = source AND i.indisunique AND i.indisvalid AND i.indimmediate
           AND i.indpred IS NULL AND i.indexprs IS NULL
           AND i.indnkeyatts = pg_catalog.cardinality(business_key)
           AND (SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attname)
                  FROM pg_attribute a WHERE a.attrelid = source AND a.attnum = ANY (i.indkey::int2[]))
               = (SELECT pg_catalog.array_agg(c ORDER BY c) FROM pg_catalog.unnest(business_key) c)) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('the business key of %s is not unique', source),
            DETAIL = 'A valid, not deferrable primary key or unique constraint on exactly the business key columns is required.',
            HINT = pg_catalog.format('ALTER TABLE %s ADD UNIQUE (%s)', source,
                                     (SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ') FROM pg_catalog.unnest(business_key) c));
    END IF;

    SELECT * INTO existing FROM warden.scd2_registry r WHERE r.source = _scd2_track_tables.source;
    IF FOUND THEN
        IF existing.business_key::text[] = business_key AND existing.tracked::text[] = tracked
           AND (existing.queue IS NOT NULL) = deferred THEN
            RAISE NOTICE '% is already tracked into %', source, existing.history;
            made_history := existing.history;
            RETURN;
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = pg_catalog.format('%s is already tracked into %s with other columns or mode', source, existing.history),
            HINT = pg_catalog.format('SELECT warden.scd2_untrack(%L) first.', source::text);
    END IF;

    -- a tenant-isolated source gets a tenant-isolated history
    SELECT t.tenant_column INTO tenant_col FROM warden.tenant_tables t WHERE t.table_name = source;
    IF tenant_col IS NOT NULL AND tenant_col::text <> ALL (business_key || tracked) THEN
        tracked := tracked || tenant_col::text;
    END IF;

    hist_name := rel || '_history';
    IF deferred THEN
        queue_name := rel || '_history_queue';
    END IF;
    -- the tables this makes next to the source: refused if too long or taken
    FOR name_check IN SELECT * FROM (VALUES
            (hist_name, 'history', 'Rename the table to something shorter.'),
            (queue_name, 'queue', 'Rename the table to something shorter, or track it without deferred.')) v(candidate, what, too_long_hint)
            WHERE v.candidate IS NOT NULL LOOP
        IF pg_catalog.octet_length(name_check.candidate) > 63 THEN
            RAISE EXCEPTION USING ERRCODE = 'name_too_long',
                MESSAGE = pg_catalog.format('%s table name %I would be longer than 63 bytes', name_check.what, name_check.candidate),
                HINT = name_check.too_long_hint;
        END IF;
        IF pg_catalog.to_regclass(pg_catalog.format('%I.%I', nsp, name_check.candidate)) IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'duplicate_table',
                MESSAGE = pg_catalog.format('relation %I.%I already exists', nsp, name_check.candidate),
                HINT = pg_catalog.format('Rename or drop it; warden.scd2_track creates the %s table itself.', name_check.what);
        END IF;
    END LOOP;
    SELECT pg_catalog.string_agg(pg_catalog.format('%I %s%s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                                                   CASE WHEN u.n <= pg_catalog.cardinality(business_key) THEN ' NOT NULL' ELSE '' END),
                                 ', ' ORDER BY u.n)
      INTO col_defs
      FROM pg_catalog.unnest(business_key || tracked) WITH ORDINALITY u(c, n)
      JOIN pg_attribute a ON a.attrelid = source AND a.attname = u.c;
    SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ' ORDER BY n) INTO key_list
      FROM pg_catalog.unnest(business_key) WITH ORDINALITY u(c, n);
    EXECUTE pg_catalog.format(
        'CREATE TABLE %I.%I (%s, hash_diff bytea NOT NULL, valid_from timestamptz NOT NULL, valid_to timestamptz NOT NULL, '
        'is_current boolean NOT NULL, op text NOT NULL, txid xid8 NOT NULL)',
        nsp, hist_name, col_defs);
    hist := pg_catalog.format('%I.%I', nsp, hist_name)::regclass;
    EXECUTE pg_catalog.format('CREATE UNIQUE INDEX ON %s (%s) WHERE is_current', hist, key_list);
    -- A key's versions in time order, and the primary key: a transaction
    -- writes at most one version and one tombstone of a key (its own
    -- version is replaced, never repeated), so (key, valid_from, txid, op)
    -- is unique without a surrogate column to maintain.
    EXECUTE pg_catalog.format('ALTER TABLE %s ADD PRIMARY KEY (%s, valid_from, txid, op)', hist, key_list);
    EXECUTE pg_catalog.format('COMMENT ON TABLE %s IS %L', hist,
        pg_catalog.format('SCD2 history of %s kept by warden.scd2_track (business key %s).', source, key_list));
    IF deferred THEN
        -- no constraint but NOT NULL and the primary key: a heap insert and
        -- one index insert per change (the trigger maintains both)
        EXECUTE pg_catalog.format(
            'CREATE TABLE %I.%I (%s, hash_diff bytea NOT NULL, op text NOT NULL, txid xid8 NOT NULL, '
            'changed_at timestamptz NOT NULL, change_lsn pg_lsn NOT NULL, PRIMARY KEY (txid, change_lsn))',
            nsp, queue_name, col_defs);
        queue := pg_catalog.format('%I.%I', nsp, queue_name)::regclass;
        EXECUTE pg_catalog.format('COMMENT ON TABLE %s IS %L', queue,
            pg_catalog.format('Changes of %s waiting for the pg_warden worker to apply them to %s (warden.scd2_track deferred). Written by its trigger only.', source, hist));
    END IF;
    -- The current rows, loaded as the caller (the owner): every row, so a
    -- FORCE ROW LEVEL SECURITY source is read without FORCE, which the
    -- lock taken here keeps any other session from seeing.
    forced := (SELECT c.relforcerowsecurity FROM pg_class c WHERE c.oid = source);
    IF forced THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', source);
    END IF;
    EXECUTE pg_catalog.format(
        'INSERT INTO %s (%s, hash_diff, valid_from, valid_to, is_current, op, txid) '
        'SELECT %s, warden.hash_diff(s, $1), pg_catalog.now(), ''infinity''::pg_catalog.timestamptz, true, ''I'', pg_catalog.pg_current_xact_id() '
        'FROM ONLY %s s',
        hist,
        (SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ' ORDER BY n) FROM pg_catalog.unnest(business_key || tracked) WITH ORDINALITY u(c, n)),
        (SELECT pg_catalog.string_agg(pg_catalog.format('s.%I', c), ', ' ORDER BY n) FROM pg_catalog.unnest(business_key || tracked) WITH ORDINALITY u(c, n)),
        source) USING tracked;
    IF forced THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', source);
    END IF;
    made_history := hist;
    made_queue := queue;
    made_tracked := tracked;
    made_tenant_column := tenant_col;
END
$fn$;

CREATE FUNCTION warden._scd2_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
        MESSAGE = pg_catalog.format('TRUNCATE of %s would bypass its SCD2 history', TG_RELID::regclass),
        HINT = 'DELETE the rows instead (each is closed in the history), or call warden.scd2_untrack() first.';
END
$fn$;

-- Dropping a source ends its tracking (the history stays as an archive,
-- its queued changes applied first); dropping a history or queue that is
-- still written to is refused.
CREATE FUNCTION warden._scd2_on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN WITH dropped AS (
                 SELECT o.objid FROM pg_catalog.pg_event_trigger_dropped_objects() o
                  WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objsubid = 0)
             SELECT g.source::oid AS source, g.queue,
                    g.source::oid IN (SELECT d.objid FROM dropped d) AS source_dropped,
                    g.history::oid IN (SELECT d.objid FROM dropped d) AS history_dropped,
                    COALESCE(g.queue::oid IN (SELECT d.objid FROM dropped d), false) AS queue_dropped
               FROM warden.scd2_registry g
              WHERE g.source::oid IN (SELECT d.objid FROM dropped d)
                 OR g.history::oid IN (SELECT d.objid FROM dropped d)
                 OR g.queue::oid IN (SELECT d.objid FROM dropped d) LOOP
        IF NOT r.source_dropped THEN
            RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
                MESSAGE = 'cannot drop an SCD2 history or queue table while its source is tracked',
                HINT = 'Call warden.scd2_untrack(<source>, drop_history => true) instead.';
        END IF;
        IF r.queue IS NOT NULL AND NOT r.queue_dropped AND NOT r.history_dropped THEN
            PERFORM warden._scd2_apply(r.source::regclass);
        END IF;
        -- forgotten before the queue goes, so this trigger, firing for
        -- that DROP too, finds nothing to refuse
        DELETE FROM warden.scd2_registry g WHERE g.source::oid = r.source;
        IF r.queue IS NOT NULL AND NOT r.queue_dropped THEN
            EXECUTE pg_catalog.format('DROP TABLE %s', r.queue);
        END IF;
    END LOOP;
END
$fn$;
CREATE EVENT TRIGGER warden_scd2_on_drop ON sql_drop EXECUTE FUNCTION warden._scd2_on_drop();

CREATE VIEW warden.scd2_tables AS
SELECT r.source, r.history, r.business_key, r.tracked,
       r.queue IS NOT NULL AS deferred, r.queue,
       EXISTS (SELECT FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid = r.source AND t.tgname = 'warden_scd2' AND t.tgenabled <> 'D') AS trigger_enabled,
       t.tenant_column,
       r.tracked_by, r.tracked_at
  FROM warden.scd2_registry r
  LEFT JOIN warden.tenant_tables t ON t.table_name = r.history;

COMMENT ON FUNCTION warden._scd2_equality(regtype) IS 'Internal: the default btree equality operator of a type, schema-qualified.';
COMMENT ON FUNCTION warden._scd2_key_match(regclass, name[], text) IS 'Internal: the business key comparison in the SCD2 trigger''s statements.';
COMMENT ON FUNCTION warden._scd2_statements(regclass) IS 'Internal: the statements the SCD2 trigger runs for a source, built from the catalog.';
COMMENT ON FUNCTION warden._scd2_track_tables(regclass, text[], text[], boolean) IS
  'Internal: the part of scd2_track that runs as the caller: checks, the history and queue tables, the initial load.';
COMMENT ON FUNCTION warden._scd2_refuse_truncate() IS 'Internal: refuses TRUNCATE of a tracked source.';
COMMENT ON FUNCTION warden._scd2_on_drop() IS 'Internal: ends tracking when a source is dropped (applying and dropping its queue); refuses dropping a history or queue in use.';
COMMENT ON VIEW warden.scd2_tables IS 'Tables tracked by warden.scd2_track, with their history, key, tracked columns, mode (deferred, queue) and trigger state.';
"#,
    name = "scd2_track",
    requires = ["scd2_hash_diff", "tenancy_policies", "scd2_trigger"],
);
