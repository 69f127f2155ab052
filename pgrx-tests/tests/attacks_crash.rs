//! Attack tier: SQL that used to crash the whole cluster (findings 3 and
//! 5 of the hardening review). Each test runs the attack as the role that
//! has it, expects a clean error with a standard SQLSTATE, and asserts the
//! postmaster neither restarted nor logged a backend killed by a signal,
//! and that no data was lost.

use pg_warden_integration::*;

fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// Finding 3: the deferred trigger formed the queue tuple with the
/// source's types and inserted it under the queue's descriptor. A routine
/// `ALTER COLUMN ... TYPE` on the source, or the queue's owner altering
/// the queue, made every write a segfault or a silent truncation.
#[test]
fn a_queue_whose_types_no_longer_match_refuses_writes_instead_of_crashing() {
    let cluster = Cluster::start("attack_queue_types", &[]);
    let pid = cluster.postmaster_pid();
    let (_admin, mut owner) = cluster.with_owner_schema();
    // (what, the migration, the write after it)
    let cases = [
        (
            "source numeric -> bigint",
            "ALTER TABLE s.t ALTER COLUMN amount TYPE bigint",
            "UPDATE s.t SET amount = 123456789",
        ),
        (
            "source numeric -> text",
            "ALTER TABLE s.t ALTER COLUMN amount TYPE text",
            "UPDATE s.t SET amount = repeat('x', 5000)",
        ),
        (
            "queue column numeric -> int (owner alters the queue)",
            "ALTER TABLE s.t_history_queue ALTER COLUMN amount TYPE int",
            "UPDATE s.t SET amount = 12345678901234567890",
        ),
        (
            "queue column numeric -> text (owner alters the queue)",
            "ALTER TABLE s.t_history_queue ALTER COLUMN amount TYPE text",
            "UPDATE s.t SET amount = 42",
        ),
        (
            "queue column dropped and added again",
            "ALTER TABLE s.t_history_queue DROP COLUMN hash_diff; ALTER TABLE s.t_history_queue ADD COLUMN hash_diff int8",
            "UPDATE s.t SET amount = 43",
        ),
        (
            "queue hash_diff bytea -> int8 (by-value)",
            "ALTER TABLE s.t_history_queue ALTER COLUMN hash_diff TYPE int8 USING 0",
            "UPDATE s.t SET amount = 44",
        ),
        (
            "queue gets a second index (the direct insert would not maintain it)",
            "CREATE INDEX ON s.t_history_queue (amount)",
            "UPDATE s.t SET amount = 45",
        ),
        (
            "queue primary key dropped",
            "DO $$ BEGIN EXECUTE format('ALTER TABLE s.t_history_queue DROP CONSTRAINT %I',
               (SELECT conname FROM pg_constraint WHERE conrelid = 's.t_history_queue'::regclass AND contype = 'p')); END $$",
            "UPDATE s.t SET amount = 46",
        ),
        (
            "queue primary key replaced by one on other columns",
            "DO $$ BEGIN EXECUTE format('ALTER TABLE s.t_history_queue DROP CONSTRAINT %I',
               (SELECT conname FROM pg_constraint WHERE conrelid = 's.t_history_queue'::regclass AND contype = 'p'));
               ALTER TABLE s.t_history_queue ADD PRIMARY KEY (change_lsn, txid); END $$",
            "UPDATE s.t SET amount = 47",
        ),
        (
            "source altered inside the transaction that already wrote through the queue",
            "UPDATE s.t SET amount = 11; UPDATE s.t SET amount = 10",
            "BEGIN; UPDATE s.t SET amount = 12;
             ALTER TABLE s.t ALTER COLUMN amount TYPE bigint;
             UPDATE s.t SET amount = 13; COMMIT",
        ),
        (
            "queue key int -> int8",
            "ALTER TABLE s.t_history_queue ALTER COLUMN id TYPE int8",
            "DELETE FROM s.t",
        ),
    ];
    for (i, (what, migration, write)) in cases.into_iter().enumerate() {
        // one table per case: a queue broken on purpose stays broken
        let t = format!("s.t{i}");
        let name = |sql: &str| sql.replace("s.t", &t);
        owner
            .batch_execute(&name(
                "CREATE TABLE s.t (id int PRIMARY KEY, amount numeric);
                 INSERT INTO s.t VALUES (1, 10);
                 SELECT warden.scd2_track('s.t', ARRAY['id'], deferred => true);
                 SELECT warden.scd2_flush('s.t');",
            ))
            .unwrap();
        owner.batch_execute(&name(migration)).unwrap();
        let err = owner
            .batch_execute(&name(write))
            .expect_err(&format!("{what}: the write must be refused"));
        let _ = owner.batch_execute("ROLLBACK");
        assert_eq!(sqlstate(&err), "55000", "{what}: {err:?}");
        let msg = format!("{err:?}");
        assert!(
            msg.contains("queue"),
            "{what}: the error names the queue: {msg}"
        );
        // the refused write changed nothing
        let n: i64 = owner
            .query_one(
                &name("SELECT count(*) FROM s.t WHERE amount::text = '10'"),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{what}: the row is as before");
        cluster.assert_survived(pid);
    }
    // after the migration, re-tracking gives a working queue again
    owner
        .batch_execute(
            "CREATE TABLE s.t (id int PRIMARY KEY, amount bigint);
             SELECT warden.scd2_track('s.t', ARRAY['id'], deferred => true);
             INSERT INTO s.t VALUES (1, 9223372036854775807);
             SELECT warden.scd2_flush('s.t');",
        )
        .unwrap();
    let v: i64 = owner
        .query_one("SELECT amount FROM s.t_history WHERE is_current", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, i64::MAX, "no truncation");
    cluster.assert_survived(pid);
}

/// Finding 5: the hash_diff encoders recursed through nested records with
/// no stack check; any application role crashed the cluster with one call.
#[test]
fn deeply_nested_values_raise_stack_depth_errors_for_an_application_role() {
    let cluster = Cluster::start("attack_stack", &[]);
    let pid = cluster.postmaster_pid();
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;",
        )
        .unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    for (what, call) in [
        ("hash_diff(record)", "PERFORM warden.hash_diff(r)"),
        (
            "hash_diff(record, cols)",
            "PERFORM warden.hash_diff(r, ARRAY['f1'])",
        ),
        ("hash_diff_values", "PERFORM warden.hash_diff_values(r)"),
        (
            "hash_diff of an array of the record",
            "PERFORM warden.hash_diff(ROW(ARRAY[r]))",
        ),
    ] {
        let err = app
            .batch_execute(&format!(
                "DO $$
                 DECLARE r record;
                 BEGIN
                   r := ROW(1);
                   FOR i IN 1..20000 LOOP r := ROW(r); END LOOP;
                   {call};
                 END $$"
            ))
            .expect_err(what);
        assert_eq!(sqlstate(&err), "54001", "{what}: {err:?}");
        cluster.assert_survived(pid);
    }
    // a nesting well inside the limit still hashes
    let h: Vec<u8> = app
        .query_one(
            "SELECT warden.hash_diff(ROW(ROW(ROW(1, 'a'), ARRAY[ROW(2)]), NULL))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(h.len(), 32);
    cluster.assert_survived(pid);
}
