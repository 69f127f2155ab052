//! `warden.tenant_isolation_selftest(tbl, app_role)`: proves, as the
//! application role and with two synthetic tenants, that a tenant table
//! isolates: each sees only its own rows and cannot insert, update, move
//! or delete the other's, and with no tenant nothing is visible. Runs in a
//! subtransaction that is always rolled back: it leaves no rows behind.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE FUNCTION warden.tenant_isolation_selftest(tbl regclass, app_role name)
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
    IF NOT pg_has_role(current_user, app_role, 'MEMBER') THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('must be a member of role %I to test as it', app_role),
            HINT = format('GRANT %I TO %I; (the self-test runs SET ROLE)', app_role, current_user);
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
        EXECUTE format('SET LOCAL ROLE %I', app_role);
        BEGIN
            EXECUTE format('SELECT count(*) FROM %s', tbl) INTO n;
            check_name := 'no_tenant_sees_nothing'; passed := n = 0;
            detail := format('%s rows visible with no tenant set', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'no_tenant_sees_nothing'; passed := false; detail := SQLERRM;
        END;
        RETURN NEXT;
        RESET ROLE;

        -- each tenant inserts a row of its own (tenant from the column default)
        PERFORM warden.set_tenant(ta);
        EXECUTE format('SET LOCAL ROLE %I', app_role);
        BEGIN
            EXECUTE format('INSERT INTO %s DEFAULT VALUES', tbl);
            inserted_a := true;
            check_name := 'a_inserts_own_row'; passed := true; detail := 'ok';
        EXCEPTION WHEN OTHERS THEN
            check_name := 'a_inserts_own_row'; passed := false;
            detail := SQLERRM || ' (the self-test inserts DEFAULT VALUES; give other NOT NULL columns defaults to test reads and writes)';
        END;
        RETURN NEXT;
        RESET ROLE;
        PERFORM warden.set_tenant(tb);
        EXECUTE format('SET LOCAL ROLE %I', app_role);
        BEGIN
            EXECUTE format('INSERT INTO %s DEFAULT VALUES', tbl);
            inserted_b := true;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;

        -- as B
        BEGIN
            EXECUTE format('SELECT count(*) FROM %s WHERE %I::text IS DISTINCT FROM %L', tbl, col, tb) INTO n;
            check_name := 'b_sees_only_own_rows'; passed := n = 0; detail := format('%s rows of other tenants visible', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'b_sees_only_own_rows'; passed := false; detail := SQLERRM;
        END;
        RETURN NEXT;
        BEGIN
            EXECUTE format('UPDATE %s SET %I = %I WHERE %I::text = %L', tbl, col, col, col, ta);
            GET DIAGNOSTICS n = ROW_COUNT;
            check_name := 'b_cannot_update_a'; passed := n = 0; detail := format('%s rows of tenant A updated', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'b_cannot_update_a'; passed := true; detail := SQLERRM;
        END;
        RETURN NEXT;
        BEGIN
            EXECUTE format('DELETE FROM %s WHERE %I::text = %L', tbl, col, ta);
            GET DIAGNOSTICS n = ROW_COUNT;
            check_name := 'b_cannot_delete_a'; passed := n = 0; detail := format('%s rows of tenant A deleted', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'b_cannot_delete_a'; passed := true; detail := SQLERRM;
        END;
        RETURN NEXT;
        BEGIN
            EXECUTE format('INSERT INTO %s (%I) VALUES (%L)', tbl, col, ta);
            check_name := 'b_cannot_insert_for_a'; passed := false; detail := 'a row for tenant A was inserted';
        EXCEPTION WHEN OTHERS THEN
            check_name := 'b_cannot_insert_for_a'; passed := SQLSTATE = '42501'; detail := SQLERRM;
        END;
        RETURN NEXT;
        IF inserted_b THEN
            BEGIN
                EXECUTE format('UPDATE %s SET %I = %L WHERE %I::text = %L', tbl, col, ta, col, tb);
                GET DIAGNOSTICS n = ROW_COUNT;
                check_name := 'b_cannot_move_row_to_a'; passed := n = 0; detail := format('%s rows moved to tenant A', n);
            EXCEPTION WHEN OTHERS THEN
                check_name := 'b_cannot_move_row_to_a'; passed := SQLSTATE = '42501'; detail := SQLERRM;
            END;
            RETURN NEXT;
        END IF;
        RESET ROLE;

        -- and as A, B's row is invisible
        PERFORM warden.set_tenant(ta);
        EXECUTE format('SET LOCAL ROLE %I', app_role);
        BEGIN
            EXECUTE format('SELECT count(*) FROM %s WHERE %I::text = %L', tbl, col, tb) INTO n;
            check_name := 'a_cannot_read_b'; passed := n = 0; detail := format('%s rows of tenant B visible', n);
        EXCEPTION WHEN OTHERS THEN
            check_name := 'a_cannot_read_b'; passed := false; detail := SQLERRM;
        END;
        RETURN NEXT;
        IF inserted_a THEN
            EXECUTE format('SELECT count(*) FROM %s WHERE %I::text = %L', tbl, col, ta) INTO n;
            check_name := 'a_reads_own_row'; passed := n = 1; detail := format('%s own rows visible', n);
            RETURN NEXT;
        END IF;
        RESET ROLE;
        RAISE EXCEPTION 'warden_selftest_rollback';
    EXCEPTION WHEN raise_exception THEN
        IF SQLERRM <> 'warden_selftest_rollback' THEN
            RAISE;
        END IF;
    END;
END
$fn$;

COMMENT ON FUNCTION warden.tenant_isolation_selftest(regclass, name) IS
  'Tests, as app_role with two synthetic tenants in a rolled-back subtransaction, that the table isolates tenants: no tenant sees nothing; each sees only its own rows and cannot insert, update, move or delete the other''s. Returns one row per check.';
"#,
    name = "tenancy_selftest",
    requires = ["tenancy_policies"],
);
