//! A streaming standby made with `pg_basebackup -R`: read replicas serve
//! encrypted data. On the standby, tenants decrypt their rows and find
//! them by blind index, a tenant token minted on the primary sets the
//! tenant, tenancy holds, and nothing pg_warden does needs a transaction
//! id; its launcher and workers do not run there (nothing to write, no
//! crash loop). After `pg_ctl promote` the database's worker starts and
//! applies a deferred SCD2 backlog written on the primary (whose own
//! worker was kept out of that database by `warden.databases`).

use std::time::Duration;

use pg_warden_integration::*;
use postgres::error::SqlState;

#[test]
fn a_standby_serves_encrypted_reads_and_its_worker_starts_at_promotion() {
    let primary = Cluster::start(
        "standby_primary",
        &[
            "warden.databases = 'not_this_one'",
            "warden.scd2_apply_interval = '300ms'",
        ],
    );
    let mut admin = primary.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden; CREATE ROLE app LOGIN; GRANT warden_app TO app;",
        )
        .unwrap();
    let mut app = primary.connect_as("postgres", "app");
    write_every_subsystem(&mut admin, &mut app);
    let token: String = admin
        .query_one("SELECT warden.tenant_token('acme', '10 minutes')", &[])
        .unwrap()
        .get(0);
    // a backlog no worker applies on the primary (ddim's first row is
    // queued too)
    admin
        .batch_execute("INSERT INTO ddim VALUES (2, 'y')")
        .unwrap();
    admin
        .batch_execute("UPDATE ddim SET v = 'x2' WHERE id = 1")
        .unwrap();

    let standby = primary.start_standby("standby", &["warden.databases = ''"]);
    let standby_pid = standby.postmaster_pid();
    let mut reader = standby.connect("postgres");
    wait_for(Duration::from_secs(20), "the standby to replay", || {
        let n: i64 = reader
            .query_one("SELECT count(*) FROM ddim", &[])
            .unwrap()
            .get(0);
        (n == 2).then_some(())
    });
    let in_recovery: bool = reader
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);

    for tenant in DOC_TENANTS {
        // a fresh session each time: the keys come from warden.keys, not
        // from a cache the primary's sessions filled
        let mut r = standby.connect_as("postgres", "app");
        let mut tx = r.transaction().unwrap();
        assert_tenant_reads_its_row(&mut tx, tenant, "on the standby");
        // no pg_warden call needed a transaction id
        let xid: Option<String> = tx
            .query_one("SELECT pg_current_xact_id_if_assigned()::text", &[])
            .unwrap()
            .get(0);
        assert_eq!(xid, None);
        tx.commit().unwrap();
    }

    // a token minted on the primary sets the tenant on the standby
    let mut r = standby.connect_as("postgres", "app");
    let mut tx = r.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant_token($1)", &[&token])
        .unwrap();
    let (tenant, rows): (Option<String>, i64) = {
        let row = tx
            .query_one(
                "SELECT warden.current_tenant(), (SELECT count(*) FROM docs)",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((tenant.as_deref(), rows), (Some("acme"), 1));
    tx.rollback().unwrap();

    // a tenant with no data key yet cannot get one on a read-only standby:
    // a clear error, not a crash or a half-made key
    let mut tx = r.transaction().unwrap();
    tx.execute("SELECT warden.set_tenant('newcomer')", &[])
        .unwrap();
    let err = tx
        .query_one("SELECT warden.encrypt('x', 'docs.body')", &[])
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{err:?}"
    );
    drop(tx);

    // no pg_warden process runs on the standby, and none ran and failed
    let workers: i64 = reader
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_warden%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(workers, 0, "pg_warden processes on a standby");
    let log = standby.log();
    // (a standby's log starts with "database system was interrupted": it
    // starts from a backup)
    for bad in [
        "cannot assign TransactionIds",
        "background worker \"pg_warden",
        "terminated by signal",
        "all server processes terminated; reinitializing",
    ] {
        assert!(!log.contains(bad), "{bad} on the standby:\n{log}");
    }
    assert_eq!(
        standby.postmaster_pid(),
        standby_pid,
        "the standby restarted"
    );

    // promotion: the worker starts and applies what the primary queued
    drop(admin);
    primary.pg_ctl_stop("fast");
    standby.promote();
    let mut promoted = standby.connect("postgres");
    wait_running(&mut promoted, "postgres");
    let versions = wait_for(Duration::from_secs(20), "the backlog to be applied", || {
        let rows: Vec<String> = promoted
            .query(
                "SELECT format('%s %s %s', id, v, is_current) FROM ddim_history ORDER BY id, valid_from, is_current",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        (rows.len() >= 3).then_some(rows)
    });
    assert_eq!(versions, ["1 x f", "1 x2 t", "2 y t"]);
    let queued: i64 = promoted
        .query_one("SELECT count(*) FROM ddim_history_queue", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
}
