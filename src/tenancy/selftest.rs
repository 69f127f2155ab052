//! `warden.tenant_isolation_selftest(tbl, app_role)`: proves, as the
//! application role and with two synthetic tenants, that a tenant table
//! isolates: each sees only its own rows and cannot insert, update, move
//! or delete the other's, and with no tenant nothing is visible. Runs in a
//! subtransaction that is always rolled back: it leaves no rows behind.
//!
//! Each probe runs through `warden._tenancy_probe` as the application role
//! the way a SECURITY DEFINER function owned by it would (the user id
//! switched with SECURITY_LOCAL_USERID_CHANGE and
//! SECURITY_RESTRICTED_OPERATION), not under `SET ROLE`: the table owner's
//! policies, defaults and triggers it fires cannot `RESET ROLE` back to
//! the operator running the self-test (docs/security.md, rule 1).

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::WardenError;

/// The statements a probe may run, `$1` the tenant it names, `$2` another.
fn probe_sql(probe: &str) -> Option<&'static str> {
    Some(match probe {
        "count" => "SELECT pg_catalog.count(*) FROM %1$s",
        "count_not" => "SELECT pg_catalog.count(*) FROM %1$s t WHERE t.%2$I::pg_catalog.text IS DISTINCT FROM $1",
        "count_is" => "SELECT pg_catalog.count(*) FROM %1$s t WHERE t.%2$I::pg_catalog.text OPERATOR(pg_catalog.=) $1",
        "insert_default" => "WITH i AS (INSERT INTO %1$s DEFAULT VALUES RETURNING 1) SELECT pg_catalog.count(*) FROM i",
        "insert_for" => "WITH i AS (INSERT INTO %1$s (%2$I) VALUES ($1::%3$s) RETURNING 1) SELECT pg_catalog.count(*) FROM i",
        "update_of" => "WITH u AS (UPDATE %1$s t SET %2$I = t.%2$I WHERE t.%2$I::pg_catalog.text OPERATOR(pg_catalog.=) $1 RETURNING 1) SELECT pg_catalog.count(*) FROM u",
        "delete_of" => "WITH d AS (DELETE FROM %1$s t WHERE t.%2$I::pg_catalog.text OPERATOR(pg_catalog.=) $1 RETURNING 1) SELECT pg_catalog.count(*) FROM d",
        "move_to" => "WITH u AS (UPDATE %1$s t SET %2$I = $1::%3$s WHERE t.%2$I::pg_catalog.text OPERATOR(pg_catalog.=) $2 RETURNING 1) SELECT pg_catalog.count(*) FROM u",
        _ => return None,
    })
}

/// Whether the current user could `SET ROLE role` itself (on PG16 and
/// later a membership granted `WITH SET FALSE` does not allow it).
fn may_set_role(role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups for the current user.
    unsafe {
        #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
        return pg_sys::member_can_set_role(pg_sys::GetUserId(), role);
        #[cfg(not(any(feature = "pg16", feature = "pg17", feature = "pg18")))]
        return pg_sys::is_member_of_role(pg_sys::GetUserId(), role);
    }
}

/// The role `app_role`, if the current user could `SET ROLE` to it.
fn role_to_act_as(app_role: &str) -> pg_sys::Oid {
    let role_name = std::ffi::CString::new(app_role).unwrap_or_default();
    // SAFETY: catalog lookups; missing_ok so an unknown role is reported here.
    let (role, member) = unsafe {
        let role = pg_sys::get_role_oid(role_name.as_ptr(), true);
        (role, role != pg_sys::InvalidOid && may_set_role(role))
    };
    if !member {
        WardenError::privilege(format!(
            "must be a member of role \"{app_role}\" to test as it"
        ))
        .hint(format!(
            "GRANT \"{app_role}\" TO the role running the self-test."
        ))
        .raise();
    }
    role
}

/// `warden.tenant_isolation_selftest(tbl, app_role)`: the caller must be
/// able to act as `app_role`. The checks (`_tenancy_selftest`, pg_warden's
/// own constant PL/pgSQL) run with the extension owner's rights, as they
/// call the probe, which nobody else may execute; every probe switches to
/// `app_role` itself, so nothing of the table's owner runs with more.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn tenant_isolation_selftest(
    tbl: Option<pg_sys::Oid>,
    app_role: Option<&std::ffi::CStr>,
) -> TableIterator<
    'static,
    (
        name!(check_name, String),
        name!(passed, bool),
        name!(detail, String),
    ),
> {
    let tbl = crate::error::not_null(tbl, "tbl");
    let app_role = crate::error::not_null(app_role, "app_role")
        .to_string_lossy()
        .into_owned();
    role_to_act_as(&app_role);
    let rows = crate::privileged::as_superuser(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT s.check_name, s.passed, s.detail FROM warden._tenancy_selftest($1::pg_catalog.regclass, $2::pg_catalog.name) s",
                    None,
                    &[tbl.into(), app_role.as_str().into()],
                )?
                .map(|row| {
                    Ok((
                        row.get::<String>(1)?.unwrap_or_default(),
                        row.get::<bool>(2)?.unwrap_or(false),
                        row.get::<String>(3)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("self-test failed: {e}")).raise());
    TableIterator::new(rows)
}

/// `warden._tenancy_probe(tbl, app_role, tenant, probe, arg, other)`: runs
/// one of the self-test's fixed statements on `tbl` as `app_role` with
/// `tenant` set (none when NULL); returns the rows it counted or changed.
/// The caller must be a member of `app_role` (it could `SET ROLE` to it).
#[pg_extern(volatile, parallel_unsafe)]
fn _tenancy_probe(
    tbl: pg_sys::Oid,
    app_role: &str,
    tenant: Option<&str>,
    probe: &str,
    arg: Option<&str>,
    other: Option<&str>,
) -> i64 {
    let template = probe_sql(probe).unwrap_or_else(|| {
        WardenError::invalid_parameter(format!("unknown self-test probe \"{probe}\"")).raise()
    });
    let role = role_to_act_as(app_role);
    // the statement, from the catalog: the table (schema-qualified, as the
    // probe runs with a fixed search_path), its tenant column and type
    let table = crate::names::qualified_relation(tbl)
        .unwrap_or_else(|| WardenError::invalid_parameter("no such table").raise());
    let sql = crate::spi_read::read_one::<String>(
        "SELECT pg_catalog.format($3, $2, t.tenant_column, pg_catalog.format_type(a.atttypid, a.atttypmod))
           FROM warden.tenant_tables t
           JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) t.table_name AND a.attname OPERATOR(pg_catalog.=) t.tenant_column
          WHERE t.table_name OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
        &[tbl.into(), table.into(), template.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| WardenError::prerequisite("the table is not set up by warden.enable_tenancy()").raise());
    if let Some(t) = tenant {
        crate::tenant_context::validate_tenant_or_raise(t);
    }
    crate::privileged::as_owner(role, || {
        match tenant {
            Some(t) => crate::tenant_context::set_tenant_setting(t),
            None => crate::tenant_context::reset_tenant_setting(),
        }
        Spi::get_one_with_args::<i64>(&sql, &[arg.into(), other.into()])
            .map(|n| n.unwrap_or(0))
            .unwrap_or_else(|e| {
                WardenError::prerequisite(format!("self-test probe failed: {e}")).raise()
            })
    })
}

extension_sql!(
    r#"
CREATE FUNCTION warden.tenant_isolation_selftest(tbl regclass, app_role name)
RETURNS TABLE (check_name text, passed boolean, detail text)
VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'tenant_isolation_selftest_wrapper';

-- The checks, run by tenant_isolation_selftest with the extension owner's
-- rights (it checked the caller may act as app_role); each probe runs as
-- app_role.
CREATE FUNCTION warden._tenancy_selftest(tbl regclass, app_role name)
RETURNS TABLE (check_name text, passed boolean, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    col name;
    col_type regtype;
    ta text;
    tb text;
    n bigint;
    inserted_a boolean := false;
    inserted_b boolean := false;
BEGIN
    SELECT t.tenant_column INTO col FROM warden.tenant_tables t WHERE t.table_name = tbl;
    IF NOT FOUND THEN
        check_name := 'tenancy_enabled'; passed := false;
        detail := format('%s is not set up by warden.enable_tenancy()', tbl);
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT a.atttypid INTO col_type FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = col;
    -- two tenants no real data uses
    IF col_type = 'uuid'::regtype THEN
        ta := gen_random_uuid()::text; tb := gen_random_uuid()::text;
    ELSIF col_type IN ('integer'::regtype, 'bigint'::regtype) THEN
        ta := (2000000000 + floor(random() * 100000000))::bigint::text;
        tb := (2000000000 + floor(random() * 100000000) + 100000001)::bigint::text;
    ELSE
        ta := 'selftest-a-' || substr(md5(random()::text), 1, 12);
        tb := 'selftest-b-' || substr(md5(random()::text), 1, 12);
    END IF;

    BEGIN
        -- no tenant: fail closed
        BEGIN
            n := warden._tenancy_probe(tbl, app_role, NULL, 'count', NULL, NULL);
            check_name := 'no_tenant_sees_nothing'; passed := n = 0;
            detail := format('%s rows visible with no tenant set', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'no_tenant_sees_nothing'; passed := false; detail := SQLERRM;
        END;
        RETURN NEXT;

        -- each tenant inserts a row of its own (tenant from the column default)
        BEGIN
            PERFORM warden._tenancy_probe(tbl, app_role, ta, 'insert_default', NULL, NULL);
            inserted_a := true;
            check_name := 'a_inserts_own_row'; passed := true; detail := 'ok';
        EXCEPTION WHEN OTHERS THEN
            check_name := 'a_inserts_own_row'; passed := false;
            detail := SQLERRM || ' (the self-test inserts DEFAULT VALUES; give other NOT NULL columns defaults to test reads and writes)';
        END;
        RETURN NEXT;
        BEGIN
            PERFORM warden._tenancy_probe(tbl, app_role, tb, 'insert_default', NULL, NULL);
            inserted_b := true;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;

        -- as B
        BEGIN
            n := warden._tenancy_probe(tbl, app_role, tb, 'count_not', tb, NULL);
            check_name := 'b_sees_only_own_rows'; passed := n = 0; detail := format('%s rows of other tenants visible', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'b_sees_only_own_rows'; passed := false; detail := SQLERRM;
        END;
        RETURN NEXT;
        BEGIN
            n := warden._tenancy_probe(tbl, app_role, tb, 'update_of', ta, NULL);
            check_name := 'b_cannot_update_a'; passed := n = 0; detail := format('%s rows of tenant A updated', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'b_cannot_update_a'; passed := true; detail := SQLERRM;
        END;
        RETURN NEXT;
        BEGIN
            n := warden._tenancy_probe(tbl, app_role, tb, 'delete_of', ta, NULL);
            check_name := 'b_cannot_delete_a'; passed := n = 0; detail := format('%s rows of tenant A deleted', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'b_cannot_delete_a'; passed := true; detail := SQLERRM;
        END;
        RETURN NEXT;
        BEGIN
            PERFORM warden._tenancy_probe(tbl, app_role, tb, 'insert_for', ta, NULL);
            check_name := 'b_cannot_insert_for_a'; passed := false; detail := 'a row for tenant A was inserted';
        EXCEPTION WHEN OTHERS THEN
            -- refused by the policy, not for want of INSERT rights
            check_name := 'b_cannot_insert_for_a';
            passed := SQLSTATE = '42501' AND pg_catalog.has_table_privilege(app_role, tbl, 'INSERT');
            detail := SQLERRM || CASE WHEN pg_catalog.has_table_privilege(app_role, tbl, 'INSERT') THEN ''
                                      ELSE pg_catalog.format(' (%I may not insert at all, so this proves nothing)', app_role) END;
        END;
        RETURN NEXT;
        IF inserted_b THEN
            BEGIN
                n := warden._tenancy_probe(tbl, app_role, tb, 'move_to', ta, tb);
                check_name := 'b_cannot_move_row_to_a'; passed := n = 0; detail := format('%s rows moved to tenant A', n);
            EXCEPTION WHEN OTHERS THEN
                check_name := 'b_cannot_move_row_to_a'; passed := SQLSTATE = '42501'; detail := SQLERRM;
            END;
            RETURN NEXT;
        END IF;

        -- and as A, B's row is invisible
        BEGIN
            n := warden._tenancy_probe(tbl, app_role, ta, 'count_is', tb, NULL);
            check_name := 'a_cannot_read_b'; passed := n = 0; detail := format('%s rows of tenant B visible', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'a_cannot_read_b'; passed := false; detail := SQLERRM;
        END;
        RETURN NEXT;
        IF inserted_a THEN
            n := warden._tenancy_probe(tbl, app_role, ta, 'count_is', ta, NULL);
            check_name := 'a_reads_own_row'; passed := n = 1; detail := format('%s own rows visible', n);
            RETURN NEXT;
        END IF;
        -- reads and writes of the other tenant's rows prove nothing when
        -- neither tenant could write a row to try them on
        check_name := 'checked_with_rows'; passed := inserted_a AND inserted_b;
        detail := CASE WHEN passed THEN 'both tenants wrote a row, so the checks above had rows to find'
                       ELSE 'a tenant could not insert a row: the read, update, delete and move checks had nothing to find' END;
        RETURN NEXT;
        RAISE EXCEPTION 'warden_selftest_rollback';
    EXCEPTION WHEN raise_exception THEN
        IF SQLERRM <> 'warden_selftest_rollback' THEN
            RAISE;
        END IF;
    END;
END
$fn$;

COMMENT ON FUNCTION warden._tenancy_probe(oid, text, text, text, text, text) IS
  'Internal: one fixed statement of the tenant isolation self-test, run as the application role (security-restricted, no SET ROLE) with a tenant set.';
COMMENT ON FUNCTION warden._tenancy_selftest(regclass, name) IS
  'Internal: the checks of tenant_isolation_selftest, each probe run as app_role.';
COMMENT ON FUNCTION warden.tenant_isolation_selftest(regclass, name) IS
  'Tests, as app_role with two synthetic tenants in a rolled-back subtransaction, that the table isolates tenants: no tenant sees nothing; each sees only its own rows and cannot insert, update, move or delete the other''s. Returns one row per check.';
"#,
    name = "tenancy_selftest",
    requires = ["tenancy_policies", _tenancy_probe],
);
