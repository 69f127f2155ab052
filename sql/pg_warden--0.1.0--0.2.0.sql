-- pg_warden 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_warden UPDATE).
--
-- Every change to SQL objects made after 0.1.0 goes here as well as into
-- the generated install script (src/), in the same commit. The upgrade
-- test (pgrx-tests upgrade.rs) creates the extension at 0.1.0 with data,
-- runs this, and compares the result with a fresh install object by
-- object: functions, tables, columns, indexes, constraints, policies,
-- triggers, grants and comments.
\echo Use "ALTER EXTENSION pg_warden UPDATE" to load this file. \quit

-- 0.2.0: the role warden.break_glass() acts as (schema.rs)
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'warden_break_glass') THEN
    CREATE ROLE warden_break_glass NOLOGIN BYPASSRLS;
    GRANT warden_admin TO warden_break_glass;
  END IF;
END
$roles$;

-- 0.2.0: disable_tenancy is recorded in the audit chain: the body moves
-- to _disable_tenancy (run as the caller through the function manager)
-- and the public function becomes Rust (tenancy/policies.rs)
ALTER FUNCTION warden.disable_tenancy(regclass) RENAME TO _disable_tenancy;
COMMENT ON FUNCTION warden._disable_tenancy(regclass) IS
  'Internal: what warden.disable_tenancy undoes, run as the caller.';
REVOKE ALL ON FUNCTION warden._disable_tenancy(regclass) FROM PUBLIC, warden_admin;
CREATE FUNCTION warden.disable_tenancy(tbl regclass) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'disable_tenancy_wrapper';
REVOKE EXECUTE ON FUNCTION warden.disable_tenancy(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION warden.disable_tenancy(regclass) TO warden_admin;
COMMENT ON FUNCTION warden.disable_tenancy(regclass) IS
  'Removes what warden.enable_tenancy set up (policies, default, FORCE; RLS too when no other policy remains). The index stays.';

-- 0.2.0: a commit-time wake-up of one task (workers/wakeup.rs)
CREATE FUNCTION warden._worker_wake_task_on_commit(task text) RETURNS void
  STRICT VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', '_worker_wake_task_on_commit_wrapper';
REVOKE EXECUTE ON FUNCTION warden._worker_wake_task_on_commit(text) FROM PUBLIC;
COMMENT ON FUNCTION warden._worker_wake_task_on_commit(text) IS
  'Internal: runs the named task of this database''s pg_warden worker when the current transaction commits (never on rollback).';

-- 0.2.0: the audit chain (issue 13, first part: src/audit/)
CREATE TABLE warden.audit_log (
    chain          text NOT NULL,
    seq            bigint NOT NULL CHECK (seq > 0),
    ts             timestamptz NOT NULL,
    event_type     text NOT NULL,
    tenant         text,
    actor          text,
    actor_kind     text,
    correlation_id text,
    txid           xid8 NOT NULL,
    fields         jsonb,
    fields_salt    bytea,
    payload_digest bytea NOT NULL,
    prev_hash      bytea NOT NULL,
    hash           bytea NOT NULL,
    redacted_at    timestamptz,
    PRIMARY KEY (chain, seq)
);
CREATE TABLE warden.audit_inbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts             timestamptz NOT NULL,
    event_type     text NOT NULL,
    tenant         text,
    actor          text,
    actor_kind     text,
    correlation_id text,
    txid           xid8 NOT NULL,
    fields         jsonb NOT NULL,
    events         integer CHECK (events > 0)
);
-- written once, read once by the sequencer and deleted: compressing a
-- captured statement's batch costed the writer more than the row itself
ALTER TABLE warden.audit_inbox ALTER COLUMN fields SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('warden.audit_log', '');

CREATE FUNCTION warden._audit_refuse_change() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'audit_refuse_change';
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON warden.audit_log
    FOR EACH ROW EXECUTE FUNCTION warden._audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON warden.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION warden._audit_refuse_change();
ALTER TABLE warden.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
ALTER TABLE warden.audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;

COMMENT ON TABLE warden.audit_log IS
  'The tamper-evident audit log: one hash chain per tenant and one named global, seq gapless from 1 per chain (format v1 in the README). Append-only.';
COMMENT ON TABLE warden.audit_inbox IS
  'Events emitted in committed transactions and not chained yet (the sequencer task chains and removes them). Internal.';
COMMENT ON COLUMN warden.audit_inbox.events IS
  'NULL: the row is one event and fields its fields; n: fields is an array of n events'' fields sharing the row''s header (a captured statement''s rows, in the order they changed).';
COMMENT ON INDEX warden.audit_log_pkey IS 'One event per (chain, seq).';
COMMENT ON INDEX warden.audit_inbox_pkey IS 'Inbox rows in arrival order.';
COMMENT ON SEQUENCE warden.audit_inbox_id_seq IS 'Arrival order of inbox rows.';
COMMENT ON FUNCTION warden._audit_refuse_change() IS 'Internal: refuses UPDATE, DELETE and TRUNCATE of warden.audit_log and warden.audit_checkpoints (but for warden.audit_prune and warden.audit_redact).';
COMMENT ON TRIGGER audit_log_append_only ON warden.audit_log IS 'Refuses UPDATE and DELETE, also under session_replication_role = replica.';
COMMENT ON TRIGGER audit_log_no_truncate ON warden.audit_log IS 'Refuses TRUNCATE, also under session_replication_role = replica.';

CREATE FUNCTION warden.audit_emit(event_type text, fields jsonb DEFAULT '{}', durable boolean DEFAULT false, strict boolean DEFAULT false) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_emit_wrapper';
COMMENT ON FUNCTION warden.audit_emit(text, jsonb, boolean, boolean) IS
  'Records an audit event in the tenant''s chain (global without a tenant): in the current transaction (gone if it rolls back), or with durable => true whether or not it commits; strict => true (or warden.audit_strict) returns only once the event is committed.';
CREATE FUNCTION warden.set_actor(actor text, kind text DEFAULT 'user') RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_actor_wrapper';
CREATE FUNCTION warden.set_correlation_id(correlation_id text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'set_correlation_id_wrapper';
COMMENT ON FUNCTION warden.set_actor(text, text) IS
  'Names who acts (kind user, admin, service or system) for the audit events of the rest of the transaction.';
COMMENT ON FUNCTION warden.set_correlation_id(text) IS
  'Sets the correlation id (say, a request id) recorded with the audit events of the rest of the transaction.';
CREATE FUNCTION warden.audit_verify(chain text DEFAULT NULL, from_seq bigint DEFAULT 1)
  RETURNS TABLE (chain text, checked bigint, ok boolean, first_bad_seq bigint, reason text)
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_verify_wrapper';
COMMENT ON FUNCTION warden.audit_verify(text, bigint) IS
  'Verifies the audit chains (or one): per chain, how many events were checked, ok, and the first bad seq with its reason (edited, deleted, inserted, reordered, truncated, bad_signature).';
-- signed checkpoints (src/audit/checkpoints.rs), their key (crypto/audit_signing.rs)
ALTER TABLE warden.keys DROP CONSTRAINT keys_purpose_check;
ALTER TABLE warden.keys ADD CONSTRAINT keys_purpose_check
    CHECK (purpose IN ('data', 'blind_index', 'audit', 'token', 'audit_signing'));
CREATE TABLE warden.audit_checkpoints (
    chain             text NOT NULL,
    seq               bigint NOT NULL CHECK (seq > 0),
    hash              bytea NOT NULL,
    ts                timestamptz NOT NULL,
    system_identifier bigint NOT NULL,
    timeline          integer NOT NULL,
    signature         bytea NOT NULL,
    tenant            text,
    PRIMARY KEY (chain, seq)
);
SELECT pg_catalog.pg_extension_config_dump('warden.audit_checkpoints', '');
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON warden.audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION warden._audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON warden.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION warden._audit_refuse_change();
ALTER TABLE warden.audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_append_only;
ALTER TABLE warden.audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_no_truncate;
COMMENT ON TABLE warden.audit_checkpoints IS
  'Signed checkpoints of the audit chains (Ed25519, format v1 in the README; public key: warden.audit_public_key()). Append-only.';
COMMENT ON INDEX warden.audit_checkpoints_pkey IS 'One checkpoint per (chain, seq).';
COMMENT ON TRIGGER audit_checkpoints_append_only ON warden.audit_checkpoints IS 'Refuses UPDATE and DELETE, also under session_replication_role = replica.';
COMMENT ON TRIGGER audit_checkpoints_no_truncate ON warden.audit_checkpoints IS 'Refuses TRUNCATE, also under session_replication_role = replica.';

-- evidence (src/audit/evidence.rs) and status (src/audit/status.rs)
CREATE FUNCTION warden.audit_public_key() RETURNS bytea
  STRICT VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_public_key_wrapper';
CREATE FUNCTION warden.audit_digest(chain text DEFAULT NULL) RETURNS jsonb
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_digest_wrapper';
CREATE FUNCTION warden.audit_verify_digest(digest jsonb)
  RETURNS TABLE (chain text, seq bigint, ok boolean, reason text)
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_verify_digest_wrapper';
CREATE FUNCTION warden.audit_export(chain text, from_seq bigint DEFAULT 1) RETURNS SETOF text
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_export_wrapper';
CREATE FUNCTION warden.audit_status_snapshot()
  RETURNS TABLE (inbox_events bigint, oldest_unchained_at timestamptz, ring_events bigint,
                 ring_bytes bigint, ring_capacity bigint, ring_high_water bigint, ring_pushed bigint,
                 ring_waits bigint, signing_key boolean, last_checkpoint_at timestamptz)
  STRICT VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_status_snapshot_wrapper';
COMMENT ON FUNCTION warden.audit_public_key() IS
  'The Ed25519 public key the audit checkpoints verify under (NULL until the first checkpoint was signed); keep a copy outside the database.';
COMMENT ON FUNCTION warden.audit_digest(text) IS
  'The latest signed checkpoint of each audit chain (or of one), with the public key and the server identity, as JSON to keep outside the database.';
COMMENT ON FUNCTION warden.audit_verify_digest(jsonb) IS
  'Proves the audit log still holds and extends a digest kept from warden.audit_digest(): per chain, ok or why not (bad_signature, truncated, edited, ...).';
CREATE FUNCTION warden.audit_prune(chain text, before timestamptz) RETURNS bigint
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_prune_wrapper';
CREATE FUNCTION warden.audit_redact(chain text, seq bigint, reason text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_redact_wrapper';
COMMENT ON FUNCTION warden.audit_prune(text, timestamptz) IS
  'Deletes the chain''s events older than before (never younger than warden.audit_min_retention) up to its last signed checkpoint, which stays as the anchor the rest verifies from; returns how many; recorded in the chain.';
COMMENT ON FUNCTION warden.audit_redact(text, bigint, text) IS
  'Erases one event''s payload (fields and salt; the digest stays, so the chain still verifies); the row reads as redacted; recorded in the chain with the reason.';
-- table capture (src/audit/capture.rs, capture_trigger.rs)
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
CREATE FUNCTION warden._audit_capture() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'audit_capture';
COMMENT ON FUNCTION warden._audit_capture() IS
  'Internal: the statement trigger warden.audit_table installs; records the changed rows as audit events.';
CREATE FUNCTION warden.audit_table(tbl regclass, redact text[] DEFAULT '{}', exclude text[] DEFAULT '{}') RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_table_wrapper';
CREATE FUNCTION warden.audit_untable(tbl regclass) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'audit_untable_wrapper';
COMMENT ON FUNCTION warden.audit_table(regclass, text[], text[]) IS
  'Records the table''s INSERT, UPDATE (changed columns), DELETE and TRUNCATE as audit events (row.insert, ...), with the primary key; redacted columns as keyed fingerprints, excluded columns left out; tenant-isolated tables in each row''s chain. The caller must own the table.';
COMMENT ON FUNCTION warden.audit_untable(regclass) IS
  'Ends warden.audit_table''s capture of the table (recorded as audit.untable). The caller must own the table.';
CREATE FUNCTION warden.break_glass(reason text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'break_glass_wrapper';
COMMENT ON FUNCTION warden.break_glass(text) IS
  'Emergency access (warden_admin members, in a transaction block): records a durable admin.break_glass event with the reason, waits until it is committed, then acts as warden_break_glass (BYPASSRLS) until the transaction ends.';
COMMENT ON FUNCTION warden.audit_export(text, bigint) IS
  'One JSON line per event of the chain from from_seq on, and per checkpoint from the anchor before it: everything the offline verifier warden-verify needs.';
CREATE VIEW warden.audit_status AS
SELECT s.inbox_events, s.oldest_unchained_at,
       pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) s.oldest_unchained_at AS lag,
       s.ring_events, s.ring_bytes, s.ring_capacity, s.ring_high_water, s.ring_pushed, s.ring_waits,
       s.signing_key, s.last_checkpoint_at
  FROM warden.audit_status_snapshot() s;

-- one row per chain, found by skipping through the primary key
-- (chain, seq) instead of reading the whole log
CREATE VIEW warden.audit_chains WITH (security_invoker = true) AS
WITH RECURSIVE chains(chain) AS (
    (SELECT l.chain FROM warden.audit_log l ORDER BY l.chain LIMIT 1)
    UNION ALL
    SELECT (SELECT l.chain FROM warden.audit_log l
             WHERE l.chain OPERATOR(pg_catalog.>) c.chain ORDER BY l.chain LIMIT 1)
      FROM chains c WHERE c.chain IS NOT NULL
)
SELECT c.chain, h.tenant, h.seq AS last_seq, h.ts AS last_event_at,
       cp.seq AS last_checkpoint_seq, cp.ts AS last_checkpoint_at
  FROM chains c
  CROSS JOIN LATERAL (SELECT l.tenant, l.seq, l.ts FROM warden.audit_log l
                       WHERE l.chain OPERATOR(pg_catalog.=) c.chain ORDER BY l.seq DESC LIMIT 1) h
  LEFT JOIN LATERAL (SELECT k.seq, k.ts FROM warden.audit_checkpoints k
                      WHERE k.chain OPERATOR(pg_catalog.=) c.chain ORDER BY k.seq DESC LIMIT 1) cp ON true
 WHERE c.chain IS NOT NULL;

COMMENT ON FUNCTION warden.audit_status_snapshot() IS
  'The row of warden.audit_status, read now (the ring from shared memory).';
COMMENT ON VIEW warden.audit_status IS
  'The audit chain''s health: events waiting in the inbox and the oldest one''s age (lag), the durable ring''s depth, capacity, high-water mark and waits, whether a signing key exists, the last checkpoint.';
COMMENT ON VIEW warden.audit_chains IS
  'One row per audit chain the caller may read (row-level security applies): its tenant, last seq and event time, and its last signed checkpoint.';

REVOKE EXECUTE ON FUNCTION warden._audit_refuse_change(), warden.audit_emit(text, jsonb, boolean, boolean),
  warden.audit_verify(text, bigint), warden.set_actor(text, text), warden.set_correlation_id(text),
  warden.audit_public_key(), warden.audit_digest(text), warden.audit_verify_digest(jsonb),
  warden.audit_export(text, bigint), warden.audit_status_snapshot(),
  warden.audit_prune(text, timestamptz), warden.audit_redact(text, bigint, text),
  warden.break_glass(text), warden._audit_capture(), warden.audit_table(regclass, text[], text[]),
  warden.audit_untable(regclass) FROM PUBLIC;
REVOKE ALL ON warden.audit_tables, warden.audited_tables FROM PUBLIC;
REVOKE ALL ON warden.audit_log, warden.audit_inbox, warden.audit_checkpoints,
  warden.audit_status, warden.audit_chains FROM PUBLIC;
REVOKE ALL ON SEQUENCE warden.audit_inbox_id_seq FROM PUBLIC;
GRANT EXECUTE ON FUNCTION warden.audit_emit(text, jsonb, boolean, boolean), warden.set_actor(text, text),
  warden.set_correlation_id(text) TO warden_app, warden_admin;
GRANT EXECUTE ON FUNCTION warden.audit_verify(text, bigint), warden.audit_public_key(),
  warden.audit_digest(text), warden.audit_verify_digest(jsonb), warden.audit_export(text, bigint),
  warden.audit_status_snapshot(), warden.audit_prune(text, timestamptz),
  warden.audit_redact(text, bigint, text), warden.break_glass(text),
  warden.audit_table(regclass, text[], text[]), warden.audit_untable(regclass) TO warden_admin;
GRANT SELECT ON warden.audited_tables TO warden_admin;
GRANT SELECT ON warden.audit_status, warden.audit_chains TO warden_admin;
GRANT SELECT ON warden.audit_log, warden.audit_checkpoints TO warden_app, warden_admin;

-- 0.2.0: the lint lists members of predefined roles that may write the
-- audit log, not the predefined roles themselves (src/tenancy/lint.rs)
CREATE OR REPLACE FUNCTION warden.lint()
RETURNS TABLE (name text, title text, level text, facing text, categories text[], description text,
               detail text, remediation text, metadata jsonb, cache_key text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $lint$
WITH
settings AS (
    SELECT array_agg(btrim(c)) AS tenant_columns
      FROM unnest(string_to_array(current_setting('warden.lint_tenant_columns'), ',')) c
),
user_tables AS (
    SELECT c.oid, c.relname, n.nspname, c.relrowsecurity, c.relforcerowsecurity, c.relkind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
       -- tables of other extensions are theirs to lint
       AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.deptype = 'e' AND d.refobjid <> (SELECT oid FROM pg_extension WHERE extname = 'pg_warden'))
),
tenant_tables AS (
    SELECT t.*, a.attname AS tenant_column
      FROM user_tables t
      CROSS JOIN settings s
      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE a.attname::text = ANY (s.tenant_columns)
),
policies AS (
    SELECT p.polrelid, p.polname, p.polpermissive,
           coalesce(pg_get_expr(p.polqual, p.polrelid), '') AS using_expr,
           coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') AS check_expr
      FROM pg_policy p
),
findings AS (
    -- 1. tenant column, no RLS
    SELECT 'tenant_table_without_rls' AS name, 'Tenant table without row-level security' AS title, 'ERROR' AS level,
           format('%I.%I', t.nspname, t.relname) AS object,
           format('Table %I.%I has tenant column %I but row-level security is not enabled: every role with SELECT reads every tenant''s rows.', t.nspname, t.relname, t.tenant_column) AS detail,
           format('SELECT warden.enable_tenancy(%L, %L);', format('%I.%I', t.nspname, t.relname), t.tenant_column) AS remediation,
           ARRAY['SECURITY'] AS categories
      FROM tenant_tables t WHERE NOT t.relrowsecurity
    UNION ALL
    -- 2. RLS on, not forced: the owner bypasses it
    SELECT 'rls_not_forced', 'Row-level security not forced', 'WARN',
           format('%I.%I', t.nspname, t.relname),
           format('Table %I.%I enables row-level security but does not force it, so its owner (often the application''s role) bypasses every policy.', t.nspname, t.relname),
           format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY; -- or SELECT warden.enable_tenancy(%L);', t.nspname, t.relname, format('%I.%I', t.nspname, t.relname)),
           ARRAY['SECURITY']
      FROM user_tables t WHERE t.relrowsecurity AND NOT t.relforcerowsecurity
    UNION ALL
    -- 3. RLS on, no policy: silently denies everything
    SELECT 'rls_enabled_no_policy', 'Row-level security enabled without policies', 'INFO',
           format('%I.%I', t.nspname, t.relname),
           format('Table %I.%I has row-level security enabled but no policy, so non-owners see no rows.', t.nspname, t.relname),
           format('SELECT warden.enable_tenancy(%L);', format('%I.%I', t.nspname, t.relname)),
           ARRAY['SECURITY']
      FROM user_tables t
     WHERE t.relrowsecurity AND NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = t.oid)
    UNION ALL
    -- 4. permissive policies that fail open when the setting is missing or ''
    SELECT 'policy_fails_open', 'Policy fails open', 'ERROR',
           format('%s policy %I', p.polrelid::regclass, p.polname),
           format('Policy %I on %s: %s', p.polname, p.polrelid::regclass,
                  CASE WHEN (p.using_expr || ' ' || p.check_expr) ~* 'is null or|or .* is null'
                       THEN 'it grants access when the tenant is NULL (an "IS NULL OR" branch).'
                       ELSE 'it compares with current_setting() without NULLIF, so an empty setting ('''') can match rows whose tenant is '''' and a missing one raises or matches.' END),
           'Compare the tenant column with (SELECT warden.current_tenant()), which is NULL when unset or empty, or use SELECT warden.enable_tenancy(...).',
           ARRAY['SECURITY']
      FROM policies p
     WHERE p.polpermissive
       AND ((p.using_expr || ' ' || p.check_expr) ~* '(is null or|or\s+.*\s+is null)'
            OR ((p.using_expr || ' ' || p.check_expr) ~* 'current_setting\(' AND (p.using_expr || ' ' || p.check_expr) !~* 'nullif\('))
       AND p.using_expr <> 'true'
    UNION ALL
    -- 5. views over tenant tables that run with the view owner's rights
    SELECT DISTINCT 'view_without_security_invoker', 'View bypasses row-level security', 'ERROR',
           format('%I.%I', vn.nspname, v.relname),
           format('View %I.%I reads %s with its owner''s rights (no security_invoker), so the owner''s RLS exemption applies to every caller.', vn.nspname, v.relname, t.oid::regclass),
           format('ALTER VIEW %I.%I SET (security_invoker = true);', vn.nspname, v.relname),
           ARRAY['SECURITY']
      FROM pg_class v
      JOIN pg_namespace vn ON vn.oid = v.relnamespace
      JOIN pg_rewrite r ON r.ev_class = v.oid
      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
      JOIN user_tables t ON t.oid = d.refobjid AND t.relrowsecurity
     WHERE v.relkind IN ('v', 'm') AND vn.nspname NOT IN ('pg_catalog', 'information_schema')
       AND NOT coalesce('security_invoker=true' = ANY (v.reloptions) OR 'security_invoker=on' = ANY (v.reloptions), false)
       AND v.oid <> t.oid
    UNION ALL
    -- 6. SECURITY DEFINER without a fixed search_path
    SELECT 'security_definer_search_path', 'SECURITY DEFINER function without a fixed search_path', 'WARN',
           p.oid::regprocedure::text,
           format('%s runs with its owner''s rights and resolves names through the caller''s search_path, so a caller can substitute objects.', p.oid::regprocedure),
           format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp;', p.oid::regprocedure),
           ARRAY['SECURITY']
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND NOT EXISTS (SELECT FROM unnest(coalesce(p.proconfig, '{}')) c WHERE c LIKE 'search\_path=%')
    UNION ALL
    -- 7. SECURITY DEFINER callable by PUBLIC that reads a tenant table
    SELECT DISTINCT 'public_definer_reads_tenant_table', 'PUBLIC can read a tenant table through a SECURITY DEFINER function', 'ERROR',
           p.oid::regprocedure::text,
           format('%s is executable by PUBLIC, runs as its owner and mentions %s, so any role can read across tenants through it.', p.oid::regprocedure, t.oid::regclass),
           format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC; or make it SECURITY INVOKER.', p.oid::regprocedure),
           ARRAY['SECURITY']
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      -- the table name as a literal in the pattern (every character that
      -- is not a letter, digit or _ escaped), not inside a longer name
      JOIN tenant_tables t ON p.prosrc ~* ('(^|[^[:alnum:]_])' || regexp_replace(t.relname, '([^[:alnum:]_])', '\\\1', 'g') || '($|[^[:alnum:]_])')
     WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND has_function_privilege('public', p.oid, 'EXECUTE')
    UNION ALL
    -- 10. a permissive tenant policy beside another permissive policy: the
    --     other one widens every tenant's view (the event trigger prevents
    --     this; a policy created while it was disabled does not)
    SELECT 'tenant_policy_widened', 'Tenant isolation widened by a permissive policy', 'ERROR',
           format('%s policy %I', w.polrelid::regclass, o.polname),
           format('Policy %I on %s is permissive next to the permissive warden_tenant_isolation policy, so rows it allows are visible to every tenant.', o.polname, w.polrelid::regclass),
           format('SELECT warden.enable_tenancy(%L); -- makes the isolation policy restrictive', w.polrelid::regclass::text),
           ARRAY['SECURITY']
      FROM pg_policy w JOIN pg_policy o ON o.polrelid = w.polrelid AND o.oid <> w.oid AND o.polpermissive
     WHERE w.polname = 'warden_tenant_isolation' AND w.polpermissive
    UNION ALL
    -- 8. secret-like plaintext columns
    SELECT 'secret_plaintext_column', 'Secret-like column stored in plaintext', 'WARN',
           format('%I.%I.%I', t.nspname, t.relname, a.attname),
           format('Column %I of %I.%I looks like it holds a secret but has type %s, not encrypted bytea.', a.attname, t.nspname, t.relname, format_type(a.atttypid, a.atttypmod)),
           'Store warden.encrypt(value, aad) in a bytea column (and warden.blind_index for lookups), or a one-way hash for passwords.',
           ARRAY['SECURITY']
      FROM user_tables t
      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE a.attname ~* '(^|_)(password|passwd|secret|token|api_?key|private_?key|access_?key|client_?secret|ssn|credit_?card|card_?number)(_|$)'
       AND a.atttypid <> 'bytea'::regtype
       AND a.attname !~* '(_hash|_digest|_hint|_id|_at|_expires|_count)$'
    UNION ALL
    -- 9. the audit log writable by someone
    SELECT 'audit_log_writable', 'Audit log writable', 'ERROR',
           'warden.audit_log',
           format('Role %I may %s on warden.audit_log; the audit chain must only be appended to by pg_warden.', r.rolname, pr.priv),
           format('REVOKE %s ON warden.audit_log FROM %I;', pr.priv, r.rolname),
           ARRAY['SECURITY']
      FROM pg_roles r
      CROSS JOIN (VALUES ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) pr(priv)
     WHERE to_regclass('warden.audit_log') IS NOT NULL
       AND NOT r.rolsuper
       -- predefined roles (pg_write_all_data): their members are listed
       AND r.oid >= 16384
       AND has_table_privilege(r.oid, to_regclass('warden.audit_log'), pr.priv)
       AND r.oid <> (SELECT relowner FROM pg_class WHERE oid = to_regclass('warden.audit_log'))
)
SELECT f.name, f.title, f.level, 'EXTERNAL' AS facing, f.categories,
       CASE f.name
         WHEN 'tenant_table_without_rls' THEN 'Detects tables with a tenant column and no row-level security.'
         WHEN 'rls_not_forced' THEN 'Detects row-level security that the table owner bypasses.'
         WHEN 'rls_enabled_no_policy' THEN 'Detects row-level security with no policy.'
         WHEN 'policy_fails_open' THEN 'Detects policies that grant access when the tenant setting is missing or empty.'
         WHEN 'view_without_security_invoker' THEN 'Detects views that read row-level-secured tables with their owner''s rights.'
         WHEN 'security_definer_search_path' THEN 'Detects SECURITY DEFINER functions without a fixed search_path.'
         WHEN 'public_definer_reads_tenant_table' THEN 'Detects SECURITY DEFINER functions callable by PUBLIC that read tenant tables.'
         WHEN 'secret_plaintext_column' THEN 'Detects secret-like columns that are not encrypted.'
         WHEN 'audit_log_writable' THEN 'Detects roles that can change the audit log.'
         WHEN 'tenant_policy_widened' THEN 'Detects permissive policies that widen tenant isolation.'
       END AS description,
       f.detail, f.remediation,
       jsonb_build_object('object', f.object) AS metadata,
       f.name || '_' || f.object AS cache_key
  FROM findings f
 ORDER BY CASE f.level WHEN 'ERROR' THEN 0 WHEN 'WARN' THEN 1 ELSE 2 END, f.name, f.object
$lint$;

-- 0.2.0: the audit tables are tenant-isolated like warden.keys
SELECT warden.enable_tenancy('warden.audit_log');
SELECT warden.enable_tenancy('warden.audit_inbox');
SELECT warden.enable_tenancy('warden.audit_checkpoints');
COMMENT ON INDEX warden.audit_checkpoints_tenant_idx IS 'Finds a tenant''s checkpoints (made by enable_tenancy).';
COMMENT ON INDEX warden.audit_log_tenant_idx IS 'Finds a tenant''s chain (made by enable_tenancy).';
-- the sequencer reads the inbox in id order only; an index on tenant
-- would cost every audit_emit a btree insert for nothing
DROP INDEX warden.audit_inbox_tenant_idx;

COMMENT ON VIEW warden.worker_status IS
  'One row per pg_warden database worker and task: state (checking, running, restarting, not_installed, excluded: no worker may run but durable audit events wait in its ring), pid, starts, commit-time wake-ups, runs, failures, last run, last error (other databases'' errors for superusers only), backlog.';

-- 0.2.0: the transactional outbox (src/outbox/)
CREATE TYPE warden.message AS (
    id           bigint,
    topic        text,
    key          text,
    payload      jsonb,
    headers      jsonb,
    tenant       text,
    published_at timestamptz,
    attempt      integer,
    subscription text
);
COMMENT ON TYPE warden.message IS
  'A message as a handler or a pull consumer gets it: attempt counts from 1 (failed attempts before this one, plus one).';

CREATE TABLE warden.outbox_messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         text NOT NULL,
    key           text,
    payload       jsonb NOT NULL,
    headers       jsonb NOT NULL,
    tenant        text,
    published_at  timestamptz NOT NULL,
    deliver_after timestamptz,
    txid          xid8 NOT NULL
);
COMMENT ON TABLE warden.outbox_messages IS
  'Published messages, each written once by warden.publish in the publisher''s transaction and never updated. Internal: read it through the functions and views.';
COMMENT ON COLUMN warden.outbox_messages.deliver_after IS 'Not delivered before this time (NULL: at once).';
COMMENT ON COLUMN warden.outbox_messages.txid IS 'The publishing top-level transaction.';
COMMENT ON INDEX warden.outbox_messages_pkey IS 'Messages in publishing order.';
COMMENT ON SEQUENCE warden.outbox_messages_id_seq IS 'Message ids, in publishing order.';

CREATE TABLE warden.outbox_dedupe (
    scope        text NOT NULL,
    dedupe_key   text NOT NULL,
    message_id   bigint NOT NULL,
    published_at timestamptz NOT NULL,
    PRIMARY KEY (scope, dedupe_key)
);
COMMENT ON TABLE warden.outbox_dedupe IS
  'The last message published with each dedupe_key, per tenant (scope: the tenant, '''' without one). Internal.';
COMMENT ON INDEX warden.outbox_dedupe_pkey IS 'One message per dedupe_key and tenant.';

CREATE TABLE warden.outbox_subscriptions (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    topic_pattern   text NOT NULL,
    handler         text,
    owner           regrole NOT NULL,
    max_attempts    integer NOT NULL CHECK (max_attempts >= 1),
    backoff         interval NOT NULL,
    max_backoff     interval NOT NULL,
    ordered         boolean NOT NULL,
    handler_timeout interval NOT NULL,
    filter          jsonb,
    consumer        regrole,
    paused          boolean NOT NULL DEFAULT false,
    start_after     bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_delivered_at timestamptz
);
COMMENT ON TABLE warden.outbox_subscriptions IS
  'Subscriptions made by warden.subscribe. Internal: change them through warden.subscribe, unsubscribe, pause and resume.';
COMMENT ON COLUMN warden.outbox_subscriptions.handler IS 'The SQL function (msg warden.message) RETURNS void the worker calls, by schema-qualified name (pg_upgrade cannot carry regprocedure columns, and the worker resolves and checks it again at each call); NULL: a pull subscription.';
COMMENT ON COLUMN warden.outbox_subscriptions.owner IS 'The role that subscribed: the handler runs as this role, never as a superuser.';
COMMENT ON COLUMN warden.outbox_subscriptions.filter IS 'Delivers only messages whose payload contains this object (jsonb @>); NULL: all.';
COMMENT ON COLUMN warden.outbox_subscriptions.last_delivered_at IS 'When a message was last handled or acknowledged, written by the worker up to a minute late (the current value is in shared memory, shown by warden.outbox_stats): a write per acknowledgement would queue acknowledgements on this row, and leave a chain of row versions under a held xmin horizon.';
COMMENT ON COLUMN warden.outbox_subscriptions.consumer IS 'A pull subscription''s consumers: members of this role may claim, ack, nack and extend; NULL: every warden_app member (within its tenant).';
COMMENT ON COLUMN warden.outbox_subscriptions.start_after IS 'Delivers messages with a higher id only (those published after it was made).';
COMMENT ON INDEX warden.outbox_subscriptions_pkey IS 'Subscriptions by id.';
COMMENT ON INDEX warden.outbox_subscriptions_name_key IS 'Subscriptions by name.';
COMMENT ON SEQUENCE warden.outbox_subscriptions_id_seq IS 'Subscription ids.';

CREATE TABLE warden.outbox_deliveries (
    subscription_id  integer NOT NULL,
    id               bigint NOT NULL,
    message_id       bigint NOT NULL,
    ordered_key      text,
    tenant           text,
    attempts         integer NOT NULL DEFAULT 0,
    next_at          timestamptz NOT NULL,
    lease            integer,
    lease_until      timestamptz,
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    last_error       text,
    failed_at        timestamptz,
    message_ids      bigint[],
    PRIMARY KEY (subscription_id, id)
) WITH (fillfactor = 50);
CREATE SEQUENCE warden.outbox_deliveries_id_seq;
CREATE INDEX outbox_deliveries_ordered_idx ON warden.outbox_deliveries (subscription_id, ordered_key, id)
  WHERE ordered_key IS NOT NULL;
CREATE INDEX outbox_deliveries_failed_idx ON warden.outbox_deliveries (failed_at)
  WHERE failed_at IS NOT NULL;
COMMENT ON TABLE warden.outbox_deliveries IS
  'What each subscription has still to handle: one narrow row per message and matching subscription (for an unordered pull subscription, one row per fan-out run and tenant holding up to a hundred messages), written by the worker''s fan-out and removed once handled. Half of each page is left free (fillfactor 50) so that a claim or a retry updates a row in place (HOT) rather than adding index entries. Internal.';
COMMENT ON COLUMN warden.outbox_deliveries.id IS 'Fan-out order: a subscription handles its deliveries in this order.';
COMMENT ON COLUMN warden.outbox_deliveries.ordered_key IS 'The message''s key when the subscription is ordered (one delivery per key at a time).';
COMMENT ON COLUMN warden.outbox_deliveries.attempts IS 'Failed attempts so far.';
COMMENT ON COLUMN warden.outbox_deliveries.next_at IS 'Not attempted before this time (deliver_after, then the retry backoff).';
COMMENT ON COLUMN warden.outbox_deliveries.lease IS 'The nonce of the pull claim that holds it (part of the lease token); NULL: not claimed.';
COMMENT ON COLUMN warden.outbox_deliveries.lease_until IS 'When the pull claim lapses and the message goes to the next claimer.';
COMMENT ON COLUMN warden.outbox_deliveries.failed_at IS 'A dead-letter message whose handling ran out of attempts: kept for inspection, never dead-lettered again.';
COMMENT ON COLUMN warden.outbox_deliveries.message_ids IS 'A group: the messages of one fan-out run for an unordered pull subscription and one tenant, in fan-out order, not yet claimed (message_id is the lowest of them); NULL: the row is the delivery of message_id alone.';
COMMENT ON INDEX warden.outbox_deliveries_ordered_idx IS 'The head of each key of an ordered subscription.';
COMMENT ON INDEX warden.outbox_deliveries_failed_idx IS 'Deliveries given up, for retention (a few: without it, retention read the whole table every minute).';
COMMENT ON INDEX warden.outbox_deliveries_pkey IS 'A subscription''s deliveries in fan-out order.';
COMMENT ON SEQUENCE warden.outbox_deliveries_id_seq IS 'Fan-out order of deliveries.';

CREATE TABLE warden.outbox_leases (
    subscription_id  integer NOT NULL,
    nonce            integer NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    tenant           text,
    lease_until      timestamptz NOT NULL,
    claimed_at       timestamptz NOT NULL,
    delivery_ids     bigint[] NOT NULL,
    message_ids      bigint[] NOT NULL,
    attempts         integer[] NOT NULL,
    first_attempt_at timestamptz[] NOT NULL,
    PRIMARY KEY (subscription_id, nonce, id)
) WITH (toast_tuple_target = 8160);
CREATE INDEX outbox_leases_until_idx ON warden.outbox_leases (subscription_id, lease_until);
COMMENT ON TABLE warden.outbox_leases IS
  'Deliveries a pull claim holds: one row per claim (and tenant) with the ids, messages, failed attempts and first attempts of the deliveries it took out of warden.outbox_deliveries, which get them back when the lease lapses or is nacked. An ack deletes the row: a claimed message costs one row removal, not an update and then a removal. Rows are compressed only past 8 kB (toast_tuple_target): a claim of 100 is some 3 kB, and compressing it cost the claim more than it saved. Internal.';
COMMENT ON COLUMN warden.outbox_leases.nonce IS 'The claim''s nonce (part of each lease token).';
COMMENT ON COLUMN warden.outbox_leases.lease_until IS 'When the lease lapses: the deliveries go back to the next claimer, with the lapse counted as a failed attempt.';
COMMENT ON COLUMN warden.outbox_leases.id IS 'Tells apart the rows of one claim (one per tenant, and one per lease extended on its own).';
COMMENT ON INDEX warden.outbox_leases_pkey IS 'A claim''s lease rows, for ack, nack and extend.';
COMMENT ON SEQUENCE warden.outbox_leases_id_seq IS 'Lease row ids.';
COMMENT ON INDEX warden.outbox_leases_until_idx IS 'Leases by when they lapse.';

CREATE TABLE warden.outbox_fanout (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    upto       bigint NOT NULL,
    pending_lo bigint[] NOT NULL,
    pending_hi bigint[] NOT NULL,
    settled_at bigint[] NOT NULL,
    at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE warden.outbox_fanout IS
  'How far the fan-out got, written in the transaction of the deliveries it made (only the last row counts): every message id up to upto was fanned out but those in the pending ranges, whose transactions may still commit until a snapshot''s xmin reaches settled_at. Internal.';
COMMENT ON INDEX warden.outbox_fanout_pkey IS 'Progress records, the last one current.';
COMMENT ON SEQUENCE warden.outbox_fanout_id_seq IS 'Progress record ids.';

CREATE TABLE warden.dead_letters (
    dead_letter_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       bigint NOT NULL,
    topic            text NOT NULL,
    key              text,
    payload          jsonb NOT NULL,
    headers          jsonb NOT NULL,
    tenant           text,
    published_at     timestamptz NOT NULL,
    subscription     text NOT NULL,
    subscription_id  integer NOT NULL,
    owner            regrole NOT NULL,
    attempts         integer NOT NULL,
    last_error       text,
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    dead_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    notice_id        bigint
);
CREATE INDEX dead_letters_message_idx ON warden.dead_letters (message_id);
CREATE INDEX dead_letters_unannounced_idx ON warden.dead_letters (dead_letter_id) WHERE notice_id IS NULL;
COMMENT ON TABLE warden.dead_letters IS
  'Deliveries that ran out of attempts, with a copy of their message. Each is announced by a message on topic warden.dead_letter. Replay with warden.replay_dead_letters, remove with warden.purge_dead_letters.';
COMMENT ON COLUMN warden.dead_letters.subscription IS 'The name of the subscription that failed to handle the message.';
COMMENT ON COLUMN warden.dead_letters.subscription_id IS 'That subscription (replay delivers to it again, not to a later one of the same name).';
COMMENT ON COLUMN warden.dead_letters.owner IS 'Its owner: only roles with the owner''s rights replay or purge it.';
COMMENT ON COLUMN warden.dead_letters.attempts IS 'Failed attempts.';
COMMENT ON COLUMN warden.dead_letters.notice_id IS 'The warden.dead_letter message announcing it; NULL while publishing it failed (the worker tries again).';
COMMENT ON INDEX warden.dead_letters_pkey IS 'Dead letters by id.';
COMMENT ON INDEX warden.dead_letters_message_idx IS 'Keeps retention from deleting a message a dead letter may replay.';
COMMENT ON INDEX warden.dead_letters_unannounced_idx IS 'Dead letters whose warden.dead_letter message is still to be published.';
COMMENT ON SEQUENCE warden.dead_letters_dead_letter_id_seq IS 'Dead letter ids.';

SELECT pg_catalog.pg_extension_config_dump('warden.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('warden.dead_letters_dead_letter_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_deliveries_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_leases', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_leases_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_fanout', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_fanout_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_messages', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_dedupe', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_messages_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('warden.outbox_subscriptions_id_seq', '');
CREATE FUNCTION warden.publish(topic text, payload jsonb, key text DEFAULT NULL, headers jsonb DEFAULT '{}', dedupe_key text DEFAULT NULL, deliver_after interval DEFAULT NULL) RETURNS bigint
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'publish_wrapper';
CREATE FUNCTION warden.publish_batch(topic text, payloads jsonb[], keys text[] DEFAULT NULL) RETURNS bigint[]
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'publish_batch_wrapper';
COMMENT ON FUNCTION warden.publish(text, jsonb, text, jsonb, text, interval) IS
  'Publishes a message on a topic in the current transaction (delivered only if it commits) and returns its id; a dedupe_key seen within warden.outbox_dedupe_window publishes nothing and returns the first id.';
COMMENT ON FUNCTION warden.publish_batch(text, jsonb[], text[]) IS
  'Publishes one message per payload on a topic in the current transaction (keys: one per payload, or NULL) and returns their ids in order.';
CREATE FUNCTION warden.subscribe(name text, topic_pattern text, handler regprocedure DEFAULT NULL, max_attempts integer DEFAULT 5, backoff interval DEFAULT '1 second', max_backoff interval DEFAULT '10 minutes', ordered boolean DEFAULT false, handler_timeout interval DEFAULT '30 seconds', filter jsonb DEFAULT NULL, consumer regrole DEFAULT NULL) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'subscribe_wrapper';
CREATE FUNCTION warden.unsubscribe(name text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'unsubscribe_wrapper';
CREATE FUNCTION warden.pause(name text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'pause_wrapper';
CREATE FUNCTION warden.resume(name text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'resume_wrapper';
COMMENT ON FUNCTION warden.subscribe(text, text, regprocedure, integer, interval, interval, boolean, interval, jsonb, regrole) IS
  'Subscribes to the topics a pattern matches (* one segment, # the rest): with a handler (msg warden.message) RETURNS void the worker calls it as the subscribing role; without, consumers pull (members of consumer, or any warden_app member when it is NULL). Messages published from now on are delivered.';
COMMENT ON FUNCTION warden.unsubscribe(text) IS 'Drops a subscription (its owner''s, or a superuser''s act) and what it had not delivered.';
COMMENT ON FUNCTION warden.pause(text) IS 'Stops delivering to a subscription (messages keep arriving for it) until warden.resume.';
COMMENT ON FUNCTION warden.resume(text) IS 'Delivers to a paused subscription again, from where it stopped.';
CREATE FUNCTION warden.claim(subscription text, batch integer DEFAULT 10, visibility interval DEFAULT '30 seconds',
                             ack uuid[] DEFAULT NULL)
  RETURNS TABLE(lease uuid, msg warden.message)
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'claim_wrapper';
CREATE FUNCTION warden.ack(leases uuid[]) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ack_wrapper';
CREATE FUNCTION warden.nack(lease uuid, error text, retry_after interval DEFAULT NULL) RETURNS boolean
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'nack_wrapper';
CREATE FUNCTION warden.extend(lease uuid, visibility interval) RETURNS boolean
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'extend_wrapper';
COMMENT ON FUNCTION warden.claim(text, integer, interval, uuid[]) IS
  'Leases up to batch due messages of a pull subscription (of the current tenant) until visibility runs out; each comes with a fresh lease token for ack, nack and extend. With ack, first acknowledges those leases as warden.ack does (a warning when some no longer held their message), so a consumer loop needs one statement per batch.';
COMMENT ON FUNCTION warden.ack(uuid[]) IS
  'Marks the messages of these leases handled; returns how many leases still held their message (a lapsed lease counts 0: the message went to another claimer).';
COMMENT ON FUNCTION warden.nack(uuid, text, interval) IS
  'Gives a leased message back as failed: retried after retry_after or the backoff, a dead letter after max_attempts. False when the lease had lapsed.';
COMMENT ON FUNCTION warden.extend(uuid, interval) IS
  'Keeps a lease for visibility more from now. False when it had lapsed.';
CREATE FUNCTION warden.replay_dead_letters(ids bigint[]) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'replay_dead_letters_wrapper';
CREATE FUNCTION warden.purge_dead_letters(before timestamptz) RETURNS bigint
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'purge_dead_letters_wrapper';
COMMENT ON FUNCTION warden.replay_dead_letters(bigint[]) IS
  'Delivers these dead letters again to the subscriptions that failed them, attempts reset (they leave warden.dead_letters; a new failure makes a new one). Only those of subscriptions whose owner''s rights the caller has. Returns how many were replayed.';
COMMENT ON FUNCTION warden.purge_dead_letters(timestamptz) IS
  'Removes the dead letters that died before the given time, of subscriptions whose owner''s rights the caller has; returns how many.';
CREATE FUNCTION warden.outbox_last_delivered_at(subscription_id integer) RETURNS timestamptz
  VOLATILE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'outbox_last_delivered_at_wrapper';
COMMENT ON FUNCTION warden.outbox_last_delivered_at(integer) IS
  'When the subscription with this id last handled or acknowledged a message since the server started (kept in shared memory, NULL when none; warden.outbox_stats shows it by name).';
CREATE VIEW warden.outbox_stats WITH (security_invoker = true) AS
SELECT s.name AS subscription,
       s.topic_pattern,
       CASE WHEN s.handler IS NULL THEN 'pull' ELSE 'push' END AS kind,
       s.handler,
       s.paused,
       COALESCE(d.pending, 0) + COALESCE(h.lapsed, 0) AS pending,
       COALESCE(d.in_flight, 0) + COALESCE(h.in_flight, 0) AS in_flight,
       d.oldest_pending_age,
       COALESCE(d.retrying, 0) AS retrying,
       COALESCE(d.failed, 0) AS failed,
       COALESCE(l.dead, 0) AS dead,
       COALESCE(l.unannounced, 0) AS dead_unannounced,
       COALESCE(d.last_error, l.last_error) AS last_error,
       GREATEST(s.last_delivered_at, warden.outbox_last_delivered_at(s.id)) AS last_delivered_at
  FROM warden.outbox_subscriptions s
  LEFT JOIN LATERAL (
       SELECT pg_catalog.sum(COALESCE(pg_catalog.cardinality(d.message_ids), 1)) FILTER (WHERE d.failed_at IS NULL
                AND (d.lease IS NULL OR d.lease_until <= pg_catalog.now())) AS pending,
              pg_catalog.count(*) FILTER (WHERE d.failed_at IS NULL
                AND d.lease IS NOT NULL AND d.lease_until > pg_catalog.now()) AS in_flight,
              pg_catalog.now() - pg_catalog.min(m.published_at) FILTER (WHERE d.failed_at IS NULL) AS oldest_pending_age,
              pg_catalog.count(*) FILTER (WHERE d.failed_at IS NULL AND d.attempts > 0) AS retrying,
              pg_catalog.count(*) FILTER (WHERE d.failed_at IS NOT NULL) AS failed,
              (pg_catalog.array_agg(d.last_error ORDER BY d.last_attempt_at DESC)
                 FILTER (WHERE d.last_error IS NOT NULL))[1] AS last_error
         FROM warden.outbox_deliveries d
         JOIN warden.outbox_messages m ON m.id = d.message_id
        WHERE d.subscription_id = s.id) d ON true
  LEFT JOIN LATERAL (
       SELECT pg_catalog.sum(pg_catalog.cardinality(h.delivery_ids)) FILTER (WHERE h.lease_until > pg_catalog.now()) AS in_flight,
              pg_catalog.sum(pg_catalog.cardinality(h.delivery_ids)) FILTER (WHERE h.lease_until <= pg_catalog.now()) AS lapsed
         FROM warden.outbox_leases h
        WHERE h.subscription_id = s.id) h ON true
  LEFT JOIN LATERAL (
       SELECT pg_catalog.count(*) AS dead,
              pg_catalog.count(*) FILTER (WHERE l.notice_id IS NULL) AS unannounced,
              (pg_catalog.array_agg(l.last_error ORDER BY l.dead_letter_id DESC))[1] AS last_error
         FROM warden.dead_letters l
        WHERE l.subscription = s.name) l ON true;
COMMENT ON VIEW warden.outbox_stats IS
  'Per subscription: deliveries pending (due or waiting to be retried), in flight (leased by a pull consumer), the age of the oldest not in flight, those retrying, dead-letter deliveries failed for good, dead letters (and those whose warden.dead_letter message is still to be published), the last error, and when a message was last handled.';

CREATE VIEW warden.outbox_blocked_keys WITH (security_invoker = true) AS
SELECT s.name AS subscription,
       d.ordered_key AS key,
       d.message_id AS head_message_id,
       d.attempts,
       d.next_at AS retry_at,
       d.last_error,
       (SELECT pg_catalog.count(*) FROM warden.outbox_deliveries w
         WHERE w.subscription_id = d.subscription_id AND w.ordered_key = d.ordered_key
           AND w.failed_at IS NULL AND w.id > d.id) AS waiting
  FROM warden.outbox_deliveries d
  JOIN warden.outbox_subscriptions s ON s.id = d.subscription_id
 WHERE d.ordered_key IS NOT NULL AND d.failed_at IS NULL AND d.attempts > 0
   AND NOT EXISTS (SELECT FROM warden.outbox_deliveries e
                    WHERE e.subscription_id = d.subscription_id AND e.ordered_key = d.ordered_key
                      AND e.id < d.id AND e.failed_at IS NULL);
COMMENT ON VIEW warden.outbox_blocked_keys IS
  'Keys of ordered subscriptions whose oldest message failed and waits for its retry, holding back the messages behind it (waiting). A head that runs out of attempts becomes a dead letter and the key moves on.';

CREATE FUNCTION warden.outbox_health()
  RETURNS TABLE(item text, value bigint, detail text)
  LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $health$
(SELECT 'xmin_held_by_backend', age(a.backend_xmin)::bigint,
        format('pid %s (role %s, application %L, %s), transaction open for %s',
               a.pid, a.usename, a.application_name, a.state, date_trunc('second', now() - a.xact_start))
   FROM pg_stat_activity a
  WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid()
  ORDER BY age(a.backend_xmin) DESC LIMIT 1)
UNION ALL
(SELECT 'xmin_held_by_slot', greatest(age(s.xmin), age(s.catalog_xmin))::bigint,
        format('replication slot %I (%s, active: %s)', s.slot_name, s.slot_type, s.active)
   FROM pg_replication_slots s
  WHERE s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL
  ORDER BY 2 DESC LIMIT 1)
UNION ALL
(SELECT 'xmin_held_by_prepared', age(p.transaction)::bigint,
        format('prepared transaction %L (role %s), prepared %s ago', p.gid, p.owner, date_trunc('second', now() - p.prepared))
   FROM pg_prepared_xacts p
  ORDER BY 2 DESC LIMIT 1)
UNION ALL
(SELECT 'dead_tuples', t.n_dead_tup,
        format('%I: %s live, last vacuum %s', t.relname, t.n_live_tup,
               coalesce(greatest(t.last_vacuum, t.last_autovacuum)::text, 'never'))
   FROM pg_stat_all_tables t
  WHERE t.schemaname = 'warden'
    AND t.relname IN ('outbox_messages', 'outbox_deliveries', 'outbox_leases', 'outbox_dedupe', 'outbox_fanout',
                      'outbox_subscriptions', 'dead_letters')
  ORDER BY t.relname)
UNION ALL
(SELECT 'pending_deliveries',
        coalesce(sum(coalesce(cardinality(d.message_ids), 1)), 0)
          + (SELECT coalesce(sum(cardinality(h.delivery_ids)), 0) FROM warden.outbox_leases h),
        'deliveries not yet handled, leased ones included (of the tenants row-level security shows you)'
   FROM warden.outbox_deliveries d WHERE d.failed_at IS NULL)
$health$;
COMMENT ON FUNCTION warden.outbox_health() IS
  'What holds the outbox back: the backend, replication slot or prepared transaction holding the oldest xmin (its age in transactions), dead tuples in each outbox table, and the deliveries pending.';
REVOKE ALL ON warden.outbox_messages, warden.outbox_dedupe, warden.outbox_subscriptions,
  warden.outbox_deliveries, warden.outbox_leases, warden.outbox_fanout, warden.dead_letters,
  warden.outbox_stats, warden.outbox_blocked_keys FROM PUBLIC;
REVOKE ALL ON SEQUENCE warden.outbox_messages_id_seq, warden.outbox_subscriptions_id_seq,
  warden.outbox_deliveries_id_seq, warden.outbox_leases_id_seq, warden.outbox_fanout_id_seq,
  warden.dead_letters_dead_letter_id_seq FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION warden.publish(text, jsonb, text, jsonb, text, interval),
  warden.publish_batch(text, jsonb[], text[]),
  warden.subscribe(text, text, regprocedure, integer, interval, interval, boolean, interval, jsonb, regrole),
  warden.unsubscribe(text), warden.pause(text), warden.resume(text),
  warden.outbox_last_delivered_at(integer),
  warden.claim(text, integer, interval, uuid[]), warden.ack(uuid[]), warden.nack(uuid, text, interval),
  warden.extend(uuid, interval),
  warden.replay_dead_letters(bigint[]), warden.purge_dead_letters(timestamptz),
  warden.outbox_health() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION warden.publish(text, jsonb, text, jsonb, text, interval),
  warden.publish_batch(text, jsonb[], text[]),
  warden.claim(text, integer, interval, uuid[]), warden.ack(uuid[]), warden.nack(uuid, text, interval),
  warden.extend(uuid, interval) TO warden_app, warden_admin;
GRANT EXECUTE ON FUNCTION
  warden.subscribe(text, text, regprocedure, integer, interval, interval, boolean, interval, jsonb, regrole),
  warden.unsubscribe(text), warden.pause(text), warden.resume(text),
  warden.replay_dead_letters(bigint[]), warden.purge_dead_letters(timestamptz),
  warden.outbox_health(), warden.outbox_last_delivered_at(integer) TO warden_admin;
GRANT SELECT ON warden.outbox_subscriptions, warden.dead_letters,
  warden.outbox_stats, warden.outbox_blocked_keys TO warden_admin;
-- the views are security_invoker: row-level security scopes what an
-- operator counts to the current tenant (all with BYPASSRLS)
GRANT SELECT ON warden.outbox_deliveries, warden.outbox_leases, warden.outbox_messages TO warden_admin;
-- tenant-isolated like the audit inbox, and likewise read by id only, by
-- pg_warden: no tenant index to cost every publish (or fan-out) a btree insert
SELECT warden.enable_tenancy('warden.outbox_messages');
DROP INDEX warden.outbox_messages_tenant_idx;
SELECT warden.enable_tenancy('warden.outbox_deliveries');
DROP INDEX warden.outbox_deliveries_tenant_idx;
SELECT warden.enable_tenancy('warden.outbox_leases');
DROP INDEX warden.outbox_leases_tenant_idx;
SELECT warden.enable_tenancy('warden.dead_letters');
COMMENT ON INDEX warden.dead_letters_tenant_idx IS 'Finds a tenant''s dead letters (made by enable_tenancy).';

-- 0.2.0: the secrets store (src/secrets/)
CREATE FUNCTION warden.hmac_sha256(key bytea, data bytea) RETURNS bytea
  IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'hmac_sha256_wrapper';
CREATE FUNCTION warden.timing_safe_equal(a bytea, b bytea) RETURNS boolean
  IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'timing_safe_equal_wrapper';
CREATE FUNCTION warden.hash_prefix(value text, n integer DEFAULT 8) RETURNS text
  IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'hash_prefix_wrapper';
COMMENT ON FUNCTION warden.hmac_sha256(bytea, bytea) IS
  'HMAC-SHA256 of data under key (RFC 2104; a key of any length).';
COMMENT ON FUNCTION warden.timing_safe_equal(bytea, bytea) IS
  'Whether a and b are equal, in time that depends only on the longer one''s length (compare MACs and tokens with this, never with =).';
COMMENT ON FUNCTION warden.hash_prefix(text, integer) IS
  'The first n hex digits (clamped to 4..64) of SHA-256 of value: a recognisable stand-in for a long random value in logs. Unkeyed: never for guessable values.';
CREATE TABLE warden.secret_names (
    tenant         text NOT NULL,
    name           text NOT NULL,
    latest_version integer NOT NULL,
    PRIMARY KEY (tenant, name)
);
COMMENT ON TABLE warden.secret_names IS
  'Each secret''s latest version number (never reused, also after destroy): the row check-and-set writers queue on. Internal.';
COMMENT ON INDEX warden.secret_names_pkey IS 'One row per tenant and secret name.';

CREATE TABLE warden.secrets (
    tenant       text NOT NULL,
    name         text NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    ciphertext   bytea,
    is_json      boolean NOT NULL,
    fingerprint  bytea NOT NULL,
    key_id       integer NOT NULL,
    description  text,
    created_at   timestamptz NOT NULL,
    created_by   text NOT NULL,
    expires_at   timestamptz,
    deleted_at   timestamptz,
    destroyed_at timestamptz,
    PRIMARY KEY (tenant, name, version),
    CHECK ((destroyed_at IS NULL) = (ciphertext IS NOT NULL))
);
COMMENT ON TABLE warden.secrets IS
  'Secret versions: the value as an envelope under the tenant''s data key (associated data: name and version), NULL once destroyed. Internal: use warden.secret_* and warden.secret_catalog.';
COMMENT ON COLUMN warden.secrets.fingerprint IS
  'HMAC-SHA256 of the value under the tenant''s audit key: equal values of one tenant have equal fingerprints; nobody without the key can test a guess.';
COMMENT ON COLUMN warden.secrets.key_id IS 'The data key the value was encrypted under (warden.keys).';
COMMENT ON INDEX warden.secrets_pkey IS 'A secret''s versions.';
-- no statistics on what names a tenant's secrets: a planner estimate
-- must not hand one tenant's names to another's leaky operator
ALTER TABLE warden.secrets ALTER COLUMN tenant SET STATISTICS 0, ALTER COLUMN name SET STATISTICS 0,
  ALTER COLUMN description SET STATISTICS 0, ALTER COLUMN created_by SET STATISTICS 0;
ALTER TABLE warden.secret_names ALTER COLUMN tenant SET STATISTICS 0, ALTER COLUMN name SET STATISTICS 0;
-- secrets are data: dumped (encrypted, with warden.keys) and restored
SELECT pg_catalog.pg_extension_config_dump('warden.secret_names', '');
SELECT pg_catalog.pg_extension_config_dump('warden.secrets', '');

-- the catalog reads the table with pg_warden's rights (application roles
-- have none on it), filtered to the current tenant here, not by policies
CREATE FUNCTION warden.secret_versions()
RETURNS TABLE (tenant text, name text, version integer, state text, fingerprint text, description text,
               created_at timestamptz, created_by text, expires_at timestamptz, deleted_at timestamptz,
               destroyed_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
SELECT s.tenant, s.name, s.version,
       CASE WHEN s.destroyed_at IS NOT NULL THEN 'destroyed'
            WHEN s.deleted_at IS NOT NULL THEN 'deleted'
            WHEN s.expires_at <= pg_catalog.now() THEN 'expired'
            ELSE 'live' END,
       pg_catalog.encode(s.fingerprint, 'hex'),
       s.description, s.created_at, s.created_by, s.expires_at, s.deleted_at, s.destroyed_at
  FROM warden.secrets s
 WHERE s.tenant OPERATOR(pg_catalog.=) warden.current_tenant()
$$;
COMMENT ON FUNCTION warden.secret_versions() IS
  'The rows of warden.secret_catalog: the current tenant''s secret versions, never a value.';
CREATE VIEW warden.secret_catalog WITH (security_barrier = true) AS
SELECT * FROM warden.secret_versions();
COMMENT ON VIEW warden.secret_catalog IS
  'The current tenant''s secret versions (state live, deleted, destroyed or expired; the value''s keyed fingerprint); never a value. No tenant set: no rows.';
CREATE FUNCTION warden._secrets_changed() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'secrets_changed';
COMMENT ON FUNCTION warden._secrets_changed() IS
  'Internal: the statement trigger on warden.secrets; tells every backend to drop the secrets it cached decrypted.';
CREATE TRIGGER secrets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON warden.secrets
  FOR EACH STATEMENT EXECUTE FUNCTION warden._secrets_changed();
-- also under session_replication_role = replica (logical replication
-- apply, a restore that disables triggers)
ALTER TABLE warden.secrets ENABLE ALWAYS TRIGGER secrets_changed;
COMMENT ON TRIGGER secrets_changed ON warden.secrets IS
  'Drops every backend''s cached decrypted secrets at commit (warden.secret_get, warden.webhook_verify).';
CREATE FUNCTION warden.secret_set(name text, value text, expected_version integer DEFAULT NULL,
                                  expires_at timestamptz DEFAULT NULL, description text DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_set_wrapper';
CREATE FUNCTION warden.secret_set(name text, value jsonb, expected_version integer DEFAULT NULL,
                                  expires_at timestamptz DEFAULT NULL, description text DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_set_jsonb_wrapper';
CREATE FUNCTION warden.secret_get(name text, version integer DEFAULT NULL) RETURNS text
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_get_wrapper';
CREATE FUNCTION warden.secret_get_jsonb(name text, version integer DEFAULT NULL) RETURNS jsonb
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_get_jsonb_wrapper';
CREATE FUNCTION warden.secret_delete(name text, version integer DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_delete_wrapper';
CREATE FUNCTION warden.secret_undelete(name text, version integer DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_undelete_wrapper';
CREATE FUNCTION warden.secret_destroy(name text, version integer DEFAULT NULL) RETURNS integer
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'secret_destroy_wrapper';
CREATE FUNCTION warden.webhook_sign(secret_name text, payload bytea, scheme text, msg_id text DEFAULT NULL,
                                    sent_at timestamptz DEFAULT pg_catalog.now()) RETURNS text
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'webhook_sign_wrapper';
CREATE FUNCTION warden.webhook_verify(secret_name text, payload bytea, signature text, scheme text,
                                      tolerance interval DEFAULT '5 minutes', msg_id text DEFAULT NULL,
                                      sent_at timestamptz DEFAULT NULL) RETURNS boolean
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'webhook_verify_wrapper';
COMMENT ON FUNCTION warden.secret_set(text, text, integer, timestamptz, text) IS
  'Writes a new version of a secret of the current tenant, encrypted before it is stored, and returns its number; expected_version checks the current one (0: must not exist; a mismatch is SQLSTATE 40001).';
COMMENT ON FUNCTION warden.secret_set(text, jsonb, integer, timestamptz, text) IS
  'warden.secret_set for a jsonb value (secret_get returns a JSON string as the string itself).';
COMMENT ON FUNCTION warden.secret_get(text, integer) IS
  'The latest live version of a secret of the current tenant (or the version given) as text; recorded in the audit chain first (committed first under warden.audit_strict). Deleted, destroyed and expired versions are refused.';
COMMENT ON FUNCTION warden.secret_get_jsonb(text, integer) IS
  'warden.secret_get as jsonb (a text secret comes back as a JSON string).';
COMMENT ON FUNCTION warden.secret_delete(text, integer) IS
  'Hides a version of a secret (all versions when NULL) until warden.secret_undelete; returns how many versions it changed.';
COMMENT ON FUNCTION warden.secret_undelete(text, integer) IS
  'Restores deleted versions of a secret (all when NULL); returns how many.';
COMMENT ON FUNCTION warden.secret_destroy(text, integer) IS
  'warden_admin: removes the encrypted value of a version of a secret (all when NULL) for good; returns how many versions it changed.';
COMMENT ON FUNCTION warden.webhook_sign(text, bytea, text, text, timestamptz) IS
  'The signature header value for payload under a webhook secret of the current tenant, in a scheme: hmac-sha256, github, stripe, standard-webhooks, slack or shopify.';
COMMENT ON FUNCTION warden.webhook_verify(text, bytea, text, text, interval, text, timestamptz) IS
  'Whether signature (a header value) is right for payload under a webhook secret (its latest live version, and versions younger than warden.webhook_secret_overlap); false for a malformed header or a timestamp outside the tolerance. Constant-time comparison.';
REVOKE ALL ON warden.secret_names, warden.secrets, warden.secret_catalog FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
  warden.hmac_sha256(bytea, bytea), warden.timing_safe_equal(bytea, bytea), warden.hash_prefix(text, integer),
  warden.secret_set(text, text, integer, timestamptz, text),
  warden.secret_set(text, jsonb, integer, timestamptz, text),
  warden.secret_get(text, integer), warden.secret_get_jsonb(text, integer),
  warden.secret_delete(text, integer), warden.secret_undelete(text, integer), warden.secret_destroy(text, integer),
  warden.webhook_sign(text, bytea, text, text, timestamptz),
  warden.webhook_verify(text, bytea, text, text, interval, text, timestamptz),
  warden.secret_versions(), warden._secrets_changed() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  warden.secret_set(text, text, integer, timestamptz, text),
  warden.secret_set(text, jsonb, integer, timestamptz, text),
  warden.secret_get(text, integer), warden.secret_get_jsonb(text, integer),
  warden.secret_delete(text, integer), warden.secret_undelete(text, integer), warden.secret_destroy(text, integer),
  warden.webhook_sign(text, bytea, text, text, timestamptz),
  warden.webhook_verify(text, bytea, text, text, interval, text, timestamptz),
  warden.hmac_sha256(bytea, bytea), warden.timing_safe_equal(bytea, bytea), warden.hash_prefix(text, integer),
  warden.secret_versions()
TO warden_app, warden_admin;
GRANT SELECT ON warden.secret_catalog TO warden_app, warden_admin;
SELECT warden.enable_tenancy('warden.secret_names');
SELECT warden.enable_tenancy('warden.secrets');

-- 0.2.0: any update, delete or truncate of warden.keys, through
-- pg_warden's functions or not, drops every backend's cached data keys
-- (crypto/key_cache.rs)
CREATE FUNCTION warden._keys_changed() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'keys_changed';
REVOKE ALL ON FUNCTION warden._keys_changed() FROM PUBLIC;
COMMENT ON FUNCTION warden._keys_changed() IS
  'Internal: the triggers on warden.keys; tell every backend to drop the data keys it cached unwrapped.';
CREATE TRIGGER keys_changed AFTER UPDATE OR DELETE ON warden.keys
  FOR EACH ROW EXECUTE FUNCTION warden._keys_changed();
CREATE TRIGGER keys_truncated AFTER TRUNCATE ON warden.keys
  FOR EACH STATEMENT EXECUTE FUNCTION warden._keys_changed();
ALTER TABLE warden.keys ENABLE ALWAYS TRIGGER keys_changed;
ALTER TABLE warden.keys ENABLE ALWAYS TRIGGER keys_truncated;
COMMENT ON TRIGGER keys_changed ON warden.keys IS
  'Drops every backend''s cached data keys at commit after a key row is updated or deleted, through pg_warden''s functions or not.';
COMMENT ON TRIGGER keys_truncated ON warden.keys IS
  'Drops every backend''s cached data keys at commit after warden.keys is truncated.';
