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
    let dump = cluster.dir.join("db.dump");
    let out = cluster.run_tool(
        "pg_dump",
        &[
            "-Fc".as_ref(),
            "-f".as_ref(),
            dump.as_os_str(),
            "postgres".as_ref(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.run_tool(
        "pg_restore",
        &["-d".as_ref(), "restored".as_ref(), dump.as_os_str()],
    );
    assert!(
        out.status.success(),
        "pg_restore failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
