//! The worker runtime, driven from outside against real clusters.

use std::time::Duration;

use pg_warden_integration::*;

fn cluster_with_extension(name: &str, extra: &[&str]) -> (Cluster, Client) {
    let cluster = Cluster::start(name, extra);
    let mut client = cluster.connect("postgres");
    client.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut client, "postgres");
    (cluster, client)
}

#[test]
fn task_panic_and_task_error_are_reported_and_the_worker_keeps_running() {
    let (cluster, mut client) = cluster_with_extension("task_fault", &[]);
    let before = wait_running(&mut client, "postgres");

    client
        .batch_execute("SELECT warden._inject_worker_fault('task_panic')")
        .unwrap();
    let after_panic = wait_for(Duration::from_secs(10), "the panic to be recorded", || {
        worker_row(&mut client, "postgres").filter(|r| r.failures == Some(1))
    });
    let err = after_panic.last_error.clone().unwrap();
    assert!(
        err.contains("injected fault: heartbeat task panicked"),
        "{err}"
    );
    // same process: the panic was contained in the task
    assert_eq!(after_panic.pid, before.pid);
    assert_eq!(after_panic.state, "running");

    client
        .batch_execute("SELECT warden._inject_worker_fault('task_error')")
        .unwrap();
    let after_error = wait_for(
        Duration::from_secs(10),
        "the SQL error to be recorded",
        || worker_row(&mut client, "postgres").filter(|r| r.failures == Some(2)),
    );
    assert!(after_error
        .last_error
        .as_deref()
        .unwrap()
        .contains("division by zero"));
    assert_eq!(after_error.pid, before.pid);

    // and the task still succeeds afterwards (its transaction was cleaned up)
    client
        .batch_execute("BEGIN; SELECT warden._worker_wake_on_commit(); COMMIT")
        .unwrap();
    let runs = after_error.runs.unwrap();
    wait_for(
        Duration::from_secs(10),
        "a successful run after the failures",
        || {
            worker_row(&mut client, "postgres")
                .filter(|r| r.runs.unwrap() > runs && r.failures == Some(2))
        },
    );
    assert!(!cluster
        .log()
        .contains("terminating any other active server processes"));
}

#[test]
fn worker_panic_restarts_the_worker_without_crash_recovery() {
    let (cluster, mut client) = cluster_with_extension("worker_panic", &[]);
    let before = wait_running(&mut client, "postgres");
    let postmaster = cluster.postmaster_pid();
    // a bystander session: crash recovery would kill it
    let mut bystander = cluster.connect("postgres");
    let bystander_pid: i32 = bystander
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);

    client
        .batch_execute("SELECT warden._inject_worker_fault('worker_panic')")
        .unwrap();
    let after = wait_for(Duration::from_secs(15), "a new worker process", || {
        worker_row(&mut client, "postgres")
            .filter(|r| r.state == "running" && r.pid.is_some() && r.pid != before.pid)
    });
    assert_eq!(after.starts, before.starts + 1);

    let still: i32 = bystander
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    assert_eq!(still, bystander_pid, "the bystander session survived");
    assert_eq!(cluster.postmaster_pid(), postmaster);
    let log = cluster.log();
    assert!(
        log.contains("injected fault: worker panicked outside a task"),
        "{log}"
    );
    assert!(log.contains("exited with exit code 1"), "{log}");
    assert!(
        !log.contains("terminating any other active server processes"),
        "{log}"
    );
    assert!(
        !log.contains("server process") || !log.contains("was terminated by signal"),
        "{log}"
    );
}

#[test]
fn launcher_starts_a_worker_when_create_extension_commits_in_a_second_database() {
    // a long rescan interval: only the commit-time registration can be fast
    let cluster = Cluster::start("second_db", &["warden.launcher_naptime = '1h'"]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "postgres");
    admin.batch_execute("CREATE DATABASE second").unwrap();
    let mut second = cluster.connect("second");

    // a rolled-back CREATE EXTENSION starts nothing
    second
        .batch_execute("BEGIN; CREATE EXTENSION pg_warden; ROLLBACK")
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        worker_row(&mut admin, "second").is_none_or(|r| r.state != "running"),
        "no worker after a rolled-back CREATE EXTENSION"
    );

    second.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    let row = wait_for(
        Duration::from_secs(5),
        "a worker in the second database",
        || worker_row(&mut admin, "second").filter(|r| r.state == "running"),
    );
    assert!(row.pid.is_some());
    // the first database's worker is untouched
    assert_eq!(wait_running(&mut admin, "postgres").starts, 2);
}

#[test]
fn launcher_notices_a_new_database_without_a_restart() {
    let cluster = Cluster::start("new_db", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "postgres");
    admin.batch_execute("CREATE DATABASE fresh").unwrap();
    // probed by the periodic rescan, found without the extension
    let row = wait_for(
        Duration::from_secs(10),
        "the new database to be probed",
        || worker_row(&mut admin, "fresh").filter(|r| r.state == "not_installed"),
    );
    assert_eq!(row.pid, None);
}

#[test]
fn drop_extension_stops_that_databases_worker() {
    let cluster = Cluster::start("drop_ext", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    admin.batch_execute("CREATE DATABASE other").unwrap();
    let mut other = cluster.connect("other");
    other.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    let running = wait_running(&mut admin, "other");
    let pid = running.pid.unwrap();

    other.batch_execute("DROP EXTENSION pg_warden").unwrap();
    wait_for(Duration::from_secs(10), "the worker to stop", || {
        worker_row(&mut admin, "other").filter(|r| r.state == "not_installed" && r.pid.is_none())
    });
    let alive: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)",
            &[&pid],
        )
        .unwrap()
        .get(0);
    assert!(!alive, "worker process {pid} is gone");
    // and it is not restarted
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        worker_row(&mut admin, "other").unwrap().state,
        "not_installed"
    );
    assert_eq!(wait_running(&mut admin, "postgres").state, "running");
}

#[test]
fn commit_wakes_the_worker_and_rollback_does_not() {
    // long naptime and heartbeat: only a wake-up makes the task run
    let (_cluster, mut client) =
        cluster_with_extension("wakeup", &["warden.worker_naptime = '1h'"]);
    let before = wait_running(&mut client, "postgres");

    client
        .batch_execute("BEGIN; SELECT warden._worker_wake_on_commit(); ROLLBACK")
        .unwrap();
    client
        .batch_execute("BEGIN; SAVEPOINT s; SELECT warden._worker_wake_on_commit(); ROLLBACK TO SAVEPOINT s; COMMIT")
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let idle = worker_row(&mut client, "postgres").unwrap();
    assert_eq!(
        idle.wake_requests, before.wake_requests,
        "rolled-back requests wake nothing"
    );
    assert_eq!(idle.runs, before.runs);

    client
        .batch_execute("BEGIN; SAVEPOINT s; SELECT warden._worker_wake_on_commit(); RELEASE SAVEPOINT s; COMMIT")
        .unwrap();
    let woken = wait_for(
        Duration::from_secs(5),
        "the committed wake-up to run the task",
        || worker_row(&mut client, "postgres").filter(|r| r.runs > before.runs),
    );
    assert_eq!(woken.wake_requests, before.wake_requests + 1);
}

#[test]
fn sighup_applies_warden_databases_and_stops_excluded_workers() {
    let cluster = Cluster::start("sighup", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    wait_running(&mut admin, "postgres");
    admin
        .batch_execute("ALTER SYSTEM SET warden.databases = 'somewhere_else'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for(
        Duration::from_secs(10),
        "the excluded worker to stop",
        // nothing is queued under its slot (no durable audit event), so
        // the slot is freed (the audit tests cover a slot kept for one)
        || worker_row(&mut admin, "postgres").is_none().then_some(()),
    );
    let workers: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_warden worker'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(workers, 0, "the excluded database's worker still runs");
    admin
        .batch_execute("ALTER SYSTEM RESET warden.databases")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_running(&mut admin, "postgres");
}

#[test]
fn launcher_killed_by_pg_terminate_backend_comes_back_without_duplicating_workers() {
    let (cluster, mut client) = cluster_with_extension("launcher_restart", &[]);
    let before = wait_running(&mut client, "postgres");
    let killed: bool = client
        .query_one(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_warden launcher'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(killed);
    wait_for(Duration::from_secs(20), "a new launcher", || {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_warden launcher'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let workers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_warden worker'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        workers, 1,
        "exactly one worker for the one database with the extension"
    );
    assert_eq!(worker_row(&mut client, "postgres").unwrap().pid, before.pid);
    drop(cluster);
}

#[test]
fn fast_shutdown_completes_within_seconds() {
    // workers asleep for up to an hour must still stop at once on SIGTERM
    let (cluster, mut client) = cluster_with_extension(
        "shutdown",
        &[
            "warden.worker_naptime = '1h'",
            "warden.launcher_naptime = '1h'",
        ],
    );
    client.batch_execute("CREATE DATABASE b").unwrap();
    cluster
        .connect("b")
        .batch_execute("CREATE EXTENSION pg_warden")
        .unwrap();
    wait_running(&mut client, "b");
    drop(client);
    let took = cluster.pg_ctl_stop("fast");
    eprintln!("fast shutdown with two idle pg_warden workers took {took:?}");
    assert!(took < Duration::from_secs(5), "fast shutdown took {took:?}");
    let log = cluster.log();
    assert!(
        log.contains("terminating background worker \"pg_warden worker"),
        "{log}"
    );
    assert!(log.contains("database system is shut down"), "{log}");
}

/// A task stuck in a long statement (here the history owner's trigger
/// sleeping in the deferred apply) shows in pg_stat_activity as what it
/// does, and SIGTERM interrupts it: a fast shutdown does not wait for it.
#[test]
fn a_fast_shutdown_interrupts_a_running_task_shown_in_pg_stat_activity() {
    let (cluster, mut client) =
        cluster_with_extension("shutdown_busy", &["warden.scd2_apply_interval = '200ms'"]);
    client
        .batch_execute(
            "CREATE TABLE slow (id int PRIMARY KEY, v text);
             SELECT warden.scd2_track('slow', ARRAY['id'], deferred => true);
             CREATE FUNCTION public.nap() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_catalog.pg_sleep(120); RETURN NEW; END $$;
             CREATE TRIGGER nap BEFORE INSERT ON slow_history FOR EACH ROW EXECUTE FUNCTION public.nap();
             INSERT INTO slow VALUES (1, 'x');",
        )
        .unwrap();
    let activity: String = wait_for(Duration::from_secs(20), "the apply to show", || {
        client
            .query_opt(
                "SELECT query FROM pg_stat_activity
                  WHERE backend_type = 'pg_warden worker' AND state = 'active'",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0))
    });
    assert_eq!(activity, "pg_warden: scd2_apply run");
    drop(client);
    let took = cluster.pg_ctl_stop("fast");
    eprintln!("fast shutdown during a 120 s apply took {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "fast shutdown took {took:?}"
    );
}

/// A task woken by name runs at commit, not at its interval; an unknown
/// name is a clear error.
#[test]
fn a_task_woken_by_name_runs_at_commit() {
    let (cluster, mut client) =
        cluster_with_extension("wake_task", &["warden.scd2_apply_interval = '1h'"]);
    client
        .batch_execute(
            "CREATE TABLE d (id int PRIMARY KEY, v text);
             SELECT warden.scd2_track('d', ARRAY['id'], deferred => true);",
        )
        .unwrap();
    wait_running(&mut client, "postgres");
    // the first run at start is over: nothing applies for an hour now
    wait_for(Duration::from_secs(20), "the first scd2_apply run", || {
        let runs: Option<i64> = client
            .query_opt(
                "SELECT runs FROM warden.worker_status WHERE datname = 'postgres' AND task = 'scd2_apply'",
                &[],
            )
            .unwrap()
            .and_then(|r| r.get(0));
        runs.filter(|&n| n > 0)
    });
    client
        .batch_execute("INSERT INTO d VALUES (1, 'x')")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let queued: i64 = client
        .query_one("SELECT count(*) FROM d_history_queue", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 1, "applied without being woken");
    client
        .batch_execute(
            "BEGIN; INSERT INTO d VALUES (2, 'y');
             SELECT warden._worker_wake_task_on_commit('scd2_apply'); COMMIT;",
        )
        .unwrap();
    wait_for(Duration::from_secs(5), "the woken apply", || {
        let n: i64 = client
            .query_one("SELECT count(*) FROM d_history", &[])
            .unwrap()
            .get(0);
        (n == 2).then_some(())
    });
    let err = client
        .batch_execute("SELECT warden._worker_wake_task_on_commit('no_such_task')")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::INVALID_PARAMETER_VALUE),
        "{err:?}"
    );
    let _ = cluster;
}

/// The audit sequencer is woken by every commit that emitted an event;
/// commits that come within its wake gap are chained by one run, not one
/// run each.
#[test]
fn commits_within_a_tasks_wake_gap_share_one_run() {
    let (cluster, mut client) = cluster_with_extension("wake_gap", &[]);
    wait_running(&mut client, "postgres");
    let runs = |client: &mut Client| -> i64 {
        client
            .query_one(
                "SELECT runs FROM warden.worker_status WHERE datname = 'postgres' AND task = 'audit_sequencer'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let chained = |client: &mut Client| -> i64 {
        client
            .query_one(
                "SELECT count(*) FROM warden.audit_log WHERE event_type = 'gap.test'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let before = runs(&mut client);
    const COMMITS: i64 = 300;
    for _ in 0..COMMITS {
        // one autocommit transaction each, every one waking the sequencer
        client
            .batch_execute("SELECT warden.audit_emit('gap.test')")
            .unwrap();
    }
    wait_for(Duration::from_secs(20), "every event chained", || {
        (chained(&mut client) == COMMITS).then_some(())
    });
    let spent = runs(&mut client) - before;
    println!("{COMMITS} commits woke the sequencer; it ran {spent} times");
    assert!(
        spent < COMMITS / 3,
        "{spent} runs for {COMMITS} commits: wake-ups within the gap were not served together"
    );
    let _ = cluster;
}

#[test]
fn database_ddl_that_needs_the_database_alone_is_not_blocked_by_the_worker() {
    let cluster = Cluster::start("database_ddl", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE EXTENSION pg_warden").unwrap();
    admin.batch_execute("CREATE DATABASE tpl").unwrap();
    cluster
        .connect("tpl")
        .batch_execute("CREATE EXTENSION pg_warden")
        .unwrap();
    wait_running(&mut admin, "tpl");

    // a template with a running worker can still be copied; the copy gets
    // its own worker (it has the extension), found by the rescan
    admin
        .batch_execute("CREATE DATABASE copy TEMPLATE tpl")
        .unwrap();
    wait_running(&mut admin, "copy");
    // rename: the worker steps aside and comes back under the new name
    admin
        .batch_execute("ALTER DATABASE copy RENAME TO renamed")
        .unwrap();
    wait_running(&mut admin, "renamed");
    // plain DROP DATABASE (no FORCE) succeeds and the slot goes away
    admin.batch_execute("DROP DATABASE renamed").unwrap();
    wait_for(
        Duration::from_secs(10),
        "the dropped database to leave worker_status",
        || {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM warden.worker_status WHERE datname IS NULL",
                    &[],
                )
                .unwrap()
                .get(0);
            (n == 0).then_some(())
        },
    );
    // the template's worker came back after the copy
    wait_running(&mut admin, "tpl");
    let log = cluster.log();
    assert!(
        !log.contains("FATAL:  database") || !log.contains("does not exist"),
        "{log}"
    );
}

/// SIGTERM ends a worker through Postgres' `die` (exit 1): a stop, not a
/// failure. A worker terminated four times in a row comes back each time
/// without the restart back-off (1 s, 2 s, 4 s, 8 s) that failures earn.
#[test]
fn a_terminated_worker_comes_back_without_back_off() {
    let (_cluster, mut client) = cluster_with_extension("terminate_worker", &[]);
    let started = std::time::Instant::now();
    for _ in 0..4 {
        let before = wait_running(&mut client, "postgres").pid.unwrap();
        client
            .execute("SELECT pg_terminate_backend($1)", &[&before])
            .unwrap();
        wait_for(Duration::from_secs(20), "the worker to come back", || {
            worker_row(&mut client, "postgres")
                .filter(|r| r.state == "running" && r.pid.is_some_and(|p| p != before))
        });
    }
    // with back-off: at least 1 + 2 + 4 + 8 s
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "restarts took {took:?}");
}
