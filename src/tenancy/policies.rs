//! `warden.enable_tenancy` / `warden.disable_tenancy` /
//! `warden.tenant_tables`: one call makes a table tenant-isolated by RLS.
//!
//! Written in PL/pgSQL: it is DDL over catalog data, every identifier is
//! taken from the catalog and quoted (`regclass` output, `format('%I')`),
//! and it runs with the caller's rights (only a table's owner can change
//! its row security). The policies compare the tenant column with
//! `(SELECT warden.current_tenant())` (or the typed `current_tenant_bigint`,
//! `_integer`, `_uuid`, which accept only the canonical spelling), an
//! InitPlan evaluated once per query, so an index on the tenant column is
//! used.
//!
//! The isolation policy is PERMISSIVE while it is the table's only
//! permissive policy (then it alone decides what is visible, and no
//! `USING (true)` companion is needed) and RESTRICTIVE when the owner has
//! permissive policies of their own, which it then narrows to the tenant
//! instead of voiding them. An event trigger keeps that true when the
//! owner adds a permissive policy later.
//!
//! A partitioned table's policies apply to queries on it, and each
//! partition's own to queries that name the partition: every partition,
//! existing or attached or created later, gets the same forced row
//! security and isolation policy (an event trigger covers the later ones).
//!
//! `warden.tenant_tables` is derived from the catalogs alone: the tenant
//! column is the one the `warden_tenant_isolation` policy depends on.

use std::ffi::CStr;

use pgrx::pg_sys::Oid;
use pgrx::prelude::*;
use pgrx::IntoDatum;

use crate::error::{not_null, WardenError};
use crate::fmgr::{call_internal, name_datum};

/// Isolates `tbl` by `tenant_column` (with the column default and the
/// index when `default_and_index`), and every partition below it, as
/// the caller; the PL/pgSQL `_enable_tenancy` isolates one table.
pub fn isolate_table(tbl: Oid, tenant_column: &str, default_and_index: bool) {
    let column = std::ffi::CString::new(tenant_column).unwrap_or_default();
    isolate(tbl, &column, default_and_index);
}

fn isolate(tbl: Oid, tenant_column: &CStr, default_and_index: bool) {
    call_internal(
        c"warden._enable_tenancy(pg_catalog.regclass,pg_catalog.name,pg_catalog.bool)",
        &[
            tbl.into_datum(),
            Some(name_datum(tenant_column)),
            default_and_index.into_datum(),
        ],
    );
    // Postgres applies a partitioned table's policies to queries on it,
    // and each partition's own to queries that name the partition
    // SAFETY: a syscache lookup by OID.
    if unsafe { pgrx::pg_sys::get_rel_relkind(tbl) } as u8
        == pgrx::pg_sys::RELKIND_PARTITIONED_TABLE
    {
        cover_partitions(tbl, tenant_column);
    }
}

/// Gives every partition below `root` that lacks it the same forced row
/// security and tenant policy, top level first; each is checked when the
/// loop reaches it (isolating one fires the DDL event trigger, which may
/// have covered the rest already).
fn cover_partitions(root: Oid, tenant_column: &CStr) {
    let parts = Spi::connect(|client| {
        client
            .select(
                "SELECT t.relid::pg_catalog.oid FROM pg_catalog.pg_partition_tree($1::pg_catalog.regclass) t
                  WHERE t.relid OPERATOR(pg_catalog.<>) $1::pg_catalog.regclass ORDER BY t.level",
                None,
                &[root.into()],
            )?
            .map(|row| row.get::<Oid>(1))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot list the partitions: {e}")).raise());
    for part in parts.into_iter().flatten() {
        let covered = crate::spi_read::read_one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_policy p WHERE p.polrelid OPERATOR(pg_catalog.=) $1
                               AND p.polname OPERATOR(pg_catalog.=) 'warden_tenant_isolation')",
            &[part.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false);
        if !covered {
            call_internal(
                c"warden._enable_tenancy(pg_catalog.regclass,pg_catalog.name,pg_catalog.bool)",
                &[
                    part.into_datum(),
                    Some(name_datum(tenant_column)),
                    false.into_datum(),
                ],
            );
        }
    }
}

/// `warden.enable_tenancy(tbl, tenant_column)`.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn enable_tenancy(tbl: Option<Oid>, tenant_column: Option<&CStr>) {
    let (tbl, tenant_column) = (
        not_null(tbl, "tbl"),
        not_null(tenant_column, "tenant_column"),
    );
    isolate(tbl, tenant_column, true);
    let mut fields = serde_json::Map::new();
    fields.insert("table".into(), crate::names::qualified_relation(tbl).into());
    fields.insert(
        "tenant_column".into(),
        tenant_column.to_string_lossy().into_owned().into(),
    );
    crate::audit::record_admin_event("tenancy.enable", None, fields);
}

/// `warden.disable_tenancy(tbl)`: undoes `enable_tenancy` (as the caller,
/// in `_disable_tenancy`) and records it in the audit chain.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn disable_tenancy(tbl: Option<Oid>) {
    let tbl = not_null(tbl, "tbl");
    call_internal(
        c"warden._disable_tenancy(pg_catalog.regclass)",
        &[tbl.into_datum()],
    );
    let mut fields = serde_json::Map::new();
    fields.insert("table".into(), crate::names::qualified_relation(tbl).into());
    crate::audit::record_admin_event("tenancy.disable", None, fields);
}

/// `warden._tenancy_cover_partitions(tbl, tenant_column)`: for the DDL
/// event trigger.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn _tenancy_cover_partitions(tbl: Oid, tenant_column: &CStr) {
    cover_partitions(tbl, tenant_column);
}

extension_sql!(
    r#"
-- The isolation of one table (its partitions are isolate_table's, in
-- Rust); SCD2 queues take the policies without the column default and
-- the index (a queue keeps its primary key as its only index).
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
            tenant_expr := '(SELECT warden.current_tenant_uuid())';
            default_expr := 'warden.require_tenant()::pg_catalog.uuid';
        WHEN 'bigint'::regtype THEN
            tenant_expr := '(SELECT warden.current_tenant_bigint())';
            default_expr := 'warden.require_tenant()::pg_catalog.int8';
        WHEN 'integer'::regtype THEN
            tenant_expr := '(SELECT warden.current_tenant_integer())';
            default_expr := 'warden.require_tenant()::pg_catalog.int4';
        ELSE
            RAISE EXCEPTION USING ERRCODE = 'datatype_mismatch',
                MESSAGE = format('column %I of %s has type %s', tenant_column, tbl, col_type),
                HINT = 'The tenant column must be text, varchar, uuid, integer or bigint.';
    END CASE;

    IF EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'warden_tenant_isolation') THEN
        EXECUTE format('DROP POLICY warden_tenant_isolation ON %s', tbl);
    END IF;
    -- Fails closed: with no tenant the comparison is NULL, so no row
    -- qualifies. Alone, permissive; next to the owner's permissive
    -- policies, restrictive, so they keep meaning what they say within
    -- the tenant and none of them can widen it.
    EXECUTE format(
        'CREATE POLICY warden_tenant_isolation ON %s AS %s FOR ALL TO PUBLIC USING (%I = %s) WITH CHECK (%I = %s)',
        tbl,
        CASE WHEN EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl AND p.polpermissive) THEN 'RESTRICTIVE' ELSE 'PERMISSIVE' END,
        tenant_column, tenant_expr, tenant_column, tenant_expr);
    -- after the policy exists, so the event trigger this ALTER fires finds
    -- the table isolated already
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', tbl);
    IF NOT default_and_index THEN
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', tbl, tenant_column, default_expr);
    IF NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = tbl AND i.indkey[0] = col_num) THEN
        EXECUTE format('CREATE INDEX ON %s (%I)', tbl, tenant_column);
    END IF;
END
$fn$;

-- Keeps tenant isolation whole after the owner's DDL: partitions created
-- or attached under a tenant-isolated table are locked like the others,
-- and a permissive policy added next to a permissive isolation policy
-- turns it restrictive (otherwise the new policy would widen every
-- tenant's view). Runs only ALTER TABLE ... ROW LEVEL SECURITY and
-- CREATE/DROP POLICY, which evaluate no user code, so the definer's
-- rights give the caller nothing.
CREATE FUNCTION warden._tenancy_on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
BEGIN
    -- (a restore creates and attaches partitions before it creates any
    -- policy, so it finds no tenant-isolated root here and its own
    -- CREATE POLICY statements do the rest)
    FOR r IN SELECT DISTINCT t.table_name AS root, t.tenant_column
               FROM pg_catalog.pg_event_trigger_ddl_commands() d
               JOIN pg_class c ON c.oid = d.objid
               JOIN warden.tenant_tables t ON t.table_name = pg_catalog.pg_partition_root(d.objid)
              WHERE d.classid = 'pg_catalog.pg_class'::regclass AND c.relkind IN ('r', 'p')
                AND (c.relispartition OR c.relkind = 'p') LOOP
        PERFORM warden._tenancy_cover_partitions(r.root, r.tenant_column);
    END LOOP;
    FOR r IN SELECT DISTINCT p.polrelid::regclass AS tbl, t.tenant_column
               FROM pg_catalog.pg_event_trigger_ddl_commands() d
               JOIN pg_policy p ON p.oid = d.objid
               JOIN warden.tenant_tables t ON t.table_name = p.polrelid
              WHERE d.classid = 'pg_catalog.pg_policy'::regclass
                AND p.polpermissive AND p.polname <> 'warden_tenant_isolation'
                AND EXISTS (SELECT FROM pg_policy w WHERE w.polrelid = p.polrelid
                               AND w.polname = 'warden_tenant_isolation' AND w.polpermissive) LOOP
        PERFORM warden._enable_tenancy(r.tbl, r.tenant_column, false);
    END LOOP;
END
$fn$;
CREATE EVENT TRIGGER warden_tenancy_on_ddl ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE POLICY', 'ALTER POLICY')
  EXECUTE FUNCTION warden._tenancy_on_ddl();

CREATE FUNCTION warden.enable_tenancy(tbl regclass, tenant_column name DEFAULT 'tenant') RETURNS void
VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'enable_tenancy_wrapper';
-- every partition below a tenant-isolated table that lacks the isolation
CREATE FUNCTION warden._tenancy_cover_partitions(tbl regclass, tenant_column name) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', '_tenancy_cover_partitions_wrapper';

CREATE FUNCTION warden._disable_tenancy(tbl regclass) RETURNS void
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
CREATE FUNCTION warden.disable_tenancy(tbl regclass) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'disable_tenancy_wrapper';

CREATE VIEW warden.tenant_tables AS
SELECT c.oid::regclass AS table_name,
       a.attname AS tenant_column,
       c.relrowsecurity AS rls_enabled,
       c.relforcerowsecurity AS rls_forced,
       -- for all commands; restrictive whenever another permissive policy exists
       (p.polcmd = '*'
        AND (NOT p.polpermissive
             OR NOT EXISTS (SELECT FROM pg_catalog.pg_policy o
                             WHERE o.polrelid = c.oid AND o.polpermissive AND o.oid <> p.oid))) AS policies_present,
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
  'Internal: isolates one table (enable_tenancy without the partitions); without the column default and index for SCD2 queues.';
COMMENT ON FUNCTION warden._tenancy_cover_partitions(regclass, name) IS
  'Internal: gives every partition below a tenant-isolated table the same forced row security and tenant policy.';
COMMENT ON FUNCTION warden._tenancy_on_ddl() IS
  'Internal: event trigger; isolates new partitions of tenant-isolated tables and makes the isolation policy restrictive when a permissive policy is added beside it.';
COMMENT ON FUNCTION warden.enable_tenancy(regclass, name) IS
  'Makes a table tenant-isolated: ENABLE and FORCE RLS, a policy on the tenant column for all commands (permissive when alone, restrictive beside the owner''s permissive policies), a column default from the tenant context, and an index led by the tenant column; a partitioned table''s partitions, now and later, get the same. Idempotent; the caller must own the table.';
COMMENT ON FUNCTION warden._disable_tenancy(regclass) IS
  'Internal: what warden.disable_tenancy undoes, run as the caller.';
COMMENT ON FUNCTION warden.disable_tenancy(regclass) IS
  'Removes what warden.enable_tenancy set up (policies, default, FORCE; RLS too when no other policy remains). The index stays.';
COMMENT ON VIEW warden.tenant_tables IS
  'Tables isolated by warden.enable_tenancy: tenant column, RLS enabled and forced, policies, index and default present.';
"#,
    name = "tenancy_policies",
    requires = ["tenancy_context_comments"],
);
