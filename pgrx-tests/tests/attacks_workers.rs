//! Attack tier: keeping pg_warden's workers down (finding 6 of the
//! hardening review). The ProcessUtility hook used to stop a database's
//! worker for 10 s before Postgres checked that the caller may run
//! `DROP DATABASE` at all, so a role with no privileges could keep every
//! worker down by looping a failing statement.

use std::time::Duration;

use pg_warden_integration::*;

#[test]
fn a_role_without_privileges_cannot_stop_a_worker_with_failing_database_ddl() {
    let cluster = Cluster::start("attack_database_ddl", &[]);
    let pid = cluster.postmaster_pid();
    let mut admin = cluster.connect("postgres");
    for stmt in [
        "CREATE EXTENSION pg_warden",
        "CREATE DATABASE victim",
        "CREATE ROLE nobody LOGIN",
        "CREATE ROLE copier LOGIN CREATEDB",
    ] {
        admin.batch_execute(stmt).unwrap();
    }
    cluster
        .connect("victim")
        .batch_execute("CREATE EXTENSION pg_warden")
        .unwrap();
    let before = wait_running(&mut admin, "victim");

    for role in ["nobody", "copier"] {
        let mut attacker = cluster.connect_as("postgres", role);
        for _ in 0..5 {
            for stmt in [
                "DROP DATABASE victim",
                "ALTER DATABASE victim RENAME TO gone",
                "ALTER DATABASE victim SET TABLESPACE pg_default",
                "CREATE DATABASE copy TEMPLATE victim",
            ] {
                let err = attacker.batch_execute(stmt).expect_err(stmt);
                assert_eq!(
                    err.code().map(|c| c.code()),
                    Some("42501"),
                    "{role}: {stmt}: {err:?}"
                );
            }
        }
    }
    // the worker was never asked to stop: same process, no restart
    let after = worker_row(&mut admin, "victim").expect("a worker row");
    assert_eq!(after.state, "running", "{after:?}");
    assert_eq!(after.pid, before.pid, "the worker was stopped: {after:?}");
    assert_eq!(after.starts, before.starts, "the worker was restarted");
    cluster.assert_survived(pid);
}

/// Finding 13: one user's object could stall the SCD2 apply of every
/// table in the database: a lock held on a queue blocked the worker
/// forever, and a huge backlog went into one statement.
#[test]
fn a_locked_queue_does_not_stall_other_tables_and_backlogs_apply_in_batches() {
    let cluster = Cluster::start(
        "attack_stall",
        &[
            "warden.scd2_apply_interval = '200ms'",
            "warden.scd2_apply_batch = 7",
        ],
    );
    let pid = cluster.postmaster_pid();
    let (mut admin, mut owner) = cluster.with_owner_schema();
    owner
        .batch_execute(
            "CREATE TABLE s.stuck (id int PRIMARY KEY, v int);
             CREATE TABLE s.busy (id int PRIMARY KEY, v int);
             SELECT warden.scd2_track('s.stuck', ARRAY['id'], deferred => true);
             SELECT warden.scd2_track('s.busy', ARRAY['id'], deferred => true);
             INSERT INTO s.stuck VALUES (1, 0);",
        )
        .unwrap();
    // the owner holds a lock on one queue and never lets go
    let mut holder = cluster.connect_as("postgres", "owner_role");
    holder
        .batch_execute("BEGIN; LOCK TABLE s.stuck_history_queue IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    // 50 transactions on the other table: more than 7 batches' worth
    for i in 0..50 {
        owner
            .batch_execute(&format!(
                "INSERT INTO s.busy VALUES ({i}, 0) ON CONFLICT (id) DO UPDATE SET v = s.busy.v + 1"
            ))
            .unwrap();
        owner
            .batch_execute(&format!("UPDATE s.busy SET v = v + 1 WHERE id = {}", i / 2))
            .unwrap();
    }
    wait_for(
        Duration::from_secs(20),
        "the other table's queue to be applied",
        || {
            let n: i64 = admin
                .query_one("SELECT count(*) FROM s.busy_history_queue", &[])
                .unwrap()
                .get(0);
            (n == 0).then_some(())
        },
    );
    // every version of the busy table, in order: one per transaction
    // that changed a row (50 inserts + 50 updates), current = the table
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE is_current),
                    (SELECT count(*) FROM s.busy b JOIN s.busy_history h
                        ON h.id = b.id AND h.is_current AND h.v = b.v)
               FROM s.busy_history",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (100, 50, 50)
    );
    holder.batch_execute("ROLLBACK").unwrap();
    cluster.assert_survived(pid);
}
