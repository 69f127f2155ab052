//! `warden.enable_tenancy` / `warden.disable_tenancy` /
//! `warden.tenant_tables`: one call makes a table tenant-isolated by RLS.
//!
//! Written in PL/pgSQL: it is DDL over catalog data, every identifier is
//! taken from the catalog and quoted (`regclass` output, `format('%I')`),
//! and it runs with the caller's rights (only a table's owner can change
//! its row security). The policies compare the tenant column with
//! `(SELECT warden.current_tenant())`, an InitPlan evaluated once per
//! query, so an index on the tenant column is used.
//!
//! `warden.tenant_tables` is derived from the catalogs alone: the tenant
//! column is the one the `warden_tenant_isolation` policy depends on.

use pgrx::prelude::*;

extension_sql!(
    r#"
-- enable_tenancy's body; SCD2 queues take the policies without the
-- column default and the index (a queue stays unindexed).
CREATE FUNCTION warden._enable_tenancy(tbl regclass, tenant_column name, default_and_index boolean) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    kind "char";
    col_num int2;
    col_type regtype;
    tenant_expr text;
    default_expr text;
BEGIN
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = tbl;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
            MESSAGE = format('%s is not a table', tbl),
            HINT = 'Tenancy applies to tables; a view over a tenant table should be created WITH (security_invoker = true).';
    END IF;
    SELECT a.attnum, a.atttypid INTO col_num, col_type
      FROM pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = tenant_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = format('column %I does not exist in %s', tenant_column, tbl),
            HINT = 'Pass the tenant column as the second argument, e.g. warden.enable_tenancy(''my_table'', ''org_id'').';
    END IF;
    CASE col_type
        WHEN 'text'::regtype, 'character varying'::regtype THEN
            tenant_expr := '(SELECT warden.current_tenant())';
            default_expr := 'warden.require_tenant()';
        WHEN 'uuid'::regtype THEN
            tenant_expr := '(SELECT warden.current_tenant()::pg_catalog.uuid)';
            default_expr := 'warden.require_tenant()::pg_catalog.uuid';
        WHEN 'bigint'::regtype THEN
            tenant_expr := '(SELECT warden.current_tenant()::pg_catalog.int8)';
            default_expr := 'warden.require_tenant()::pg_catalog.int8';
        WHEN 'integer'::regtype THEN
            tenant_expr := '(SELECT warden.current_tenant()::pg_catalog.int4)';
            default_expr := 'warden.require_tenant()::pg_catalog.int4';
        ELSE
            RAISE EXCEPTION USING ERRCODE = 'datatype_mismatch',
                MESSAGE = format('column %I of %s has type %s', tenant_column, tbl, col_type),
                HINT = 'The tenant column must be text, varchar, uuid, integer or bigint.';
    END CASE;

    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', tbl);
    -- Restrictive: no other policy can widen it. Fails closed: with no
    -- tenant the comparison is NULL, so no row qualifies.
    IF EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'warden_tenant_isolation') THEN
        EXECUTE format('DROP POLICY warden_tenant_isolation ON %s', tbl);
    END IF;
    EXECUTE format(
        'CREATE POLICY warden_tenant_isolation ON %s AS RESTRICTIVE FOR ALL TO PUBLIC USING (%I = %s) WITH CHECK (%I = %s)',
        tbl, tenant_column, tenant_expr, tenant_column, tenant_expr);
    -- Restrictive policies only narrow permissive ones; this one makes the
    -- table usable for roles with table privileges.
    IF EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'warden_tenant_base') THEN
        EXECUTE format('DROP POLICY warden_tenant_base ON %s', tbl);
    END IF;
    EXECUTE format('CREATE POLICY warden_tenant_base ON %s AS PERMISSIVE FOR ALL TO PUBLIC USING (true) WITH CHECK (true)', tbl);
    IF NOT default_and_index THEN
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', tbl, tenant_column, default_expr);
    IF NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = tbl AND i.indkey[0] = col_num) THEN
        EXECUTE format('CREATE INDEX ON %s (%I)', tbl, tenant_column);
    END IF;
END
$fn$;

CREATE FUNCTION warden.enable_tenancy(tbl regclass, tenant_column name DEFAULT 'tenant') RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT warden._enable_tenancy(tbl, tenant_column, true)
$fn$;

CREATE FUNCTION warden.disable_tenancy(tbl regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    col name;
BEGIN
    SELECT tenant_column INTO col FROM warden.tenant_tables WHERE table_name = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('%s is not tenant-isolated by pg_warden', tbl),
            HINT = 'See warden.tenant_tables for the tables warden.enable_tenancy() set up.';
    END IF;
    EXECUTE format('DROP POLICY IF EXISTS warden_tenant_isolation ON %s', tbl);
    EXECUTE format('DROP POLICY IF EXISTS warden_tenant_base ON %s', tbl);
    IF EXISTS (SELECT FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                WHERE d.adrelid = tbl AND a.attname = col
                  AND pg_get_expr(d.adbin, d.adrelid) LIKE '%warden.require_tenant()%') THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', tbl, col);
    END IF;
    EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', tbl);
    -- leave RLS on if the owner has policies of their own
    IF NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl) THEN
        EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
    END IF;
END
$fn$;

CREATE VIEW warden.tenant_tables AS
SELECT c.oid::regclass AS table_name,
       a.attname AS tenant_column,
       c.relrowsecurity AS rls_enabled,
       c.relforcerowsecurity AS rls_forced,
       (NOT p.polpermissive AND p.polcmd = '*'
        AND EXISTS (SELECT FROM pg_catalog.pg_policy b
                     WHERE b.polrelid = c.oid AND b.polname = 'warden_tenant_base')) AS policies_present,
       EXISTS (SELECT FROM pg_catalog.pg_index i
                WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum) AS index_present,
       EXISTS (SELECT FROM pg_catalog.pg_attrdef d
                WHERE d.adrelid = c.oid AND d.adnum = a.attnum
                  AND pg_catalog.pg_get_expr(d.adbin, d.adrelid) LIKE '%warden.require_tenant()%') AS default_present
  FROM pg_catalog.pg_policy p
  JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
  -- the column the isolation policy depends on (recorded once per expression)
  JOIN LATERAL (SELECT pg_catalog.min(dep.refobjsubid) AS attnum
                  FROM pg_catalog.pg_depend dep
                 WHERE dep.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND dep.objid = p.oid
                   AND dep.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND dep.refobjid = c.oid AND dep.refobjsubid > 0) col ON true
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = col.attnum
 WHERE p.polname = 'warden_tenant_isolation';

COMMENT ON FUNCTION warden._enable_tenancy(regclass, name, boolean) IS
  'Internal: the body of enable_tenancy; without the column default and index for SCD2 queues.';
COMMENT ON FUNCTION warden.enable_tenancy(regclass, name) IS
  'Makes a table tenant-isolated: ENABLE and FORCE RLS, a RESTRICTIVE policy on the tenant column for all commands, a permissive base policy, a column default from the tenant context, and an index led by the tenant column. Idempotent; the caller must own the table.';
COMMENT ON FUNCTION warden.disable_tenancy(regclass) IS
  'Removes what warden.enable_tenancy set up (policies, default, FORCE; RLS too when no other policy remains). The index stays.';
COMMENT ON VIEW warden.tenant_tables IS
  'Tables isolated by warden.enable_tenancy: tenant column, RLS enabled and forced, policies, index and default present.';
"#,
    name = "tenancy_policies",
    requires = ["tenancy_context_comments"],
);
