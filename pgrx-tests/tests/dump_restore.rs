//! pg_dump / pg_restore of a database that uses what the hardening
//! changed: tenant policies (alone, beside the owner's, on partitions
//! added later), SCD2 tracking with a queue primary key. pg_warden's
//! event triggers are active during the restore; it must end without a
//! single error and give back the same policies and rows.

use pg_warden_integration::*;

fn policies(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT c.oid::regclass::text || ' ' || p.polname || ' ' || p.polpermissive::text || ' '
                    || c.relrowsecurity::text || c.relforcerowsecurity::text
               FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
              WHERE c.relnamespace = 's'::regnamespace ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn a_dump_of_tenant_and_scd2_tables_restores_without_errors() {
    let cluster = Cluster::start("dump_restore", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE SCHEMA s;
             CREATE TABLE s.ev (tenant text NOT NULL, id int NOT NULL, body text) PARTITION BY LIST (tenant);
             CREATE TABLE s.ev_a PARTITION OF s.ev FOR VALUES IN ('a');
             SELECT warden.enable_tenancy('s.ev');
             CREATE TABLE s.ev_b (LIKE s.ev);
             ALTER TABLE s.ev ATTACH PARTITION s.ev_b FOR VALUES IN ('b');
             CREATE TABLE s.docs (id int PRIMARY KEY, tenant text NOT NULL, author name NOT NULL DEFAULT current_user);
             ALTER TABLE s.docs ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON s.docs USING (author = current_user);
             SELECT warden.enable_tenancy('s.docs');
             CREATE TABLE s.dim (id int PRIMARY KEY, v text);
             SELECT warden.scd2_track('s.dim', ARRAY['id'], deferred => true);
             INSERT INTO s.dim VALUES (1, 'x');
             INSERT INTO s.ev VALUES ('a', 1, 'a1'), ('b', 2, 'b1');",
        )
        .unwrap();
    admin.batch_execute("CREATE DATABASE restored").unwrap();
    let before = policies(&mut admin);
    let dump = cluster.dump("postgres", "db.dump");
    cluster.restore_into(&dump, "restored");
    let mut restored = cluster.connect("restored");
    assert_eq!(policies(&mut restored), before);
    let n: i64 = restored
        .query_one("SELECT count(*) FROM s.ev", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "superuser sees every row");
    // SCD2 tracking goes on in the restored copy
    restored
        .batch_execute("UPDATE s.dim SET v = 'y'; SELECT warden.scd2_flush('s.dim')")
        .unwrap();
    let versions: i64 = restored
        .query_one("SELECT count(*) FROM s.dim_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(versions, 2);
}

/// What a database using every subsystem holds: data keys, ciphertexts
/// and blind indexes of two tenants in a tenant table, a synchronously
/// tracked table and a deferred one.
fn populate(cluster: &Cluster, db: &str) {
    let mut admin = cluster.connect(db);
    admin
        .batch_execute("CREATE EXTENSION pg_warden; GRANT warden_app TO app;")
        .unwrap();
    let mut app = cluster.connect_as(db, "app");
    write_every_subsystem(&mut admin, &mut app);
    admin
        .batch_execute("SELECT warden.scd2_flush('ddim')")
        .unwrap();
}

/// A restored copy works like the original: tenants decrypt their rows
/// and find them by blind index and see no others, a new tenant gets a
/// key with an id of its own, tracking goes on, the lint finds nothing.
fn check_copy(cluster: &Cluster, db: &str, what: &str) {
    let mut app = cluster.connect_as(db, "app");
    for tenant in DOC_TENANTS {
        let mut tx = app.transaction().unwrap();
        assert_tenant_reads_its_row(&mut tx, tenant, what);
        tx.commit().unwrap();
    }
    let mut admin = cluster.connect(db);
    let restored_max: i32 = admin
        .query_one("SELECT max(key_id) FROM warden.keys", &[])
        .unwrap()
        .get(0);
    app.batch_execute(
        "BEGIN; SELECT warden.set_tenant('gamma');
         INSERT INTO docs (id, body) VALUES (3, warden.encrypt('g', 'docs.body'));
         COMMIT;",
    )
    .unwrap_or_else(|e| panic!("{what}: a new tenant's key: {e:?}"));
    let new_key: i32 = admin
        .query_one("SELECT key_id FROM warden.keys WHERE tenant = 'gamma'", &[])
        .unwrap()
        .get(0);
    assert!(
        new_key > restored_max,
        "{what}: the new key reused id {new_key}"
    );
    assert_tracking_goes_on(&mut admin, what);
    let findings: Vec<String> = admin
        .query(
            "SELECT name || ' ' || coalesce(metadata->>'object', '') FROM warden.lint() WHERE level IN ('ERROR', 'WARN')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(findings.is_empty(), "{what}: lint: {findings:?}");
}

fn restore(cluster: &Cluster, dump: &std::path::Path, db: &str, what: &str) {
    cluster
        .connect("postgres")
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let out = cluster.run_tool(
        "pg_restore",
        &[
            "--single-transaction".as_ref(),
            "--exit-on-error".as_ref(),
            "-d".as_ref(),
            db.as_ref(),
            dump.as_os_str(),
        ],
    );
    assert!(
        out.status.success(),
        "{what}: pg_restore failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_database_using_every_subsystem_restores_into_a_new_database_and_another_cluster() {
    let cluster = Cluster::start("dump_all", &[]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE ROLE app LOGIN").unwrap();
    admin.batch_execute("CREATE DATABASE prod").unwrap();
    populate(&cluster, "prod");
    let dump = cluster.dump("prod", "prod.dump");

    restore(&cluster, &dump, "copy", "same cluster");
    check_copy(&cluster, "copy", "same cluster");

    // another cluster with the same key file
    let other = Cluster::start("dump_all_other", &[]);
    other.write_key_file(&std::fs::read_to_string(cluster.key_file()).unwrap());
    other.restart();
    other
        .connect("postgres")
        .batch_execute("CREATE ROLE app LOGIN")
        .unwrap();
    restore(&other, &dump, "copy", "another cluster");
    other
        .connect("postgres")
        .batch_execute("GRANT warden_app TO app")
        .unwrap();
    check_copy(&other, "copy", "another cluster");
}
