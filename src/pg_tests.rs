//! `#[pg_test]`s: run inside a real Postgres with the library preloaded
//! (see `pg_test::postgresql_conf_options` in lib.rs).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// A function that panics, to prove a Rust panic inside SQL becomes an
    /// ordinary ERROR (SQLSTATE XX000) that a caller can catch.
    #[pg_extern]
    fn panics_for_test() -> i32 {
        panic!("deliberate panic from Rust")
    }

    fn sql_text(query: &str) -> Option<String> {
        Spi::get_one::<String>(query).expect("query failed")
    }

    #[pg_test]
    fn current_tenant_is_null_until_set() {
        assert_eq!(sql_text("SELECT warden.current_tenant()"), None);
    }

    #[pg_test]
    fn set_tenant_is_seen_by_current_and_require_tenant() {
        Spi::run("SELECT warden.set_tenant('acme')").unwrap();
        assert_eq!(
            sql_text("SELECT warden.current_tenant()").as_deref(),
            Some("acme")
        );
        assert_eq!(
            sql_text("SELECT warden.require_tenant()").as_deref(),
            Some("acme")
        );
        assert_eq!(
            sql_text("SELECT current_setting('warden.tenant')").as_deref(),
            Some("acme")
        );
    }

    #[pg_test(error = "no tenant is set for this transaction")]
    fn require_tenant_raises_when_unset() {
        let _ = Spi::get_one::<String>("SELECT warden.require_tenant()");
    }

    #[pg_test(error = "invalid tenant id")]
    fn set_tenant_refuses_injection_shaped_ids() {
        let _ = Spi::run("SELECT warden.set_tenant($$x' OR '1'='1$$)");
    }

    #[pg_test]
    fn errors_carry_sqlstate_detail_and_hint() {
        Spi::run(
            "DO $$ DECLARE s text; d text; h text; BEGIN
               PERFORM warden.set_tenant('');
             EXCEPTION WHEN OTHERS THEN
               GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
               PERFORM set_config('test.diag', s || '|' || d || '|' || h, true);
             END $$",
        )
        .unwrap();
        let diag = sql_text("SELECT current_setting('test.diag')").unwrap();
        assert_eq!(
            diag,
            "22023|The tenant id is empty.|A tenant id is 1 to 128 ASCII letters, digits and _ . : @ + -."
        );
    }

    #[pg_test]
    fn a_rust_panic_in_a_sql_function_is_an_ordinary_error() {
        Spi::run(
            "DO $$ DECLARE s text; m text; BEGIN
               PERFORM tests.panics_for_test();
             EXCEPTION WHEN OTHERS THEN
               GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
               PERFORM set_config('test.panic', s || '|' || m, true);
             END $$",
        )
        .unwrap();
        let caught = sql_text("SELECT current_setting('test.panic')").unwrap();
        assert_eq!(caught, "XX000|deliberate panic from Rust");
        // the backend is still healthy
        assert_eq!(Spi::get_one::<i32>("SELECT 1").unwrap(), Some(1));
    }

    #[pg_test]
    fn the_test_database_gets_a_running_worker_with_a_heartbeat() {
        // the worker starts when CREATE EXTENSION commits; give it 20 s
        Spi::run(
            "DO $$ BEGIN
               FOR i IN 1..200 LOOP
                 PERFORM FROM warden.worker_status
                   WHERE datname = current_database() AND state = 'running' AND runs > 0;
                 IF FOUND THEN RETURN; END IF;
                 PERFORM pg_sleep(0.1);
               END LOOP;
               RAISE EXCEPTION 'no running pg_warden worker in this database';
             END $$",
        )
        .unwrap();
        let task = sql_text(
            "SELECT string_agg(task, ',' ORDER BY task) FROM warden.worker_status WHERE datname = current_database()",
        );
        assert_eq!(
            task.as_deref(),
            Some("audit_sequencer,heartbeat,key_check,outbox_dispatch,outbox_fanout,outbox_retention,scd2_apply,secret_retention")
        );
    }

    #[pg_test]
    fn envelope_round_trip_with_a_root_key_from_key_command() {
        Spi::run("SELECT warden.set_tenant('acme')").unwrap();
        let text =
            sql_text("SELECT warden.decrypt_text(warden.encrypt('hello', 'row:1'), 'row:1')");
        assert_eq!(text.as_deref(), Some("hello"));
        let magic = sql_text("SELECT substr(encode(warden.encrypt('x'), 'hex'), 1, 6)");
        assert_eq!(magic.as_deref(), Some("e75701"));
    }

    #[pg_test(error = "decryption failed")]
    fn another_aad_does_not_decrypt() {
        Spi::run("SELECT warden.set_tenant('acme')").unwrap();
        let _ = Spi::get_one::<String>(
            "SELECT warden.decrypt_text(warden.encrypt('hello', 'row:1'), 'row:2')",
        );
    }

    #[pg_test]
    fn hash_diff_matches_the_documented_known_answer() {
        let hex = sql_text(
            "SELECT encode(warden.hash_diff(ROW('a'::text, NULL::text, ''::text)), 'hex')",
        );
        assert_eq!(
            hex.as_deref(),
            Some("3ee107a1af094a2ebc071f4036a8c6f1e3f5cc6d5f93040b41c8150cc76a5fba")
        );
    }

    #[pg_test]
    fn one_transaction_that_tracks_changes_and_deletes_a_row_leaves_no_history() {
        // a #[pg_test] is one transaction: the loaded version is this
        // transaction's own, so the change replaces it and the delete drops it
        Spi::run(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t VALUES (1, 'a');
             SELECT warden.scd2_track('t', ARRAY['id']);
             UPDATE t SET v = 'b';",
        )
        .unwrap();
        let after_update = sql_text("SELECT string_agg(op || ':' || v, ',') FROM t_history");
        assert_eq!(after_update.as_deref(), Some("I:b"));
        Spi::run("DELETE FROM t").unwrap();
        let left = Spi::get_one::<i64>("SELECT count(*) FROM t_history").unwrap();
        assert_eq!(left, Some(0));
    }
}
