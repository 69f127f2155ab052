//! The tenant context seen by application roles, directly and through
//! PgBouncer in transaction pooling mode.

use std::sync::{Arc, Barrier};
use std::thread;

use pg_warden_integration::*;

/// In a fresh transaction: no tenant yet, then exactly the one it sets.
fn set_and_check_tenant(client: &mut Client, tenant: &str) {
    let mut tx = client.transaction().unwrap();
    let before: Option<String> = tx
        .query_one("SELECT warden.current_tenant()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        before, None,
        "a new transaction started with tenant {before:?}"
    );
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
        .unwrap();
    let seen: Option<String> = tx
        .query_one("SELECT warden.current_tenant()", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen.as_deref(), Some(tenant));
    tx.commit().unwrap();
}

fn setup(cluster: &Cluster) {
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app_a LOGIN; CREATE ROLE app_b LOGIN;
             GRANT warden_app TO app_a, app_b;",
        )
        .unwrap();
}

#[test]
fn application_role_cannot_change_the_tenant_setting_directly() {
    let cluster = Cluster::start("tenant_guc", &[]);
    setup(&cluster);
    let mut app = cluster.connect_as("postgres", "app_a");
    for stmt in [
        "SET warden.tenant = 'b'",
        "SET LOCAL warden.tenant = 'b'",
        "SELECT set_config('warden.tenant', 'b', true)",
        "SELECT set_config('warden.tenant', 'b', false)",
        "ALTER ROLE app_a SET warden.tenant = 'b'",
    ] {
        app.batch_execute("BEGIN").unwrap();
        let err = app.batch_execute(stmt).expect_err(stmt);
        let code = err.code().map(|c| c.code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{stmt}: {err}");
        app.batch_execute("ROLLBACK").unwrap();
    }
    let t: Option<String> = app
        .query_one("SELECT warden.current_tenant()", &[])
        .unwrap()
        .get(0);
    assert_eq!(t, None);
    // the sanctioned path works
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('a')", &[]).unwrap();
    let t: Option<String> = tx
        .query_one("SELECT warden.current_tenant()", &[])
        .unwrap()
        .get(0);
    assert_eq!(t.as_deref(), Some("a"));
}

#[test]
fn pgbouncer_transaction_pooling_never_leaks_a_tenant_between_clients() {
    let cluster = Cluster::start("pgbouncer", &[]);
    setup(&cluster);
    let bouncer = PgBouncer::start(&cluster, &["app_a", "app_b", "postgres"]);
    // both clients log in as the same role, so PgBouncer's single server
    // connection for (postgres, app_a) is shared between them
    let mut a = bouncer.connect_as("postgres", "app_a");
    let mut b = bouncer.connect_as("postgres", "app_a");

    // prove the sharing: the same backend serves both clients
    let pid_a: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let pid_b: i32 = b.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    assert_eq!(
        pid_a, pid_b,
        "PgBouncer must multiplex both clients onto one backend"
    );

    // interleaved: A sets its tenant and commits; B's next transaction on
    // the same backend must not see it
    for i in 0..50 {
        set_and_check_tenant(&mut a, &format!("tenant_a_{i}"));

        let seen_by_b: Option<String> = b
            .query_one("SELECT warden.current_tenant()", &[])
            .unwrap()
            .get(0);
        assert_eq!(seen_by_b, None, "iteration {i}: B saw A's tenant");
        let mut tx = b.transaction().unwrap();
        let seen_by_b: Option<String> = tx
            .query_one("SELECT warden.current_tenant()", &[])
            .unwrap()
            .get(0);
        assert_eq!(
            seen_by_b, None,
            "iteration {i}: B's transaction inherited A's tenant"
        );
        tx.execute("SELECT warden.set_tenant('tenant_b')", &[])
            .unwrap();
        tx.rollback().unwrap();
    }

    // concurrent clients on a one-connection pool: every transaction sees
    // exactly the tenant it set
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|n| {
            let barrier = barrier.clone();
            let port = bouncer.port;
            thread::spawn(move || {
                let conn = format!("host=127.0.0.1 port={port} dbname=postgres user=app_a");
                let mut c = Client::connect(&conn, NoTls).unwrap();
                barrier.wait();
                for i in 0..100 {
                    set_and_check_tenant(&mut c, &format!("t{n}_{i}"));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    drop(a);
    drop(b);
}

#[test]
fn without_preload_the_tenant_context_works_and_worker_functions_say_what_to_do() {
    let cluster = Cluster::start(
        "no_preload",
        &["shared_preload_libraries = ''", "max_worker_processes = 8"],
    );
    setup(&cluster);
    let mut app = cluster.connect_as("postgres", "app_a");
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('acme')", &[]).unwrap();
    let t: Option<String> = tx
        .query_one("SELECT warden.current_tenant()", &[])
        .unwrap()
        .get(0);
    assert_eq!(t.as_deref(), Some("acme"));
    tx.rollback().unwrap();

    let mut admin = cluster.connect("postgres");
    let err = admin
        .query("SELECT * FROM warden.worker_status", &[])
        .expect_err("worker_status needs the preload");
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert!(
        db.message().contains("requires pg_warden to be preloaded"),
        "{db:?}"
    );
    assert!(
        db.hint().unwrap().contains("shared_preload_libraries"),
        "{db:?}"
    );
    let err = admin
        .batch_execute("BEGIN; SELECT warden._worker_wake_on_commit(); COMMIT")
        .expect_err("wake-ups need the preload");
    assert_eq!(err.code().unwrap().code(), "55000");
    admin.batch_execute("ROLLBACK").unwrap();
    // no launcher, no worker
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_warden%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
