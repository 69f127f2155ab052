//! Attack tier: keeping pg_warden's workers down (finding 6 of the
//! hardening review). The ProcessUtility hook used to stop a database's
//! worker for 10 s before Postgres checked that the caller may run
//! `DROP DATABASE` at all, so a role with no privileges could keep every
//! worker down by looping a failing statement.

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
